"""Google Landmarks v2, the configurable split of the data sets that ship without one, top_classes, and the command
that writes a split out (fgattn_jax/write_split.py), on small real trees (tests/data_trees.py)."""

import csv
import logging
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import data_trees as trees
import numpy as np
import pytest

from configs import common
from data_pipelines import pipeline
from data_pipelines.sources.base import DataError
from data_pipelines.sources.folders import ImageFolder, Landmarks, open_folder_source
from fgattn_jax import write_split

REPO = Path(__file__).resolve().parents[1]
BASELINE = str(REPO / "configs" / "baseline.py")
SPLITS = ("train", "val", "test")


def config(name, root, val=0.1, test=0.1, seed=0, top=0, source="folder"):
  c = common.get_config()
  c.data.update(source=source, name=name, root=str(root), top_classes=top)
  c.data.split.update(val_fraction=val, test_fraction=test, seed=seed)
  return c


def paths(src) -> list[str]:
  return [src.describe(i) for i in range(len(src))]


def by_path(written) -> dict:
  return {str(ex["path"]): ex for ex in written}


# ---------------------------------------------------------------------------------------------------------------
# The Google Landmarks v2 layout.


@pytest.mark.parametrize("categories", [True, False])
def test_landmarks_reads_the_layout(tmp_path, categories):
  written = trees.write_landmarks(tmp_path, {12: 20, 3: 20, 7: 20}, categories=categories)
  want = [trees.landmark_category(k) if categories else str(k) for k in (3, 7, 12)]  # ascending landmark_id
  srcs = {s: Landmarks(tmp_path, s, val_fraction=0.15, test_fraction=0.15) for s in SPLITS + ("trainval",)}
  assert {s: len(src) for s, src in srcs.items()} == {"train": 42, "val": 9, "test": 9, "trainval": 51}
  truth = by_path(written)
  for s, src in srcs.items():
    assert src.class_names == want and src.num_classes == 3 and src.landmark_ids == [3, 7, 12]
    assert (
      np.bincount(src.labels, minlength=3).tolist()
      == {"train": [14] * 3, "val": [3] * 3, "test": [3] * 3, "trainval": [17] * 3}[s]
    )
    for i in range(len(src)):
      ex = truth[src.describe(i)]
      assert src.labels[i] == ex["label"] and src.class_names[src.labels[i]] == ex["class_name"]
    item = src[0]
    assert item["image"] == Path(src.describe(0)).read_bytes() and np.isnan(item["box"]).all()
    assert src.load_image(item["image"]).shape == (trees.HEIGHT, trees.WIDTH, 3)
  assert sorted(paths(srcs["trainval"])) == sorted(paths(srcs["train"]) + paths(srcs["val"]))
  copy = pickle.loads(pickle.dumps(srcs["test"]))  # grain ships the source to its worker processes
  assert paths(copy) == paths(srcs["test"]) and copy.class_names == want
  for alias in ("gldv2", "google_landmarks", "landmarks"):
    assert paths(open_folder_source(alias, tmp_path, "test")) == paths(Landmarks(tmp_path, "test"))


def test_landmarks_split_configured_through_the_pipeline(tmp_path):
  trees.write_landmarks(tmp_path, {1: 40, 2: 60})
  sizes = {s: len(pipeline.open_source(config("landmarks", tmp_path, 0.15, 0.15), s)) for s in SPLITS}
  assert sizes == {"train": 70, "val": 15, "test": 15}


def test_landmarks_top_classes_keep_the_largest_ties_to_the_smaller_id(tmp_path):
  # Listed counts are not what counts: landmark 1 lists 30 images, of which 2 are present.
  trees.write_landmarks(
    tmp_path, {11: 10, 9: 8, 5: 8, 2: 3, 4: 1, 1: 30}, present={11: 10, 9: 8, 5: 8, 2: 3, 4: 1, 1: 2}
  )
  src = Landmarks(tmp_path, "trainval", top_classes=2)  # 11 (10 images), then 5 and 9 tie at 8: 5
  assert src.landmark_ids == [5, 11] and src.class_names == [trees.landmark_category(k) for k in (5, 11)]
  assert sorted(np.bincount(src.labels).tolist()) == [7, 9]  # (trainval: 10% of each class is test)
  assert Landmarks(tmp_path, "train", top_classes=3).landmark_ids == [5, 9, 11]
  assert Landmarks(tmp_path, "train", top_classes=50).landmark_ids == [1, 2, 4, 5, 9, 11]  # more than there are
  train = pipeline.open_source(config("landmarks", tmp_path, top=2), "train")
  assert train.landmark_ids == [5, 11] and train.num_classes == 2


