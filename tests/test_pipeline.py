"""The grain pipeline: batches, evaluation padding, determinism, exact restore, sharding, bad input."""

import io
import logging

import numpy as np
import pytest
from PIL import Image

from configs import common
from data_pipelines import pipeline
from data_pipelines.sources.base import DataError, Source


def config(**data):
  c = common.get_config()
  c.data.synthetic.num_train, c.data.synthetic.num_test = 40, 26
  c.data.image_size, c.data.resize_size, c.data.batch_size, c.data.eval_batch_size = 48, 56, 8, 12
  for k, v in data.items():
    c.data[k] = v
  return c


def take(p, n):
  return [next(p) for _ in range(n)]


def assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_training_batches():
  p = pipeline.build(config(), "train")
  assert p.steps_per_epoch == 5 and p.batch_size == 8
  b = next(iter(p))
  assert b["image"].shape == (8, 48, 48, 3) and b["image"].dtype == np.uint8
  assert b["label"].dtype == np.int32 and b["box"].shape == (8, 4) and b["parts"].shape == (8, 4, 2)
  assert b["mask"].all() and "corrupt" not in b
  # The synthetic set's attributes (multi-task targets): each part's pattern, i.e. the class's code.
  codes = p.source.codes
  np.testing.assert_array_equal(b["attributes"], codes[b["label"]])
  # An epoch is a permutation: five batches see 40 distinct examples.
  seen = np.concatenate([b["index"]] + [x["index"] for x in take(p, 4)])
  assert sorted(seen.tolist()) == list(range(40))


def test_augment_pad_reaches_the_training_crops_only():
  """data.augment.pad (CIFAR's 4) gives training crops black borders up to `pad` deep; evaluation has none."""
  c = config(image_size=48, resize_size=48)
  c.data.augment.pad = 6
  images = np.concatenate([b["image"] for b in take(pipeline.build(c, "train"), 3)])
  black = np.all(images == 0, axis=-1)  # the synthetic images have no black pixel of their own
  rows, cols = black.all(axis=2), black.all(axis=1)  # (N, 48): whole black rows and columns
  assert rows.any() and cols.any()
  assert not rows[:, 6:42].any() and not cols[:, 6:42].any()
  evaluation = next(iter(pipeline.build(c, "test")))["image"]
  assert not np.all(evaluation == 0, axis=-1).any()


def test_evaluation_sees_every_example_once_with_a_padded_last_batch():
  p = pipeline.build(config(), "test")
  batches = list(p)
  assert len(batches) == 3 == len(p)  # 26 examples in batches of 12
  index = np.concatenate([b["index"] for b in batches])
  mask = np.concatenate([b["mask"] for b in batches])
  assert index[mask].tolist() == list(range(26))
  assert (index[~mask] == -1).all() and (~mask).sum() == 10
  assert_same(batches, list(p))  # a second pass is the same


def test_same_seed_same_batches_other_seed_other_batches():
  a, b = pipeline.build(config(), "train"), pipeline.build(config(), "train")
  first = take(a, 3)
  assert_same(first, take(b, 3))
  c = config()
  c.seed = 1
  other = take(pipeline.build(c, "train"), 1)[0]
  assert not np.array_equal(other["index"], first[0]["index"])


@pytest.mark.parametrize("workers", [0, 2])
def test_restored_pipeline_continues_exactly(workers):
  c = config(num_workers=workers)
  c.data.augment.rotation = 20.0
  uninterrupted = pipeline.build(c, "train")
  take(uninterrupted, 4)
  state = uninterrupted.get_state()
  expected = take(uninterrupted, 4)  # crosses the epoch boundary at step 5
  restored = pipeline.build(c, "train")
  restored.set_state(state)
  assert restored.step == 4
  assert_same(take(restored, 4), expected)
  uninterrupted.close(), restored.close()


@pytest.mark.parametrize("split", ["test", "train"])
def test_decoding_processes_give_the_same_batches(split):
  # Each decoding process takes whole batches in turn. (When each batched its own share of the examples,
  # evaluation batches came out ragged, [12, 12, 2] as [6, 6, 6, 6, 1, 1], which several devices cannot split, and
  # a training epoch saw some examples twice and others not at all.)
  n = 3 if split == "test" else 6  # training: past the end of the first epoch (5 batches)
  expected = take(iter(pipeline.build(config(), split)), n)
  workers = pipeline.build(config(num_workers=2), split)
  assert_same(take(iter(workers), n), expected)
  workers.close()


def test_a_state_saved_when_positions_counted_examples_restores_to_its_step():
  c = config()
  uninterrupted = pipeline.build(c, "train")
  take(uninterrupted, 3)
  expected = take(uninterrupted, 3)
  restored = pipeline.build(c, "train")
  restored.set_state({"grain": {"next_index": 3 * 8}, "step": 3, "epoch_skipped": []})  # as saved before
  assert_same(take(restored, 3), expected)


def test_processes_share_out_the_data():
  shards = [pipeline.build(config(), "test", process_index=i, process_count=2) for i in range(2)]
  assert all(s.batch_size == 6 for s in shards)
  index = np.concatenate([b["index"][b["mask"]] for s in shards for b in s])
  assert sorted(index.tolist()) == list(range(26))
  with pytest.raises(ValueError, match="does not split evenly"):
    pipeline.build(config(), "test", process_count=5)


