"""The data sets' own folder layouts, read back from small real trees (tests/data_trees.py)."""

import io
import os
import pickle
import re
from pathlib import Path

import data_trees as trees
import numpy as np
import pytest
from PIL import Image

from data_pipelines.sources.base import DataError, decode_image
from data_pipelines.sources.folders import (
  ALIASES,
  CUB,
  FOLDER_SOURCES,
  Aircraft,
  Cars,
  Dogs,
  ImageFolder,
  open_folder_source,
)
from data_pipelines.splits import stratified_split


def check_split(src, written, split, num_parts=0):
  """The source holds exactly the written images of `split`, each with its label, box, parts and file."""
  want = sorted((ex for ex in written if ex["split"] == split), key=lambda ex: str(ex["path"]))
  order = np.argsort([src.describe(i) for i in range(len(src))])
  assert [src.describe(i) for i in order] == [str(ex["path"]) for ex in want]
  for i, ex in zip(order, want):
    item = src[i]
    assert set(item) == {"image", "label", "box", "parts", "index"} and item["index"] == i
    assert item["label"] == ex["label"] == src.labels[i] and src.class_names[item["label"]] == ex["class_name"]
    assert item["image"] == ex["path"].read_bytes()  # raw bytes, not decoded
    assert item["box"].dtype == np.float32 and item["box"].shape == (4,)
    if ex["box"] is None:
      assert np.isnan(item["box"]).all()
    else:
      np.testing.assert_allclose(item["box"], ex["box"])
    assert item["parts"].shape == (num_parts, 2)
    if ex["parts"] is not None:
      np.testing.assert_array_equal(np.isnan(item["parts"]), np.isnan(ex["parts"]))
      np.testing.assert_allclose(item["parts"], ex["parts"])  # NaNs compare equal here
  assert src.labels.dtype == np.int64 and len(src.labels) == len(src)
  assert src.num_classes == len(src.class_names)


# ---------------------------------------------------------------------------------------------------------------


def test_sixteen_bit_grey_images_keep_their_tones():
  ramp = np.linspace(0, 65535, 64 * 48).astype(np.uint16).reshape(48, 64)  # black to white
  for wide, fmt in ((ramp, "PNG"), (ramp.astype(np.int32), "TIFF")):  # read as PIL's modes I;16 and I
    buffer = io.BytesIO()
    Image.fromarray(wide).save(buffer, format=fmt)
    img = decode_image(buffer.getvalue())
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[..., 0], ramp >> 8)  # not clipped to 255: an all but white image once
  eight = np.arange(48 * 64, dtype=np.uint8).reshape(48, 64)  # 8-bit grey is unchanged
  buffer = io.BytesIO()
  Image.fromarray(eight).save(buffer, format="PNG")
  np.testing.assert_array_equal(decode_image(buffer.getvalue())[..., 1], eight)


@pytest.mark.parametrize("parent", [False, True])
def test_cub(tmp_path, parent):
  written = trees.write_cub(tmp_path, parent=parent)
  for split in ("train", "test"):
    src = CUB(tmp_path, split)
    assert src.class_names == trees.CUB_CLASSES and src.num_parts == 15
    check_split(src, written, split, num_parts=15)
  img = src.load_image(src[0]["image"])
  assert img.dtype == np.uint8 and img.shape == (trees.HEIGHT, trees.WIDTH, 3)
  assert np.isnan(src[0]["parts"]).any() and not np.isnan(src[0]["parts"]).all()


def test_cub_lists_saved_with_a_bom_read_and_a_split_value_not_0_or_1_refused(tmp_path):
  written = trees.write_cub(tmp_path)
  for path in tmp_path.rglob("*.txt"):  # as a Windows editor re-saves them: a BOM and CRLF line ends
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
  check_split(CUB(tmp_path, "train"), written, "train", num_parts=15)
  split = tmp_path / "train_test_split.txt"
  split.write_text(split.read_text(encoding="utf-8-sig").replace("3 0", "3 2"))
  with pytest.raises(DataError, match=r"train_test_split.txt: the second column holds 2; CUB's is 1 \(train\) or 0"):
    CUB(tmp_path, "train")


