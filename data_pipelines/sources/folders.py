"""Data sets read from their own folder layouts, as downloaded and extracted: CUB-200-2011, FGVC-Aircraft,
Stanford Cars, Stanford Dogs, Google Landmarks v2, and a generic tree of one folder per class.

Each is a grain random-access source (see base.py), made as `Cls(root, split, **options)`. Annotation files are
parsed once in __init__; __getitem__ only reads an image's bytes and `load_image` decodes them, so a corrupt
file fails in the worker's transform, where it is counted and skipped, never when the source is made.

Box coordinates are continuous pixels (base.py). Aircraft, Cars (MATLAB devkit) and Dogs (PASCAL VOC XML)
store 1-based inclusive pixel indices, so [xmin, xmax] becomes [xmin - 1, xmax); CUB's x, y, width, height and
its part points are used as they are.
"""

from __future__ import annotations

import csv
import functools
import logging
import os
import re
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from data_pipelines.sources.base import DataError, Source, check_nonempty, decode_image
from data_pipelines.splits import stratified_split

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
# Folders that are never classes: hidden ones, and what unpacking a macOS archive leaves beside the data.
ARCHIVE_LEFTOVERS = ("__MACOSX",)

# ---------------------------------------------------------------------------------------------------------------
# Shared helpers: finding the layout, parsing text and .mat annotations.


def _check_split(source: type | Source, split: str, valid) -> None:
  if split not in valid:
    raise DataError(
      f"{source.name}: unknown split {split!r}; valid splits: {', '.join(valid)} (set "
      "--config.data.train_split or --config.data.eval_split to one of them)"
    )


def _root(root, title: str, url: str | None = None) -> Path:
  if root is None or str(root) == "":
    where = f"Download it from {url} and set" if url else "Set"
    raise DataError(f"{title}: no data root given. {where} --config.data.root=/path/to/it")
  return Path(os.path.expanduser(str(root)))


def _missing(base: Path, expected) -> list[str]:
  """The expected entries absent under base; 'x/' must be a folder, a tuple means any one of its entries."""

  def there(entry):
    return (base / entry).is_dir() if entry.endswith("/") else (base / entry).is_file()

  return [
    " or ".join(e) if isinstance(e, tuple) else e
    for e in expected
    if not any(there(x) for x in (e if isinstance(e, tuple) else (e,)))
  ]


def _locate(root, expected, *, title: str, url: str, folder: str, subdir: str | None = None) -> Path:
  """The data set's folder: root itself or root/subdir (the extracted archive's top folder), whichever holds
  every expected entry; otherwise one DataError saying what is missing, where to download and where to point."""
  root = _root(root, title, url)
  bases = [root] + ([root / subdir] if subdir else [])
  for base in bases:
    if not _missing(base, expected):
      return base
  names = ", ".join(" or ".join(e) if isinstance(e, tuple) else e for e in expected)
  if not root.is_dir():
    problem = f"{root} does not exist"
  else:  # report against the candidate that got furthest, so a half-extracted download names what it lacks
    base = min(bases, key=lambda b: len(_missing(b, expected)))
    problem = f"{base} lacks {', '.join(_missing(base, expected))}"
  also = f" (or in its subfolder {subdir}/)" if subdir else ""
  raise DataError(
    f"{title} not found: {problem}. Expected in the data root{also}: {names}. Download the data set from "
    f"{url}, extract it and point the config at the extracted folder: --config.data.root=/path/to/{folder}"
  )


def _rows(path: Path, ncols: int, rest: bool = False) -> list[list[str]]:
  """Whitespace-separated fields of each non-blank line; rest=True keeps spaces in the last field (names)."""
  rows = []
  with open(path, encoding="utf-8-sig") as f:  # -sig: a file re-saved by a Windows editor starts with a BOM
    for n, line in enumerate(f, 1):
      line = line.strip()
      if not line:
        continue
      row = line.split(None, ncols - 1) if rest else line.split()
      if len(row) != ncols:
        raise DataError(f"{path}, line {n}: expected {ncols} fields, got {line!r}")
      rows.append(row)
  return rows


def _numbers(path: Path, rows, dtype=np.float64) -> np.ndarray:
  """The rows' fields (strings) as a 2-D array; NumPy converts in C, which matters for 176k part lines."""
  try:
    return np.asarray(rows, dtype).reshape(len(rows), -1)
  except ValueError as e:
    raise DataError(f"{path}: not a number: {e}") from None


