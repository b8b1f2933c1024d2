"""MA-CNN's channel-grouping initialisation: channels whose peaks sit in the same places over the training
images belong to the same part.

Each channel is described by the (x, y) of its peak response in each of S images (normalised to [0, 1]),
a 2S-vector; k-means groups these vectors into N parts; part i's grouping layers are then pretrained to
output the indicator of its channels.
"""

from __future__ import annotations

import numpy as np


def channel_peaks(features) -> np.ndarray:
  """(S, H, W, C) feature maps of S images -> (C, 2S): every channel's peak (x, y) in every image, in [0, 1].

  A channel silent in an image (a constant map: after a ReLU, often all zero) has no peak there: NaN, which kmeans
  reads as unobserved. Counted at argmax's top-left cell, the channels silent in the same images grouped on that
  corner instead of with their parts.
  """
  f = np.asarray(features, np.float32)
  s, h, w, c = f.shape
  flat = f.reshape(s, h * w, c)
  arg = flat.argmax(axis=1)  # (S, C)
  fires = flat.max(axis=1) > flat.min(axis=1)  # (S, C)
  x, y = (arg % w + 0.5) / w, (arg // w + 0.5) / h
  return np.where(np.concatenate([fires.T, fires.T], axis=1), np.concatenate([x.T, y.T], axis=1), np.nan)


def kmeans(points, k: int, *, seed: int = 0, iters: int = 100):
  """Lloyd's k-means with k-means++ seeding, deterministic given the seed -> (labels (n,), centres (k, d)).

  NaN coordinates are unobserved: a point's distance to a centre is the mean squared difference over its observed
  coordinates (times d, the usual scale), and a centre's coordinate the mean of its points that observe it (the
  mean of every point that does while none of its own do; 0.5, the grid's middle, for a coordinate no point has).
  """
  pts = np.asarray(points, np.float64)
  if len(pts) < k:
    raise ValueError(f"k-means into {k} groups needs at least {k} points, got {len(pts)}")
  seen = ~np.isnan(pts)
  filled = np.where(seen, pts, 0.0)
  counts = seen.sum(axis=0)
  overall = np.where(counts > 0, filled.sum(axis=0) / np.maximum(counts, 1), 0.5)

  def dist2(centres):  # (n, k): mean squared difference over each point's observed coordinates, times d
    diff = (filled[:, None] - centres[None]) ** 2 * seen[:, None]
    return diff.sum(-1) * pts.shape[1] / np.maximum(seen.sum(-1), 1)[:, None]

  def complete(point):
    return np.where(np.isnan(point), overall, point)

  rng = np.random.default_rng(seed)
  centres = [complete(pts[rng.integers(len(pts))])]
  for _ in range(1, k):  # k-means++: far points are likelier seeds
    d2 = dist2(np.array(centres)).min(axis=1)
    pick = rng.choice(len(pts), p=d2 / d2.sum()) if d2.sum() > 0 else rng.integers(len(pts))
    centres.append(complete(pts[pick]))
  centres = np.array(centres)
  labels = np.zeros(len(pts), np.int64)
  for _ in range(iters):
    new = np.argmin(dist2(centres), axis=1)
    if _ and np.array_equal(new, labels):
      break
    labels = new
    for j in range(k):
      members = labels == j
      if np.any(members):  # an empty cluster keeps its centre; so does a coordinate none of its points observe
        n = seen[members].sum(axis=0)
        centres[j] = np.where(n > 0, filled[members].sum(axis=0) / np.maximum(n, 1), centres[j])
  return labels, centres


def indicator_targets(labels, k: int) -> np.ndarray:
  """(C,) group of each channel -> (k, C) float32 indicators: the channel weights each part should output."""
  return (np.arange(k)[:, None] == np.asarray(labels)[None, :]).astype(np.float32)