def test_corrupt_image_fails_only_when_decoded(tmp_path):
  written = trees.write_cub(tmp_path)
  written[0]["path"].write_bytes(b"\xff\xd8\xff\xe0 truncated")
  src = CUB(tmp_path, "train")  # neither making the source nor reading the example decodes
  i = [src.describe(k) for k in range(len(src))].index(str(written[0]["path"]))
  raw = src[i]["image"]
  with pytest.raises(Exception):
    src.load_image(raw)


@pytest.mark.parametrize("parent", [False, True])
def test_aircraft(tmp_path, parent):
  written = trees.write_aircraft(tmp_path, parent=parent)
  for split in ("train", "val", "test"):
    check_split(Aircraft(tmp_path, split), written, split)
  trainval = Aircraft(tmp_path, "trainval")
  assert len(trainval) == sum(ex["split"] in ("train", "val") for ex in written)
  src = Aircraft(tmp_path, "test")
  img = src.load_image(src[0]["image"])
  assert img.dtype == np.uint8 and img.shape == (trees.HEIGHT, trees.WIDTH, 3)  # the 20-row banner is gone
  with open(src.describe(0), "rb") as f:
    full = decode_image(f.read())
  np.testing.assert_array_equal(img, full[: trees.HEIGHT])  # cut at the bottom, not the top


def test_aircraft_levels(tmp_path):
  written = trees.write_aircraft(tmp_path)
  fam = Aircraft(tmp_path, "train", level="family")
  man = Aircraft(tmp_path, "train", level="manufacturer")
  assert fam.class_names == trees.AIRCRAFT_FAMILIES and man.class_names == trees.AIRCRAFT_MANUFACTURERS
  by_path = {str(ex["path"]): ex["labels"] for ex in written}
  for src, level in ((fam, "family"), (man, "manufacturer")):
    assert [by_path[src.describe(i)][level] for i in range(len(src))] == list(src.labels)
  with pytest.raises(DataError, match="unknown level 'model'.*variant, family, manufacturer"):
    Aircraft(tmp_path, "train", level="model")


@pytest.mark.parametrize("variant", ["devkit", "test_labels_in_devkit", "kaggle"])
def test_cars(tmp_path, variant):
  written = trees.write_cars(
    tmp_path, test_labels_in_devkit=variant == "test_labels_in_devkit", kaggle=variant == "kaggle"
  )
  for split in ("train", "test"):
    src = Cars(tmp_path, split)
    assert src.class_names == trees.CARS_CLASSES
    check_split(src, written, split)
  assert src.load_image(src[0]["image"]).shape == (trees.HEIGHT, trees.WIDTH, 3)


def test_dogs(tmp_path):
  written = trees.write_dogs(tmp_path)
  for split in ("train", "test"):
    src = Dogs(tmp_path, split)
    assert src.class_names == trees.DOGS_CLASSES
    check_split(src, written, split)  # includes the union box of two dogs and a NaN box without annotation
  copy = pickle.loads(pickle.dumps(src))  # grain ships the source to its worker processes
  assert copy.describe(0) == src.describe(0) and np.array_equal(copy[0]["box"], src[0]["box"], equal_nan=True)
  assert src.load_image(src[0]["image"]).shape == (trees.HEIGHT, trees.WIDTH, 3)


@pytest.mark.parametrize(
  "name, write, cls", [("stanford_cars", trees.write_cars, Cars), ("stanford_dogs", trees.write_dogs, Dogs)]
)
def test_cars_and_dogs_from_the_folder_above(tmp_path, name, write, cls):
  written = write(tmp_path / name)  # torchvision's layout: root/stanford_cars/...
  src = cls(tmp_path, "train")
  check_split(src, written, "train")


def test_dogs_without_annotations(tmp_path):
  trees.write_dogs(tmp_path)
  for f in sorted((tmp_path / "Annotation").rglob("*"), reverse=True):
    f.rmdir() if f.is_dir() else f.unlink()
  (tmp_path / "Annotation").rmdir()
  src = Dogs(tmp_path, "train")
  assert all(np.isnan(src[i]["box"]).all() for i in range(len(src)))


