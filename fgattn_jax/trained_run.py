"""A trained run, as the commands that read one (evaluate, visualize, predict) load it: its saved config with the
command line's overrides, its model with a checkpoint's weights, its data and class names; each problem a one-line
error (argparse's exit status 2)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from fgattn_jax import config as config_lib
from fgattn_jax.cli import user_errors

# Keys the checkpoint's shapes were made with: another value builds a model the saved weights do not fit.
# model.dtype is only the compute precision, free to change at evaluation.
FIXED_BY_CHECKPOINT = ("scheme", "data.num_classes", "model.")
FREE_IN_A_RUN = ("model.dtype",)


def read_config(workdir: str):
  """The config a training run saved in workdir (keys added since filled in: config.ADDED_KEYS), locked. A missing
  run is a FileNotFoundError, a file that is no run config a ConfigError."""
  import ml_collections

  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: --workdir must be the folder a training run wrote")
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:  # unreadable, or not JSON
    raise config_lib.ConfigError(
      f"{path} is not a readable run config ({e}): --workdir must be the folder a training run wrote"
    ) from None
  if not isinstance(saved, dict) or not all(k in saved for k in ("scheme", "model", "data")):
    raise config_lib.ConfigError(
      f"{path} is not a run config (no scheme, model and data): --workdir must be the folder a training run wrote"
    )
  cfg = ml_collections.ConfigDict(config_lib.backfill(saved))
  cfg.lock()
  return cfg


def run_config(p: argparse.ArgumentParser, workdir: str, pairs):
  """The config a training run saved in workdir, with --config.KEY=VALUE overrides (e.g. a moved data root);
  a missing run, a wrong key or a key the checkpoint fixes is an argparse error (exit 2, one line)."""
  path = os.path.join(workdir, "config.json")
  try:
    cfg = read_config(workdir)
  except (FileNotFoundError, config_lib.ConfigError) as e:
    p.error(str(e))
  for key, text in pairs:
    if key.startswith(FIXED_BY_CHECKPOINT) and key not in FREE_IN_A_RUN and key in config_lib.flat_keys(cfg):
      p.error(
        f"--config.{key} cannot change in a trained run: its checkpoint holds the model built with it (the run "
        f"in {workdir} was trained with {key}={config_lib.lookup(cfg, key)!r}); train a new run instead"
      )
    try:
      config_lib.override(cfg, key, text)
    except config_lib.ConfigError as e:
      p.error(str(e))
  try:
    config_lib.validate(cfg)
  except config_lib.ConfigError as e:
    p.error(str(e))
  except (AttributeError, KeyError, TypeError) as e:  # a key missing, a value of the wrong type
    p.error(edited(path, e))
  return cfg


def edited(path: str, e: Exception) -> str:
  """The one-line error for a run config that cannot be read as one (edited by hand, or from another version)."""
  import re

  # A locked ConfigDict says a key is missing with the quoted name alone (and maybe a "Did you mean" line), in a
  # KeyError, itself wrapped in an AttributeError for attribute access; any other error is shown as it is.
  message = e
  while isinstance(message, (AttributeError, KeyError)) and message.args:
    message = message.args[0]
  key = re.match(r"'([A-Za-z_]\w*)'(\s*$|\nDid you mean)", str(message))
  what = f"it lacks the key {key.group(1)!r}" if key else f"{type(e).__name__}: {e}"
  return f"{path} does not describe a run this version can build ({what}): restore the file the training run wrote"


def run_class_names(workdir: str, cfg) -> tuple[list[str] | None, str]:
  """A trained run's class names and where they came from: the workdir's list, or the data set's (a run trained
  before workdirs kept them), or none (classes are then numbered)."""
  from data_pipelines import pipeline as data
  from fgattn_jax.training import loop

  path = os.path.join(workdir, loop.CLASS_NAMES)
  if os.path.exists(path):
    with open(path) as f:
      names = json.load(f)
    if len(names) == cfg.data.num_classes:
      return [str(n) for n in names], path
  try:
    names = data.open_source(cfg, cfg.data.eval_split).class_names
  except user_errors() as e:
    return None, f"none: {path} is missing and the data set cannot be opened ({str(e).splitlines()[0]})"
  return list(names), f"the data set ({cfg.data.name or cfg.data.source})"


def load_run(
  p: argparse.ArgumentParser, args, pairs, process_index: int = 0, process_count: int = 1, *, images=None, refuse=None
):
  """A trained run, for the commands that read one (evaluate, visualize, predict): -> namespace(cfg, split, scheme,
  model (the checkpoint's weights), step, pipe (the split's evaluation pipeline, or with `images`, paths of the
  user's own image files or folders, theirs: unlabelled, split 'files'), names (the class names or None), named_by
  (with images: where the names came from)), or None after printing a one-line error (a missing checkpoint, data
  set, image or weights file): the caller exits with 2. refuse(cfg, scheme) -> a reason the command cannot serve
  this run, or None: asked once the model is built, before its checkpoint is read."""
  import types

  import jax

  from data_pipelines import pipeline as data
  from data_pipelines.sources.files import ImageFiles
  from fgattn_jax.schemes import get_scheme
  from fgattn_jax.training import checkpoint as ckpt_lib

  cfg = run_config(p, args.workdir, pairs)
  fit_to_devices(cfg, jax.device_count())
  split = "files" if images else args.split or cfg.data.eval_split
  try:
    scheme = get_scheme(cfg.scheme)
    model = scheme.build(cfg)
  except (config_lib.ConfigError, AttributeError, KeyError, TypeError, ValueError) as e:
    p.error(edited(os.path.join(args.workdir, "config.json"), e))
  if refuse and (reason := refuse(cfg, scheme)):
    p.error(reason)
  names, named_by = run_class_names(args.workdir, cfg) if images else (None, "")
  try:
    step = ckpt_lib.load_model_weights(args.workdir, model, args.checkpoint)
  except user_errors() as e:
    print(f"error: {e}", file=sys.stderr)
    return None
  try:
    source = ImageFiles(images, names or [str(k) for k in range(cfg.data.num_classes)]) if images else None
    pipe = data.build(cfg, split, process_index, process_count, training=False, source=source)
  except user_errors() as e:
    print(f"error: {e}", file=sys.stderr)
    return None
  except (AttributeError, KeyError) as e:  # a data key missing from the run's config
    p.error(edited(os.path.join(args.workdir, "config.json"), e))
  if not images:
    names = pipe.source.class_names
  return types.SimpleNamespace(
    cfg=cfg, split=split, scheme=scheme, model=model, step=step, pipe=pipe, names=names, named_by=named_by
  )


def fit_to_devices(cfg, devices: int) -> None:
  """A trained run's config, evaluated on this machine's devices whichever it was trained on: its mesh.data where
  this machine has that many devices (all of them otherwise), its evaluation batch rounded up to split evenly over
  them (the padding is masked: every example still counts once)."""
  if cfg.mesh.data > devices:
    cfg.mesh.data = -1
  n = devices if cfg.mesh.data in (-1, 0) else cfg.mesh.data
  batch = cfg.data.eval_batch_size
  if batch % n:
    cfg.data.eval_batch_size = -(-batch // n) * n
    logging.getLogger(__name__).warning(
      "data.eval_batch_size=%d does not split over the %d devices: evaluating in batches of %d",
      batch,
      n,
      cfg.data.eval_batch_size,
    )


def eval_program(run):
  """(mesh, the jitted evaluation step, the model's state replicated over the mesh) for a loaded run (load_run)."""
  from flax import nnx

  from fgattn_jax.models.registry import compute_dtype
  from fgattn_jax.training import mesh as mesh_lib
  from fgattn_jax.training import steps

  mesh = mesh_lib.make_mesh(run.cfg.mesh.data)
  eval_step = steps.make_eval_step(run.scheme, nnx.graphdef(run.model), compute_dtype(run.cfg.model.dtype), mesh)
  return mesh, eval_step, mesh_lib.replicate(nnx.state(run.model), mesh)
