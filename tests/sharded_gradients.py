"""Each scheme's loss and gradients over a 2-device mesh against one device, on one synthetic batch; run in a fresh
interpreter with two host devices (tests/test_engine_distributed.py). Prints one JSON line: {scheme: {"loss": [one
device, two], "error": the largest gradient difference over the largest gradient, leaf by leaf}}.

    python tests/sharded_gradients.py SCHEME [SCHEME ...]

In evaluation mode (BatchNorm's running statistics), where nothing couples the examples but the loss's mean: the
two must agree to rounding, and a gather, crop or loss that mixed up the devices' shares of the batch would not.
(In training mode they do not, and need not: BatchNorm's batch sums are added in another order on two devices,
1e-7 apart, which moves RA-CNN's boxes and MA-CNN's crops by as much; max pooling and ReLU then route some
gradients through the other side of a near-tie, and on the synthetic images, flat-coloured, many pooling windows
hold near-ties: RA-CNN's first-step gradients differed by up to 6% between one device and two, and by as much
between two programs computing the same thing on one device.)
"""

import importlib
import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from data_pipelines import pipeline as data  # noqa: E402
from fgattn_jax.ops.images import normalize  # noqa: E402
from fgattn_jax.schemes import get_scheme  # noqa: E402
from fgattn_jax.training import mesh as mesh_lib  # noqa: E402


def tiny(name):
  c = importlib.import_module(f"configs.{name}").get_config()
  c.model.width, c.model.dtype = 1 / 16, "float32"
  c.data.image_size, c.data.resize_size = 32, 36
  c.data.synthetic.num_train, c.data.synthetic.num_test = 16, 8
  c.data.batch_size, c.data.eval_batch_size = 8, 8
  if name == "racnn":
    c.racnn.scale_input = 24
  if name == "macnn":
    c.macnn.part_input = 16
  return c


def compare(name):
  c = tiny(name)
  scheme = get_scheme(name)
  model = scheme.build(c)
  model.eval()
  batch = next(iter(data.build(c, "train", training=False)))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss_and_grads(params, rest, batch):
    def total(p):
      losses, _ = scheme.forward(
        nnx.merge(graphdef, p, rest), normalize(batch["image"], jnp.float32), batch, train=True
      )
      return sum(losses.values())

    return jax.value_and_grad(total)(params)

  results = []
  for devices in (1, 2):
    mesh = mesh_lib.make_mesh(devices)
    step = jax.jit(
      loss_and_grads, in_shardings=(mesh_lib.replicated(mesh), mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh))
    )
    loss, grads = step(params, rest, mesh_lib.to_device(batch, mesh))
    results.append((float(loss), [np.asarray(g) for g in jax.tree.leaves(grads)]))
  (one, g1), (two, g2) = results
  error = max(float(np.abs(a - b).max() / np.abs(a).max()) for a, b in zip(g1, g2) if np.abs(a).max() > 0)
  return {"loss": [one, two], "error": error, "devices": jax.device_count()}


if __name__ == "__main__":
  print(json.dumps({name: compare(name) for name in sys.argv[1:]}))