# ---------------------------------------------------------------------------------------------------------------


def test_image_folder_split_folders(tmp_path):
  written = trees.write_image_folder(tmp_path, splits=("train", "test"))
  for split in ("train", "test"):
    src = ImageFolder(tmp_path, split)
    assert src.class_names == sorted(trees.FOLDER_CLASSES)
    check_split(src, written, split)
    assert src.load_image(src[0]["image"]).shape == (trees.HEIGHT, trees.WIDTH, 3)
  with pytest.raises(DataError, match="unknown split 'val'; valid splits: train, test"):
    ImageFolder(tmp_path, "val")


def test_image_folder_labels_agree_across_split_folders(tmp_path):
  trees.write_image_folder(tmp_path, counts={"a": 2, "b": 2, "c": 2}, splits=("train",))
  trees.write_image_folder(tmp_path, counts={"a": 1, "c": 1}, splits=("test",))  # no 'b' in test
  test = ImageFolder(tmp_path, "test")
  assert test.class_names == ["a", "b", "c"] and list(test.labels) == [0, 2]


def test_image_folder_stratified(tmp_path):
  written = trees.write_image_folder(tmp_path)
  paths = {str(ex["path"]): ex for ex in written}
  srcs = {s: ImageFolder(tmp_path, s, val_fraction=0.2, test_fraction=0.2) for s in ("train", "val", "test")}
  seen = [srcs[s].describe(i) for s in srcs for i in range(len(srcs[s]))]
  assert sorted(seen) == sorted(paths)  # disjoint and covering; notes.txt and ._img000.jpg skipped
  for s, src in srcs.items():
    assert src.class_names == sorted(trees.FOLDER_CLASSES)
    assert all(paths[src.describe(i)]["label"] == src.labels[i] for i in range(len(src)))
    assert {"cat", "dog"} <= {src.class_names[k] for k in src.labels}  # both large classes in every split
  trainval = ImageFolder(tmp_path, "trainval", val_fraction=0.2, test_fraction=0.2)
  assert len(trainval) == len(srcs["train"]) + len(srcs["val"])
  again = ImageFolder(tmp_path, "test", val_fraction=0.2, test_fraction=0.2)
  assert [again.describe(i) for i in range(len(again))] == [srcs["test"].describe(i) for i in range(len(again))]


def test_image_folder_empty_split(tmp_path):
  trees.write_image_folder(tmp_path)
  with pytest.raises(DataError, match=re.escape(f"'val' split of folder in {tmp_path} is empty")):
    ImageFolder(tmp_path, "val", val_fraction=0.0)
  (tmp_path / "classes" / "a").mkdir(parents=True)  # class folders without images: the message names them
  (tmp_path / "classes" / "b").mkdir()
  with pytest.raises(
    DataError,
    match=re.escape(f"class folder(s) in {tmp_path / 'classes'} without a single image")
    + ".*: a, b. Add their images or remove the folders",
  ):
    ImageFolder(tmp_path / "classes", "train")


@pytest.mark.parametrize("splits", [(), ("train", "test")])
def test_image_folder_classes_are_folders_with_images(tmp_path, splits):
  counts = {"a": 2, "b": 2, "c": 2}
  trees.write_image_folder(tmp_path, counts=counts, splits=splits or None)
  top = [tmp_path / s for s in splits] or [tmp_path]
  for folder in top:  # what unpacking a macOS archive leaves: not a class
    (folder / "__MACOSX" / "a").mkdir(parents=True)
    (folder / "__MACOSX" / "a" / "._img000.jpg").write_bytes(b"resource fork")
  trees.pattern(0).save(top[0] / "b" / "scan.TIFF")  # TIFF and GIF images are images
  trees.pattern(1).save(top[0] / "c" / "anim.gif")
  src = ImageFolder(tmp_path, "train", val_fraction=0.0, test_fraction=0.0)  # (stratified: every image in train)
  assert src.class_names == ["a", "b", "c"] and len(src) == 8
  files = {Path(src.describe(i)).name: src.class_names[src.labels[i]] for i in range(len(src))}
  assert files["scan.TIFF"] == "b" and files["anim.gif"] == "c"
  (top[0] / "zz_empty").mkdir()  # a class without a single image: counted in num_classes, never seen; refused
  with pytest.raises(DataError, match="without a single image.*: zz_empty\\. Add their images"):
    ImageFolder(tmp_path, "train")


