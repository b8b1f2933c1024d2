"""Writers of small, real data trees in each data set's own folder layout, for the tests.

Every writer takes the folder to write into (and a few options), writes real JPEG files (40 wide, 32 high;
Aircraft 52 high, of which the bottom 20 rows are the banner) with the annotation files of that layout, and
returns one dict per image it wrote:

    {"path": Path of the image file, "split": "train" | "val" | "test" (None: unsplit ImageFolder, Landmarks),
     "label": int (0-based), "class_name": str,
     "box": (x0, y0, x1, y1) in continuous pixels as the source should give it, or None (unknown),
     "parts": (num_parts, 2) float array with NaN rows for invisible parts, or None}

Each writer's docstring says where the data set's root (the folder to pass as `root`) is. The class name
lists are module constants so that tests can compare `class_names`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

WIDTH, HEIGHT = 40, 32
AIRCRAFT_BANNER = 20


def pattern(seed: int, size=(WIDTH, HEIGHT)) -> Image.Image:
  """A smooth RGB pattern that depends on seed (smooth, so it survives JPEG compression)."""
  w, h = size
  y, x = np.mgrid[0:h, 0:w]
  rgb = np.stack([(x * 5 + seed * 40) % 256, (y * 7 + seed * 20) % 256, np.full_like(x, (seed * 60) % 256)], -1)
  return Image.fromarray(rgb.astype(np.uint8))


def write_jpeg(path, seed: int, size=(WIDTH, HEIGHT)) -> Path:
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  pattern(seed, size).save(path, format="JPEG", quality=90)
  return path


def _lines(path: Path, lines) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(f"{line}\n" for line in lines))


# ---------------------------------------------------------------------------------------------------------------

CUB_CLASSES = ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross"]
CUB_PARTS = 15


def write_cub(root, parent: bool = False) -> list[dict]:
  """CUB-200-2011 with 3 classes of 3 images (2 train, 1 test), boxes and 15 parts (about half visible).
  The data set's folder is root, or root/CUB_200_2011 with parent=True (pass root either way)."""
  base = Path(root) / "CUB_200_2011" if parent else Path(root)
  written, images, labels, split, boxes, locs = [], [], [], [], [], []
  for k, name in enumerate(CUB_CLASSES):
    folder = f"{k + 1:03d}.{name}"
    for j in range(3):
      i = len(written) + 1  # CUB's image ids start at 1
      rel = f"{folder}/{name}_{i:04d}_{j}.jpg"
      path = write_jpeg(base / "images" / rel, seed=i)
      x, y, w, h = 2.0 + i, 3.0, 20.5, 15.0 + j
      parts = np.full((CUB_PARTS, 2), np.nan)
      for p in range(1, CUB_PARTS + 1):
        visible = (p + i) % 2 == 0
        px, py = (float(p + i), float(p)) if visible else (0.0, 0.0)  # CUB writes 0 0 for invisible parts
        locs.append(f"{i} {p} {px:.1f} {py:.1f} {int(visible)}")
        if visible:
          parts[p - 1] = (px, py)
      images.append(f"{i} {rel}")
      labels.append(f"{i} {k + 1}")
      split.append(f"{i} {int(j < 2)}")
      boxes.append(f"{i} {x:.1f} {y:.1f} {w:.1f} {h:.1f}")
      written.append(
        {
          "path": path,
          "split": "train" if j < 2 else "test",
          "label": k,
          "class_name": name,
          "box": (x, y, x + w, y + h),
          "parts": parts,
        }
      )
  _lines(base / "images.txt", images)
  _lines(base / "image_class_labels.txt", labels)
  _lines(base / "train_test_split.txt", split)
  _lines(base / "bounding_boxes.txt", boxes)
  _lines(base / "classes.txt", [f"{k + 1} {k + 1:03d}.{n}" for k, n in enumerate(CUB_CLASSES)])
  _lines(base / "parts" / "part_locs.txt", locs)
  _lines(base / "parts" / "parts.txt", [f"{p} part{p}" for p in range(1, CUB_PARTS + 1)])
  return written