def test_landmarks_absent_images_are_not_examples(tmp_path, caplog):
  written = trees.write_landmarks(tmp_path, {1: 10, 2: 10, 3: 4}, present={1: 6, 2: 10, 3: 0})
  assert len(written) == 16
  with caplog.at_level(logging.INFO, logger="data_pipelines.sources.folders"):
    srcs = [Landmarks(tmp_path, s) for s in SPLITS]
  assert sorted(p for src in srcs for p in paths(src)) == sorted(by_path(written))
  assert srcs[0].landmark_ids == [1, 2] and srcs[0].absent == 8  # landmark 3 has no image: not a class
  assert "16 of the 24 images listed" in caplog.text and "8 are absent" in caplog.text


def test_landmarks_without_images_or_train_csv_name_the_layout(tmp_path):
  trees.write_landmarks(tmp_path, {1: 3, 2: 3}, present={})
  layout = [
    "train.csv",
    "train/<a>/<b>/<c>/<id>.jpg",
    "https://github.com/cvdfoundation/google-landmark",
    "--config.data.root=/path/to/gldv2",
  ]
  with pytest.raises(DataError, match="none of the images .*train.csv lists is in") as err:
    Landmarks(tmp_path, "train")
  assert all(e in str(err.value) for e in layout), err.value
  (tmp_path / "train.csv").unlink()
  with pytest.raises(DataError, match="has no train.csv") as err:
    Landmarks(tmp_path, "train")
  assert all(e in str(err.value) for e in layout), err.value
  with pytest.raises(DataError, match="does not exist"):
    Landmarks(tmp_path / "nowhere", "train")
  with pytest.raises(DataError, match="no data root given.*--config.data.root"):
    Landmarks(None, "train")
  (tmp_path / "train.csv").write_text("landmark_id,images\n1,abc def\n")  # train_clean.csv's layout
  with pytest.raises(DataError, match="not id,url,landmark_id"):
    Landmarks(tmp_path, "train")


def test_landmarks_image_listed_twice_is_one_example_with_its_first_label(tmp_path):
  written = trees.write_landmarks(tmp_path, {1: 6, 2: 6})
  twice = written[0]
  with open(tmp_path / "train.csv", "a") as f:
    f.write(f"{twice['id']},http://x/{twice['id']}.jpg,2\n")
  srcs = {s: Landmarks(tmp_path, s) for s in SPLITS}
  found = [(s, src.labels[i]) for s, src in srcs.items() for i, p in enumerate(paths(src)) if p == str(twice["path"])]
  assert len(found) == 1 and found[0][1] == twice["label"]
  assert sum(len(src) for src in srcs.values()) == len(written)


def test_split_options_are_validated(tmp_path):
  trees.write_landmarks(tmp_path / "gld", {1: 4})
  trees.write_image_folder(tmp_path / "tree", counts={"a": 4})
  for name, root in (("landmarks", tmp_path / "gld"), ("folder", tmp_path / "tree")):
    with pytest.raises(DataError, match="leave some of each class for training: set --config.data.split.val_frac"):
      pipeline.open_source(config(name, root, val=0.5, test=0.5), "train")
    with pytest.raises(DataError, match="top_classes=-1 must be .*--config.data.top_classes"):
      pipeline.open_source(config(name, root, top=-1), "train")


def test_top_classes_refused_where_the_classes_are_fixed(tmp_path):
  trees.write_cub(tmp_path)
  cases = [
    config("cub", tmp_path, top=2),
    config("synthetic", "", top=2, source="synthetic"),
    config("cifar10", tmp_path, top=2, source="tfds"),
  ]
  for cfg, what in zip(cases, ("data.name='cub'", "data.source='synthetic'", "data.source='tfds'")):
    with pytest.raises(
      DataError, match=re.escape("data.top_classes=2: only") + ".*" + re.escape(what) + ".*--config.data.top_classes=0"
    ):
      pipeline.open_source(cfg, "train")
  assert len(pipeline.open_source(config("cub", tmp_path), "train")) == 6  # 0: every class, as before


# ---------------------------------------------------------------------------------------------------------------
# The plain class-folder tree: the split keys and top_classes.


def test_split_keys_reach_the_image_folder(tmp_path):
  trees.write_image_folder(tmp_path, counts={"a": 8, "b": 12})
  sizes = {s: len(pipeline.open_source(config("folder", tmp_path, 0.25, 0.25), s)) for s in SPLITS}
  assert sizes == {"train": 10, "val": 5, "test": 5}
  default = {s: len(pipeline.open_source(config("folder", tmp_path), s)) for s in SPLITS}
  assert default == {"train": 16, "val": 2, "test": 2}


