"""Exact import of torchvision ImageNet weights from a file the user already has.

    model = build_backbone("resnet50", num_classes=200)
    load_torchvision(model, "resnet50-11ad3fa6.pth")        # needs torch
    load_torchvision(model, "resnet50.safetensors")         # NumPy only

Nothing is downloaded. Strict: every parameter the model expects must be in the file and nothing else
may be; both lists are in the error. The one planned exception is the class layer: a file trained for
another class count (ImageNet's 1000) loads everything but that layer (a backbone-only import), and
the report says so. Each backbone lists its torchvision names in `torchvision_modules()`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from typing import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from fgattn_jax.models import layers, resnet, vgg
from fgattn_jax.models.backbone import Backbone

log = logging.getLogger(__name__)


class WeightImportError(ValueError):
  pass


@dataclasses.dataclass
class ImportReport:
  loaded: list[str]  # file keys
  dropped: dict[str, str]  # file key -> why it was not imported
  paths: frozenset = frozenset()  # nnx paths of the parameters and statistics that were filled

  def summary(self) -> str:
    lines = [f"imported {len(self.loaded)} tensors"]
    lines += [f"  not imported: {k} ({why})" for k, why in sorted(self.dropped.items())]
    return "\n".join(lines)


WRAPPERS = ("state_dict", "model_state_dict", "model", "net")  # where training checkpoints keep the state dict


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a state dict from a safetensors file (NumPy) or a torch.save one (.pth/.pt/.bin: torch, CPU, weights
  only), told apart by their contents, not their names."""
  path = os.path.expanduser(os.fspath(path))
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"Weight file {path} does not exist. Point model.pretrained at a torchvision "
      ".pth or .safetensors file you have; nothing is downloaded."
    )
  if _is_safetensors(path):
    from safetensors.numpy import load_file

    try:
      raw = load_file(path)
    except Exception as e:  # whatever the reader raised, the file is not usable as weights
      raise _unreadable(path, e) from e
  else:
    try:
      import torch
    except ImportError as e:
      raise WeightImportError(
        f"Reading {path} needs PyTorch (`pip install torch`); or convert it once to "
        ".safetensors, which loads with NumPy alone."
      ) from e
    try:
      with open(path, "rb") as f:  # (a file object: torch.load would take a '.safetensors' name as that format)
        raw = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # junk gives KeyError, a truncated file OSError, an image UnpicklingError
      raise _unreadable(path, e) from e
  try:
    return state_dict_arrays(raw)
  except TypeError as e:  # our own words: kept whole
    raise _unreadable(path, e, reader=False) from None


def _is_tensor(value) -> bool:
  return isinstance(value, np.ndarray) or type(value).__module__.startswith(("torch", "jax"))


def state_dict_arrays(raw) -> dict[str, np.ndarray]:
  """A state dict as read from a file or held in memory (PyTorch's `model.state_dict()`, NumPy arrays), unwrapped
  from a training checkpoint ({'state_dict': ...} and the like) and from DataParallel's or Lightning's key prefix,
  as float32 (floating point) NumPy arrays. TypeError when it holds no state dict."""
  for _ in range(3):  # a wrapper may hold another: {'model': {'state_dict': ...}}
    if not isinstance(raw, Mapping) or not raw or all(_is_tensor(v) for v in raw.values()):
      break
    dicts = [k for k, v in raw.items() if isinstance(v, Mapping) and v]
    tensors = [k for k in dicts if all(_is_tensor(x) for x in raw[k].values())]
    # A known wrapper of tensors, else the one dict of tensors there is, else a known wrapper of more dicts.
    pick = (
      [k for k in WRAPPERS if k in tensors]
      + (tensors if len(tensors) == 1 else [])
      + [k for k in WRAPPERS if k in dicts]
    )
    if not pick:
      keys = ", ".join(repr(k) for k in list(raw)[:8]) + (", ..." if len(raw) > 8 else "")
      which = (
        f"several hold tensors ({', '.join(map(repr, tensors))}): save the network's, "
        f"e.g. torch.save(checkpoint[{tensors[0]!r}], PATH)"
        if tensors
        else "none of them holds the network's tensors; save them with torch.save(model.state_dict(), PATH)"
      )
      raise TypeError(f"it holds a dict with the keys {keys}: {which}")
    raw = raw[pick[0]]
  if not isinstance(raw, Mapping) or not all(_is_tensor(v) for v in raw.values()):
    raise TypeError(f"it holds a {type(raw).__name__}, not a state dict of tensors")
  arrays = {}
  for k, v in raw.items():
    if not isinstance(v, np.ndarray) and type(v).__module__.startswith("torch"):
      v = v.detach().cpu()
      v = v.float().numpy() if v.is_floating_point() else v.numpy()
    arrays[k] = np.asarray(v)
  # (Distributed)DataParallel saves every key under 'module.', PyTorch Lightning (a module's `model` attribute)
  # under 'model.': no torchvision key starts with either.
  for prefix in ("module.", "model."):
    if arrays and all(k.startswith(prefix) for k in arrays):
      arrays = {k.removeprefix(prefix): v for k, v in arrays.items()}
  return {k.removeprefix("module."): v for k, v in arrays.items()}


