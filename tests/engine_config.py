"""A tiny baseline run for the engine tests: 64 synthetic images at 32 px, a 1/16-width ResNet-18."""

from configs import common


def tiny(**phase_steps):
  c = common.get_config()
  c.scheme = "baseline"
  c.model.backbone, c.model.width, c.model.dtype = "resnet18", 1 / 16, "float32"
  c.data.image_size, c.data.resize_size = 32, 36
  c.data.synthetic.num_train, c.data.synthetic.num_test = 64, 30
  c.data.batch_size, c.data.eval_batch_size = 8, 8
  steps = phase_steps or {"main": 6}
  c.phases = {name: common.phase(epochs=0, lr=0.05) for name in steps}
  c.phase_order = tuple(steps)
  for name, n in steps.items():
    c.phases[name].steps = n
  c.eval.every_epochs = 0.0
  c.log.every_steps, c.log.tensorboard = 1, False
  # Saved at phase ends and on interruption only: an orbax save costs ~0.4 s even for this model, and the tests
  # that need saves inside a phase ask for them.
  c.checkpoint.every_steps = 1000
  return c
