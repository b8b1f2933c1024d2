"""Config files and command-line overrides.

A config file is a Python file with `get_config(arg=None) -> ml_collections.ConfigDict` and, if it has
presets, a module-level `PRESETS = {name: one-line description}`. On the command line:

    --config configs/macnn.py            the bare name: the embedded default
    --config configs/macnn.py:cub        a preset
    --config.data.batch_size=16          an override (also `--config.data.batch_size 16`)

The config is locked after loading: an unknown key or a value of the wrong type is refused with a message
that names the nearest valid keys. Values are parsed by the type of the field they replace.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import os
import sys

import ml_collections

from fgattn_jax.errors import ConfigError  # noqa: F401 (raised here; config.ConfigError as before)


def _load_module(path: str):
  if not os.path.isfile(path):
    raise ConfigError(f"Config file {path!r} not found. Give a path such as configs/macnn.py[:preset].")
  # Config files import their shared defaults as `from configs import common`: make the folder that
  # holds configs/ importable while the file runs.
  root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
  name = "_fgattn_config_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  sys.path.insert(0, root)
  try:
    spec.loader.exec_module(module)
  finally:
    sys.path.remove(root)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"{path} has no get_config(arg) function, so it is not a config file.")
  return module


def presets(path: str) -> dict[str, str]:
  """The presets a config file offers, name -> description ('' is the embedded default)."""
  return dict(getattr(_load_module(path), "PRESETS", {}))


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Loads `path.py` or `path.py:preset`; the result is locked (no new keys)."""
  path, _, preset = spec.partition(":")
  module = _load_module(path)
  known = getattr(module, "PRESETS", None)
  if preset and known is not None and preset not in known:
    near = difflib.get_close_matches(preset, known, n=3, cutoff=0.4)
    hint = f" Did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
    names = ", ".join(n or "(bare name)" for n in known)  # '' is the file's embedded default
    raise ConfigError(f"{path} has no preset {preset!r}.{hint} Presets: {names or 'none'}.")
  cfg = module.get_config(preset or None)
  if not isinstance(cfg, ml_collections.ConfigDict):
    raise ConfigError(f"{path}: get_config must return an ml_collections.ConfigDict, got {type(cfg).__name__}")
  cfg.lock()
  return cfg