# ---------------------------------------------------------------------------------------------------------------

# Variant k belongs to family k and manufacturer AIRCRAFT_MAKER[k]; names with spaces and slashes as in the real set.
AIRCRAFT_VARIANTS = ["707-320", "Cessna 172", "F/A-18"]
AIRCRAFT_FAMILIES = ["Boeing 707", "Cessna 172", "F/A-18"]
AIRCRAFT_MANUFACTURERS = ["Boeing", "Cessna", "McDonnell Douglas"]
AIRCRAFT_SPLITS = ("train", "val", "test")


def write_aircraft(root, parent: bool = False) -> list[dict]:
  """FGVC-Aircraft with 3 variants of 3 images (one per train/val/test), images 40x52 with the banner.
  The data set's folder is root, or root/fgvc-aircraft-2013b with parent=True. Each dict also has "labels":
  {"variant": k, "family": k, "manufacturer": m}; "label" and "class_name" are the variant's."""
  data = (Path(root) / "fgvc-aircraft-2013b" if parent else Path(root)) / "data"
  written, box_lines = [], []
  for k, variant in enumerate(AIRCRAFT_VARIANTS):
    for j, split in enumerate(AIRCRAFT_SPLITS):
      image_id = f"{k * 10 + j + 5:07d}"  # zero-padded ids, as in the real set: the padding must survive
      path = write_jpeg(data / "images" / f"{image_id}.jpg", seed=k * 3 + j, size=(WIDTH, HEIGHT + AIRCRAFT_BANNER))
      xmin, ymin, xmax, ymax = 1 + j, 2 + k, 30 + j, 25 + k  # 1-based inclusive pixel indices
      box_lines.append(f"{image_id} {xmin} {ymin} {xmax} {ymax}")
      written.append(
        {
          "path": path,
          "split": split,
          "label": k,
          "class_name": variant,
          "id": image_id,
          "labels": {"variant": k, "family": k, "manufacturer": k},
          "box": (xmin - 1.0, ymin - 1.0, float(xmax), float(ymax)),
          "parts": None,
        }
      )
  names = {"variant": AIRCRAFT_VARIANTS, "family": AIRCRAFT_FAMILIES, "manufacturer": AIRCRAFT_MANUFACTURERS}
  for level, classes in names.items():
    for split in AIRCRAFT_SPLITS + ("trainval",):
      members = [ex for ex in written if ex["split"] in (("train", "val") if split == "trainval" else (split,))]
      _lines(data / f"images_{level}_{split}.txt", [f"{ex['id']} {classes[ex['labels'][level]]}" for ex in members])
  _lines(data / "variants.txt", AIRCRAFT_VARIANTS)
  _lines(data / "families.txt", AIRCRAFT_FAMILIES)
  _lines(data / "manufacturers.txt", AIRCRAFT_MANUFACTURERS)
  _lines(data / "images_box.txt", box_lines)
  return written


# ---------------------------------------------------------------------------------------------------------------

CARS_CLASSES = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "BMW M3 Coupe 2012"]


def _mat_struct(records: list[dict]) -> np.ndarray:
  """A 1xN MATLAB struct array (as the devkit's): every field a 1x1 numeric matrix or a char array."""
  arr = np.zeros((1, len(records)), dtype=[(k, object) for k in records[0]])
  for j, rec in enumerate(records):
    arr[0, j] = tuple(np.array(v) if isinstance(v, str) else np.array([[v]], np.uint16) for v in rec.values())
  return arr


