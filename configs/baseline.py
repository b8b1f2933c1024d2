"""The plain backbone classifier: the baseline every attention scheme is compared with.

    python -m fgattn_jax.train --config configs/baseline.py                   # synthetic data, CPU, minutes
    python -m fgattn_jax.train --config configs/baseline.py:detail            # the detail task (benchmarks.accuracy)
    python -m fgattn_jax.train --config configs/baseline.py:cub --config.data.root=/data/CUB_200_2011 \\
        --config.model.pretrained=/weights/vgg19-dcbb9e9d.pth --workdir workdirs/cub_vgg19
    python -m fgattn_jax.train --config configs/baseline.py:cifar100 --config.model.backbone=resnet110
    python -m fgattn_jax.train --config configs/baseline.py:landmarks --config.data.root=/data/gldv2 \
        --config.model.pretrained=/weights/vgg16-397923af.pth --workdir workdirs/landmarks_vgg16
    python -m fgattn_jax.evaluate --workdir workdirs/landmarks_vgg16 --split test --checkpoint best

The fine-grained presets fine-tune VGG-19 at 448 from ImageNet weights (model.pretrained: a torchvision
file you have), new layers at 10x the learning rate, after a short classifier-only warm-up. The CIFAR presets are
He et al.'s BasicBlock networks; ABN's baselines are its code's (Bottleneck from depth 44): add
--config.model.block=auto to compare with configs/abn.py:cifar100_resnet110.
"""

from configs import common

PRESETS = {
  "": "embedded synthetic data at 64 px, a quarter-width VGG-11-BN from scratch: minutes on a 2-core CPU",
  "detail": "the embedded task where the classes' detail is finer than 64 px resolve (common.detail_task)",
  "cub": "CUB-200-2011 at 448, VGG-19 from ImageNet weights",
  "aircraft": "FGVC-Aircraft (variants) at 448, VGG-19 from ImageNet weights",
  "cars": "Stanford Cars at 448, VGG-19 from ImageNet weights",
  "dogs": "Stanford Dogs at 448, VGG-19 from ImageNet weights",
  "cifar10": "CIFAR-10 at 32, CIFAR ResNet-56 from scratch (SGD 0.1, 300 epochs, x0.1 at 150 and 225)",
  "cifar100": "CIFAR-100 at 32, CIFAR ResNet-110 from scratch (SGD 0.1, 300 epochs, x0.1 at 150 and 225)",
  "landmarks": "the landmark recipe: Google Landmarks v2's 100 largest classes split 70/15/15, ImageNet VGG-16 "
  "with frozen features and a dropout classifier (common.landmark_recipe)",
}


def get_config(arg=None):
  c = common.get_config()
  c.scheme = "baseline"
  if not arg:
    return common.cpu_sized(c)
  if arg == "detail":
    return common.detail_task(c, full_resolution=False)
  if arg == "landmarks":
    return common.landmark_recipe(c)
  common.use_dataset(c, arg)
  if arg in ("cifar10", "cifar100"):
    c.model.backbone = "resnet56" if arg == "cifar10" else "resnet110"
    c.data.batch_size, c.data.eval_batch_size = 128, 500
    c.phases.main = common.phase(epochs=300, lr=0.1, weight_decay=1e-4, new_layer_lr_mult=1.0)
    c.phases.main.schedule.update(kind="step", boundaries=(150, 225), decay=0.1)
    return c
  c.model.backbone, c.model.head, c.model.require_pretrained = "vgg19", "gap", True
  c.data.batch_size, c.data.eval_batch_size = 16, 64
  c.data.augment.rotation = 0.0
  c.phases = {
    "warmup": common.phase(trains="head", epochs=2, lr=0.01),
    "main": common.phase(epochs=40, lr=0.001, weight_decay=5e-4),
  }
  c.phase_order = ("warmup", "main")
  c.phases.main.schedule.warmup_epochs = 1.0
  return c
