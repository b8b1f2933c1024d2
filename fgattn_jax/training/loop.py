"""The training loop: `run(config, workdir)`, what `python -m fgattn_jax.train` calls, in named parts:

  _set_up   devices, data, model, pretrained weights, the plan, the workdir's files, the metric writer
  _resume   the resume policy, all of it: where a workdir's latest checkpoint left the run, and what it restores
  _Phase    one phase of the plan: its optimiser and compiled step, its steps with logging, evaluation,
            checkpoints, the plateau rule and interruption; at its end an evaluation and a checkpoint
  evaluate  one pass over an evaluation pipeline

The state a run carries from phase to phase is a _Run; a phase's own (its step's arrays, the metrics not yet
logged) lives on its _Phase.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import signal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from data_pipelines import pipeline as data
from fgattn_jax import config as config_lib
from fgattn_jax import evaluation
from fgattn_jax.errors import ConfigError
from fgattn_jax.models.registry import compute_dtype
from fgattn_jax.schemes import get_scheme
from fgattn_jax.training import checkpoint as ckpt_lib
from fgattn_jax.training import mesh as mesh_lib
from fgattn_jax.training import optim, phases, steps, writers

log = logging.getLogger(__name__)
# The running sums of the step's metrics, added on the device in one call per step (not one per metric).
_accumulate = jax.jit(lambda sums, metrics: jax.tree.map(jnp.add, sums, metrics))


class NonFiniteLoss(RuntimeError):
  pass


class Interrupted(Exception):
  pass


def evaluate(scheme, eval_step, model_state, pipe, mesh) -> dict[str, dict]:
  """One pass over an evaluation pipeline -> {output name: evaluation.Accumulator result}."""
  accs, names = {}, pipe.source.class_names
  leaves, structure = jax.tree.flatten(model_state)  # once, not per batch (steps.py)
  for batch in pipe:
    on_device = mesh_lib.to_device(batch, mesh)
    outputs = eval_step(leaves, on_device, structure)
    mask = mesh_lib.to_host(on_device["mask"])  # every process scores the whole global batch
    for name, logits in outputs.items():
      k = logits.shape[-1]
      acc = accs.setdefault(name, evaluation.Accumulator(k, names if len(names) == k else None))
      acc.add(mesh_lib.to_host(logits), mesh_lib.to_host(scheme.labels_for(name, on_device)), mask)
  return {name: acc.result() for name, acc in accs.items()}


class _Stop:
  """SIGTERM/SIGINT: finish the current step, save, exit. A second SIGINT interrupts at once."""

  def __init__(self):
    self.requested = None
    self._old = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread (e.g. inside a test runner thread): no handler
        pass

  def _handle(self, signum, frame):
    if self.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.requested = signal.Signals(signum).name

  def agreed(self) -> str | None:
    """Whether any process was asked to stop (-> what it was asked by), asked of every process at once. With several
    processes the signal reaches each at a different step (a scheduler's skew is often more than a step): one that
    stopped alone would wait in its checkpoint's barriers while the others wait in the next step's collectives, for
    ever. Every process calls this at the same steps."""
    if jax.process_count() == 1:
      return self.requested
    from jax.experimental import multihost_utils

    mine = signal.Signals[self.requested].value if self.requested else 0
    signum = int(multihost_utils.process_allgather(np.int32(mine)).max())
    if signum and self.requested is None:
      self.requested = f"{signal.Signals(signum).name} (to another process)"
    return self.requested if signum else None

  def restore(self):
    for sig, old in self._old.items():
      signal.signal(sig, old)


# The settings that make a run's checkpoints what they are: a run resumed with other values of these could not
# load them, or would continue another plan. Everything else (data paths, learning rates, logging) may change.
FIXED_ON_RESUME = (
  "scheme",
  "model.backbone",
  "model.width",
  "model.head",
  "model.block",
  "data.num_classes",
  "phase_order",
  "cycles",
  "abn",
  "macnn",
  "racnn",
)


def check_resumable(config, workdir: str) -> list[str]:
  """Refuses to resume a workdir's checkpoints under settings that do not fit them (before anything is written);
  -> the keys whose values changed (logged)."""
  import ml_collections

  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path) or not ckpt_lib.has_checkpoint(workdir):
    return []

  def flat(cfg):  # dotted key -> value, both sides read back from JSON (tuples as lists)
    return {k: config_lib.lookup(cfg, k) for k in config_lib.flat_keys(cfg)}

  try:
    with open(path) as f:
      old = flat(ml_collections.ConfigDict(config_lib.backfill(json.load(f))))
  except ValueError as e:
    raise ConfigError(
      f"{path} is not readable ({e}), so whether this config fits the checkpoints beside it cannot be "
      "checked: restore it (or delete it if this command's settings are the run's own)."
    ) from None
  new = flat(ml_collections.ConfigDict(json.loads(config.to_json())))
  nan = float("nan")  # a NaN (e.g. a fault-injection loss weight) equals itself here; 8 (an older run's) equals 8.0
  changed = sorted(
    k
    for k in old.keys() | new.keys()
    if repr(old.get(k, nan)) != repr(new.get(k, nan)) and old.get(k, nan) != new.get(k, nan)
  )
  fixed = [k for k in changed if any(k == f or k.startswith(f + ".") for f in FIXED_ON_RESUME)]
  if fixed:
    what = "; ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in fixed[:4])
    raise ConfigError(
      f"{workdir} holds checkpoints of another run ({what}{'; ...' if len(fixed) > 4 else ''}). "
      "Train in a new --workdir, or resume this one with its own settings (its config.json)."
    )
  if changed:
    log.warning(
      "resuming %s with changed settings: %s",
      workdir,
      ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in changed),
    )
  return changed


DONE = "all phases done"  # a position's phase_name once the last phase has ended
# The sample a phase sets itself up from (Scheme.before_phase: MA-CNN's channel groups), in evaluation batches.
SAMPLE_BATCHES = 4
CLASS_NAMES = "class_names.json"  # in the workdir: the training split's class names, in label order


def resumed_phase(position: dict, plan) -> int:
  """The plan's index of the phase a checkpoint was saved in, found by its name: a phase whose length was set to
  0 since then is not in the plan, and every later phase's index has moved."""
  name = position.get("phase_name")
  if name is None:  # saved before positions named their phase
    return position["phase"]
  if name == DONE:
    return len(plan)
  names = [p.name for p in plan]
  if name not in names:
    raise ConfigError(
      f"The latest checkpoint was saved in phase {name}, which this config no longer runs (its "
      "length is 0): resume with that phase's length as it was (the workdir's config.json), or "
      "train in a new --workdir."
    )
  return names.index(name)


@dataclasses.dataclass
class _Run:
  """What the loop carries from phase to phase (set up once by _set_up; the phases update it)."""

  config: object
  workdir: str
  scheme: object
  model: nnx.Module  # replaced by each phase's trained model
  mesh: object
  dtype: object
  train_data: object
  eval_data: object
  plan: list
  groups: dict
  new_paths: frozenset  # the layers the pretrained file did not fill: they learn new_layer_lr_mult faster
  ckpts: ckpt_lib.Checkpoints
  writer: writers.MetricWriter
  changed: list  # the settings that differ from the resumed run's (check_resumable)
  progress: bool  # show a progress bar
  eval_every: int  # steps between evaluations inside a phase (0: only at its end)
  position: dict  # where the run stands; saved with every checkpoint (see _resume)
  saved_position: dict  # the latest checkpoint's position ({} without one)
  latest: int | None = None  # the checkpoint being resumed, until its phase has started again
  unconfirmed: int | None = None  # a checkpoint no loss has been computed from yet (see _Phase.save)
  results: dict | None = None  # the latest evaluation
  stop: _Stop | None = None
  bar: writers.Progress | None = None
  eval_step: object = None
  model_graphdef: object = None
  train_steps: dict = dataclasses.field(default_factory=dict)  # phase key -> (graphdef, compiled step)

  def close(self):
    if self.bar is not None:
      self.bar.close()
    if self.stop is not None:
      self.stop.restore()
    self.ckpts.wait()
    self.ckpts.close()
    self.writer.close()
    self.train_data.close()


def run(config, workdir: str, *, progress: bool = True) -> dict:
  """Trains (or resumes) the run that `config` describes in `workdir`; returns the final evaluation."""
  r = _set_up(config, workdir, progress)
  try:
    r.stop = _Stop()
    _resume(r)
    r.bar = writers.Progress(
      sum(p.steps for p in r.plan),
      initial=r.position["step"],
      enabled=r.progress and jax.process_index() == 0,
    )
    # Compiled programs are kept for the whole run: one evaluation step, and a training step per phase key, which
    # a cycle's later rounds reuse (their phases are the first round's again). Compiling a VGG-19 step takes tens
    # of seconds on a GPU; MA-CNN's and RA-CNN's alternating schedules would otherwise compile it every round.
    r.model.train()  # the mode every phase trains in (the evaluation step switches its own copy to eval)
    r.model_graphdef = nnx.graphdef(r.model)
    r.eval_step = steps.make_eval_step(r.scheme, r.model_graphdef, r.dtype, r.mesh)
    for index in range(r.position["phase"], len(r.plan)):
      _Phase(r, index).train()
    if r.results is None:  # the run had finished before: evaluate its final model
      ckpt_lib.load_model_weights(workdir, r.model, r.latest)
      r.results = evaluate(r.scheme, r.eval_step, mesh_lib.replicate(nnx.state(r.model), r.mesh), r.eval_data, r.mesh)
  finally:
    r.close()
  if jax.process_index() == 0:
    try:
      writers.plot_curves(workdir)
    except (OSError, ValueError, KeyError, TypeError) as e:  # a damaged metrics.jsonl must not fail a run that saved
      log.warning("no curves drawn: %s", e)
  return r.results


def _set_up(config, workdir: str, progress: bool) -> _Run:
  """Devices, data, model, weights, plan, the workdir's files and the reporting. Nothing is written to the workdir
  before the config has built a model and a plan: a config refused on the way leaves no run behind."""
  # (A run that resumes has every weight in its checkpoint.)
  if config.model.require_pretrained and not config.model.pretrained and not ckpt_lib.has_checkpoint(workdir):
    raise ConfigError(
      f"This config fine-tunes {config.model.backbone} from ImageNet weights: pass the torchvision "
      f"file you have, --config.model.pretrained=/path/to/{config.model.backbone}.pth (or "
      ".safetensors), or train from scratch with --config.model.require_pretrained=false."
    )
  main_process = jax.process_index() == 0
  mesh = mesh_lib.make_mesh(config.mesh.data)
  if config.data.batch_size % mesh.size or config.data.eval_batch_size % mesh.size:
    raise ConfigError(
      f"data.batch_size={config.data.batch_size} and data.eval_batch_size="
      f"{config.data.eval_batch_size} must be multiples of the {mesh.size} devices"
    )
  changed = check_resumable(config, workdir)
  pi, pc = jax.process_index(), jax.process_count()
  train_data = data.build(config, config.data.train_split, pi, pc, training=True)
  eval_data = data.build(config, config.data.eval_split, pi, pc, training=False)

  scheme = get_scheme(config.scheme)
  scheme.check_data(config, train_data.source)
  model = scheme.build(config)
  # A checkpoint's position is read first: it says which layers a resumed run had new.
  ckpts = ckpt_lib.Checkpoints(workdir, config.checkpoint.keep) if ckpt_lib.has_checkpoint(workdir) else None
  latest = ckpts.latest_step() if ckpts else None
  saved = ckpts.restore_position(latest) if latest is not None else {}
  if "new_layers" in saved:
    # A resumed run: its checkpoint holds every weight, and which layers were new to the ImageNet weights (their
    # learning-rate multiplier, and so the optimiser state's structure) travels in its position. The weight file
    # is not read again: it need not be on the machine the run resumes on.
    new_paths = frozenset(tuple(p) for p in saved["new_layers"])
  elif config.model.pretrained:  # (or a run saved before the position held them)
    loaded = scheme.load_pretrained(model, config.model.pretrained)
    new_paths = frozenset(p for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param)) if p not in loaded)
  else:
    new_paths = frozenset()
  if config.init_from:
    ckpt_lib.load_model_weights(config.init_from, model)
  groups = scheme.groups(model)
  plan = phases.plan(config, train_data.steps_per_epoch, scheme.loss_names, groups)
  os.makedirs(workdir, exist_ok=True)
  ckpts = ckpts or ckpt_lib.Checkpoints(workdir, config.checkpoint.keep)
  if main_process:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json(indent=2))
    # The classes' names, for predictions on new images where the data set is not (fgattn_jax/predict.py).
    with open(os.path.join(workdir, CLASS_NAMES), "w") as f:
      json.dump(list(train_data.source.class_names), f, indent=0)

  earlier_metrics = os.path.exists(os.path.join(workdir, writers.METRICS_FILE))  # (before the writer makes one)
  writer = writers.MetricWriter(workdir, tensorboard=config.log.tensorboard, enabled=main_process)
  position = {
    "phase": 0,
    "phase_name": plan[0].name,
    "phase_step": 0,
    "step": 0,
    "best_top1": None,
    "new_layers": [list(p) for p in sorted(new_paths, key=repr)],
  }
  if latest is None and main_process and earlier_metrics:
    log.warning(
      "%s holds the metrics of an earlier run but no checkpoint to resume: training starts at step 0, and "
      "its records follow the earlier ones in %s (a new --workdir keeps them apart)",
      workdir,
      writers.METRICS_FILE,
    )
  # (At least every step when asked for at all: a fraction of an epoch shorter than a step once rounded to 0, off.)
  eval_every = config.eval.every_epochs and max(1, round(config.eval.every_epochs * train_data.steps_per_epoch))
  return _Run(
    config=config,
    workdir=workdir,
    scheme=scheme,
    model=model,
    mesh=mesh,
    dtype=compute_dtype(config.model.dtype),
    train_data=train_data,
    eval_data=eval_data,
    plan=plan,
    groups=groups,
    new_paths=new_paths,
    ckpts=ckpts,
    writer=writer,
    changed=changed,
    progress=progress,
    eval_every=eval_every,
    position=position,
    saved_position=saved,
    latest=latest,
  )