def test_image_folder_of_only_unreadable_images(tmp_path):
  from configs import common
  from data_pipelines import pipeline

  for c in ("a", "b"):
    (tmp_path / "train" / c).mkdir(parents=True)
    for j in range(4):
      (tmp_path / "train" / c / f"{j}.jpg").write_bytes(b"not an image")
  cfg = common.get_config()
  cfg.data.update(source="folder", name="folder", root=str(tmp_path), num_classes=2, batch_size=2)
  first = tmp_path / "train" / "a" / "0.jpg"
  with pytest.raises(
    DataError,
    match=re.escape(
      f"No image of the 'train' split of folder in {tmp_path} could be decoded (8 tried; the first, {first}: "
    ),
  ):
    pipeline.build(cfg, "train")
  trees.pattern(0).save(tmp_path / "train" / "b" / "3.jpg")  # one readable image is enough: the rest are skipped
  assert pipeline.build(cfg, "train").steps_per_epoch == 4


def test_image_folder_errors(tmp_path):
  with pytest.raises(DataError, match="does not exist.*root/<class>/<image>"):
    ImageFolder(tmp_path / "nowhere", "train")
  (tmp_path / "empty").mkdir()
  with pytest.raises(DataError, match="no class folders"):
    ImageFolder(tmp_path / "empty", "train")
  with pytest.raises(DataError, match="no data root given. Set --config.data.root"):
    ImageFolder(None, "train")


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one DataError naming what was expected, where to download and where to point the config.

LAYOUTS = {
  "cub": (
    trees.write_cub,
    CUB,
    "https://www.vision.caltech.edu/datasets/cub_200_2011/",
    ["images.txt", "image_class_labels.txt", "parts/part_locs.txt"],
  ),
  "aircraft": (
    trees.write_aircraft,
    Aircraft,
    "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/",
    ["data/images/", "data/images_variant_train.txt", "data/images_box.txt"],
  ),
  "cars": (
    trees.write_cars,
    Cars,
    "https://ai.stanford.edu/~jkrause/cars/car_dataset.html",
    ["devkit/cars_meta.mat", "devkit/cars_train_annos.mat", "cars_train/"],
  ),
  "dogs": (trees.write_dogs, Dogs, "http://vision.stanford.edu/aditya86/ImageNetDogs/", ["Images/", "train_list.mat"]),
}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_missing_root(tmp_path, name):
  _, cls, url, expected = LAYOUTS[name]
  with pytest.raises(DataError) as err:
    cls(tmp_path / "nowhere", "train")
  msg = str(err.value)
  assert "does not exist" in msg and url in msg and "--config.data.root=" in msg
  assert all(e in msg for e in expected), msg


# The file each layout misses, and a name that must then not be reported missing.
BROKEN = {
  "cub": ("parts/part_locs.txt", "images.txt"),
  "aircraft": ("data/images_box.txt", "data/variants.txt"),
  "cars": ("devkit/cars_meta.mat", "cars_train/"),
  "dogs": ("train_list.mat", "Images/"),
}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_wrong_layout(tmp_path, name):
  write, cls, url, _ = LAYOUTS[name]
  write(tmp_path)
  gone, kept = BROKEN[name]
  (tmp_path / gone).unlink()
  with pytest.raises(DataError) as err:
    cls(tmp_path, "train")
  msg = str(err.value)
  lacks = msg.split("lacks ", 1)[1].split(". Expected", 1)[0]
  assert gone in lacks and kept not in lacks and url in msg and "--config.data.root=" in msg, msg