def flat_keys(cfg: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every leaf key, dotted: ['data.batch_size', 'optim.lr', ...]."""
  keys = []
  for k in cfg.keys():
    v = cfg[k]
    if isinstance(v, ml_collections.ConfigDict):
      keys += flat_keys(v, f"{prefix}{k}.")
    else:
      keys.append(prefix + k)
  return keys


def _nearest(key: str, cfg) -> str:
  keys = flat_keys(cfg)
  near = [k for k in keys if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]]
  near += [k for k in difflib.get_close_matches(key, keys, n=3, cutoff=0.5) if k not in near]
  return f" Did you mean {' or '.join(near[:3])}?" if near else ""


def lookup(cfg: ml_collections.ConfigDict, key: str):
  """The value at a dotted key (one that flat_keys lists)."""
  for part in key.split("."):
    cfg = cfg[part]
  return cfg


_TRUE, _FALSE = {"true", "yes", "1", "on"}, {"false", "no", "0", "off"}


def parse_value(text: str, field_type: type, key: str):
  """Parses command-line text as a value of the type of field `key`."""
  name = field_type.__name__
  article = "an" if name[0] in "aeiou" else "a"
  bad = lambda what: ConfigError(  # noqa: E731
    f"--config.{key}={text!r} is not {what}; {key} holds {article} {name}."
  )
  if field_type is bool:
    if text.lower() not in _TRUE | _FALSE:
      raise bad("true or false")
    return text.lower() in _TRUE
  if field_type in (int, float):
    try:
      value = field_type(text)
    except ValueError:
      raise bad("a number of the right kind") from None
    return value
  if field_type is str:
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    if field_type in (tuple, list):  # bare words: --config.phase_order=warmup,main
      return field_type(w.strip() for w in text.split(",") if w.strip())
    return text  # an untyped (None) field: take the text as a string
  if field_type in (tuple, list):
    value = value if isinstance(value, (tuple, list)) else (value,)
    return field_type(value)
  return value


def override(cfg: ml_collections.ConfigDict, key: str, text: str) -> None:
  """Sets cfg[key] (dotted) from command-line text, refusing unknown keys and values of the wrong type."""
  node, parts = cfg, key.split(".")
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise ConfigError(f"Unknown config key {key!r}.{_nearest(key, cfg)}")
    if i < len(parts) - 1:
      node = node[part]
  leaf = parts[-1]
  field_type = node.get_type(leaf)
  if field_type is ml_collections.ConfigDict:
    raise ConfigError(
      f"{key!r} is a section, not a value; set one of: "
      + ", ".join(k for k in flat_keys(cfg) if k.startswith(key + "."))
    )
  value = parse_value(text, field_type, key)
  try:
    node[leaf] = value
  except TypeError as e:
    raise ConfigError(f"--config.{key}={text!r}: {e}") from None


def split_overrides(argv: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
  """Separates `--config.key=value` / `--config.key value` pairs from the other arguments."""
  pairs, rest, i = [], [], 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith("--config."):
      key, eq, text = arg[len("--config.") :].partition("=")
      if not eq:
        # The next argument is the value, unless it is another flag (a negative number such as -1 is a value).
        if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
          raise ConfigError(f"{arg} needs a value: {arg}=VALUE")
        i, text = i + 1, argv[i + 1]
      pairs.append((key, text))
    else:
      rest.append(arg)
    i += 1
  return pairs, rest


# Keys added after runs were already trained, with the value that reproduces how a run saved without them was
# trained: backfill() gives an older run's config.json these, so that it still evaluates and resumes.
ADDED_KEYS = {
  "model.block": "",  # He et al.'s BasicBlock CIFAR ResNets
  "model.dropout": None,  # each family's default
  "data.augment.crop": "resize",
  "data.augment.crop_area": (0.08, 1.0),
  "data.augment.crop_ratio": (3 / 4, 4 / 3),
  "data.augment.eval_rotation": 0.0,
  "data.split": {"val_fraction": 0.1, "test_fraction": 0.1, "seed": 0},  # the folder tree's fixed 80/10/10 split
  "data.top_classes": 0,
}


def backfill(saved: dict) -> dict:
  """A run config read back from JSON (nested dicts) with every ADDED_KEYS entry it lacks set to its value."""
  for key, value in ADDED_KEYS.items():
    *groups, name = key.split(".")
    node = saved
    for g in groups:
      node = node.setdefault(g, {})
      if not isinstance(node, dict):
        break
    else:
      node.setdefault(name, value)
  return saved


def validate(cfg: ml_collections.ConfigDict) -> None:
  """Refuses values of the right type that cannot work, before anything is built: otherwise they surface as a
  division by zero or an error inside a data thread, far from the key that caused them."""

  def check(key: str, ok: bool, allowed: str):
    if not ok:
      raise ConfigError(f"{key}={lookup(cfg, key)!r}: {allowed}.")

  d = cfg.data
  check("data.batch_size", d.batch_size >= 1, "must be 1 or more (images per step, over all devices)")
  check("data.eval_batch_size", d.eval_batch_size >= 1, "must be 1 or more (images per evaluation step)")
  check("data.image_size", d.image_size >= 1, "must be 1 or more (the network's input side in pixels)")
  check(
    "data.resize_size",
    d.resize_size >= d.image_size,
    f"must be at least data.image_size={d.image_size} (the crop is taken from the resized image)",
  )
  check("data.augment.pad", d.augment.pad >= 0, "must be 0 or more")
  check("data.augment.crop", d.augment.crop in ("resize", "random_resized"), "use 'resize' or 'random_resized'")
  check("data.augment.eval_rotation", d.augment.eval_rotation >= 0, "must be 0 or more (degrees either way)")
  check("data.top_classes", d.top_classes >= 0, "must be 0 (every class) or more")
  fractions = (d.split.val_fraction, d.split.test_fraction)
  check(
    "data.split.val_fraction",
    min(fractions) >= 0 and sum(fractions) < 1,
    f"must be 0 or more and leave, with data.split.test_fraction={d.split.test_fraction}, some of each class "
    "to train on",
  )
  check(
    "model.block",
    cfg.model.block in ("", "basic", "bottleneck", "auto"),
    "use 'basic', 'bottleneck' or 'auto' (CIFAR ResNets), or '' for the backbone's own",
  )
  check(
    "data.num_workers",
    d.num_workers >= 0,
    "must be 0 (decode in threads of the main process) or more (decoding processes per host)",
  )
  for name in cfg.phase_order:
    if name not in cfg.phases:
      continue  # the training plan names the phases there are
    schedule, key = cfg.phases[name].schedule, f"phases.{name}.schedule"
    check(f"{key}.kind", schedule.kind in ("cosine", "step", "constant"), "use 'cosine', 'step' or 'constant'")
    numbers = all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in schedule.boundaries)
    check(f"{key}.boundaries", numbers, f"must be epochs (numbers), e.g. --config.{key}.boundaries=150,225")


def config_from_args(spec: str, pairs: list[tuple[str, str]]) -> ml_collections.ConfigDict:
  cfg = load_config(spec)
  for key, text in pairs:
    override(cfg, key, text)
  validate(cfg)
  return cfg