def test_image_folder_top_classes(tmp_path):
  trees.write_image_folder(tmp_path / "flat", counts={"a": 3, "b": 5, "c": 5, "d": 1})
  assert ImageFolder(tmp_path / "flat", "train", top_classes=2).class_names == ["b", "c"]
  one = ImageFolder(tmp_path / "flat", "trainval", top_classes=1)  # b and c tie: the earlier name
  assert one.class_names == ["b"] and set(one.labels) == {0} and all("/b/" in p for p in paths(one))
  assert ImageFolder(tmp_path / "flat", "train", top_classes=9).class_names == ["a", "b", "c", "d"]
  # The split layout counts every split folder: train alone would keep b and c.
  trees.write_image_folder(tmp_path / "split", counts={"a": 1, "b": 3, "c": 2}, splits=("train",))
  trees.write_image_folder(tmp_path / "split", counts={"a": 3, "c": 1}, splits=("test",))
  for s, n in (("train", 4), ("test", 3)):
    src = pipeline.open_source(config("folder", tmp_path / "split", top=2), s)
    assert src.class_names == ["a", "b"] and len(src) == n


# ---------------------------------------------------------------------------------------------------------------
# The split never leaks: each image in one split, the same split for the same seed, everywhere.


def tree(kind, root):
  if kind == "landmarks":
    return trees.write_landmarks(root, {1: 12, 2: 9, 3: 20, 4: 5}, present={1: 12, 2: 7, 3: 20, 4: 5})
  return trees.write_image_folder(root, counts={"a": 12, "b": 9, "c": 20, "d": 5})


SPLIT_OF = """
import sys
from data_pipelines.sources.folders import open_folder_source  # (not the pipeline: grain takes seconds to import)
for s in ("train", "val", "test"):
  src = open_folder_source(sys.argv[1], sys.argv[2], s, seed=int(sys.argv[3]))
  print(s, *[src.describe(i) for i in range(len(src))])
"""


@pytest.mark.parametrize("kind", ["landmarks", "folder"])
def test_the_split_never_leaks(tmp_path, kind):
  written = tree(kind, tmp_path)

  def split(seed):
    return {s: paths(pipeline.open_source(config(kind, tmp_path, seed=seed), s)) for s in SPLITS}

  first = split(0)
  every = [p for s in SPLITS for p in first[s]]
  assert sorted(every) == sorted(by_path(written)) and len(set(every)) == len(every)  # disjoint, covering
  assert split(0) == first  # another call
  other = split(1)
  assert other != first and {s: len(v) for s, v in other.items()} == {s: len(v) for s, v in first.items()}
  # Another process (another string hash seed) computes the same split.
  env = dict(os.environ, PYTHONHASHSEED="123", PYTHONPATH=str(REPO))
  out = subprocess.run(
    [sys.executable, "-c", SPLIT_OF, kind, str(tmp_path), "0"],
    env=env,
    cwd=tmp_path,
    capture_output=True,
    text=True,
    check=True,
  ).stdout
  assert {line.split()[0]: line.split()[1:] for line in out.splitlines()} == first


# ---------------------------------------------------------------------------------------------------------------
# python -m fgattn_jax.write_split


def written_tree(out) -> dict:
  """{split: {(file name, class name, label)}} of a tree read back by the folder layout through the pipeline."""
  c = config("folder", out)
  result = {}
  for s in SPLITS:
    src = pipeline.open_source(c, s)
    result[s] = {(Path(p).name, src.class_names[k], int(k)) for p, k in zip(paths(src), src.labels)}
  return result


