"""What every data source gives: a grain random-access source of examples with a fixed set of keys.

    len(source)            number of examples in the split
    source[i] -> {
      "image":  bytes (an encoded JPEG/PNG file, decoded later in the workers) or uint8 HxWx3 array,
      "label":  int, in [0, num_classes),
      "box":    float32 (4,) object box (x0, y0, x1, y1) in pixels of the stored image; NaN if unknown,
      "parts":  float32 (num_parts, 2) part points (x, y) in pixels; NaN rows for parts not visible,
      "index":  int, i itself (so that a skipped image can be named in the report),
      "attributes": int32 (len(attribute_classes),), only where the source has attributes (multi-task
                targets, e.g. facial attributes; task t has attribute_classes[t] classes),
    }
    source.num_classes, source.class_names, source.num_parts
    source.labels          int array of every example's label, without decoding images
    source.describe(i)     a human-readable name of example i (its file path) for error reports

Pixel coordinates are continuous: pixel (row r, column c) covers [c, c + 1) x [r, r + 1), so its centre
is (c + 0.5, r + 0.5). Decoding happens in the transform (through `source.load_image`), not in
__getitem__, so that a corrupt file is caught in the worker, counted and skipped instead of crashing
the pipeline.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


class DataError(Exception):
  """A data set that cannot be read as configured; the message says what is expected and where to get it."""


def decode_image(raw) -> np.ndarray:
  """Encoded bytes or an array -> uint8 HxWx3 RGB. Raises on a corrupt or truncated file."""
  if isinstance(raw, np.ndarray):
    img = raw
  else:
    with Image.open(io.BytesIO(raw)) as im:
      im.load()  # decode fully now: a truncated file fails here, not later
      wide = np.asarray(im) if im.mode.startswith("I") else None
      if wide is not None and (im.mode.startswith("I;16") or wide.max(initial=0) > 255):
        # 16-bit grey (PNG, TIFF): its top byte. PIL's convert('RGB') clips it to 255, an all but white image.
        img = (np.clip(wide.astype(np.int64), 0, 65535) >> 8).astype(np.uint8)
      else:
        img = np.asarray(im.convert("RGB"))
  if img.ndim == 2:
    img = np.repeat(img[..., None], 3, axis=-1)
  elif img.shape[-1] == 1:
    img = np.repeat(img, 3, axis=-1)
  elif img.shape[-1] == 4:
    img = img[..., :3]
  if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3:
    raise ValueError(f"expected a uint8 RGB image, got {img.dtype} of shape {img.shape}")
  return img


class Source:
  """Base class of the sources; subclasses fill the attributes and implement _example(i)."""

  name: str = "source"
  num_classes: int
  class_names: list[str]
  num_parts: int = 0
  attribute_classes: tuple[int, ...] = ()
  location: str = ""  # the folder the examples are read from, named in error messages ("": none, e.g. synthetic)

  def __len__(self) -> int:
    raise NotImplementedError

  @property
  def labels(self) -> np.ndarray:
    raise NotImplementedError

  def describe(self, index: int) -> str:
    return f"{self.name} example {index}"

  def load_image(self, raw) -> np.ndarray:
    """Decodes example["image"] to uint8 HxWx3; a source may override it (e.g. to cut off a banner),
    keeping box and part coordinates valid in the returned image."""
    return decode_image(raw)

  def _example(self, index: int) -> dict:
    """image, label and, where known, box and parts; __getitem__ fills in the rest."""
    raise NotImplementedError

  def __getitem__(self, index: int) -> dict:
    ex = self._example(int(index))
    box = ex.get("box")
    parts = ex.get("parts")
    attributes = (
      {"attributes": np.asarray(ex["attributes"], np.int32).reshape(len(self.attribute_classes))}
      if self.attribute_classes
      else {}
    )
    return attributes | {
      "image": ex["image"],
      "label": int(ex["label"]),
      "box": np.full(4, np.nan, np.float32) if box is None else np.asarray(box, np.float32).reshape(4),
      "parts": (
        np.full((self.num_parts, 2), np.nan, np.float32)
        if parts is None
        else np.asarray(parts, np.float32).reshape(self.num_parts, 2)
      ),
      "index": int(index),
    }

  def __repr__(self):
    return f"{type(self).__name__}({self.name}: {len(self)} examples, {self.num_classes} classes)"


def _where(source: Source) -> str:
  return f"{source.name} in {source.location}" if source.location else source.name


def check_nonempty(source: Source, split: str) -> Source:
  if len(source) == 0:
    raise DataError(f"The {split!r} split of {_where(source)} is empty: check the data directory and the split name.")
  return source


def read_error(source: Source, index: int) -> str | None:
  """Why example `index`'s image cannot be read (the decoder's or the file system's message), or None if it can."""
  try:
    source.load_image(source[index]["image"])
  except Exception as e:  # noqa: BLE001 - whatever the decoder raised, as the pipeline's workers catch it
    return str(e) or type(e).__name__
  return None


def check_decodable(source: Source, split: str) -> Source:
  """Raises a DataError if no image of the split can be decoded. Unreadable images are otherwise skipped one by
  one (pipeline.py), and a split of nothing but them would train on blanks and evaluate nothing. The examples are
  tried in order until one decodes: on a healthy data set that is the first, so the check costs one read, and it
  fails only when every image is unreadable, never because of a few bad files."""
  first = None
  for i in range(len(source)):
    error = read_error(source, i)
    if error is None:
      return source
    first = first or f"{source.describe(i)}: {error}"
  raise DataError(
    f"No image of the {split!r} split of {_where(source)} could be decoded ({len(source)} tried; "
    f"the first, {first}): check that the files are images, not e.g. Git LFS pointers or partial "
    "downloads."
  )
