"""Localisation helpers: the object box found from activations (SCDA), the pointing game, the parts part maps hit,
the deletion and insertion curves."""

import numpy as np
import pytest

from fgattn_jax.ops import localization


def test_object_box_covers_the_cells_above_the_mean():
  f = np.zeros((2, 8, 8, 3), np.float32)
  f[0, 2:4, 5:7, 0] = 4.0  # a bright object on rows 2-3, columns 5-6
  f[0, 6, 1, 1] = 0.1  # a faint spot below the mean: not the object
  f[1] = 1.0  # nothing stands out: the whole image
  boxes = np.asarray(localization.object_boxes(f, (64, 96)))
  np.testing.assert_allclose(boxes[0], [5 * 12, 2 * 8, 7 * 12, 4 * 8])  # cells of 12 x 8 pixels
  np.testing.assert_allclose(boxes[1], [0, 0, 96, 64])


def test_object_box_spans_separate_blobs():
  f = np.zeros((1, 4, 4, 1), np.float32)
  f[0, 0, 0, 0] = f[0, 3, 2, 0] = 1.0
  np.testing.assert_allclose(np.asarray(localization.object_boxes(f, (4, 4)))[0], [0, 0, 3, 4])


def test_pointing_game_on_planted_maps():
  maps = np.zeros((3, 4, 4), np.float32)
  maps[0, 1, 1] = maps[1, 3, 3] = 1.0  # third map: all zero, its argmax the first cell, which the box covers
  boxes = np.array([[8, 8, 24, 24], [8, 8, 24, 24], [0, 0, 8, 8]], np.float32)
  hits = np.asarray(localization.pointing_game(maps, boxes, (32, 32)))
  np.testing.assert_array_equal(hits, [True, False, False])  # a flat map points nowhere: a miss
  np.testing.assert_allclose(np.asarray(localization.box_area_fraction(boxes, (32, 32))), [0.25, 0.25, 1 / 16])


def test_nearest_part_hits_on_planted_peaks():
  maps = np.zeros((2, 4, 4, 3), np.float32)
  maps[0, 0, 0, 0] = maps[0, 0, 0, 1] = 1.0  # two maps on the cell centred (4, 4); the third at (28, 4)
  maps[0, 0, 3, 2] = 1.0
  maps[1, 2, 2, :] = 1.0
  parts = np.array(
    [
      [[5, 5], [26, 4], [28, 5]],  # part 2 is nearest the third map's peak, but absent
      [[np.nan, np.nan]] * 3,
    ],
    np.float32,
  )
  parts[0, 2] = np.nan
  found = {k: np.asarray(v) for k, v in localization.nearest_part_hits(maps, parts, (32, 32), radius=3.0).items()}
  np.testing.assert_array_equal(found["nearest"], [[0, 0, 1], [-1, -1, -1]])
  np.testing.assert_array_equal(found["hit"], [[True, True, True], [False, False, False]])
  np.testing.assert_array_equal(found["distinct"], [2, 0])  # two maps on one part count once
  found = localization.nearest_part_hits(maps, parts, (32, 32), radius=1.0)
  np.testing.assert_array_equal(np.asarray(found["hit"])[0], [False, False, False])
  found = localization.nearest_part_hits(maps, parts, (32, 32), radius=100.0)  # absent parts are nowhere, not at 0
  np.testing.assert_array_equal(np.asarray(found["hit"]), [[True, True, True], [False, False, False]])
  np.testing.assert_array_equal(np.asarray(found["distinct"]), [2, 0])


def evidence_probs(images):
  """Class 0's probability: the share of the 4x4 evidence square (rows and columns 2..5) still at its value 1."""
  p = images[:, 2:6, 2:6, 0].mean(axis=(1, 2))
  return np.stack([p, 1 - p], axis=1)


def curves_by_hand(images, m, steps):
  """NumPy: the zero-baseline deletion and insertion curves of class 0, pixels ranked by the (same-size) map."""
  b, h, w, _ = images.shape
  out = {"deletion": [], "insertion": []}
  for t in range(steps + 1):
    first = np.zeros((b, h * w), bool)
    for i in range(b):
      first[i, np.argsort(-m[i].ravel(), kind="stable")[: round(t * h * w / steps)]] = True
    first = first.reshape(b, h, w, 1)
    out["deletion"].append(evidence_probs(np.where(first, 0.0, images))[:, 0])
    out["insertion"].append(evidence_probs(np.where(first, images, 0.0))[:, 0])
  return {k: np.stack(v, axis=1) for k, v in out.items()}


def test_deletion_and_insertion_reward_the_map_on_the_evidence():
  images = np.zeros((2, 16, 16, 3), np.float32)
  images[:, 2:6, 2:6] = 1.0
  yy, xx = np.mgrid[:16, :16]
  on = -((yy - 3.5) ** 2 + (xx - 3.5) ** 2).astype(np.float32)  # peaked on the evidence
  off = -((yy - 12) ** 2 + (xx - 12) ** 2).astype(np.float32)  # peaked in the far corner
  maps = np.stack([on, off])
  labels = np.zeros(2, np.int32)
  got = {
    k: np.asarray(v)
    for k, v in localization.deletion_insertion(evidence_probs, images, maps, labels, steps=8, baseline="zero").items()
  }
  want = curves_by_hand(images, maps, 8)
  for name in ("deletion", "insertion"):
    assert got[f"{name}_curve"].shape == (2, 9)
    np.testing.assert_allclose(got[f"{name}_curve"], want[name], atol=1e-6)
    np.testing.assert_allclose(got[name], np.trapezoid(want[name], dx=1 / 8, axis=1), atol=1e-6)
  assert got["deletion"][0] < 0.1 < 0.6 < got["deletion"][1]
  assert got["insertion"][0] > 0.9 > 0.4 > got["insertion"][1]


