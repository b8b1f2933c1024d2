"""TFDSSource on tiny TFDS data sets prepared here as ArrayRecord, with TensorFlow and the network blocked.

Two builders: a registered one shaped like caltech_birds2011 (top-level "bbox", a segmentation mask, file
names, supervised keys) and an unregistered one shaped like stanford_dogs (boxes in "objects/bbox", no
supervised keys, a second ClassLabel as in cifar100), which is read back from its files alone.
"""

import io
import json
import pickle
import re
import shutil
import socket
import sys
import types

import numpy as np
import pytest
import tensorflow_datasets as tfds
from google.protobuf.message import DecodeError
from PIL import Image

from configs import common
from data_pipelines import pipeline
from data_pipelines.sources import tfds_source
from data_pipelines.sources.base import DataError
from data_pipelines.sources.tfds_source import TFDSSource

BIRD_NAMES = ["albatross", "booby", "cormorant"]
# (height, width, label, normalised box (ymin, xmin, ymax, xmax)) of each training image.
BIRDS_TRAIN = [
  (20, 30, 0, (0.1, 0.2, 0.5, 0.6)),
  (24, 16, 2, (0.0, 0.0, 1.0, 1.0)),
  (10, 40, 1, (0.25, 0.5, 0.75, 1.0)),
  (32, 32, 2, (0.5, 0.25, 1.0, 0.75)),
]
DOG_BOXES = [[], [(0.25, 0.25, 0.5, 0.5)], [(0.5, 0.0, 0.75, 0.5), (0.0, 0.5, 0.25, 1.0)]]


def _png(height, width, value, channels=3):
  buf = io.BytesIO()
  Image.fromarray(np.full((height, width, channels), value, np.uint8).squeeze()).save(buf, format="PNG")
  return buf.getvalue()


