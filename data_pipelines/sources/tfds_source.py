"""Any prepared TensorFlow Datasets image-classification data set, read through `tfds.data_source`.

The data set must be prepared in a random-access format (ArrayRecord): reading then needs no TensorFlow.
Images are not decoded here: every Image feature is read with `SkipDecoding`, so `source[i]["image"]` is the
encoded file and a corrupt image fails in `load_image` (in the worker, where it is counted and skipped).
TFDS boxes are normalised (ymin, xmin, ymax, xmax); they come out in pixels (x0, y0, x1, y1), the image
size read from the file header (or from the feature's static shape, e.g. CIFAR's 32x32).

Multi-task attributes: the entries of a top-level FeaturesDict named "attributes" (CelebA's 40 booleans) come out
as the example's 'attributes', a boolean as a 2-class task, a ClassLabel with its classes. A data set with
attributes and no ClassLabel (CelebA) takes its first attribute as the label.
"""

from __future__ import annotations

import difflib
import io
import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds
from google.protobuf.message import DecodeError
from PIL import Image
from tensorflow_datasets.proto import tf_example_pb2  # the proto TFDS's own NumPy reader parses, no TF

from data_pipelines.sources.base import DataError, Source, check_nonempty

_IMAGE, _LABEL, _BBOX = tfds.features.Image, tfds.features.ClassLabel, tfds.features.BBoxFeature
_ATTRIBUTES = "attributes"  # the top-level FeaturesDict of multi-task attributes (CelebA's name)
_FILENAME_KEYS = ("image/filename", "file_name", "filename", "id")  # named in describe() when present
_LABELS_CHUNK = 1024  # records per batched read in the one pass over labels


class TFDSSource(Source):
  """`TFDSSource("caltech_birds2011", "train")`; split may be any TFDS split expression ("train[:90%]").

  The image and label features are the builder's supervised keys when they are an Image and a ClassLabel,
  otherwise the feature named "image" / "label", otherwise the first of that kind; image_key / label_key
  (top-level feature names) override them. Boxes come from a top-level BBoxFeature ("bbox": CUB, Cars) or
  from a Sequence of them (the union of "objects/bbox": Stanford Dogs); data sets without either give None.
  """

  def __init__(self, name: str, split: str, data_dir=None, image_key: str | None = None, label_key: str | None = None):
    data_dir = None if data_dir is None else os.path.expanduser(os.fspath(data_dir))
    builder = _open_builder(name, data_dir)
    info = builder.info
    features = info.features
    supervised = info.supervised_keys if isinstance(info.supervised_keys, tuple) else ()
    self.image_key = _pick(features, _IMAGE, image_key, supervised[:1] + ("image",), "image")
    attributes = _find_attributes(features)
    self.attribute_names = [name for name, _ in attributes]
    self.attribute_classes = tuple(classes for _, classes in attributes)
    if attributes and label_key is None and not any(isinstance(features[k], _LABEL) for k in features.keys()):
      self.label_key = f"{_ATTRIBUTES}/{attributes[0][0]}"  # tf.Example's name of the nested feature
      label_names = _attribute_class_names(features[_ATTRIBUTES], attributes[0][0])
    else:
      self.label_key = _pick(features, _LABEL, label_key, supervised[1:2] + ("label",), "label")
      label_names = list(features[self.label_key].names)
    self._box_key, self._box_in_sequence = _find_box(features)
    shape = features[self.image_key].shape
    # A static height and width (CIFAR, SVHN) saves reading the header for the box conversion.
    self._static_wh = (shape[1], shape[0]) if None not in shape[:2] else None
    self._filename_key = next((k for k in _FILENAME_KEYS if k in features.keys()), None)
    self.name = f"{info.name}[{split}]"
    self.class_names = label_names
    self.num_classes = len(self.class_names)
    self._open_args = (name, split, data_dir)
    self._labels = None

    _check_split(builder, name, split)
    # Skip decoding every image-like feature (the image, but also e.g. CUB's segmentation masks): the
    # image is decoded later in load_image, the others are not used.
    decoders = {k: tfds.decode.SkipDecoding() for k in features.keys() if isinstance(features[k], _IMAGE)}
    self._ds = tfds.data_source(name, split=split, data_dir=data_dir, download=False, try_gcs=False, decoders=decoders)
    check_nonempty(self, split)

  def __len__(self) -> int:
    return len(self._ds)

  @property
  def labels(self) -> np.ndarray:
    if self._labels is None:
      labels = self._read_labels()
      bad = np.flatnonzero((labels < 0) | (labels >= self.num_classes))
      if bad.size:
        raise DataError(
          f"{self.name}: {bad.size} examples have no valid label (e.g. example {bad[0]} has "
          f"{labels[bad[0]]}, expected 0..{self.num_classes - 1}); unlabelled splits such as "
          "some test splits cannot be used for training or evaluation."
        )
      self._labels = labels
    return self._labels

  def _read_labels(self) -> np.ndarray:
    # ArrayRecord stores whole examples, so there is no reading the label alone: one pass over the split, in
    # batched reads (which go to the shards in parallel). The records are tf.train.Example protos in which
    # a top-level ClassLabel is the int64 feature of the same name; taking it from the raw proto is ~10x
    # faster than TFDS's decoding of every feature. Should the layout ever differ, decode the usual way.
    name, split, data_dir = self._open_args
    raw = tfds.data_source(
      name,
      split=split,
      data_dir=data_dir,
      download=False,
      try_gcs=False,
      deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES,
    )
    n = len(raw)
    labels = np.empty(n, np.int64)
    try:
      for start in range(0, n, _LABELS_CHUNK):
        records = raw.__getitems__(list(range(start, min(n, start + _LABELS_CHUNK))))
        labels[start : start + len(records)] = [
          tf_example_pb2.Example.FromString(r).features.feature[self.label_key].int64_list.value[0] for r in records
        ]
    except (IndexError, KeyError, ValueError, DecodeError):
      for start in range(0, n, _LABELS_CHUNK):
        examples = self._ds.__getitems__(list(range(start, min(n, start + _LABELS_CHUNK))))
        labels[start : start + len(examples)] = [_lookup(ex, self.label_key) for ex in examples]
    return labels

  def describe(self, index: int) -> str:
    where = f"{self.name} example {index}"
    if self._filename_key is not None:
      try:  # only called on error paths: a failing read must not hide the original error
        name = self._ds[index][self._filename_key]
        where += f" ({name.decode() if isinstance(name, bytes) else name})"
      except Exception:  # noqa: BLE001
        pass
    return where

  def _example(self, index: int) -> dict:
    ex = self._ds[index]
    raw = ex[self.image_key]
    raw = raw.item() if isinstance(raw, np.ndarray) and raw.dtype == object else raw
    out = {"image": raw, "label": _lookup(ex, self.label_key), "box": self._box(ex, raw), "parts": None}
    if self.attribute_names:
      out["attributes"] = [int(ex[_ATTRIBUTES][name]) for name in self.attribute_names]
    return out

  def _box(self, ex: dict, raw) -> np.ndarray | None:
    if self._box_key is None:
      return None
    if self._box_in_sequence:
      seq_key, inner_key = self._box_key
      seq = ex[seq_key] if inner_key is None else ex[seq_key][inner_key]
      boxes = np.asarray(seq, np.float32).reshape(-1, 4)
      if not len(boxes):
        return None
      # Several objects (e.g. two dogs): the box around all of them.
      ymin, xmin = boxes[:, :2].min(0)
      ymax, xmax = boxes[:, 2:].max(0)
    else:
      ymin, xmin, ymax, xmax = np.asarray(ex[self._box_key], np.float32)
    size = self._image_size(raw)
    if size is None:
      return None
    w, h = size
    return np.array([xmin * w, ymin * h, xmax * w, ymax * h], np.float32)

  def _image_size(self, raw) -> tuple[int, int] | None:
    if self._static_wh is not None:
      return self._static_wh
    if isinstance(raw, np.ndarray):
      return raw.shape[1], raw.shape[0]
    try:  # reads the header only, not the pixels
      with Image.open(io.BytesIO(raw)) as im:
        return im.size
    except Exception:  # noqa: BLE001
      # An unreadable header: load_image fails on the same file and the example is skipped there.
      return None


