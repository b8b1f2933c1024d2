"""Devices, the mesh and moving host batches onto it.

One 'data' axis over every device of every process: the batch is split over it, the training state is
replicated. With several processes (hosts), each feeds its own share of the batch and the global array is
assembled from the local pieces.
"""

from __future__ import annotations

import os
import sys

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from fgattn_jax.errors import ConfigError

JOIN_TIMEOUT_S = 300  # jax.distributed's default


def initialize_distributed(coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
  """jax.distributed.initialize(): explicit for a hand-launched cluster; found by JAX from the environment when
  SLURM's srun or Open MPI's mpirun started several processes; not needed on a TPU pod (its runtime joins the
  hosts)."""
  launcher = None if coordinator or num_processes else cluster_launcher()
  if not (coordinator or num_processes or launcher):
    return
  # CPU processes talk over gloo (GPUs and TPUs ignore this); asking for the backend here would start it, which
  # must come after initialize().
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  # Until every process has joined, jax.distributed waits without a word, then aborts with a message that blames a
  # task that died: say what it waits for.
  if launcher:
    print(
      f"{launcher[0]} started {launcher[1]} processes: this one joins the others, waiting up to "
      f"{JOIN_TIMEOUT_S} s for all of them",
      file=sys.stderr,
      flush=True,
    )
    jax.distributed.initialize(initialization_timeout=JOIN_TIMEOUT_S)
  else:
    print(
      f"process {process_id} of {num_processes}: waiting up to {JOIN_TIMEOUT_S} s for all {num_processes} to "
      f"join at {coordinator}",
      file=sys.stderr,
      flush=True,
    )
    jax.distributed.initialize(coordinator, num_processes, process_id, initialization_timeout=JOIN_TIMEOUT_S)


def cluster_launcher() -> tuple[str, int] | None:
  """(launcher, process count) where SLURM's srun or Open MPI's mpirun started this process as one of several (the
  variables jax.distributed reads to find its peers), else None."""
  env = os.environ
  if (
    all(k in env for k in ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_PROCID", "SLURM_LOCALID"))
    and int(env.get("SLURM_NTASKS", "1")) > 1
  ):
    return "SLURM", int(env["SLURM_NTASKS"])
  if "OMPI_MCA_orte_hnp_uri" in env and int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    return "Open MPI", int(env["OMPI_COMM_WORLD_SIZE"])
  return None


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
