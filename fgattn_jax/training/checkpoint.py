"""Checkpoints: orbax, asynchronous, the latest `keep` plus the best by evaluation top-1.

A checkpoint holds the training state (model and optimiser) and where the run stands (phase, step); each
process also writes its own input-pipeline position beside it (data_state/), since every process reads a
different shard. Only states whose loss was finite are saved, and one whose weights then give a non-finite loss is
removed (training.loop).
"""

from __future__ import annotations

import json
import logging
import os

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm

log = logging.getLogger(__name__)


class CheckpointMismatch(ValueError):
  """A checkpoint that does not fit the model asked to load it (another architecture or config)."""


class CheckpointDamaged(FileNotFoundError):
  """A checkpoint (or the input position saved with it) that cannot be read: a damaged or incomplete file."""


def _damaged(directory: str, step: int, steps, e: Exception) -> CheckpointDamaged:
  earlier = [s for s in sorted(steps) if s < step]
  fix = (
    f"move {os.path.join(directory, str(step))} (and data_state/process_*/{step}.json beside it) out of the "
    f"way to resume from step {earlier[-1]}"
    if earlier
    else "train in a new --workdir"
  )
  first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
  return CheckpointDamaged(
    f"The checkpoint at step {step} in {directory} cannot be read ({first}): it is damaged or incomplete; {fix}."
  )


def has_checkpoint(workdir: str) -> bool:
  """Whether workdir holds a saved step (orbax names each step's folder by its number), without opening it."""
  folder = os.path.join(workdir, "checkpoints")
  return os.path.isdir(folder) and any(name.isdigit() for name in os.listdir(folder))