class TfdsTinyBirds(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    features = tfds.features.FeaturesDict(
      {
        # A mask first: the image must be found through the supervised keys, not by position.
        "segmentation_mask": tfds.features.Image(shape=(None, None, 1)),
        "image": tfds.features.Image(shape=(None, None, 3)),
        "image/filename": tfds.features.Text(),
        "label": tfds.features.ClassLabel(names=BIRD_NAMES),
        "bbox": tfds.features.BBoxFeature(),
      }
    )
    return tfds.core.DatasetInfo(builder=self, features=features, supervised_keys=("image", "label"))

  def _split_generators(self, dl_manager):
    good = [(h, w, y, box, _png(h, w, 10 * i + y)) for i, (h, w, y, box) in enumerate(BIRDS_TRAIN)]
    box = (0.0, 0.0, 1.0, 1.0)
    broken = [(8, 8, 0, box, b"not an image"), (8, 8, 1, box, _png(8, 8, 7)[:50])]
    return {
      "train": self._generate_examples(good),
      "test": self._generate_examples(good[:2]),
      "broken": self._generate_examples(broken),
    }

  def _generate_examples(self, rows):
    # Encoded bytes, not arrays: TFDS encodes arrays with TensorFlow, bytes are stored as they are.
    for i, (h, w, label, box, data) in enumerate(rows):
      yield (
        i,
        {
          "image": data,
          "segmentation_mask": _png(h, w, 1, channels=1),
          "image/filename": f"bird_{i}.png",
          "label": label,
          "bbox": tfds.features.BBox(*box),
        },
      )


class TfdsTinyDogs(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(8, 12, 3)),  # a static size, as in CIFAR
          "coarse_label": tfds.features.ClassLabel(names=["small", "large"]),
          "label": tfds.features.ClassLabel(names=["pug", "beagle", "husky"]),
          "objects": tfds.features.Sequence({"bbox": tfds.features.BBoxFeature()}),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i in range(3):
      yield (
        i,
        {
          "image": _png(8, 12, 50 * i),
          "coarse_label": i % 2,
          "label": i,
          "objects": {"bbox": [tfds.features.BBox(*b) for b in DOG_BOXES[i]]},
        },
      )


# CelebA's shape: no ClassLabel, a FeaturesDict of booleans ("attributes"), landmarks beside it.
FACE_ATTRIBUTES = [(True, False), (False, False), (True, True), (False, True), (True, True)]  # (Smiling, Male)


def face_attributes(k):
  """Example k's attributes as the source gives them: booleans as 0/1, the hair colour's class."""
  smiling, male = FACE_ATTRIBUTES[k]
  return {"Smiling": int(smiling), "Male": int(male), "Hair": k % 3}


class TfdsTinyFaces(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(12, 10, 3)),
          "attributes": tfds.features.FeaturesDict(
            {
              "Smiling": np.bool_,
              "Male": np.bool_,
              "Hair": tfds.features.ClassLabel(names=["dark", "fair", "grey"]),
              "Score": np.float32,
            }
          ),  # not a class: left out
          "landmarks": tfds.features.FeaturesDict({"nose_x": np.int64, "nose_y": np.int64}),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i, (smiling, male) in enumerate(FACE_ATTRIBUTES):
      yield (
        i,
        {
          "image": _png(12, 10, 40 * i),
          "attributes": {"Smiling": smiling, "Male": male, "Hair": i % 3, "Score": 0.5},
          "landmarks": {"nose_x": 5, "nose_y": 6},
        },
      )


def _no_network(*args, **kwargs):
  raise AssertionError(f"network access attempted: {args}")


class _HideTensorFlow:
  """Wraps an import finder so that TensorFlow looks not installed, even where it is: `import tensorflow`
  fails and find_spec("tensorflow") is None, as TFDS and etils check. (A None entry in sys.modules would not
  do: TFDS takes any "tensorflow" key there for TensorFlow being loaded.)"""

  def __init__(self, finder):
    self._finder = finder

  def find_spec(self, name, path=None, target=None):
    if name.partition(".")[0] == "tensorflow" or not hasattr(self._finder, "find_spec"):
      return None
    return self._finder.find_spec(name, path, target)

  def __getattr__(self, attr):
    return getattr(self._finder, attr)


@pytest.fixture(scope="module", autouse=True)
def offline_without_tensorflow():
  """Preparing and reading must need neither the network nor TensorFlow."""
  assert "tensorflow" not in sys.modules
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(sys, "meta_path", [_HideTensorFlow(f) for f in sys.meta_path])
    mp.setattr(socket.socket, "connect", _no_network)
    mp.setattr(socket, "create_connection", _no_network)
    mp.setattr(socket, "getaddrinfo", _no_network)
    yield
  assert "tensorflow" not in sys.modules


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("tfds")
  config = tfds.download.DownloadConfig(compute_stats=tfds.download.ComputeStatsMode.SKIP, try_download_gcs=False)
  for cls in (TfdsTinyBirds, TfdsTinyDogs, TfdsTinyFaces):
    cls(data_dir=root, file_format="array_record").download_and_prepare(download_config=config)
  return root


def test_birds_labels_names_boxes_images(data_dir):
  src = TFDSSource("tfds_tiny_birds", "train", data_dir=data_dir)
  assert len(src) == 4 and src.num_classes == 3 and src.class_names == BIRD_NAMES and src.num_parts == 0
  assert src.image_key == "image" and src.label_key == "label"
  # TFDS shuffles the examples when writing: match them by their (unique) image value.
  by_value = {10 * i + y: (h, w, y, box) for i, (h, w, y, box) in enumerate(BIRDS_TRAIN)}
  seen = []
  for i in range(len(src)):
    ex = src[i]
    assert isinstance(ex["image"], bytes), "images must reach load_image undecoded"
    img = src.load_image(ex["image"])
    h, w, y, (ymin, xmin, ymax, xmax) = by_value[int(img[0, 0, 0])]
    assert img.shape == (h, w, 3) and img.dtype == np.uint8 and (img == img[0, 0, 0]).all()
    assert ex["label"] == y == src.labels[i] and ex["index"] == i
    np.testing.assert_allclose(ex["box"], [xmin * w, ymin * h, xmax * w, ymax * h], rtol=1e-6)
    assert np.isnan(ex["parts"]).all() and ex["parts"].shape == (0, 2)
    assert src.describe(i).startswith("tfds_tiny_birds[train] example") and "bird_" in src.describe(i)
    seen.append(int(img[0, 0, 0]))
  assert sorted(seen) == sorted(by_value)
  assert sorted(src.labels.tolist()) == sorted(y for _, _, y, _ in BIRDS_TRAIN) and src.labels.dtype == np.int64


def test_split_slices_and_pickling(data_dir):
  assert len(TFDSSource("tfds_tiny_birds", "train[:50%]", data_dir=data_dir)) == 2
  assert len(TFDSSource("tfds_tiny_birds", "train+test", data_dir=data_dir)) == 6
  src = TFDSSource("tfds_tiny_birds", "test", data_dir=str(data_dir))
  copy = pickle.loads(pickle.dumps(src))  # grain's worker processes get the source pickled
  assert copy[1]["image"] == src[1]["image"] and (copy.labels == src.labels).all()


class Unparsable:
  @staticmethod
  def FromString(record):  # noqa: N802 (the protobuf name)
    raise DecodeError("not the layout expected")


def test_labels_without_the_raw_proto_shortcut(data_dir, monkeypatch):
  expected = TFDSSource("tfds_tiny_birds", "train", data_dir=data_dir).labels
  # Only the source's shortcut: TFDS's own reader parses the same proto.
  monkeypatch.setattr(tfds_source, "tf_example_pb2", types.SimpleNamespace(Example=Unparsable))
  assert (TFDSSource("tfds_tiny_birds", "train", data_dir=data_dir).labels == expected).all()


def test_corrupt_images_fail_in_load_image_not_in_getitem(data_dir):
  src = TFDSSource("tfds_tiny_birds", "broken", data_dir=data_dir)
  for i in range(len(src)):
    ex = src[i]  # reading the record works; the box needs only the header
    with pytest.raises(OSError):  # PIL: unidentified image / image file is truncated
      src.load_image(ex["image"])
  boxes = sorted((src[i]["box"] for i in range(2)), key=lambda b: np.isnan(b).any())
  np.testing.assert_allclose(boxes[0], [0, 0, 8, 8])  # truncated PNG: the header still gives the size
  assert np.isnan(boxes[1]).all()  # no header at all: no box, and load_image reports the file


def test_dogs_union_of_object_boxes_static_size_and_label_override(data_dir):
  src = TFDSSource("tfds_tiny_dogs", "train", data_dir=data_dir)  # unregistered: read from the files alone
  assert src.label_key == "label" and src.class_names == ["pug", "beagle", "husky"]
  expected = {0: None, 1: [3, 2, 6, 4], 2: [0, 0, 12, 6]}  # union of the boxes, in pixels of 12x8 images
  for i in range(len(src)):
    ex = src[i]
    assert src.load_image(ex["image"]).shape == (8, 12, 3)
    want = expected[ex["label"]]
    if want is None:
      assert np.isnan(ex["box"]).all()
    else:
      np.testing.assert_allclose(ex["box"], want)
  coarse = TFDSSource("tfds_tiny_dogs", "train", data_dir=data_dir, label_key="coarse_label")
  assert coarse.class_names == ["small", "large"] and sorted(coarse.labels.tolist()) == [0, 0, 1]
  with pytest.raises(DataError, match="label_key='breed'.*coarse_label"):
    TFDSSource("tfds_tiny_dogs", "train", data_dir=data_dir, label_key="breed")


def test_not_prepared_names_dir_and_how_to_build(tmp_path):
  with pytest.raises(DataError) as err:
    TFDSSource("tfds_tiny_birds", "train", data_dir=tmp_path)
  msg = str(err.value)
  for part in (
    "tfds_tiny_birds",
    str(tmp_path),
    "fgattn-jax[prepare]",
    f"tfds build tfds_tiny_birds --data_dir {tmp_path} --file_format=array_record",
  ):
    assert part in msg
  # A real data set whose files must be downloaded by hand: where they go.
  with pytest.raises(DataError, match=r"imagenet2012.*downloads/manual.*ILSVRC2012_img_train\.tar"):
    TFDSSource("imagenet2012", "train", data_dir=tmp_path)
  with pytest.raises(DataError, match="caltech_birds2011.*not prepared"):
    TFDSSource("caltech_birds2011", "train", data_dir=tmp_path)


def test_a_root_inside_the_prepared_data_set_says_where_to_point(data_dir, monkeypatch):
  for inside in (data_dir / "tfds_tiny_dogs", data_dir / "tfds_tiny_dogs" / "1.0.0"):
    with pytest.raises(
      DataError,
      match=re.escape(f"prepared in {data_dir.resolve()}, above the data.root given ({inside})")
      + ".*holds tfds_tiny_dogs/",
    ):
      TFDSSource("tfds_tiny_dogs", "train", data_dir=inside)
  monkeypatch.setenv("HOME", str(data_dir.parent))  # '~' is the user's home, as for the folder layouts
  assert len(TFDSSource("tfds_tiny_dogs", "train", data_dir=f"~/{data_dir.name}")) == 3


def test_prepared_without_random_access(data_dir, tmp_path):
  # What `tfds build` without --file_format leaves: TFRecord files, which cannot be read by index.
  shutil.copytree(data_dir / "tfds_tiny_dogs", tmp_path / "tfds_tiny_dogs")
  info_path = tmp_path / "tfds_tiny_dogs" / "1.0.0" / "dataset_info.json"
  info_path.write_text(json.dumps({**json.loads(info_path.read_text()), "fileFormat": "tfrecord"}))
  build = re.escape(f"tfds build tfds_tiny_dogs --data_dir {tmp_path} --file_format=array_record")
  with pytest.raises(DataError, match=f"stored as tfrecord.*{build}"):
    TFDSSource("tfds_tiny_dogs", "train", data_dir=tmp_path)


def test_unknown_name_suggests_nearest(data_dir):
  with pytest.raises(DataError, match="Unknown TFDS data set 'caltech_birds2012'.*'caltech_birds2011'"):
    TFDSSource("caltech_birds2012", "train", data_dir=data_dir)
  with pytest.raises(DataError, match="'tfds_tiny_dog'.*'tfds_tiny_dogs'"):  # also names found in data_dir
    TFDSSource("tfds_tiny_dog", "train", data_dir=data_dir)


def test_unknown_and_empty_splits(data_dir):
  with pytest.raises(DataError, match=r"no split 'validation'.*'train' \(4 examples\).*'test' \(2 examples\)"):
    TFDSSource("tfds_tiny_birds", "validation", data_dir=data_dir)
  # TFDS refuses to write an empty split, but a slice can be empty.
  with pytest.raises(DataError, match=r"'train\[2:2\]' split of the TFDS data set 'tfds_tiny_dogs' is empty"):
    TFDSSource("tfds_tiny_dogs", "train[2:2]", data_dir=data_dir)


@pytest.mark.parametrize("raw_labels", [True, False], ids=["raw-proto-labels", "decoded-labels"])
def test_faces_attributes_are_tasks_and_the_first_is_the_label(data_dir, monkeypatch, raw_labels):
  if not raw_labels:  # the labels through TFDS's decoding of whole examples, as for an unexpected layout
    monkeypatch.setattr(tfds_source, "tf_example_pb2", types.SimpleNamespace(Example=Unparsable))
  src = TFDSSource("tfds_tiny_faces", "train", data_dir=data_dir)
  names = src.attribute_names
  assert sorted(names) == ["Hair", "Male", "Smiling"]  # the float entry is not a task
  assert dict(zip(names, src.attribute_classes)) == {"Smiling": 2, "Male": 2, "Hair": 3}
  first = names[0]
  assert src.label_key == f"attributes/{first}" and src.num_classes == len(src.class_names)
  assert src.class_names == (["dark", "fair", "grey"] if first == "Hair" else [f"not {first}", first])
  seen = []
  for i in range(len(src)):
    ex = src[i]
    k = int(src.load_image(ex["image"])[0, 0, 0]) // 40  # the example's number, from its pixel value
    want = face_attributes(k)
    assert ex["attributes"].dtype == np.int32 and ex["attributes"].tolist() == [want[n] for n in names]
    assert ex["label"] == want[first] == src.labels[i]
    seen.append(k)
  assert sorted(seen) == list(range(len(FACE_ATTRIBUTES)))
  # Through the pipeline: the batches carry them for multi-task schemes (ABN's abn.task_classes).
  c = common.get_config()
  c.data.num_classes, c.data.image_size, c.data.resize_size, c.data.eval_batch_size = src.num_classes, 8, 10, 8
  batch = next(iter(pipeline.build(c, "train", training=False, source=src)))
  assert batch["attributes"].shape == (8, 3) and batch["attributes"].dtype == np.int32
  assert sorted(map(tuple, batch["attributes"][batch["mask"]].tolist())) == sorted(
    tuple(face_attributes(k)[n] for n in names) for k in range(len(FACE_ATTRIBUTES))
  )
