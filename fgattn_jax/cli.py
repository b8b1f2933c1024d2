"""Command-line pieces every command shares: the parser with the config flags and presets in --help, the option
helpers, which errors are shown as one line, logging. Reading a trained run is trained_run.py; the explanation
commands' checks are in explain.py."""

from __future__ import annotations

import argparse
import glob
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


def setup_logging():
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
  for noisy in ("absl", "jax._src", "orbax"):
    logging.getLogger(noisy).setLevel(logging.ERROR)