class Checkpoints:
  def __init__(self, workdir: str, keep: int):
    self.dir = os.path.join(os.path.abspath(workdir), "checkpoints")
    self.data_dir = os.path.join(os.path.abspath(workdir), "data_state", f"process_{jax.process_index()}")
    policy = cm.AnyPreservationPolicy(
      [cm.LatestN(keep), cm.BestN(get_metric_fn=lambda m: m["top1"], n=1, keep_checkpoints_without_metrics=False)]
    )
    self.manager = ocp.CheckpointManager(
      self.dir,
      options=ocp.CheckpointManagerOptions(
        preservation_policy=policy,
        enable_async_checkpointing=True,
        # Without best_fn orbax writes no metrics at all, and BestN would have nothing to keep the best by.
        best_fn=lambda m: m["top1"],
        best_mode="max",
      ),
    )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, position: dict, data_state: dict | None, eval_metrics: dict | None = None):
    self.manager.wait_until_finished()  # one save in flight at a time
    if step in self.manager.all_steps():  # saved moments ago (e.g. periodic) and now again at a phase's end
      self.manager.delete(step)
    # A copy of the position: orbax writes it in the background, after the loop has gone on to change its dict (a
    # checkpoint of step 2 was seen to hold step 3, and a resume started one step late).
    position = json.loads(json.dumps(position))
    if data_state is not None:  # first: a checkpoint orbax has committed always has its input position beside it
      os.makedirs(self.data_dir, exist_ok=True)
      tmp = os.path.join(self.data_dir, f".{step}.json.tmp")
      with open(tmp, "w") as f:
        json.dump(data_state, f)
      os.replace(tmp, os.path.join(self.data_dir, f"{step}.json"))
    self.manager.save(
      step,
      args=ocp.args.Composite(state=ocp.args.StandardSave(state), position=ocp.args.JsonSave(position)),
      metrics=eval_metrics,
      force=True,
    )
    self._prune_data_states(keep={step, *self.manager.all_steps()})

  def _prune_data_states(self, keep):
    """Removes this process's input positions of checkpoints orbax no longer keeps, and a write a kill cut short."""
    if not os.path.isdir(self.data_dir):
      return
    for name in os.listdir(self.data_dir):
      stem = name.removesuffix(".json")
      if name.startswith(".") or (stem.isdigit() and int(stem) not in keep):
        os.remove(os.path.join(self.data_dir, name))

  def discard(self, step: int):
    """Deletes the checkpoint at `step` and this process's data position saved with it."""
    self.manager.wait_until_finished()
    if step in self.manager.all_steps():
      self.manager.delete(step)
    path = os.path.join(self.data_dir, f"{step}.json")
    if os.path.exists(path):
      os.remove(path)

  def restore(self, step: int, state_like):
    """-> (state placed like `state_like`, position dict, this process's data state or None)."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_like)
    try:
      r = self.manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), position=ocp.args.JsonRestore())
      )
    except ValueError as e:
      if "not compatible with the stored shape" not in str(e):
        raise
      raise CheckpointMismatch(
        f"The checkpoint at step {step} in {self.dir} does not fit this model: {str(e).split('.')[0]}. Another "
        f"architecture or config, or {OLD_KERNELS}: train in a new workdir."
      ) from e
    except Exception as e:  # noqa: BLE001 - a truncated or missing file: orbax and TensorStore raise many kinds
      raise _damaged(self.dir, step, self.manager.all_steps(), e) from None
    return r.state, r.position, self.restore_data_state(step)

  def restore_data_state(self, step: int) -> dict | None:
    return read_data_state(os.path.dirname(self.data_dir), jax.process_index(), step)

  def restore_position(self, step: int) -> dict:
    try:
      return self.manager.restore(step, args=ocp.args.Composite(position=ocp.args.JsonRestore())).position
    except Exception as e:  # noqa: BLE001
      raise _damaged(self.dir, step, self.manager.all_steps(), e) from None

  def best_step(self) -> int | None:
    scored = [(m["top1"], s) for s in self.manager.all_steps() if (m := self.manager.metrics(s)) and "top1" in m]
    return max(scored)[1] if scored else self.latest_step()

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()


def read_data_state(folder: str, process: int, step: int) -> dict | None:
  """A process's input position saved at `step` in `folder` (a workdir's data_state/), or None. A process the run
  was not saved with (resumed on more hosts) takes process 0's: positions count batches, and every process's batch
  k is its share of the global batch k (data_pipelines.pipeline.build), so any process's position is every one's."""
  path = os.path.join(folder, f"process_{process}", f"{step}.json")
  first = os.path.join(folder, "process_0", f"{step}.json")
  if not os.path.exists(path):
    if not os.path.exists(first):
      return None
    log.warning(
      "no input position of process %d saved at step %d (the run was saved by fewer processes): it "
      "continues from process 0's",
      process,
      step,
    )
    path = first
  try:
    with open(path) as f:
      state = json.load(f)
  except ValueError as e:
    raise CheckpointDamaged(
      f"{path} is not the input position it should be ({e}): delete it to resume with the input "
      f"pipeline at its start, or move checkpoints/{step} out of the way to resume from the "
      "checkpoint before it."
    ) from None
  if path == first and process != 0:
    state["epoch_skipped"] = []  # the images process 0 could not read, not this one's
  return state


# Why a checkpoint's shapes may not fit a model of the same architecture (layers.Conv).
OLD_KERNELS = (
  "a checkpoint from before 2026-11-30, when convolution kernels were stored (kh, kw, in, out), now (out, kh, kw, in)"
)


def _here(directory: str, step: int):
  """The saved training state's arrays, as a restore target on this process's first device. Without a target orbax
  places each array on the devices that saved it: a run trained on 4 devices (or 2 processes) could then not be
  evaluated, visualised or fine-tuned from on 1."""
  meta = ocp.StandardCheckpointer().metadata(os.path.join(directory, str(step), "state"))
  meta = getattr(meta, "item_metadata", meta)  # (orbax versions differ: StepMetadata or the tree itself)
  here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=here), meta)


def load_model_weights(workdir: str, model, step: int | str = "latest") -> int:
  """Fills `model`'s parameters and statistics from a run's checkpoint (any phase, any optimiser).

  step: 'latest', 'best' or a step number. Returns the step loaded."""
  from flax import nnx

  # Reads the saved tree as it is (its own structure, not the model's), so the optimiser it was saved with does not
  # matter, and onto this process's first device, so the devices and processes it was saved from do not either.
  ckpts = Checkpoints(workdir, keep=1_000_000)
  try:
    steps = ckpts.manager.all_steps()
    if not steps:
      raise FileNotFoundError(
        f"No checkpoint in {ckpts.dir}: train a run there first (a run stopped before its "
        "first checkpoint: run its training command again)."
      )
    chosen = {"latest": ckpts.latest_step, "best": ckpts.best_step}.get(step, lambda: int(step))()
    if chosen not in steps:
      raise FileNotFoundError(f"No checkpoint at step {chosen} in {ckpts.dir}; there are {sorted(steps)}")
    try:
      raw = ckpts.manager.restore(
        chosen, args=ocp.args.Composite(state=ocp.args.StandardRestore(_here(ckpts.dir, chosen)))
      ).state["0"]
    except Exception as e:  # noqa: BLE001
      raise _damaged(ckpts.dir, chosen, steps, e) from None
  finally:
    ckpts.close()
  for path, var in nnx.to_flat_state(nnx.state(model)):  # parameters, statistics and dropout keys
    node = raw
    for k in path:
      key = str(k)
      if not isinstance(node, dict) or key not in node:
        raise CheckpointMismatch(
          f"The checkpoint in {workdir} has no {'/'.join(map(str, path))}: another architecture or config?"
        )
      node = node[key]
    value = node["value"] if isinstance(node, dict) else node
    if value.shape != var.get_value().shape:
      raise CheckpointMismatch(
        f"{'/'.join(map(str, path))}: checkpoint shape {value.shape}, model "
        f"{var.get_value().shape} (another architecture or config, or {OLD_KERNELS})"
      )
    var.set_value(jax.numpy.asarray(value, var.get_value().dtype))
  return chosen
