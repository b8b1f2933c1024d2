"""MA-CNN's channel-grouping initialisation: channels whose peaks sit in the same places over the training
images belong to the same part.

Each channel is described by the (x, y) of its peak response in each of S images (normalised to [0, 1]),
a 2S-vector; k-means groups these vectors into N parts; part i's grouping layers are then pretrained to
output the indicator of its channels.
"""

from __future__ import annotations

import numpy as np


def channel_peaks(features) -> np.ndarray:
  """(S, H, W, C) feature maps of S images -> (C, 2S): every channel's peak (x, y) in every image, in [0, 1]."""
  f = np.asarray(features, np.float32)
  s, h, w, c = f.shape
  flat = f.reshape(s, h * w, c).argmax(axis=1)  # (S, C)
  x, y = (flat % w + 0.5) / w, (flat // w + 0.5) / h
  return np.concatenate([x.T, y.T], axis=1)


def kmeans(points, k: int, *, seed: int = 0, iters: int = 100):
  """Lloyd's k-means with k-means++ seeding, deterministic given the seed -> (labels (n,), centres (k, d))."""
  pts = np.asarray(points, np.float64)
  if len(pts) < k:
    raise ValueError(f"k-means into {k} groups needs at least {k} points, got {len(pts)}")
  rng = np.random.default_rng(seed)
  centres = [pts[rng.integers(len(pts))]]
  for _ in range(1, k):  # k-means++: far points are likelier seeds
    d2 = np.min([np.sum((pts - c) ** 2, axis=1) for c in centres], axis=0)
    centres.append(pts[rng.choice(len(pts), p=d2 / d2.sum())] if d2.sum() > 0 else pts[rng.integers(len(pts))])
  centres = np.array(centres)
  labels = np.zeros(len(pts), np.int64)
  for _ in range(iters):
    new = np.argmin(((pts[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    if _ and np.array_equal(new, labels):
      break
    labels = new
    for j in range(k):
      if np.any(labels == j):  # an empty cluster keeps its centre
        centres[j] = pts[labels == j].mean(axis=0)
  return labels, centres


def indicator_targets(labels, k: int) -> np.ndarray:
  """(C,) group of each channel -> (k, C) float32 indicators: the channel weights each part should output."""
  return (np.arange(k)[:, None] == np.asarray(labels)[None, :]).astype(np.float32)
