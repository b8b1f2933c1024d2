"""The training loop, in readable phases: set up, then for each phase of the plan build its optimiser and
step, and run it with logging, evaluation, checkpoints, plateau and interruption handling.

`run(config, workdir)` is what `python -m fgattn_jax.train` calls; it resumes from the workdir's latest
checkpoint when there is one.
"""

from __future__ import annotations

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


def run(config, workdir: str, *, progress: bool = True) -> dict:
  """Trains (or resumes) the run that `config` describes in `workdir`; returns the final evaluation."""
  # --- Set up: devices, data, model, plan, reporting.
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
  # Nothing is written to the workdir before the config has built a model and a plan: a config refused on the way
  # leaves no run behind (a checkpoint's position is read first: it says which layers a resumed run had new).
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
  total_steps = sum(p.steps for p in plan)
  os.makedirs(workdir, exist_ok=True)
  ckpts = ckpts or ckpt_lib.Checkpoints(workdir, config.checkpoint.keep)
  if main_process:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json(indent=2))
    # The classes' names, for predictions on new images where the data set is not (fgattn_jax/predict.py).
    with open(os.path.join(workdir, CLASS_NAMES), "w") as f:
      json.dump(list(train_data.source.class_names), f, indent=0)
  dtype = compute_dtype(config.model.dtype)

  earlier_metrics = os.path.exists(os.path.join(workdir, writers.METRICS_FILE))  # (before the writer makes one)
  writer = writers.MetricWriter(workdir, tensorboard=config.log.tensorboard, enabled=main_process)
  stop = _Stop()

  # --- Resume: the latest checkpoint says which phase and step we are at.
  position = {
    "phase": 0,
    "phase_name": plan[0].name,
    "phase_step": 0,
    "step": 0,
    "best_top1": None,
    "new_layers": [list(p) for p in sorted(new_paths, key=repr)],
  }
  # A checkpoint saved inside a phase without an evaluation holds weights no loss has been computed from yet: the
  # next step's loss confirms them, or condemns them (a diverging run saves the update that diverged).
  unconfirmed = None
  if latest is not None:
    position = {"new_layers": position["new_layers"]} | saved
    position["phase"] = resumed_phase(position, plan)
    unconfirmed = latest if position["phase_step"] > 0 else None
    where = plan[position["phase"]].name if position["phase"] < len(plan) else DONE
    log.warning("resuming %s from step %d (%s)", workdir, position["step"], where)
    lengths = [k for k in changed if re.fullmatch(r"phases\.\w+\.(epochs|steps)", k)]
    if where == DONE and lengths:
      # Its last phase's schedule has run its course (a cosine's rate reached 0): lengthening it now would restart
      # the schedule part-way. The final model is evaluated as it is.
      log.warning(
        "the run in %s had finished all its phases: the new length (%s) does not extend it; to train "
        "longer, start a new --workdir (--config.init_from=%s starts from this run's weights)",
        workdir,
        ", ".join(lengths),
        workdir,
      )
  elif main_process and earlier_metrics:
    log.warning(
      "%s holds the metrics of an earlier run but no checkpoint to resume: training starts at step 0, and "
      "its records follow the earlier ones in %s (a new --workdir keeps them apart)",
      workdir,
      writers.METRICS_FILE,
    )

  bar = writers.Progress(total_steps, initial=position["step"], enabled=progress and main_process)
  # (At least every step when asked for at all: a fraction of an epoch shorter than a step once rounded to 0, off.)
  eval_every = config.eval.every_epochs and max(1, round(config.eval.every_epochs * train_data.steps_per_epoch))
  results = None
  # Compiled programs are kept for the whole run: one evaluation step, and a training step per phase key, which
  # a cycle's later rounds reuse (their phases are the first round's again). Compiling a VGG-19 step takes tens
  # of seconds on a GPU; MA-CNN's and RA-CNN's alternating schedules would otherwise compile it every round.
  model.train()  # the mode every phase trains in (the evaluation step switches its own copy to eval)
  model_graphdef = nnx.graphdef(model)
  eval_step = steps.make_eval_step(scheme, model_graphdef, dtype, mesh)
  train_steps = {}
  try:
    for index in range(position["phase"], len(plan)):
      phase = plan[index]
      resuming = latest is not None and index == position["phase"]
      if resuming and position["phase_step"] == 0:
        # Saved at a phase boundary: the state holds the previous phase's optimiser; take the model only.
        ckpt_lib.load_model_weights(workdir, model, latest)
      if not (resuming and position["phase_step"] > 0):  # the phase starts (is not resumed inside)
        # (Every process reads the same sample, whole batches: what a phase sets up from it, MA-CNN's k-means
        # targets, must be the same on every process; spread over every class, as the data may be stored by class.)
        scheme.before_phase(
          phase.key,
          model,
          lambda: data.sample(config, config.data.train_split, SAMPLE_BATCHES * config.data.eval_batch_size),
        )
        # The plateau rule's window losses travel in the checkpoint's position: a phase resumed inside ends where
        # the uninterrupted one would have.
        position["plateau"] = []
      model.train()
      wrt = groups[phase.trains]
      tx, lr = optim.make_optimizer(phase.optim, phase.schedule, phase.steps, train_data.steps_per_epoch, new_paths)
      optimizer = nnx.Optimizer(model, tx, wrt=wrt)
      graphdef, state = nnx.split((model, optimizer))
      if nnx.graphdef(model) != model_graphdef:  # a phase changed the model's structure: compile afresh
        model_graphdef = nnx.graphdef(model)
        eval_step = steps.make_eval_step(scheme, model_graphdef, dtype, mesh)
        train_steps.clear()
      if phase.key not in train_steps:
        train_steps[phase.key] = graphdef, steps.make_train_step(scheme, graphdef, wrt, phase.losses, lr, dtype, mesh)
      # The first round's graph definition: the same model and an optimiser of the same config (only the optax
      # objects are new), so the state fits it and the compiled step is reused.
      graphdef, train_step = train_steps[phase.key]
      state = mesh_lib.replicate(state, mesh)
      if resuming:
        if position["phase_step"] > 0:
          state, _, data_state = ckpts.restore(latest, state)
        else:
          data_state = ckpts.restore_data_state(latest)
        if data_state is not None:
          train_data.set_state(data_state)
        elif position["step"]:
          log.warning(
            "no input position was saved with the checkpoint at step %d (%s missing): the input pipeline "
            "starts again from its beginning, so this run will see other batches than an uninterrupted one",
            latest,
            os.path.join(ckpts.data_dir, f"{latest}.json"),
          )
      # The step takes and returns the state's leaves (steps.py: flattening an nnx State per call costs ms); the
      # donated buffers of `state` must not be read again: checkpoints and evaluation rebuild it from the leaves.
      leaves, structure = jax.tree.flatten(state)
      del state

      def current_state():
        return jax.tree.unflatten(structure, leaves)

      # (setdefault: a checkpoint written before the position had them)
      plateau = phases.Plateau(phase.plateau_patience, phase.plateau_min_delta, position.setdefault("plateau", []))
      sums, count = None, 0

      def check_and_log():
        """Pulls the metrics since the last call to the host; stops the run on a non-finite loss."""
        nonlocal sums, count
        if not count:
          return None
        host = {k: float(v) / count for k, v in jax.device_get(sums).items()}
        if host.pop("nonfinite") > 0:
          diverged(f"The loss became NaN or infinite in phase {phase.name} before step {position['step']}.")
        writer.write(position["step"], host, split="train", phase=phase.name)
        sums, count = None, 0
        return host

      def diverged(what: str):
        """Stops the run, removing a checkpoint whose weights gave the non-finite loss (the last good one stays)."""
        nonlocal unconfirmed
        removed = ""
        if unconfirmed is not None:
          ckpts.discard(unconfirmed)
          removed, unconfirmed = f" (removed the checkpoint at step {unconfirmed}: its weights gave it)", None
        good = ckpts.latest_step()
        kept = (
          f"the last good checkpoint, step {good}, is intact in {ckpts.dir}{removed}"
          if good is not None
          else f"no good checkpoint was saved yet{removed}"
        )
        raise NonFiniteLoss(
          f"{what} The run stopped; {kept}. Lower phases.{phase.key}.optim.lr or set "
          f"phases.{phase.key}.optim.clip_norm, and run again to resume from it."
        )

      def save(eval_metrics=None):
        nonlocal unconfirmed
        check_and_log()  # never save a state whose loss was not finite
        ckpts.save(position["step"], current_state(), position, train_data.get_state(), eval_metrics)
        # An evaluation has just run the saved weights; otherwise the next step's loss will tell.
        unconfirmed = None if eval_metrics else position["step"]

      def run_eval():
        nonlocal results
        try:
          results = evaluate(scheme, eval_step, current_state()[0], eval_data, mesh)
        except evaluation.NonFiniteLogits:
          diverged(
            f"The model's outputs became NaN or infinite in phase {phase.name} by step {position['step']} "
            "(its evaluation)."
          )
        main = results[scheme.main_output]
        for name, r in results.items():
          writer.write(
            position["step"],
            {k: r[k] for k in ("top1", "top5", "mean_class_accuracy", "ece", "nll")},
            split="eval" if name == scheme.main_output else f"eval/{name}",
            phase=phase.name,
          )
        if position["best_top1"] is None or main["top1"] > position["best_top1"]:
          position["best_top1"] = main["top1"]
        return {"top1": main["top1"]}

      # --- The phase's steps.
      it = iter(train_data)
      while position["phase_step"] < phase.steps:
        # A stop is looked for before every step on one process; with several, where the step's metrics have just
        # been pulled to the host (the collective would otherwise cost each step its pipelining).
        if (pc == 1 or position["phase_step"] == 0 or position["step"] % config.log.every_steps == 0) and stop.agreed():
          # (At a phase's start the previous phase's end is saved already, with its evaluation: saving it again
          # would drop that evaluation, and with it the step's claim to be the best.)
          # (Nor is a step saved again: its orbax folder would be deleted first, and a SIGKILL during the new write
          # would leave no checkpoint of it.)
          if ckpts.latest_step() != position["step"]:
            save()
          raise Interrupted(stop.requested)
        leaves, metrics = train_step(leaves, mesh_lib.to_device(next(it), mesh), structure)
        if unconfirmed is not None:  # the first loss from a saved state's weights (one wait for the device per save)
          if float(metrics["nonfinite"]):
            diverged(
              f"The loss became NaN or infinite in phase {phase.name} at step {position['step'] + 1}, the "
              "first from the saved weights."
            )
          unconfirmed = None
        sums = metrics if sums is None else _accumulate(sums, metrics)
        count += 1
        position["step"] += 1
        position["phase_step"] += 1
        step = position["step"]
        if step % config.log.every_steps == 0 or position["phase_step"] == phase.steps:
          host = check_and_log()
          bar.update(
            step,
            phase=phase.name,
            images_per_step=config.data.batch_size,
            **{k: host[k] for k in ("loss", "accuracy") if k in host},
          )
          if plateau.stalled(host["loss"]):
            log.warning("phase %s: loss plateaued at step %d; moving on", phase.name, step)
            break
        if position["phase_step"] == phase.steps:
          break  # the end of the phase evaluates and saves
        if eval_every and step % eval_every == 0:
          save(run_eval())
        elif step % config.checkpoint.every_steps == 0:
          save()

      # --- End of the phase: evaluate, save; the next phase starts from this model.
      position.update(phase=index + 1, phase_name=plan[index + 1].name if index + 1 < len(plan) else DONE, phase_step=0)
      save(run_eval())
      model, _ = nnx.merge(graphdef, current_state())
      latest = None
    if results is None:  # the run had finished before: evaluate its final model
      ckpt_lib.load_model_weights(workdir, model, latest)
      results = evaluate(scheme, eval_step, mesh_lib.replicate(nnx.state(model), mesh), eval_data, mesh)
  finally:
    bar.close()
    stop.restore()
    ckpts.wait()
    ckpts.close()
    writer.close()
    train_data.close()
  if main_process:
    try:
      writers.plot_curves(workdir)
    except (OSError, ValueError, KeyError, TypeError) as e:  # a damaged metrics.jsonl must not fail a run that saved
      log.warning("no curves drawn: %s", e)
  return results