@pytest.mark.parametrize("balanced", [False, True])
def test_processes_training_batches_are_the_single_process_batches_shared_out(balanced):
  # Process i's k-th batch is its share (positions i, i + 2, ...) of the single-process k-th batch, augmentation
  # included: a run's training is the same on one host as on two. (The augmentation was drawn after the stream was
  # shared out: both processes' t-th examples had the same crop and flip, and the 2-process run differed.)
  c = config(balanced=balanced)
  c.data.augment.rotation, c.data.augment.brightness = 15.0, 0.2  # every random choice of the transform
  whole = take(pipeline.build(c, "train"), 7)  # past the first epoch (5 batches)
  shares = [pipeline.build(c, "train", process_index=i, process_count=2) for i in range(2)]
  for i, share in enumerate(shares):
    assert_same(take(share, 7), [{k: v[i::2] for k, v in b.items()} for b in whole])
  # Resumed on two processes from one process's position (training.checkpoint: a process the run was not saved
  # with takes process 0's): the same global batches follow.
  one = pipeline.build(c, "train")
  take(one, 3)
  state = one.get_state()
  for i in range(2):
    share = pipeline.build(c, "train", process_index=i, process_count=2)
    share.set_state(state)
    assert_same(take(share, 4), [{k: v[i::2] for k, v in b.items()} for b in whole[3:]])


def test_balanced_sampling_evens_out_classes():
  class Imbalanced(Source):
    name, num_classes, class_names = "imbalanced", 2, ["rare", "common"]

    def __len__(self):
      return 100

    @property
    def labels(self):
      return np.array([0] * 10 + [1] * 90)

    def _example(self, i):
      return {"image": np.zeros((8, 8, 3), np.uint8), "label": self.labels[i]}

  c = config(balanced=True, num_classes=2, image_size=8, resize_size=8, batch_size=50)
  p = pipeline.build(c, "train", source=Imbalanced())
  labels = np.concatenate([b["label"] for b in take(p, 8)])
  assert 0.4 < labels.mean() < 0.6  # unbalanced sampling would give 0.9


def jpeg(colour):
  buf = io.BytesIO()
  Image.new("RGB", (30, 20), colour).save(buf, format="JPEG")
  return buf.getvalue()


class Files(Source):
  """Five JPEG 'files', two of them corrupt (garbage, and a truncated JPEG)."""

  name, num_classes, class_names = "files", 2, ["a", "b"]

  def __init__(self):
    good = jpeg((200, 0, 0))
    self.blobs = [good, b"not an image", good, good[: len(good) // 2], good]

  def __len__(self):
    return len(self.blobs)

  @property
  def labels(self):
    return np.arange(5) % 2

  def describe(self, i):
    return f"/data/img{i}.jpg"

  def _example(self, i):
    return {"image": self.blobs[i], "label": i % 2}


def test_unreadable_images_are_skipped_counted_and_named(caplog):
  c = config(num_classes=2, image_size=16, resize_size=16, eval_batch_size=5, batch_size=5)
  p = pipeline.build(c, "test", source=Files())
  with caplog.at_level(logging.WARNING):
    (batch,) = list(p)
  assert batch["mask"].tolist() == [True, False, True, False, True]
  assert "attributes" not in batch and "parts" not in batch  # this source has neither
  assert batch["image"][0, 8, 8].tolist()[0] > 150 and not batch["image"][1].any()
  assert p.skipped == ["/data/img1.jpg", "/data/img3.jpg"]
  assert (
    "skipped 2 unreadable image(s) in the pass: /data/img1.jpg, /data/img3.jpg. The first could not be read: "
    "cannot identify image file" in caplog.text
  )  # with the decoder's reason
  # Training: reported at the end of each epoch, and training goes on.
  t = pipeline.build(c, "train", source=Files())
  take(t, 3)
  assert len(t.skipped) == 6


def test_a_split_of_only_unreadable_images_stops_the_pipeline():
  # Otherwise training runs on blanks and evaluation fails later with nothing accumulated.
  bad = Files()
  bad.blobs = [b"not an image"] * 5
  with pytest.raises(
    DataError,
    match=r"No image of the 'test' split of files could be decoded \(5 tried; the "
    r"first, /data/img0.jpg: cannot identify",
  ):
    pipeline.build(config(num_classes=2), "test", source=bad)


def test_each_unreadable_file_is_reported_once_per_epoch(caplog):
  # 5 examples in batches of 2: an epoch is 2 batches, so each epoch's 4 positions straddle two shuffled passes,
  # and a file at the end of one pass and early in the next is read twice in one epoch.
  one_good = Files()
  one_good.blobs = one_good.blobs[:1] + [b"not an image"] * 4
  t = pipeline.build(config(num_classes=2, batch_size=2), "train", source=one_good)
  with caplog.at_level(logging.WARNING):
    take(t, 2 * 10)
  reports = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
  assert len(reports) == 10
  for report in reports:
    names = report.split(": ", 1)[1].split(". The first could not be read")[0].split(", ")
    assert len(names) == len(set(names)) and f"skipped {len(names)} unreadable image(s)" in report, report
  assert any(" reads) in epoch " in r for r in reports)  # the case was met, and says how often files were read
  assert len(t.skipped) == sum(len(r.split(": ", 1)[1].split(". The first")[0].split(", ")) for r in reports)


def test_bad_configs_are_clear():
  with pytest.raises(DataError, match="files has 2 classes but data.num_classes=5"):
    pipeline.build(config(num_classes=5), "test", source=Files())
  with pytest.raises(DataError, match="fewer than one batch"):
    pipeline.build(config(batch_size=64), "train")
  c = config()
  c.data.synthetic.num_test = 0
  with pytest.raises(DataError, match="'test' split of synthetic is empty"):
    pipeline.build(c, "test")
  with pytest.raises(DataError, match="Unknown data.source"):
    pipeline.build(config(source="s3"), "train")