def write_cars(root, test_labels_in_devkit: bool = False, kaggle: bool = False) -> list[dict]:
  """Stanford Cars (devkit layout) with 3 classes of 3 images (2 train, 1 test); the data set's folder is root.
  test_labels_in_devkit: write cars_test_annos_withlabels.mat in devkit/ instead of root.
  kaggle: nest the image folders as the Kaggle mirror does (cars_train/cars_train/)."""
  from scipy.io import savemat

  root = Path(root)
  written, annos = [], {"train": [], "test": []}
  for k, name in enumerate(CARS_CLASSES):
    for j in range(3):
      split = "train" if j < 2 else "test"
      fname = f"{len(annos[split]) + 1:05d}.jpg"  # each split numbers its files from 00001
      folder = root / f"cars_{split}" / (f"cars_{split}" if kaggle else "")
      path = write_jpeg(folder / fname, seed=k * 3 + j)
      x1, y1, x2, y2 = 2 + j, 3 + k, 35 - j, 30 - k  # 1-based inclusive
      annos[split].append({"bbox_x1": x1, "bbox_y1": y1, "bbox_x2": x2, "bbox_y2": y2, "class": k + 1, "fname": fname})
      written.append(
        {
          "path": path,
          "split": split,
          "label": k,
          "class_name": name,
          "box": (x1 - 1.0, y1 - 1.0, float(x2), float(y2)),
          "parts": None,
        }
      )
  (root / "devkit").mkdir(parents=True, exist_ok=True)
  savemat(root / "devkit" / "cars_meta.mat", {"class_names": np.array(CARS_CLASSES, dtype=object).reshape(1, -1)})
  savemat(root / "devkit" / "cars_train_annos.mat", {"annotations": _mat_struct(annos["train"])})
  test_dir = root / "devkit" if test_labels_in_devkit else root
  savemat(test_dir / "cars_test_annos_withlabels.mat", {"annotations": _mat_struct(annos["test"])})
  return written


# ---------------------------------------------------------------------------------------------------------------

DOGS_FOLDERS = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02096051-Airedale"]
DOGS_CLASSES = ["Chihuahua", "Japanese_spaniel", "Airedale"]


def _voc_xml(boxes) -> str:
  objects = "".join(
    f"<object><name>dog</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax>"
    "</bndbox></object>"
    for a, b, c, d in boxes
  )
  size = f"<size><width>{WIDTH}</width><height>{HEIGHT}</height><depth>3</depth></size>"
  return f"<annotation>{size}{objects}</annotation>"


def write_dogs(root) -> list[dict]:
  """Stanford Dogs with 3 breeds of 3 images (2 train, 1 test); the data set's folder is root. The first image
  of each breed has two dogs (its box is their union), the last has no annotation file (box None)."""
  from scipy.io import savemat

  root = Path(root)
  written, lists = [], {"train": [], "test": []}
  for k, folder in enumerate(DOGS_FOLDERS):
    wnid = folder.split("-")[0]
    for j in range(3):
      split = "train" if j < 2 else "test"
      stem = f"{wnid}_{100 + j}"
      path = write_jpeg(root / "Images" / folder / f"{stem}.jpg", seed=k * 3 + j)
      boxes = [(3, 4, 20, 22), (10, 2, 38, 18)] if j == 0 else [(2 + k, 3, 30, 28)]
      box = None
      if j < 2:
        (root / "Annotation" / folder).mkdir(parents=True, exist_ok=True)
        (root / "Annotation" / folder / stem).write_text(_voc_xml(boxes))
        b = np.asarray(boxes, float)
        box = (b[:, 0].min() - 1, b[:, 1].min() - 1, b[:, 2].max(), b[:, 3].max())
      lists[split].append((f"{folder}/{stem}.jpg", f"{folder}/{stem}", k + 1))
      written.append(
        {"path": path, "split": split, "label": k, "class_name": DOGS_CLASSES[k], "box": box, "parts": None}
      )
  for split, rows in lists.items():
    cell = lambda col: np.array([r[col] for r in rows], dtype=object).reshape(-1, 1)  # noqa: E731 (Nx1 cell)
    savemat(
      root / f"{split}_list.mat",
      {
        "file_list": cell(0),
        "annotation_list": cell(1),
        "labels": np.array([r[2] for r in rows], float).reshape(-1, 1),
      },
    )
  return written


# ---------------------------------------------------------------------------------------------------------------