def _resume(r: _Run) -> None:
  """The resume policy, all of it. A workdir with a checkpoint resumes from its latest:

  - where: the checkpoint's position names its phase (found by name in today's plan: a phase set to length 0 since
    is skipped), the step in that phase and the global step; a run whose phases were all done is evaluated again,
    not extended (its schedules have run their course: a longer last phase would restart one part-way).
  - what: inside a phase, the model, the optimiser, the input pipeline's position and the plateau rule's window,
    so that the run continues as if never stopped; at a phase's boundary, the model only (the next phase builds
    its own optimiser). Which layers were new to the pretrained weights travels in the position: the weight file
    is not read again.
  - with which settings: check_resumable refused those the checkpoints cannot fit (FIXED_ON_RESUME) before
    anything was written; the others take effect and are logged.
  - trust: a checkpoint saved inside a phase without an evaluation holds weights no loss was computed from yet:
    the first step's loss confirms them or condemns them (_Phase.diverged removes it)."""
  if r.latest is None:
    return
  r.position = {"new_layers": r.position["new_layers"]} | r.saved_position
  r.position["phase"] = resumed_phase(r.position, r.plan)
  r.unconfirmed = r.latest if r.position["phase_step"] > 0 else None
  where = r.plan[r.position["phase"]].name if r.position["phase"] < len(r.plan) else DONE
  log.warning("resuming %s from step %d (%s)", r.workdir, r.position["step"], where)
  lengths = [k for k in r.changed if re.fullmatch(r"phases\.\w+\.(epochs|steps)", k)]
  if where == DONE and lengths:
    log.warning(
      "the run in %s had finished all its phases: the new length (%s) does not extend it; to train "
      "longer, start a new --workdir (--config.init_from=%s starts from this run's weights)",
      r.workdir,
      ", ".join(lengths),
      r.workdir,
    )