def _lookup(table: dict, key: str, path: Path):
  if key not in table:
    raise DataError(f"{path} has no entry for image {key!r}")
  return table[key]


def _loadmat(path: Path) -> dict:
  try:
    import scipy.io  # only the .mat layouts need SciPy
  except ImportError:
    raise DataError(f"reading {path} needs SciPy: pip install scipy") from None
  try:
    return scipy.io.loadmat(str(path), squeeze_me=True)
  except Exception as e:  # scipy raises several kinds on a truncated or non-MATLAB file
    raise DataError(f"cannot read {path} as a MATLAB file: {e}") from None


def _mat_column(table, key: str, path: Path) -> list:
  """One field of a struct array or one variable (cell array or vector) as a flat list of Python scalars."""
  names = getattr(getattr(table, "dtype", None), "names", None)
  if isinstance(table, dict):
    if key not in table:
      raise DataError(f"{path} has no variable {key!r}")
    values = table[key]
  elif names is not None:
    if key not in names:
      raise DataError(f"{path}: the struct array has no field {key!r} (fields: {', '.join(names)})")
    values = table[key]
  else:
    raise DataError(f"{path}: expected a struct array holding {key!r}")
  # squeeze_me leaves scalars, strings or (for one-element cells) nested arrays; flatten each to its item.
  return [np.asarray(v).reshape(-1)[0].item() for v in np.atleast_1d(values).reshape(-1)]


def image_files(folder: Path) -> list[Path]:
  """Image files under folder (recursively), sorted; hidden files (e.g. macOS '._x.jpg') are skipped."""
  return sorted(_walk_images(folder))


def _walk_images(folder: Path):
  for dirpath, dirnames, filenames in os.walk(folder):
    dirnames[:] = [d for d in dirnames if not _leftover(d)]
    yield from (Path(dirpath, f) for f in filenames if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS))


def _leftover(name: str) -> bool:
  return name.startswith(".") or name in ARCHIVE_LEFTOVERS


def _subfolders(folder: Path) -> list[str]:
  return sorted(d.name for d in folder.iterdir() if d.is_dir() and not _leftover(d.name))


def _check_classes_have_images(root: Path, class_names: list[str], folders: list[Path]):
  """A class folder without a single image (in any of `folders`) would still be a class: counted in
  num_classes, never seen. Refused, naming them (stops at each class's first image: cheap)."""
  empty = [c for c in class_names if not any(next(_walk_images(f / c), None) for f in folders if (f / c).is_dir())]
  if empty:
    shown = ", ".join(empty[:10]) + (f" ... ({len(empty)} in all)" if len(empty) > 10 else "")
    raise DataError(
      f"image folder: class folder(s) in {root} without a single image ({', '.join(IMAGE_EXTENSIONS)}):"
      f" {shown}. Add their images or remove the folders: each folder is a class."
    )


def _check_fractions(title: str, val_fraction: float, test_fraction: float) -> None:
  """The split of a data set that ships without one (configs/common.py: data.split)."""
  if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
    raise DataError(
      f"{title}: val_fraction {val_fraction} and test_fraction {test_fraction} must be non-negative and "
      "leave some of each class for training: set --config.data.split.val_fraction and "
      "--config.data.split.test_fraction (e.g. 0.1 each)"
    )


def _check_top_classes(title: str, top_classes: int) -> None:
  if isinstance(top_classes, bool) or not isinstance(top_classes, (int, np.integer)) or top_classes < 0:
    raise DataError(
      f"{title}: top_classes={top_classes!r} must be a whole number, 0 (every class) or more: set "
      "--config.data.top_classes"
    )


def _top_classes(counts, top_classes: int) -> list[int]:
  """Indices (ascending) of the `top_classes` entries with the largest counts, ties to the earlier entry; all if
  top_classes is 0 or not below their number."""
  if not top_classes or top_classes >= len(counts):
    return list(range(len(counts)))
  return sorted(sorted(range(len(counts)), key=lambda k: (-counts[k], k))[:top_classes])