def _open_builder(name: str, data_dir: str | None):
  """The builder of a prepared data set in a random-access format, or a DataError saying how to get one."""
  try:
    builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
  except tfds.core.registered.DatasetNotFoundError:
    raise DataError(_too_deep_message(name, data_dir) or _unknown_name_message(name, data_dir)) from None
  except ValueError as e:  # e.g. an unknown config or version
    raise DataError(f"Cannot open the TFDS data set {name!r}: {e}") from None
  if not builder.is_prepared():
    raise DataError(_too_deep_message(name, data_dir) or _not_prepared_message(name, builder))
  formats = builder.info.available_file_formats()
  if not formats & tfds.core.file_adapters.FileFormat.with_random_access():
    found = ", ".join(sorted(f.value for f in formats)) or "unknown"
    raise DataError(
      f"The TFDS data set {name!r} in {builder.data_dir} is stored as {found}, which has no random access "
      f"(`tfds build` without --file_format); remove that directory and prepare it again as ArrayRecord: "
      f"tfds build {name} --data_dir {_root(builder)} --file_format=array_record"
    )
  return builder


def _root(builder):
  """The data directory holding the builder's NAME/[CONFIG/]VERSION directory. (builder.data_dir_root is
  that for a registered builder, but the version directory itself for one read from files alone.)"""
  return pathlib.PurePath(builder.data_dir).parents[1 if builder.builder_config is None else 2]