class _Phase:
  """One phase of the plan: its optimiser and compiled step, its steps with logging, evaluation, checkpoints,
  the plateau rule and interruption, and at its end an evaluation and a checkpoint."""

  def __init__(self, r: _Run, index: int):
    self.r, self.index, self.phase = r, index, r.plan[index]
    position, phase = r.position, self.phase
    resuming = r.latest is not None and index == position["phase"]
    if resuming and position["phase_step"] == 0:
      # Saved at a phase boundary: the state holds the previous phase's optimiser; take the model only.
      ckpt_lib.load_model_weights(r.workdir, r.model, r.latest)
    if not (resuming and position["phase_step"] > 0):  # the phase starts (is not resumed inside)
      # (Every process reads the same sample, whole batches: what a phase sets up from it, MA-CNN's k-means
      # targets, must be the same on every process; spread over every class, as the data may be stored by class.)
      config = r.config
      r.scheme.before_phase(
        phase.key,
        r.model,
        lambda: data.sample(config, config.data.train_split, SAMPLE_BATCHES * config.data.eval_batch_size),
      )
      # The plateau rule's window losses travel in the checkpoint's position: a phase resumed inside ends where
      # the uninterrupted one would have.
      position["plateau"] = []
    r.model.train()
    wrt = r.groups[phase.trains]
    trains_pretrained = any(p not in r.new_paths for p, _ in nnx.to_flat_state(nnx.state(r.model, wrt)))
    tx, lr = optim.make_optimizer(
      phase.optim, phase.schedule, phase.steps, r.train_data.steps_per_epoch, r.new_paths, trains_pretrained
    )
    optimizer = nnx.Optimizer(r.model, tx, wrt=wrt)
    graphdef, state = nnx.split((r.model, optimizer))
    if nnx.graphdef(r.model) != r.model_graphdef:  # a phase changed the model's structure: compile afresh
      r.model_graphdef = nnx.graphdef(r.model)
      r.eval_step = steps.make_eval_step(r.scheme, r.model_graphdef, r.dtype, r.mesh)
      r.train_steps.clear()
    if phase.key not in r.train_steps:
      r.train_steps[phase.key] = (
        graphdef,
        steps.make_train_step(r.scheme, graphdef, wrt, phase.losses, lr, r.dtype, r.mesh),
      )
    # The first round's graph definition: the same model and an optimiser of the same config (only the optax
    # objects are new), so the state fits it and the compiled step is reused.
    self.graphdef, self.train_step = r.train_steps[phase.key]
    state = mesh_lib.replicate(state, r.mesh)
    if resuming:
      if position["phase_step"] > 0:
        state, _, data_state = r.ckpts.restore(r.latest, state)
      else:
        data_state = r.ckpts.restore_data_state(r.latest)
      if data_state is not None:
        r.train_data.set_state(data_state)
      elif position["step"]:
        log.warning(
          "no input position was saved with the checkpoint at step %d (%s missing): the input pipeline "
          "starts again from its beginning, so this run will see other batches than an uninterrupted one",
          r.latest,
          os.path.join(r.ckpts.data_dir, f"{r.latest}.json"),
        )
    # The step takes and returns the state's leaves (steps.py: flattening an nnx State per call costs ms); the
    # donated buffers of `state` must not be read again: checkpoints and evaluation rebuild it from the leaves.
    self.leaves, self.structure = jax.tree.flatten(state)
    # (setdefault: a checkpoint written before the position had them)
    self.plateau = phases.Plateau(phase.plateau_patience, phase.plateau_min_delta, position.setdefault("plateau", []))
    self.sums, self.count = None, 0  # the step metrics since they were last logged, summed on the device

  def state(self):
    return jax.tree.unflatten(self.structure, self.leaves)

  def train(self) -> None:
    """The phase's steps, then its end: evaluate, save; the next phase starts from this model."""
    r, phase, position = self.r, self.phase, self.r.position
    config = r.config
    it, pc = iter(r.train_data), jax.process_count()
    while position["phase_step"] < phase.steps:
      # A stop is looked for before every step on one process; with several, where the step's metrics have just
      # been pulled to the host (the collective would otherwise cost each step its pipelining).
      if (pc == 1 or position["phase_step"] == 0 or position["step"] % config.log.every_steps == 0) and r.stop.agreed():
        # (At a phase's start the previous phase's end is saved already, with its evaluation: saving it again
        # would drop that evaluation, and with it the step's claim to be the best.)
        # (Nor is a step saved again: its orbax folder would be deleted first, and a SIGKILL during the new write
        # would leave no checkpoint of it.)
        if r.ckpts.latest_step() != position["step"]:
          self.save()
        raise Interrupted(r.stop.requested)
      self.leaves, metrics = self.train_step(self.leaves, mesh_lib.to_device(next(it), r.mesh), self.structure)
      if r.unconfirmed is not None:  # the first loss from a saved state's weights (one wait for the device per save)
        if float(metrics["nonfinite"]):
          self.diverged(
            f"The loss became NaN or infinite in phase {phase.name} at step {position['step'] + 1}, the "
            "first from the saved weights."
          )
        r.unconfirmed = None
      self.sums = metrics if self.sums is None else _accumulate(self.sums, metrics)
      self.count += 1
      position["step"] += 1
      position["phase_step"] += 1
      step = position["step"]
      if step % config.log.every_steps == 0 or position["phase_step"] == phase.steps:
        host = self.check_and_log()
        r.bar.update(
          step,
          phase=phase.name,
          images_per_step=config.data.batch_size,
          **{k: host[k] for k in ("loss", "accuracy") if k in host},
        )
        if self.plateau.stalled(host["loss"]):
          log.warning("phase %s: loss plateaued at step %d; moving on", phase.name, step)
          break
      if position["phase_step"] == phase.steps:
        break  # the end of the phase evaluates and saves
      if r.eval_every and step % r.eval_every == 0:
        self.save(self.evaluate())
      elif step % config.checkpoint.every_steps == 0:
        self.save()

    # --- End of the phase: evaluate, save; the next phase starts from this model.
    following = self.index + 1
    name = r.plan[following].name if following < len(r.plan) else DONE
    position.update(phase=following, phase_name=name, phase_step=0)
    self.save(self.evaluate())
    r.model, _ = nnx.merge(self.graphdef, self.state())
    r.latest = None

  def check_and_log(self):
    """Pulls the metrics since the last call to the host; stops the run on a non-finite loss."""
    if not self.count:
      return None
    host = {k: float(v) / self.count for k, v in jax.device_get(self.sums).items()}
    if host.pop("nonfinite") > 0:
      self.diverged(
        f"The loss became NaN or infinite in phase {self.phase.name} before step {self.r.position['step']}."
      )
    self.r.writer.write(self.r.position["step"], host, split="train", phase=self.phase.name)
    self.sums, self.count = None, 0
    return host

  def diverged(self, what: str):
    """Stops the run, removing a checkpoint whose weights gave the non-finite loss (the last good one stays)."""
    r, removed = self.r, ""
    if r.unconfirmed is not None:
      r.ckpts.discard(r.unconfirmed)
      removed, r.unconfirmed = f" (removed the checkpoint at step {r.unconfirmed}: its weights gave it)", None
    good = r.ckpts.latest_step()
    kept = (
      f"the last good checkpoint, step {good}, is intact in {r.ckpts.dir}{removed}"
      if good is not None
      else f"no good checkpoint was saved yet{removed}"
    )
    raise NonFiniteLoss(
      f"{what} The run stopped; {kept}. Lower phases.{self.phase.key}.optim.lr or set "
      f"phases.{self.phase.key}.optim.clip_norm, and run again to resume from it."
    )

  def save(self, eval_metrics=None):
    r = self.r
    self.check_and_log()  # never save a state whose loss was not finite
    r.ckpts.save(r.position["step"], self.state(), r.position, r.train_data.get_state(), eval_metrics)
    # An evaluation has just run the saved weights; otherwise the next step's loss will tell.
    r.unconfirmed = None if eval_metrics else r.position["step"]

  def evaluate(self) -> dict:
    r, position = self.r, self.r.position
    try:
      r.results = evaluate(r.scheme, r.eval_step, self.state()[0], r.eval_data, r.mesh)
    except evaluation.NonFiniteLogits:
      self.diverged(
        f"The model's outputs became NaN or infinite in phase {self.phase.name} by step {position['step']} "
        "(its evaluation)."
      )
    main = r.results[r.scheme.main_output]
    for name, result in r.results.items():
      r.writer.write(
        position["step"],
        {k: result[k] for k in ("top1", "top5", "mean_class_accuracy", "ece", "nll")},
        split="eval" if name == r.scheme.main_output else f"eval/{name}",
        phase=self.phase.name,
      )
    if position["best_top1"] is None or main["top1"] > position["best_top1"]:
      position["best_top1"] = main["top1"]
    return {"top1": main["top1"]}