def _is_safetensors(path: str) -> bool:
  """safetensors: an 8-byte little-endian header length, then the JSON header. (torch.save writes a zip archive,
  'PK...', or a pickle.)"""
  with open(path, "rb") as f:
    head = f.read(9)
  return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < os.path.getsize(path)


def _unreadable(path: str, error: Exception, reader: bool = True) -> WeightImportError:
  """One line: which file, what it should be, and the reader's own error, shortened to its first sentence. torch's
  weights-only message is several paragraphs that advise weights_only=False or allow-listing the file's classes
  (unsafe for a file of unknown origin): only its actual cause, after 'WeightsUnpickler error:', is kept, and a
  pickled object (a whole model saved with torch.save(model)) is named as such."""
  text = str(error).rpartition("WeightsUnpickler error:")[2]
  text = next((line.strip() for line in text.splitlines() if line.strip()), "")
  pickled = re.match(r"Unsupported global: GLOBAL ([\w.]+)", text)
  if pickled:
    return WeightImportError(
      f"Weight file {path} holds a pickled Python object ({pickled[1]}), not a state dict: a whole model saved "
      "with torch.save(model)? Save its weights instead, torch.save(model.state_dict(), PATH), and point "
      "model.pretrained at that file."
    )
  if reader:
    text = re.split(r"(?<=[a-z0-9)])\. ", text, maxsplit=1)[0].rstrip(".")[:200]
  short = type(error).__name__ + (f": {text}" if text else "")
  return WeightImportError(
    f"Weight file {path} is not a readable torchvision .pth or .safetensors file ({short}). "
    "Point model.pretrained at a state dict saved by torch.save or safetensors."
  )


def torchvision_architecture(keys) -> str | None:
  """The torchvision network a state dict's keys name (this library's backbone name: 'resnet50', 'vgg16_bn'), or
  None: from the layers' names and counts alone, so that widths do not matter."""
  keys = set(keys)
  convs = {k.rsplit(".", 1)[0] for k in keys if k.startswith("features.") and k.endswith(".weight")}
  if convs:
    bns = {c for c in convs if f"{c}.running_mean" in keys}
    count = len(convs - bns)
    depth = next((name for name, per_block in vgg.DEPTHS.items() if sum(per_block) == count), None)
    return depth and depth + ("_bn" if bns else "")
  blocks = [
    1
    + max((int(k.split(".")[1]) for k in keys if k.startswith(f"layer{i}.") and k.split(".")[1].isdigit()), default=-1)
    for i in (1, 2, 3, 4)
  ]
  kind = "bottleneck" if any(".conv3." in k for k in keys) else "basic"
  return next(
    (name for name, (k, counts) in resnet.IMAGENET_DEPTHS.items() if (k, counts) == (kind, tuple(blocks))), None
  )


def _expected(model: Backbone):
  """torchvision key -> (nnx variable, transform from the torch layout to ours)."""
  conv_t = lambda w: w.transpose(0, 2, 3, 1)  # (out, in, kh, kw) -> (out, kh, kw, in): layers.Conv  # noqa: E731
  same = lambda w: w  # noqa: E731
  out = {}
  try:
    names = list(model.torchvision_modules())
  except NotImplementedError as e:
    raise WeightImportError(str(e)) from None
  for prefix, module, transform in names:
    if isinstance(module, nnx.Conv):
      out[f"{prefix}.weight"] = (module.kernel, transform or conv_t)
      if module.bias is not None:
        out[f"{prefix}.bias"] = (module.bias, same)
    elif isinstance(module, nnx.Linear):
      out[f"{prefix}.weight"] = (module.kernel, transform or (lambda w: w.T))
      out[f"{prefix}.bias"] = (module.bias, same)
    elif isinstance(module, layers.BatchNorm):
      out.update(
        {
          f"{prefix}.weight": (module.scale, same),
          f"{prefix}.bias": (module.bias, same),
          f"{prefix}.running_mean": (module.mean, same),
          f"{prefix}.running_var": (module.var, same),
        }
      )
    else:
      raise TypeError(f"no torchvision conversion for {type(module).__name__} at {prefix}")
  return out