FOLDER_CLASSES = {"cat": 10, "dog": 7, "eel": 2}
FOLDER_EXTENSIONS = (".jpg", ".JPEG", ".png", ".bmp", ".webp")  # cycled through, to cover every accepted kind


def write_image_folder(root, counts: dict[str, int] | None = None, splits=None) -> list[dict]:
  """One folder per class, `counts` images each (default FOLDER_CLASSES), in every accepted extension, plus
  files that must be skipped (notes.txt, a hidden ._x.jpg). splits=None writes root/<class>/<image> (dicts
  get split None); splits=("train", "test") writes that tree under each root/<split>/. Labels follow the sorted
  class names."""
  counts = FOLDER_CLASSES if counts is None else counts
  written = []
  for split in splits or (None,):
    base = Path(root) / split if split else Path(root)
    for k, name in enumerate(sorted(counts)):
      for j in range(counts[name]):
        path = base / name / f"img{j:03d}{FOLDER_EXTENSIONS[j % len(FOLDER_EXTENSIONS)]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        pattern(k * 11 + j).save(path)  # in the format its extension names
        written.append({"path": path, "split": split, "label": k, "class_name": name, "box": None, "parts": None})
      (base / name / "notes.txt").write_text("not an image")
      (base / name / "._img000.jpg").write_bytes(b"AppleDouble junk")
  return written


# ---------------------------------------------------------------------------------------------------------------


def landmark_category(landmark_id: int) -> str:
  """The category name write_landmarks gives a landmark. Sorted, these names are not in landmark_id order (an even
  id's comes before every odd one's); their URLs percent-encode some characters, as the real file's do."""
  return f"{'Église' if landmark_id % 2 else 'Abbaye'}_{landmark_id}_(view)"


def landmark_image_id(landmark_id: int, j: int) -> str:
  """A 16-hex-digit image id, as the real data set's, the same on every call."""
  import hashlib

  return hashlib.md5(f"{landmark_id}-{j}".encode()).hexdigest()[:16]


def write_landmarks(
  root, counts: dict[int, int], present: dict[int, int] | None = None, categories: bool = True
) -> list[dict]:
  """Google Landmarks v2's train set: root/train.csv (id,url,landmark_id) listing counts[landmark_id] images of
  each landmark, its rows shuffled as in the real file, and the images at root/train/<a>/<b>/<c>/<id>.jpg.
  present: {landmark_id: how many of its listed images are written} (the rest are listed but absent, as after
  downloading only some of the tars); None: all. categories: also write train_label_to_category.csv (class names
  landmark_category(id), else the landmark_id). The data set's root is root. Labels number the landmarks with a
  written image in ascending landmark_id order; every dict has split None and also "id" and "landmark_id"."""
  from urllib.parse import quote

  root = Path(root)
  present = counts if present is None else present
  classes = sorted(k for k in counts if min(present.get(k, 0), counts[k]) > 0)
  written, rows = [], []
  for landmark_id in sorted(counts):
    for j in range(counts[landmark_id]):
      image_id = landmark_image_id(landmark_id, j)
      rows.append(f"{image_id},https://upload.wikimedia.org/x/{image_id}.jpg,{landmark_id}")
      if j < present.get(landmark_id, 0):
        path = write_jpeg(
          root / "train" / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg", seed=landmark_id * 7 + j
        )
        name = landmark_category(landmark_id) if categories else str(landmark_id)
        written.append(
          {
            "path": path,
            "split": None,
            "label": classes.index(landmark_id),
            "class_name": name,
            "box": None,
            "parts": None,
            "id": image_id,
            "landmark_id": landmark_id,
          }
        )
  order = np.random.default_rng(0).permutation(len(rows))
  _lines(root / "train.csv", ["id,url,landmark_id"] + [rows[i] for i in order])
  if categories:
    _lines(
      root / "train_label_to_category.csv",
      ["landmark_id,category"]
      + [f"{k},http://commons.wikimedia.org/wiki/Category:{quote(landmark_category(k))}" for k in sorted(counts)],
    )
  return written