def _unknown_name_message(name: str, data_dir: str | None) -> str:
  base = name.split(":")[0].split("/")[0]
  known = set(tfds.list_builders(with_community_datasets=False))  # no network: the registered builders only
  root = data_dir or tfds.core.constants.DATA_DIR
  if os.path.isdir(root):
    known.update(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
  near = difflib.get_close_matches(base, sorted(known), n=3, cutoff=0.6)
  hint = f" Did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
  return (
    f"Unknown TFDS data set {name!r}: no TFDS builder has that name and no prepared data set of that "
    f"name is in {root}.{hint} The data sets TFDS knows are listed by tfds.list_builders()."
  )


def _too_deep_message(name: str, data_dir: str | None) -> str | None:
  """For a data_dir inside the prepared data set (its own folder, or a version folder below it): where to point
  instead. (The folder layouts take the data set's own folder as data.root, TFDS the folder above it.)"""
  if data_dir is None:
    return None
  base = name.split(":")[0].split("/")[0]
  path = pathlib.Path(data_dir).resolve()
  for folder in (path, *list(path.parents)[:3]):
    if folder.name == base and next(folder.glob("**/dataset_info.json"), None) is not None:
      return (
        f"The TFDS data set {name!r} is prepared in {folder.parent}, above the data.root given ({data_dir}): "
        f"TFDS takes the folder that holds {base}/, --config.data.root={folder.parent}."
      )
  return None


def _not_prepared_message(name: str, builder) -> str:
  root = _root(builder)
  msg = (
    f"The TFDS data set {name!r} is not prepared in {root} (looked for {builder.data_dir}). "
    f"Prepare it once (this needs TensorFlow): pip install 'fgattn-jax[prepare]', then "
    f"tfds build {name} --data_dir {root} --file_format=array_record"
  )
  manual = getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
  if manual:  # tfds build looks for them in <data_dir>/downloads/manual unless given --manual_dir
    msg += (
      f". Before that, {name} needs files downloaded by hand into {root / 'downloads' / 'manual'}: "
      f"{' '.join(manual.split()).rstrip('.')}"
    )
  return msg + "."


def _check_split(builder, name: str, split: str) -> None:
  splits = builder.info.splits
  available = ", ".join(f"{s!r} ({splits[s].num_examples} examples)" for s in splits.keys())
  try:
    num_examples = splits[split].num_examples
  except (KeyError, ValueError) as e:
    why = "" if "Unknown split" in str(e) else f" ({' '.join(str(e).split())})"  # e.g. a malformed slice
    raise DataError(
      f"The TFDS data set {name!r} has no split {split!r}{why}; its splits: {available}. "
      "Slices such as 'train[:90%]' or 'train[-500:]' are accepted too."
    ) from None
  if num_examples == 0:
    raise DataError(f"The {split!r} split of the TFDS data set {name!r} is empty; its splits: {available}.")


def _pick(features, kind, override: str | None, preferred: tuple, what: str) -> str:
  """The top-level feature of the given kind to use: the override, a preferred name, or the first one."""
  candidates = [k for k in features.keys() if isinstance(features[k], kind)]
  if override is not None:
    if override not in candidates:
      raise DataError(
        f"{what}_key={override!r} is not a top-level {kind.__name__} feature of this data set; "
        f"those are: {candidates or 'none'}."
      )
    return override
  for key in (*preferred, *candidates):
    if key in candidates:
      return key
  raise DataError(
    f"This TFDS data set has no top-level {kind.__name__} feature to use as the {what}; its features: {features}"
  )


def _find_attributes(features) -> list[tuple[str, int]]:
  """(name, classes) of each entry of a top-level FeaturesDict "attributes": a boolean scalar is a 2-class task,
  a ClassLabel keeps its classes; other entries are left out. [] when there is no such dict."""
  if _ATTRIBUTES not in features.keys() or not isinstance(features[_ATTRIBUTES], tfds.features.FeaturesDict):
    return []
  out = []
  for name in features[_ATTRIBUTES].keys():
    f = features[_ATTRIBUTES][name]
    if isinstance(f, _LABEL):
      out.append((name, f.num_classes))
    elif isinstance(f, tfds.features.Tensor) and f.shape == () and np.dtype(f.np_dtype) == np.bool_:
      out.append((name, 2))
  return out


def _attribute_class_names(attributes, name: str) -> list[str]:
  f = attributes[name]
  return list(f.names) if isinstance(f, _LABEL) else [f"not {name}", name]


def _lookup(ex: dict, key: str):
  """ex[key], where key may name a nested feature ("attributes/Smiling"); top-level keys may contain '/' too
  ("image/filename")."""
  if key in ex:
    return ex[key]
  outer, _, inner = key.partition("/")
  return ex[outer][inner]


def _find_box(features):
  """(key, False) for a top-level BBoxFeature; ((sequence, key or None), True) for the boxes of a Sequence
  (of dicts, or of boxes themselves); (None, False) when there are none."""
  top = [k for k in features.keys() if isinstance(features[k], _BBOX)]
  if top:
    return ("bbox" if "bbox" in top else top[0]), False
  for k in features.keys():
    inner = features[k].feature if isinstance(features[k], tfds.features.Sequence) else None
    if isinstance(inner, _BBOX):
      return (k, None), True
    if isinstance(inner, tfds.features.FeaturesDict):
      boxes = [j for j in inner.keys() if isinstance(inner[j], _BBOX)]
      if boxes:
        return (k, "bbox" if "bbox" in boxes else boxes[0]), True
  return None, False
