"""One training step of a phase through the engine's jitted step (training.steps), on a copy of a model."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from fgattn_jax.training import mesh as mesh_lib
from fgattn_jax.training import steps


def train_once(scheme, model, losses: dict, trains: str, images):
  """images: uint8 (B, H, W, 3) -> (the model after one SGD step of a phase weighting `losses` and training the
  parameter group `trains`, the step's metrics). The model passed in is not changed."""
  model = nnx.clone(model)
  model.train()
  wrt = scheme.groups(model)[trains]
  graphdef, state = nnx.split((model, nnx.Optimizer(model, optax.sgd(0.01), wrt=wrt)))
  mesh = mesh_lib.make_mesh(-1)
  step = steps.make_train_step(scheme, graphdef, wrt, losses, lambda _: 0.01, jnp.float32, mesh)
  b = len(images)
  batch = {"image": np.asarray(images, np.uint8), "label": np.arange(b, dtype=np.int32) % 10, "mask": np.ones(b, bool)}
  # Copies: the step donates its input buffers, which the clone shares with the model passed in.
  leaves, structure = jax.tree.flatten(mesh_lib.replicate(jax.tree.map(jnp.copy, state), mesh))
  leaves, metrics = step(leaves, mesh_lib.to_device(batch, mesh), structure)
  model, _ = nnx.merge(graphdef, jax.tree.unflatten(structure, leaves))
  return model, {k: float(v) for k, v in metrics.items()}


def batch_stats(module) -> list[np.ndarray]:
  """The running statistics of every BatchNorm in a module, as host arrays."""
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(module, nnx.BatchStat))]


def changed(before, after) -> bool:
  return any(not np.array_equal(a, b) for a, b in zip(before, after))