def baseline_by_hand(images, baseline):
  """NumPy: the image's per-channel mean, or its Gaussian blur (sigma H / 16, 3 sigma, edge padding) axis by axis."""
  if baseline == "mean":
    return np.broadcast_to(images.mean(axis=(1, 2), keepdims=True), images.shape)
  sigma = images.shape[1] / 16
  r = int(3 * sigma)
  k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
  k /= k.sum()
  for axis in (1, 2):
    pad = [(0, 0)] * 4
    pad[axis] = (r, r)
    padded = np.pad(images, pad, mode="edge")
    images = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), axis, padded)
  return images


def test_deletion_and_insertion_break_ties_by_flat_index_and_round_the_counts():
  images = np.zeros((1, 16, 16, 1), np.float32)
  images[:, 2:6, 2:6] = 1.0
  maps = np.zeros((1, 16, 16), np.float32)  # all tied: pixels go in flat order, from the top row
  # 256 / 3 and 256 / 7 pixels a step: at t = 1, ceil (86) and floor (36) would each take one more or one fewer
  # square pixel than rounding (85, 37).
  for steps in (3, 7):
    got = localization.deletion_insertion(
      evidence_probs, images, maps, np.zeros(1, np.int32), steps=steps, baseline="zero"
    )
    want = curves_by_hand(images, maps, steps)
    for name in ("deletion", "insertion"):
      np.testing.assert_allclose(np.asarray(got[f"{name}_curve"]), want[name], atol=1e-6)


def upsample_by_hand(m, hw):
  """NumPy bilinear upsampling of (B, h, w) maps, pixel centres aligned, edges held."""
  b, h, w = m.shape
  v = np.clip((np.arange(hw[0]) + 0.5) * h / hw[0] - 0.5, 0, h - 1)
  u = np.clip((np.arange(hw[1]) + 0.5) * w / hw[1] - 0.5, 0, w - 1)
  r0, c0 = np.minimum(v.astype(int), h - 2), np.minimum(u.astype(int), w - 2)
  fy, fx = (v - r0)[:, None], (u - c0)[None, :]
  return (1 - fy) * ((1 - fx) * m[:, r0][:, :, c0] + fx * m[:, r0][:, :, c0 + 1]) + fy * (
    (1 - fx) * m[:, r0 + 1][:, :, c0] + fx * m[:, r0 + 1][:, :, c0 + 1]
  )


def test_deletion_and_insertion_rank_pixels_by_the_bilinearly_resized_map():
  rng = np.random.default_rng(2)
  images = np.zeros((2, 16, 16, 1), np.float32)
  images[:, 2:6, 2:6] = 1.0
  maps = rng.uniform(size=(2, 4, 4)).astype(np.float32)
  got = localization.deletion_insertion(evidence_probs, images, maps, np.zeros(2, np.int32), steps=16, baseline="zero")
  want = curves_by_hand(images, upsample_by_hand(maps.astype(np.float64), (16, 16)), 16)
  for name in ("deletion", "insertion"):
    np.testing.assert_allclose(np.asarray(got[f"{name}_curve"]), want[name], atol=1e-6)


def test_deletion_and_insertion_baselines_start_and_end_where_they_must():
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  images[:, 2:6, 2:6, 0] = 1.0
  maps = rng.uniform(size=(2, 4, 4)).astype(np.float32)  # smaller than the images: resized
  labels = np.array([0, 1])
  for baseline in ("mean", "blur"):
    got = localization.deletion_insertion(evidence_probs, images, maps, labels, steps=4, baseline=baseline)
    start = evidence_probs(images)[[0, 1], labels]
    base = baseline_by_hand(images, baseline)
    end = evidence_probs(base)[[0, 1], labels]  # nothing of the image left / nothing put back yet
    np.testing.assert_allclose(got["deletion_curve"][:, 0], start, atol=1e-6)
    np.testing.assert_allclose(got["insertion_curve"][:, -1], start, atol=1e-6)
    np.testing.assert_allclose(got["deletion_curve"][:, -1], end, atol=1e-5)
    np.testing.assert_allclose(got["insertion_curve"][:, 0], end, atol=1e-5)
    assert not np.allclose(end, start)  # the baseline is not the image
  with pytest.raises(ValueError, match="blur, zero or mean"):
    localization.deletion_insertion(evidence_probs, images, maps, labels, baseline="noise")


def test_deletion_and_insertion_curves_of_probabilities_lie_in_the_unit_square():
  rng = np.random.default_rng(1)
  images = rng.normal(size=(3, 16, 16, 2)).astype(np.float32)
  maps = rng.normal(size=(3, 8, 8)).astype(np.float32)
  weights = rng.normal(size=(16 * 16 * 2, 4)).astype(np.float32)

  def probs(x):  # a linear model with a softmax, as a caller's score_fn would be
    logits = np.asarray(x).reshape(len(x), -1) @ weights
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)

  labels = np.array([0, 2, 3])
  for baseline in ("blur", "zero", "mean"):
    got = {
      k: np.asarray(v)
      for k, v in localization.deletion_insertion(probs, images, maps, labels, steps=5, baseline=baseline).items()
    }
    for name in ("deletion", "insertion"):
      assert got[f"{name}_curve"].shape == (3, 6) and got[name].shape == (3,)
      np.testing.assert_allclose(got[name], np.trapezoid(got[f"{name}_curve"], dx=1 / 5, axis=1), atol=1e-6)
      assert np.all((got[name] >= 0) & (got[name] <= 1))