def test_write_split_reads_back_as_the_same_split(tmp_path, capsys):
  trees.write_landmarks(tmp_path / "gld", {12: 9, 3: 7, 7: 11, 30: 2}, present={12: 9, 3: 7, 7: 8, 30: 2})
  overrides = [
    "--config.data.source=folder",
    "--config.data.name=landmarks",
    f"--config.data.root={tmp_path / 'gld'}",
    "--config.data.num_classes=3",
    "--config.data.top_classes=3",
    "--config.data.split.seed=4",
  ]
  out = tmp_path / "split"
  assert write_split.main(["--config", BASELINE, *overrides, "--out", str(out)]) == 0
  summary = capsys.readouterr().out
  assert f"to {out}" in summary and "train" in summary and "--config.data.root=" + str(out) in summary
  assert "3 listed images were absent" in summary

  source = {s: pipeline.open_source(config("landmarks", tmp_path / "gld", seed=4, top=3), s) for s in SPLITS}
  want = {
    s: {(Path(p).name, src.class_names[k], int(k)) for p, k in zip(paths(src), src.labels)} for s, src in source.items()
  }
  got = written_tree(out)
  # The category names do not sort in landmark_id order: each folder starts with its label, '001.Name'.
  assert {s: {(f, re.sub(r"^\d{3}\.", "", c), k) for f, c, k in v} for s, v in got.items()} == want
  assert all(c.startswith(f"{k:03d}.") for v in got.values() for _, c, k in v)
  for path in (out / "train").rglob("*.jpg"):  # links to the originals
    assert path.is_symlink() and Path(os.readlink(path)).is_absolute() and (tmp_path / "gld") in path.resolve().parents

  with open(out / "split.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ["split", "label", "class_name", "path"]
  assert sorted((r["split"], Path(r["path"]).name, r["class_name"], int(r["label"])) for r in rows) == sorted(
    (s, f, c, k) for s, v in want.items() for f, c, k in v
  )
  assert all(r["path"].startswith("train/") for r in rows)  # relative to the data root

  # A folder that exists and holds anything is never written into.
  with pytest.raises(SystemExit) as exit_:
    write_split.main(["--config", BASELINE, *overrides, "--out", str(out)])
  assert exit_.value.code == 2 and "exists and is not an empty folder" in capsys.readouterr().err
  assert sorted(p.name for p in out.iterdir()) == ["split.csv", "test", "train", "val"]


def test_write_split_copies_a_folder_tree_and_keeps_its_names(tmp_path, capsys):
  written = trees.write_image_folder(tmp_path / "tree", counts={"cat": 6, "dog": 5, "eel": 3})
  (tmp_path / "out").mkdir()  # an empty folder may be written into
  argv = [
    "--config",
    BASELINE,
    "--config.data.source=folder",
    "--config.data.name=folder",
    f"--config.data.root={tmp_path / 'tree'}",
    "--config.data.split.val_fraction=0",
    "--out",
    str(tmp_path / "out"),
    "--copy",
  ]
  with pytest.raises(SystemExit) as exit_:  # inside the tree, the written folders would become classes of it
    write_split.main(argv[:-3] + ["--out", str(tmp_path / "tree" / "split"), "--copy"])
  assert exit_.value.code == 2 and "the written tree would become part of the data set" in capsys.readouterr().err
  assert write_split.main(argv) == 0
  summary = capsys.readouterr().out
  assert "val    none" in summary and "copies" in summary
  src = {s: pipeline.open_source(config("folder", tmp_path / "tree", val=0.0), s) for s in ("train", "test")}
  back = {s: pipeline.open_source(config("folder", tmp_path / "out"), s) for s in ("train", "test")}
  for s in src:  # the names sort in label order already: the folders are the class names
    assert back[s].class_names == src[s].class_names == ["cat", "dog", "eel"]
    assert sorted(zip(map(lambda p: Path(p).name, paths(back[s])), back[s].labels.tolist())) == sorted(
      zip(map(lambda p: Path(p).name, paths(src[s])), src[s].labels.tolist())
    )
    assert not any(Path(p).is_symlink() for p in paths(back[s]))
  assert sum(len(v) for v in back.values()) == len(written)
  assert not (tmp_path / "out" / "val").exists()


def test_write_split_refuses_what_has_no_files(tmp_path, capsys):
  for source in ("synthetic", "tfds"):
    with pytest.raises(SystemExit) as exit_:
      write_split.main(["--config", BASELINE, f"--config.data.source={source}", "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert f"data.source='{source}' has no image files to write" in capsys.readouterr().err
  code = write_split.main(
    [
      "--config",
      BASELINE,
      "--config.data.source=folder",
      "--config.data.name=landmarks",
      f"--config.data.root={tmp_path / 'nowhere'}",
      "--out",
      str(tmp_path / "out"),
    ]
  )
  err = capsys.readouterr().err
  assert code == 2 and err.startswith("error: Google Landmarks v2 not found") and len(err.splitlines()) == 1
  assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.partial-*"))


def test_class_folder_names_are_safe_and_keep_the_label_order():
  assert write_split.safe_name("AC/DC") == "AC_DC" and write_split.safe_name("..x") == "__x"
  assert write_split.class_folders(["a", "b/c", "d"]) == ["a", "b_c", "d"]
  assert write_split.class_folders(["b", "a"]) == ["000.b", "001.a"]  # not sorted: numbered
  assert write_split.class_folders(["a/b", "a_b"]) == ["000.a_b", "001.a_b"]  # a clash: numbered