def test_cars_test_labels_missing(tmp_path):
  trees.write_cars(tmp_path)
  (tmp_path / "cars_test_annos_withlabels.mat").unlink()
  Cars(tmp_path, "train")  # the test labels are needed only for the test split
  with pytest.raises(DataError, match="cars_test_annos_withlabels.mat or devkit/cars_test_annos_withlabels.mat"):
    Cars(tmp_path, "test")
  (tmp_path / "devkit" / "cars_test_annos.mat").write_bytes(b"")  # the devkit's own, unlabelled list: explained
  with pytest.raises(DataError, match="cars_test_annos.mat holds no class labels: the test labels are the separate"):
    Cars(tmp_path, "test")


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_unknown_split(tmp_path, name):
  _, cls, _, _ = LAYOUTS[name]
  with pytest.raises(DataError, match=f"unknown split 'dev'; valid splits: {', '.join(cls.SPLITS)}"):
    cls(tmp_path, "dev")


def test_images_not_extracted(tmp_path):
  written = trees.write_aircraft(tmp_path)
  for ex in written:
    ex["path"].unlink()
  with pytest.raises(DataError, match="list images that are not there \\(none of the first .*\\), e.g. .*0000005.jpg"):
    Aircraft(tmp_path, "train")


def test_a_missing_first_image_is_skipped_like_any_other(tmp_path):
  written = trees.write_cub(tmp_path)
  train = CUB(tmp_path, "train")
  first = train.describe(0)
  os.remove(first)  # (it once made the whole split refused as 'not extracted')
  again = CUB(tmp_path, "train")
  assert len(again) == len(train) and again.describe(0) == first and len(written) > 1


def test_malformed_annotation(tmp_path):
  trees.write_cub(tmp_path)
  with open(tmp_path / "bounding_boxes.txt", "a") as f:
    f.write("10 1.0 2.0\n")
  with pytest.raises(DataError, match="bounding_boxes.txt, line 10: expected 5 fields"):
    CUB(tmp_path, "train")


def test_registry(tmp_path):
  trees.write_cub(tmp_path)
  assert set(FOLDER_SOURCES) == {"cub", "aircraft", "cars", "dogs", "folder", "landmarks"}
  assert set(ALIASES.values()) <= set(FOLDER_SOURCES)
  assert len(open_folder_source("cub", tmp_path, "test")) == 3
  assert len(open_folder_source("cub200", tmp_path, "train")) == 6
  with pytest.raises(DataError, match="unknown folder layout 'birds'; known: cub, aircraft"):
    open_folder_source("birds", tmp_path, "train")
  with pytest.raises(DataError, match="no data root given.*--config.data.root"):
    open_folder_source("cub", None, "train")


# ---------------------------------------------------------------------------------------------------------------


def test_stratified_split():
  labels = np.repeat(np.arange(5), [40, 17, 5, 3, 1])
  fractions = {"train": 0.7, "val": 0.1, "test": 0.2}
  parts = stratified_split(labels, fractions, seed=0)
  joined = np.concatenate(list(parts.values()))
  assert np.array_equal(np.sort(joined), np.arange(len(labels)))  # disjoint and covering
  for name, idx in parts.items():
    assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)
    for cls, n in zip(range(3), (40, 17, 5)):  # every class large enough is in every split ...
      count = (labels[idx] == cls).sum()
      assert count >= 1 and abs(count - n * fractions[name]) <= 1  # ... in proportion
  assert len(parts["train"]) + len(parts["val"]) + len(parts["test"]) == len(labels)
  assert all((labels[parts[k]] == 3).sum() == 1 for k in parts)  # 3 examples, 3 splits: one each
  again = stratified_split(labels, fractions, seed=0)
  assert all(np.array_equal(parts[k], again[k]) for k in parts)
  other = stratified_split(labels, fractions, seed=1)
  assert not np.array_equal(parts["test"], other["test"])
  assert {k: len(v) for k, v in other.items()} == {k: len(v) for k, v in parts.items()}  # same sizes, other members


def test_stratified_split_bad_fractions():
  with pytest.raises(ValueError, match="sum to 1"):
    stratified_split([0, 1], {"train": 0.5, "test": 0.2})
  with pytest.raises(ValueError, match="non-negative"):
    stratified_split([0, 1], {"train": 1.2, "test": -0.2})