def _some(items: list[str], n: int = 6, sep: str = ", ") -> str:
  """The first n items, and how many more: a wrong file can differ in hundreds of keys."""
  return sep.join(items[:n]) + (f"{sep}... and {len(items) - n} more" if len(items) > n else "")


def load_torchvision(model: Backbone, source: str | os.PathLike | Mapping) -> ImportReport:
  """Loads torchvision weights (a file path, or a state dict in memory: PyTorch's model.state_dict(), or NumPy
  arrays) into `model` in place."""
  if isinstance(source, (str, os.PathLike)):
    sd = read_state_dict(source)
  else:
    try:
      sd = state_dict_arrays(source)
    except TypeError as e:
      raise WeightImportError(f"The state dict given to load_torchvision is not usable: {e}.") from None
  expected = _expected(model)
  ignored = model.torchvision_ignored()
  class_keys = {k for k in expected if k.startswith(model.torchvision_class_layer() + ".")}
  dropped = {k: "bookkeeping counter" for k in sd if k.endswith("num_batches_tracked")}
  for k in sd:
    for prefix, why in ignored.items():
      if k.startswith(prefix):
        dropped[k] = why

  problems = []
  missing = sorted(k for k in expected if k not in sd)
  unexpected = sorted(k for k in sd if k not in expected and k not in dropped)
  if missing:
    problems.append(f"missing from the file ({len(missing)}): {_some(missing)}")
  if unexpected:
    problems.append(f"unexpected in the file ({len(unexpected)}): {_some(unexpected)}")

  converted, mismatched = {}, []
  for key, (var, transform) in expected.items():
    if key not in sd:
      continue
    try:
      value = transform(sd[key].astype(np.float32))
    except ValueError:  # another rank: e.g. torchvision's VGG-BN numbering puts a BatchNorm where VGG has a conv
      value = None
    if value is not None and value.shape == var.get_value().shape:
      converted[key] = value
    elif value is not None and key in class_keys:  # another class count: backbone-only import, on purpose
      dropped[key] = (
        f"class layer of {sd[key].shape[0]} classes, the model has {var.get_value().shape[-1]}: "
        "kept its fresh initialisation (backbone-only import)"
      )
    else:
      ours = "" if value is None else f" -> {value.shape}"  # in our layout
      mismatched.append(f"{key}: file {sd[key].shape}{ours}, model {var.get_value().shape}")
  if mismatched:
    problems.append(
      f"shapes that differ ({len(mismatched)}): {_some(mismatched, sep='; ')} (another depth or width multiplier?)"
    )
  if problems:
    file_bn, model_bn = (any(k.endswith(".running_mean") for k in keys) for keys in (sd, expected))
    vggs = all(any(k.startswith("features.") for k in keys) for keys in (sd, expected))  # torchvision's VGG names
    held, ours = torchvision_architecture(sd), torchvision_architecture(expected)
    if held and ours and held != ours:
      problems.insert(
        0,
        f"the file holds torchvision's {held} and the model is a {ours}: set model.backbone={held} "
        f"to use this file, or point model.pretrained at a {ours} file",
      )
    elif vggs and file_bn != model_bn:
      problems.insert(
        0,
        f"the file's network {'has' if file_bn else 'has no'} batch normalisation and "
        f"{type(model).__name__}'s {'has none' if file_bn else 'has'}: for torchvision's "
        f"vgg*{'_bn' if file_bn else ''} files, set model.backbone to a VGG "
        f"{'with' if file_bn else 'without'} BN (e.g. vgg19{'_bn' if file_bn else ''})",
      )
    raise WeightImportError(
      f"Cannot import torchvision weights into {type(model).__name__}:\n  " + "\n  ".join(problems)
    )

  for key, value in converted.items():
    var = expected[key][0]
    var.set_value(jnp.asarray(value, var.get_value().dtype))
  filled = {id(expected[key][0]) for key in converted}
  paths = frozenset(path for path, node in nnx.iter_graph(model) if id(node) in filled)
  report = ImportReport(loaded=sorted(converted), dropped=dropped, paths=paths)
  for k, why in dropped.items():
    if "bookkeeping" not in why:
      log.warning("not imported: %s: %s", k, why)
  return report