def _stratified_pick(labels, split: str, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
  """The sorted indices of `split` ('train', 'val', 'test' or 'trainval' = train + val) in the class-stratified split
  of `labels`: the same for every process and call given the same labels, fractions and seed."""
  parts = stratified_split(
    labels, {"train": 1 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}, seed
  )
  return np.sort(np.concatenate([parts["train"], parts["val"]])) if split == "trainval" else parts[split]


# ---------------------------------------------------------------------------------------------------------------
# The common source: a list of image files with labels and, where known, boxes and parts.


class FileSource(Source):
  """Subclasses parse their annotations and call _set(); examples are then read from the file list."""

  # True for the data sets that may ship without a split: they take val_fraction, test_fraction, seed and top_classes
  # (pipeline.open_source passes config.data.split and config.data.top_classes to them, and refuses top_classes for
  # the others, whose classes and splits are fixed by their annotations).
  makes_split = False

  def _set(self, split, location, paths, labels, class_names, boxes=None, parts=None):
    self.split, self.location = split, str(location)
    self.class_names = list(class_names)
    self.num_classes = len(self.class_names)
    self._paths = [str(p) for p in paths]
    self._labels = np.asarray(labels, np.int64).reshape(-1)
    self._boxes = None if boxes is None else np.asarray(boxes, np.float32).reshape(-1, 4)
    self._parts = None if parts is None else np.asarray(parts, np.float32).reshape(-1, self.num_parts, 2)
    bad = (self._labels < 0) | (self._labels >= self.num_classes)
    if bad.any():
      i = int(np.flatnonzero(bad)[0])
      raise DataError(
        f"{self.name}: label {self._labels[i] + 1} (1-based) of {self._paths[i]} is outside the "
        f"{self.num_classes} classes"
      )
    check_nonempty(self, split)
    # Only the first few files are looked at (not 10k stats on a network disk): none of them there means an image
    # folder in the wrong place; a missing file or two is skipped when its example is read, naming the file.
    if not any(os.path.isfile(p) for p in self._paths[:20]):
      raise DataError(
        f"{self.name}: the annotations list images that are not there (none of the first "
        f"{min(20, len(self._paths))}), e.g. {self._paths[0]}; check that the image archive is "
        "extracted inside the data root"
      )

  def __len__(self) -> int:
    return len(self._paths)

  @property
  def labels(self) -> np.ndarray:
    return self._labels

  def describe(self, index: int) -> str:
    return self._paths[index]

  def path(self, index: int) -> str:
    """The image file of example `index` (fgattn_jax.write_split links or copies it)."""
    return self._paths[index]

  def _example(self, index: int) -> dict:
    with open(self._paths[index], "rb") as f:
      raw = f.read()
    return {
      "image": raw,
      "label": self._labels[index],
      "box": None if self._boxes is None else self._boxes[index],
      "parts": None if self._parts is None else self._parts[index],
    }


def _one_based_box(xmin, ymin, xmax, ymax) -> tuple[float, float, float, float]:
  """1-based inclusive pixel indices -> continuous coordinates (never below 0, for files that start at 0)."""
  return max(xmin - 1.0, 0.0), max(ymin - 1.0, 0.0), float(xmax), float(ymax)


# ---------------------------------------------------------------------------------------------------------------
# The data sets.

CUB_URL = "https://www.vision.caltech.edu/datasets/cub_200_2011/"
AIRCRAFT_URL = "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/"
CARS_URL = "https://ai.stanford.edu/~jkrause/cars/car_dataset.html (also mirrored on Kaggle)"
DOGS_URL = "http://vision.stanford.edu/aditya86/ImageNetDogs/"


class CUB(FileSource):
  """CUB-200-2011: root is CUB_200_2011/ (or its parent), with images/, images.txt, image_class_labels.txt,
  train_test_split.txt, bounding_boxes.txt, classes.txt and parts/part_locs.txt (15 parts).
  Class names drop the number prefix: '001.Black_footed_Albatross' -> 'Black_footed_Albatross'."""

  name = "cub"
  SPLITS = ("train", "test")
  num_parts = 15
  EXPECTED = (
    "images/",
    "images.txt",
    "image_class_labels.txt",
    "train_test_split.txt",
    "bounding_boxes.txt",
    "classes.txt",
    "parts/part_locs.txt",
  )

  def __init__(self, root, split: str):
    _check_split(self, split, self.SPLITS)
    base = _locate(root, self.EXPECTED, title="CUB-200-2011", url=CUB_URL, folder="CUB_200_2011", subdir="CUB_200_2011")
    images = _rows(base / "images.txt", 2)
    is_train = dict(_rows(base / "train_test_split.txt", 2))
    odd = sorted(set(is_train.values()) - {"0", "1"})
    if odd:  # otherwise those images would silently belong to neither split
      raise DataError(
        f"{base / 'train_test_split.txt'}: the second column holds {', '.join(odd[:3])}; CUB's is 1 "
        "(train) or 0 (test): restore the file from the data set's archive"
      )
    want = "1" if split == "train" else "0"
    ids = [i for i, _ in images if _lookup(is_train, i, base / "train_test_split.txt") == want]
    row = {i: n for n, i in enumerate(ids)}
    relpath = dict(images)
    class_of = dict(_rows(base / "image_class_labels.txt", 2))
    labels = [[_lookup(class_of, i, base / "image_class_labels.txt")] for i in ids]
    labels = _numbers(base / "image_class_labels.txt", labels, np.int64)[:, 0] - 1
    class_rows = _rows(base / "classes.txt", 2, rest=True)
    order = np.argsort(_numbers(base / "classes.txt", [[k] for k, _ in class_rows], np.int64)[:, 0], kind="stable")
    class_names = [re.sub(r"^\d+\.", "", class_rows[k][1]) for k in order]

    def rows_of(table):  # each line's place in this split (-1: another split's image) and its numbers
      return np.asarray([row.get(r[0], -1) for r in table], np.int64), [r[1:] for r in table]

    boxes = np.full((len(ids), 4), np.nan, np.float32)
    where, values = rows_of(_rows(base / "bounding_boxes.txt", 5))
    x, y, w, h = _numbers(base / "bounding_boxes.txt", values).T
    keep = where >= 0
    boxes[where[keep]] = np.stack([x, y, x + w, y + h], 1)[keep]

    parts = np.full((len(ids), self.num_parts, 2), np.nan, np.float32)
    locs = base / "parts" / "part_locs.txt"
    where, values = rows_of(_rows(locs, 5))
    p, x, y, visible = _numbers(locs, values).T
    keep = (where >= 0) & (visible > 0)  # CUB writes invisible parts as 0 0: they stay NaN
    if ((p[keep] < 1) | (p[keep] > self.num_parts)).any():
      raise DataError(f"{locs}: part ids must lie in 1..{self.num_parts}")
    parts[where[keep], p[keep].astype(np.int64) - 1] = np.stack([x, y], 1)[keep]

    images_dir = str(base / "images")
    self._set(split, base, [os.path.join(images_dir, relpath[i]) for i in ids], labels, class_names, boxes, parts)


class Aircraft(FileSource):
  """FGVC-Aircraft (fgvc-aircraft-2013b/ or its parent): data/images/<id>.jpg, data/images_<level>_<split>.txt,
  data/<variants|families|manufacturers>.txt and data/images_box.txt.

  Every image carries a 20-row copyright banner at the bottom, which load_image cuts off. Boxes keep their
  coordinates (the top rows do not move); a box reaching into the banner is clipped to the image by the
  transform, which clips every box to the image it gets."""

  name = "aircraft"
  SPLITS = ("train", "val", "trainval", "test")
  LEVELS = {"variant": "variants.txt", "family": "families.txt", "manufacturer": "manufacturers.txt"}
  BANNER_ROWS = 20

  def __init__(self, root, split: str, level: str = "variant"):
    _check_split(self, split, self.SPLITS)
    if level not in self.LEVELS:
      raise DataError(f"aircraft: unknown level {level!r}; valid levels: {', '.join(self.LEVELS)}")
    listing = f"data/images_{level}_{split}.txt"
    expected = ("data/images/", f"data/{self.LEVELS[level]}", listing, "data/images_box.txt")
    base = _locate(
      root,
      expected,
      title="FGVC-Aircraft",
      url=AIRCRAFT_URL,
      folder="fgvc-aircraft-2013b",
      subdir="fgvc-aircraft-2013b",
    )
    data = base / "data"
    with open(data / self.LEVELS[level], encoding="utf-8") as f:
      class_names = [line.strip() for line in f if line.strip()]
    index = {name: k for k, name in enumerate(class_names)}

    rows = _rows(base / listing, 2, rest=True)
    unknown = sorted({name for _, name in rows if name not in index})
    if unknown:
      raise DataError(f"{base / listing} names classes missing from {data / self.LEVELS[level]}: {unknown[:5]}")
    box_rows = _rows(data / "images_box.txt", 5)
    box_of = {
      r[0]: _one_based_box(*b) for r, b in zip(box_rows, _numbers(data / "images_box.txt", [r[1:] for r in box_rows]))
    }
    nan_box = (np.nan,) * 4
    self._set(
      split,
      base,
      [data / "images" / f"{i}.jpg" for i, _ in rows],
      [index[name] for _, name in rows],
      class_names,
      [box_of.get(i, nan_box) for i, _ in rows],
    )
    self.level = level

  def load_image(self, raw) -> np.ndarray:
    img = decode_image(raw)
    if img.shape[0] <= self.BANNER_ROWS:
      raise ValueError(f"image of {img.shape[0]} rows is no taller than the {self.BANNER_ROWS}-row banner")
    return img[: -self.BANNER_ROWS]


class Cars(FileSource):
  """Stanford Cars (devkit layout): devkit/cars_meta.mat, devkit/cars_train_annos.mat, cars_train/, cars_test/
  and the test labels in cars_test_annos_withlabels.mat (in root or devkit/). Kaggle's mirror nests the image
  folders (cars_train/cars_train/); both are read."""

  name = "cars"
  SPLITS = ("train", "test")

  def __init__(self, root, split: str):
    _check_split(self, split, self.SPLITS)
    annos = (
      "devkit/cars_train_annos.mat"
      if split == "train"
      else ("cars_test_annos_withlabels.mat", "devkit/cars_test_annos_withlabels.mat")
    )
    expected = ("devkit/cars_meta.mat", annos, f"cars_{split}/")
    try:
      base = _locate(
        root, expected, title="Stanford Cars", url=CARS_URL, folder="stanford_cars", subdir="stanford_cars"
      )  # (torchvision's layout: root/stanford_cars/)
    except DataError as e:
      if split != "test" or not root:
        raise
      r = _root(root, "Stanford Cars", CARS_URL)
      if any((b / "devkit" / "cars_test_annos.mat").is_file() for b in (r, r / "stanford_cars")):
        raise DataError(
          f"{e} The devkit's cars_test_annos.mat holds no class labels: the test labels are the "
          "separate file cars_test_annos_withlabels.mat (from the same page), in the data root or "
          "devkit/."
        ) from None
      raise
    annos_path = next(base / a for a in ((annos,) if isinstance(annos, str) else annos) if (base / a).is_file())
    meta_path = base / "devkit" / "cars_meta.mat"
    class_names = [str(n) for n in _mat_column(_loadmat(meta_path), "class_names", meta_path)]

    table = _loadmat(annos_path)
    if "annotations" not in table:
      raise DataError(f"{annos_path} has no variable 'annotations'")
    ann = table["annotations"]
    col = {k: _mat_column(ann, k, annos_path) for k in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")}
    images = base / f"cars_{split}"
    if (images / f"cars_{split}").is_dir():  # the Kaggle mirror's extra level
      images = images / f"cars_{split}"
    boxes = [_one_based_box(*b) for b in zip(col["bbox_x1"], col["bbox_y1"], col["bbox_x2"], col["bbox_y2"])]
    self._set(
      split, base, [images / str(f) for f in col["fname"]], [int(c) - 1 for c in col["class"]], class_names, boxes
    )


class Dogs(FileSource):
  """Stanford Dogs: Images/<wnid-Name>/<file>.jpg, train_list.mat and test_list.mat (file_list, annotation_list,
  labels 1-based) and, optionally, Annotation/<wnid-Name>/<file stem> (PASCAL VOC XML). Class k is the k-th
  Images folder in sorted order, named by the part after the first '-'. The box (the union of the boxes of all
  dogs in the image) is parsed when the example is read, so making the source does not open 20k XML files;
  a missing or unreadable annotation gives an unknown (NaN) box."""

  name = "dogs"
  SPLITS = ("train", "test")

  def __init__(self, root, split: str):
    _check_split(self, split, self.SPLITS)
    listing = f"{split}_list.mat"
    base = _locate(
      root, ("Images/", listing), title="Stanford Dogs", url=DOGS_URL, folder="stanford_dogs", subdir="stanford_dogs"
    )
    table = _loadmat(base / listing)
    files = [str(f) for f in _mat_column(table, "file_list", base / listing)]
    labels = [int(v) - 1 for v in _mat_column(table, "labels", base / listing)]
    folders = _subfolders(base / "Images")
    for f, label in zip(files, labels):
      folder = f.replace("\\", "/").split("/")[0]
      if not 0 <= label < len(folders) or folders[label] != folder:
        raise DataError(
          f"{base / listing}: {f} has label {label + 1}, which is not its folder's place among the "
          f"{len(folders)} sorted class folders of {base / 'Images'}"
        )
    self._annotations = None
    if (base / "Annotation").is_dir() and "annotation_list" in table:
      self._annotations = [
        str(base / "Annotation" / str(a)) for a in _mat_column(table, "annotation_list", base / listing)
      ]
    self._set(split, base, [base / "Images" / f for f in files], labels, [f.split("-", 1)[-1] for f in folders])

  def _example(self, index: int) -> dict:
    ex = super()._example(index)
    if self._annotations is not None:
      ex["box"] = _voc_union_box(self._annotations[index])
    return ex


def _voc_union_box(path: str):
  """The smallest box holding every <object><bndbox> of a VOC XML file, or None if there is none to read."""
  try:
    boxes = [
      [float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")] for b in ET.parse(path).getroot().iter("bndbox")
    ]
  except (OSError, ET.ParseError, TypeError, ValueError):
    return None  # an annotation is optional: the box is then unknown, the image is still used
  if not boxes:
    return None
  b = np.asarray(boxes)
  return _one_based_box(b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max())


class ImageFolder(FileSource):
  """One sub-folder per class (sorted by name; files sorted; IMAGE_EXTENSIONS in any case; a class folder without
  images is refused, __MACOSX and hidden folders are not classes). If root has
  train/, val/ or test/ folders, each holds its own <class>/<image> tree (labels follow the union of their
  class folders, so they agree across splits). Otherwise the whole root/<class>/<image> tree is split per class
  with `stratified_split`: test_fraction and val_fraction of each class, the rest train.
  top_classes > 0 keeps the classes with the most images (over every split folder; ties to the earlier name)."""

  name = "folder"
  SPLIT_DIRS = ("train", "val", "test")
  makes_split = True

  def __init__(
    self, root, split: str, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0, top_classes: int = 0
  ):
    root = _root(root, "image folder")
    layout = (
      "one folder per class holding its images, root/<class>/<image>.jpg, or root/<split>/<class>/<image> "
      f"with split in {', '.join(self.SPLIT_DIRS)}; set --config.data.root=/path/to/root"
    )
    if not root.is_dir():
      raise DataError(f"image folder: {root} does not exist. Expected {layout}")
    _check_top_classes("image folder", top_classes)
    present = [s for s in self.SPLIT_DIRS if (root / s).is_dir()]
    if present:
      valid = present + (["trainval"] if {"train", "val"} <= set(present) else [])
      _check_split(self, split, valid)
      class_names = sorted(set().union(*(_subfolders(root / s) for s in present)))
      _check_classes_have_images(root, class_names, [root / s for s in present])
      if top_classes:  # counted over every split folder, so that each split keeps the same classes
        counts = [
          sum(sum(1 for _ in _walk_images(root / s / c)) for s in present if (root / s / c).is_dir())
          for c in class_names
        ]
        class_names = [class_names[k] for k in _top_classes(counts, top_classes)]
      paths, labels = [], []
      for s in ["train", "val"] if split == "trainval" else [split]:
        for k, c in enumerate(class_names):
          files = image_files(root / s / c) if (root / s / c).is_dir() else []
          paths += files
          labels += [k] * len(files)
    else:
      _check_split(self, split, self.SPLIT_DIRS + ("trainval",))
      _check_fractions("image folder", val_fraction, test_fraction)  # (the split folders' own split needs none)
      class_names = _subfolders(root)
      if not class_names:
        raise DataError(f"image folder: no class folders in {root}. Expected {layout}")
      _check_classes_have_images(root, class_names, [root])
      files = [image_files(root / c) for c in class_names]
      kept = _top_classes([len(f) for f in files], top_classes)
      class_names, files = [class_names[k] for k in kept], [files[k] for k in kept]
      paths = [p for f in files for p in f]
      labels = [k for k, f in enumerate(files) for _ in f]
      keep = _stratified_pick(labels, split, val_fraction, test_fraction, seed)
      paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    self._set(split, root, paths, labels, class_names)


GLDV2_URL = "https://github.com/cvdfoundation/google-landmark"


class Landmarks(FileSource):
  """Google Landmarks v2 (the train set): root holds train.csv (id,url,landmark_id; the urls are never fetched) and
  the images, train/<id[0]>/<id[1]>/<id[2]>/<id>.jpg, as the release's images_NNN.tar extract inside train/. Often
  only some of the 500 tars are there: the examples are the listed images that are present (found by one walk of
  train/, not 4M file checks). It ships no labelled val or test split: the present images are split per class with
  `stratified_split` (like ImageFolder's unsplit tree), in the order of their sorted paths, so the split does not
  depend on train.csv's row order. top_classes > 0 keeps the landmarks with the most present images (ties to the
  smaller landmark_id). Labels follow ascending landmark_id; class names are the last part of the category in
  train_label_to_category.csv where it is there ('http://commons.wikimedia.org/wiki/Category:Foo_Bar' -> 'Foo_Bar'),
  else the landmark_id. An id listed twice counts once (its first row)."""

  name = "landmarks"
  SPLITS = ("train", "val", "test", "trainval")
  makes_split = True
  TITLE = "Google Landmarks v2"
  LAYOUT = (
    "train.csv (header id,url,landmark_id) and the images at train/<a>/<b>/<c>/<id>.jpg, a, b and c being "
    "the id's first three characters (each images_NNN.tar extracted inside train/)"
  )

  def __init__(
    self, root, split: str, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0, top_classes: int = 0
  ):
    _check_split(self, split, self.SPLITS)
    base = _root(root, self.TITLE, GLDV2_URL)
    _check_fractions(self.TITLE, val_fraction, test_fraction)
    _check_top_classes(self.TITLE, top_classes)
    listing = base / "train.csv"
    if not listing.is_file():
      problem = f"{base} does not exist" if not base.is_dir() else f"{base} has no train.csv"
      raise DataError(
        f"{self.TITLE} not found: {problem}. Expected in the data root: {self.LAYOUT}. Download "
        f"train.csv and some or all of the image tars from {GLDV2_URL}, extract the tars inside "
        "root/train/ and point the config at the root: --config.data.root=/path/to/gldv2"
      )
    present, landmark_of, absent, again = _landmarks_layout(str(base), *_stamp(listing), *_stamp(base / "train"))
    ids = [i for i in present if i in landmark_of]  # sorted path order: the walk's, not the csv's
    if not ids:
      raise DataError(
        f"{self.TITLE}: none of the images {listing} lists is in {base / 'train'} (found "
        f"{len(present)} .jpg files there). Expected {self.LAYOUT}. Download the image tars from "
        f"{GLDV2_URL}, extract them inside {base / 'train'}, and point the config at the folder holding "
        "train.csv and train/: --config.data.root=/path/to/gldv2"
      )
    log.info(
      "%s: %d of the %d images listed in %s are present; %d are absent (not under %s)%s%s",
      self.TITLE,
      len(ids),
      len(ids) + absent,
      listing,
      absent,
      base / "train",
      f"; {again} rows list an image again (its first row counts)" if again else "",
      f"; {len(present) - len(ids)} .jpg files there are not listed (ignored)" if len(present) > len(ids) else "",
    )
    landmark = np.fromiter((landmark_of[i] for i in ids), np.int64, len(ids))
    classes, counts = np.unique(landmark, return_counts=True)  # ascending landmark_id
    classes = classes[_top_classes(counts.tolist(), top_classes)]
    if len(classes) < len(counts):
      keep = np.flatnonzero(np.isin(landmark, classes))
      ids, landmark = [ids[i] for i in keep], landmark[keep]
    labels = np.searchsorted(classes, landmark)
    keep = _stratified_pick(labels, split, val_fraction, test_fraction, seed)
    names = self._class_names(base / "train_label_to_category.csv", classes)
    self.landmark_ids = classes.tolist()  # label k is landmark_ids[k]
    self.absent = absent  # images train.csv lists that are not there
    self._set(split, base, [os.path.join(present[ids[i]], ids[i] + ".jpg") for i in keep], labels[keep], names)

  @staticmethod
  def _present(folder: Path) -> dict[str, str]:
    """{image id: the folder holding <id>.jpg} under folder, in sorted path order (one walk; the first of an id
    found twice)."""
    present = {}
    for dirpath, dirnames, filenames in os.walk(folder):
      dirnames[:] = sorted(d for d in dirnames if not _leftover(d))
      for f in sorted(filenames):
        if f.endswith(".jpg") and not f.startswith("."):
          present.setdefault(f[:-4], dirpath)
    return present

  @classmethod
  def _listing(cls, path: Path, present: dict) -> tuple[dict[str, int], int, int]:
    """train.csv -> ({present id: landmark_id}, rows of absent images, rows repeating a present id)."""
    landmark_of, absent, again = {}, 0, 0
    with open(path, newline="", encoding="utf-8-sig") as f:
      reader = csv.reader(f)
      header = [h.strip() for h in next(reader, [])]
      if "id" not in header or "landmark_id" not in header:
        raise DataError(
          f"{path}: the header is {','.join(header)!r}, not id,url,landmark_id: expected the v2 "
          f"release's train.csv ({GLDV2_URL}; train_clean.csv has another layout)"
        )
      i, j = header.index("id"), header.index("landmark_id")
      width = max(i, j) + 1
      for row in reader:
        if not row:
          continue
        if len(row) < width:
          raise DataError(
            f"{path}, line {reader.line_num}: expected {len(header)} fields ({','.join(header)}), got {','.join(row)!r}"
          )
        image_id = row[i]
        if image_id not in present:
          absent += 1
        elif image_id in landmark_of:
          again += 1
        else:
          try:
            landmark_of[image_id] = int(row[j])
          except ValueError:
            raise DataError(f"{path}, line {reader.line_num}: landmark_id {row[j]!r} is not a number") from None
    return landmark_of, absent, again

  @staticmethod
  def _class_names(path: Path, classes: np.ndarray) -> list[str]:
    """Each landmark's category name from train_label_to_category.csv, or its id (no file, or no row for it)."""
    names = {}
    if path.is_file():
      with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if "landmark_id" not in header or "category" not in header:
          raise DataError(
            f"{path}: the header is {','.join(header)!r}, not landmark_id,category: restore the "
            f"release's file ({GLDV2_URL}) or remove it (classes are then named by landmark_id)"
          )
        i, j = header.index("landmark_id"), header.index("category")
        for row in reader:
          if len(row) > max(i, j) and row[i].strip().lstrip("-").isdigit():
            last = urllib.parse.unquote(row[j].strip().rstrip("/").rsplit("/", 1)[-1])
            names.setdefault(int(row[i]), re.sub(r"^Category:", "", last) or row[i].strip())
    return [names.get(int(k), str(int(k))) for k in classes]


def _stamp(path: Path) -> tuple[int, int]:
  stat = path.stat() if path.exists() else None
  return (stat.st_mtime_ns, stat.st_size) if stat else (0, 0)


@functools.lru_cache(maxsize=4)
def _landmarks_layout(base: str, *stamps) -> tuple[dict, dict, int, int]:
  """(the images present, their landmarks, absent rows, repeated rows) of a Google Landmarks root: one walk of its
  train/ and one read of its train.csv (4M rows) per process, not one per split opened (a run opens train and
  eval, MA-CNN's phases the train split again). stamps: train.csv's and train/'s modification time and size: a new
  train.csv or new top-level folders are read again; images extracted deeper into existing folders while a process
  runs are seen by the next process."""
  present = Landmarks._present(Path(base) / "train")
  return present, *Landmarks._listing(Path(base) / "train.csv", present)


# ---------------------------------------------------------------------------------------------------------------

FOLDER_SOURCES = {
  "cub": CUB,
  "aircraft": Aircraft,
  "cars": Cars,
  "dogs": Dogs,
  "folder": ImageFolder,
  "landmarks": Landmarks,
}
# The names configs/common.py gives the layouts (c.data.name) open the same sources.
ALIASES = {
  "cub200": "cub",
  "fgvc_aircraft": "aircraft",
  "stanford_cars": "cars",
  "stanford_dogs": "dogs",
  "imagefolder": "folder",
  "gldv2": "landmarks",
  "google_landmarks": "landmarks",
}


def folder_source_class(name: str) -> type:
  """The source class of layout `name` (a key of FOLDER_SOURCES or ALIASES)."""
  key = ALIASES.get(name, name)
  if key not in FOLDER_SOURCES:
    raise DataError(f"unknown folder layout {name!r}; known: {', '.join(FOLDER_SOURCES)}")
  return FOLDER_SOURCES[key]


def open_folder_source(name: str, root, split: str, **options) -> Source:
  """The source of layout `name` (a key of FOLDER_SOURCES or ALIASES) for one split."""
  return folder_source_class(name)(root, split, **options)
