"""Command-line pieces shared by train, evaluate and visualize: the config flags, presets in --help, a trained
run's config, logging."""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import sys

from fgattn_jax import config as config_lib


def user_errors() -> tuple:
  """Errors that mean a wrong setting or missing file, not a bug: shown as one line, no traceback."""
  from data_pipelines.sources.base import DataError
  from fgattn_jax.models.pretrained import WeightImportError
  from fgattn_jax.training.checkpoint import CheckpointMismatch

  return (DataError, WeightImportError, FileNotFoundError, config_lib.ConfigError, CheckpointMismatch)


# The repository's configs/, beside the package: what --help lists when run outside the repository root.
CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(config_lib.__file__))), "configs")

# Keys the checkpoint's shapes were made with: another value builds a model the saved weights do not fit.
# model.dtype is only the compute precision, free to change at evaluation.
FIXED_BY_CHECKPOINT = ("scheme", "data.num_classes", "model.")
FREE_IN_A_RUN = ("model.dtype",)


def presets_help(config_arg: str | None) -> str:
  """Presets of the config given with --config, or of every config in ./configs (else the repository's)."""
  if config_arg:
    paths = [config_arg.partition(":")[0]]
  else:
    paths = sorted(glob.glob(os.path.join("configs", "*.py"))) or sorted(glob.glob(os.path.join(CONFIGS, "*.py")))
  lines = []
  for path in paths:
    try:
      presets = config_lib.presets(path)
    except Exception:  # noqa: BLE001 - a broken config file should not break --help
      continue
    if presets:
      lines.append(f"{path}:")
      lines += [f"  {(':' + name) if name else '(bare name)':<14} {text}" for name, text in presets.items()]
  return "presets:\n" + "\n".join(lines) if lines else ""


def parser(prog: str, description: str, argv) -> argparse.ArgumentParser:
  config_arg = next(
    (
      a.partition("=")[2] or (argv[i + 1] if i + 1 < len(argv) else None)
      for i, a in enumerate(argv)
      if a.split("=")[0] == "--config"
    ),
    None,
  )
  p = argparse.ArgumentParser(
    prog=prog,
    description=description,
    epilog=presets_help(config_arg),
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  return p


def parse(p: argparse.ArgumentParser, argv):
  """-> (args, [(key, text) overrides]); unknown flags other than --config.KEY are errors."""
  try:
    pairs, rest = config_lib.split_overrides(list(argv))
  except config_lib.ConfigError as e:
    p.error(str(e))
  return p.parse_args(rest), pairs


def add_checkpoint_arg(p: argparse.ArgumentParser) -> None:
  """--checkpoint of the commands that read a run. The latest by default: the trained model, which the training
  run's summary reports; 'best' ranks every evaluation of every phase, and in an alternating schedule may pick one
  from before its last phase (MA-CNN's before its part streams trained)."""
  p.add_argument(
    "--checkpoint",
    default="latest",
    type=checkpoint_arg,
    help="'latest' (the trained model: default), 'best' (the highest evaluation top-1 of any phase, "
    "possibly before the last) or a step number",
  )


def check_out(p: argparse.ArgumentParser, path: str | None, *, folder: bool = True, default: str | None = None) -> None:
  """--out, checked before any work: a folder (or with folder=False a file) that can be made and written there,
  i.e. neither it (as a folder) nor a folder above it is an existing file, a file is not an existing folder, and
  the nearest existing folder is writable. Without --out, the command's `default` folder is checked likewise (a run
  on a read-only disk: the results would be computed, then lost)."""
  if path is None and default is None:
    return
  flag = f"--out {path}" if path is not None else f"the default output folder {default} (give --out DIR)"
  path = default if path is None else path
  head = os.path.abspath(path) if folder else os.path.dirname(os.path.abspath(path))
  if not folder and os.path.isdir(path):
    p.error(f"--out {path} is a folder: give a file name (e.g. {os.path.join(path, 'predictions.csv')})")
  while not os.path.exists(head):
    head = os.path.dirname(head)
  if not os.path.isdir(head):
    p.error(f"{flag}: {head} is a file, not a folder")
  if not os.access(head, os.W_OK):
    p.error(f"{flag}: {head} is not writable")


def checkpoint_arg(text: str) -> str:
  """The argparse type of --checkpoint: 'best', 'latest' or a step number (as given)."""
  if text in ("best", "latest") or text.isdigit():
    return text
  raise argparse.ArgumentTypeError(f"{text!r} is not best, latest or a step number")


def run_config(p: argparse.ArgumentParser, workdir: str, pairs):
  """The config a training run saved in workdir, with --config.KEY=VALUE overrides (e.g. a moved data root);
  a missing run, a wrong key or a key the checkpoint fixes is an argparse error (exit 2, one line)."""
  import ml_collections

  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    p.error(f"{path} not found: --workdir must be the folder a training run wrote")
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:  # unreadable, or not JSON
    p.error(f"{path} is not a readable run config ({e}): --workdir must be the folder a training run wrote")
  if not isinstance(saved, dict) or not all(k in saved for k in ("scheme", "model", "data")):
    p.error(
      f"{path} is not a run config (no scheme, model and data): --workdir must be the folder a training run wrote"
    )
  cfg = ml_collections.ConfigDict(config_lib.backfill(saved))
  cfg.lock()
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


def probe(scheme, model, pipe):
  """(images -> the run's main logits, a zero image of the pipeline's shape): for reading the stages' names and
  shapes (saliency.layer_names, layer_shape) without running anything."""
  import numpy as np
  from flax import nnx

  from fgattn_jax import explain

  model = nnx.clone(model)
  model.eval()  # (in training mode BatchNorm would update its statistics inside the trace)
  batch = {k: v[:1] for k, v in next(iter(pipe)).items()}
  return explain.logits_fn(scheme, model, batch), np.zeros(batch["image"].shape, np.float32)


def check_layer(
  p: argparse.ArgumentParser,
  scheme,
  model,
  stages: list[str],
  layer: str,
  *,
  drawn: bool = True,
  image_frame: bool = False,
):
  """--layer, checked against the stages the model runs (saliency.layer_names): -> (its name as they have it:
  conv5_4#1 is conv5_4, what it sees: 'image' or the index of the scheme's attention crop, scheme.layer_input).
  A stage the model does not run, with `drawn` one whose input is drawn nowhere, and with image_frame one not in
  the image's frame (the localisation metrics) are argparse errors naming the stages."""
  from fgattn_jax.ops import saliency

  try:
    name, occurrence = saliency.parse_layer(layer)
  except ValueError as e:
    p.error(str(e))
  layer = name if occurrence == 1 else layer
  if layer not in stages:
    p.error(f"layer {layer!r} does not run in this model; its stages: {', '.join(stages)}")
  frame = scheme.layer_input(occurrence, model)
  if (drawn and frame is None) or (image_frame and frame != "image"):
    on_image = [s for s in stages if scheme.layer_input(saliency.parse_layer(s)[1], model) == "image"]
    what = "an input that is not drawn (the object crop)" if frame is None else "a crop, not the image"
    p.error(
      f"layer {layer!r} sees {what}{': the metrics score maps in the image' if image_frame else ''}; "
      f"stages on the image: {', '.join(on_image)}"
    )
  return layer, frame


def setup_logging():
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
  for noisy in ("absl", "jax._src", "orbax"):
    logging.getLogger(noisy).setLevel(logging.ERROR)
