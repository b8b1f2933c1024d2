"""Devices, the mesh and moving host batches onto it.

One 'data' axis over every device of every process: the batch is split over it, the training state is
replicated. With several processes (hosts), each feeds its own share of the batch and the global array is
assembled from the local pieces.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from fgattn_jax.config import ConfigError


def initialize_distributed(coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
  """jax.distributed.initialize(): explicit for a hand-launched cluster, automatic on TPU pods and SLURM."""
  if coordinator or num_processes:
    # CPU processes talk over gloo (GPUs and TPUs ignore this); asking for the backend here would start it,
    # which must come after initialize().
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes, process_id)


def make_mesh(data_devices: int = -1) -> jax.sharding.Mesh:
  n = jax.device_count() if data_devices in (-1, 0) else data_devices
  if n > jax.device_count():
    raise ConfigError(f"mesh.data={n} but only {jax.device_count()} devices are visible")
  # Auto axes: the compiler propagates the batch sharding through the model (plain data parallelism), where
  # explicit axes would ask every contraction over the batch (weight gradients) to name its output sharding.
  return jax.make_mesh((n,), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:n])


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def to_device(batch: dict, mesh) -> dict:
  """This process's numpy batch -> global arrays sharded over 'data' (the leading axis)."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


def to_host(x) -> np.ndarray:
  """A global (possibly multi-process) array -> the whole array as numpy on every process."""
  if jax.process_count() == 1:
    return np.asarray(x)
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def replicate(tree, mesh):
  """Host values (every process has the same) -> global arrays replicated on every device of the mesh."""
  sharding = replicated(mesh)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def one(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):  # typed keys travel as their raw data
      data = one(jax.random.key_data(x))
      return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  return jax.tree.map(one, tree)
