"""MA-CNN's channel-grouping initialisation recovers planted channel groups."""

import numpy as np
import pytest

from fgattn_jax.ops.grouping_init import channel_peaks, indicator_targets, kmeans


def planted_features(rng, images=12, channels=24, parts=3, hw=(10, 12)):
  """Each channel fires near its part's location in every image (parts move from image to image)."""
  groups = rng.permutation(np.arange(channels) % parts)
  feats = rng.uniform(0, 0.1, (images, *hw, channels)).astype(np.float32)
  for s in range(images):
    spots = rng.integers(0, [hw[0], hw[1]], size=(parts, 2))
    for c in range(channels):
      r, col = spots[groups[c]]
      r, col = np.clip(r + rng.integers(-1, 2), 0, hw[0] - 1), np.clip(col + rng.integers(-1, 2), 0, hw[1] - 1)
      feats[s, r, col, c] = 1.0
  return feats, groups


def same_partition(a, b):
  return all(len(set(b[a == g])) == 1 for g in set(a)) and len(set(a)) == len(set(b))


def test_channel_peaks_are_normalised_cell_centres():
  f = np.zeros((2, 4, 5, 3), np.float32)
  f[0, 1, 2, 0] = f[1, 3, 4, 0] = 1
  f[0, 0, 0, 1] = f[1, 0, 0, 1] = 1
  p = channel_peaks(f)
  assert p.shape == (3, 4)  # (channels, 2 * images): x for each image, then y for each image
  np.testing.assert_allclose(p[0], [2.5 / 5, 4.5 / 5, 1.5 / 4, 3.5 / 4])
  np.testing.assert_allclose(p[1], [0.1, 0.1, 0.125, 0.125])


@pytest.mark.parametrize("seed", range(4))
def test_kmeans_recovers_planted_groups(seed):
  rng = np.random.default_rng(seed)
  feats, groups = planted_features(rng)
  labels, centres = kmeans(channel_peaks(feats), 3, seed=seed)
  assert same_partition(labels, groups)
  assert centres.shape == (3, 24)
  again, _ = kmeans(channel_peaks(feats), 3, seed=seed)
  np.testing.assert_array_equal(labels, again)  # deterministic


def test_channels_silent_in_an_image_do_not_group_by_their_silence():
  """After a ReLU a channel is often zero over a whole image: it has no peak there. Counted at argmax's top-left
  cell, the channels silent in the same images grouped together instead of with their parts."""
  f = np.zeros((2, 4, 5, 2), np.float32)
  f[0, 1, 2, 0] = 1  # channel 0 fires in image 0 only; channel 1 never
  np.testing.assert_allclose(channel_peaks(f), [[0.5, np.nan, 0.375, np.nan], [np.nan] * 4])
  for seed in range(4):
    rng = np.random.default_rng(seed)
    feats, groups = planted_features(rng, images=16)
    silent = rng.random((16, 24)) < 0.25
    silent[:8, :12] = rng.random((8, 12)) < 0.9  # half the channels mostly silent in the first half of the images
    feats[np.broadcast_to(silent[:, None, None, :], feats.shape)] = 0.0
    labels, _ = kmeans(channel_peaks(feats), 3, seed=seed)
    assert same_partition(labels, groups), seed


def test_indicator_targets_and_errors():
  t = indicator_targets(np.array([1, 0, 1, 2]), 3)
  np.testing.assert_array_equal(t, [[0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]])
  with pytest.raises(ValueError, match="at least 4 points"):
    kmeans(np.zeros((3, 2)), 4)


def test_class_sample_spans_every_class_of_a_split_stored_by_class():
  from data_pipelines.pipeline import class_sample

  labels = np.repeat(np.arange(200), 30)  # CUB-like: 200 classes, their files one class after another
  picked = class_sample(labels, 256, seed=0)
  assert len(picked) == 256 and len(set(picked.tolist())) == 256
  counts = np.bincount(labels[picked], minlength=200)
  assert counts.min() == 1 and counts.max() == 2  # every class, none twice before all once
  np.testing.assert_array_equal(picked, class_sample(labels, 256, seed=0))  # the same on every process
  assert not np.array_equal(picked, class_sample(labels, 256, seed=1))
  assert sorted(class_sample(labels[:50], 999, seed=0)) == list(range(50))  # fewer than asked: all of them


def test_the_grouping_init_sees_every_class_of_a_folder_tree_stored_by_class(tmp_path, monkeypatch):
  """The sample a phase sets itself up from (MA-CNN's k-means) spans the classes: it used to be the first
  evaluation batches in file order, here 32 images of the first 3 of 12 classes."""
  import data_trees as trees
  from engine_config import tiny

  from fgattn_jax.schemes.baseline import Baseline
  from fgattn_jax.training import loop

  classes = {f"class{k:02d}": 10 for k in range(12)}
  trees.write_image_folder(tmp_path / "data", counts=classes, splits=("train", "test"))
  c = tiny(main=1)
  c.data.source, c.data.name, c.data.root, c.data.num_classes = "folder", "folder", str(tmp_path / "data"), 12
  seen = []

  def before_phase(self, key, model, sample_batches):
    seen.extend(label for b in sample_batches() for label in b["label"][b["mask"]])

  monkeypatch.setattr(Baseline, "before_phase", before_phase)
  loop.run(c, str(tmp_path / "run"), progress=False)
  assert len(seen) == loop.SAMPLE_BATCHES * c.data.eval_batch_size  # 32 of the 120 training images
  assert set(seen) == set(range(12))
