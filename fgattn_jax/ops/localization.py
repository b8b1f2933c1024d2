"""Where an attention map points, measured against ground-truth boxes."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def peak_points(maps, image_hw):
  """(B, h, w) maps -> (B, 2) (x, y) input pixels of each map's maximum (the centre of its grid cell)."""
  b, h, w = maps.shape
  flat = jnp.argmax(maps.reshape(b, h * w), axis=-1)
  row, col = flat // w, flat % w
  return jnp.stack([(col + 0.5) * image_hw[1] / w, (row + 0.5) * image_hw[0] / h], axis=-1)


def pointing_game(maps, boxes, image_hw):
  """(B,) booleans: the map's peak lies inside the box (x0, y0, x1, y1); NaN boxes never count as hits, nor do
  flat maps (all one value, e.g. a Grad-CAM that is zero everywhere): they point nowhere, and their argmax, the
  first cell, would score whenever a box covers the top-left corner."""
  x, y = peak_points(maps, image_hw).T
  flat = jnp.max(maps, axis=(1, 2)) == jnp.min(maps, axis=(1, 2))
  return (x >= boxes[:, 0]) & (x < boxes[:, 2]) & (y >= boxes[:, 1]) & (y < boxes[:, 3]) & ~flat


def box_area_fraction(boxes, image_hw):
  """The chance that a uniformly random point falls in each box: the pointing game's chance level."""
  return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (image_hw[0] * image_hw[1])


def object_boxes(features, image_hw):
  """(B, h, w, C) non-negative conv features -> (B, 4) boxes (x0, y0, x1, y1) in input pixels around the object.

  The object's extent from the network's own activations, no annotation (SCDA, Wei et al. 2017): the cells whose
  channel sum is above its mean over the grid, and the box of their cells' edges. The cell with the largest sum
  is always inside, so a box is never empty. No gradient: the box selects, it is not learned.
  """
  f = jnp.asarray(features).astype(jnp.float32)
  b, h, w, _ = f.shape
  total = jnp.sum(f, axis=-1)  # (B, h, w)
  mask = total >= jnp.mean(total, axis=(1, 2), keepdims=True)
  rows, cols = jnp.any(mask, axis=2), jnp.any(mask, axis=1)  # (B, h), (B, w)

  def extent(on, n):
    idx = jnp.arange(n)
    return jnp.min(jnp.where(on, idx, n), axis=1), jnp.max(jnp.where(on, idx, -1), axis=1) + 1

  (r0, r1), (c0, c1) = extent(rows, h), extent(cols, w)
  sy, sx = image_hw[0] / h, image_hw[1] / w
  return jax.lax.stop_gradient(jnp.stack([c0 * sx, r0 * sy, c1 * sx, r1 * sy], axis=-1).astype(jnp.float32))


def nearest_part_hits(maps, parts, image_hw, radius: float) -> dict:
  """(B, h, w, N) part maps, (B, P, 2) ground-truth parts (x, y; NaN rows absent) -> {'nearest' (B, N): the
  present part nearest each map's peak (-1 if none), 'hit' (B, N): within `radius` pixels of it, 'distinct' (B,):
  different parts hit per image}. Maps collapsed on one part hit at most one."""
  b, _, _, n = maps.shape
  peaks = jnp.stack([peak_points(maps[..., i], image_hw) for i in range(n)], axis=1)  # (B, N, 2)
  present = jnp.all(jnp.isfinite(parts), axis=-1)  # (B, P)
  d2 = jnp.sum((jnp.nan_to_num(parts)[:, None] - peaks[:, :, None]) ** 2, axis=-1)  # (B, N, P)
  d2 = jnp.where(present[:, None], d2, jnp.inf)
  nearest = jnp.where(jnp.any(present, axis=1)[:, None], jnp.argmin(d2, axis=-1), -1)
  hit = jnp.min(d2, axis=-1) <= radius**2
  p = parts.shape[1]
  hit_parts = jnp.any(hit[..., None] & (nearest[..., None] == jnp.arange(p)), axis=1)  # (B, P)
  return {"nearest": nearest, "hit": hit, "distinct": jnp.sum(hit_parts, axis=-1)}


def _blur(images, sigma: float):
  """Separable Gaussian blur of (B, H, W, C), edges padded by repetition."""
  r = max(1, int(3 * sigma))
  k = jnp.exp(-0.5 * (jnp.arange(-r, r + 1) / sigma) ** 2)
  k = k / k.sum()
  x = jnp.pad(images, ((0, 0), (r, r), (r, r), (0, 0)), mode="edge")
  x = sum(k[i] * x[:, i : i + images.shape[1]] for i in range(2 * r + 1))
  return sum(k[i] * x[:, :, i : i + images.shape[2]] for i in range(2 * r + 1))


@functools.partial(jax.jit, static_argnames="hw")
def _ranks(maps, hw):
  """Each pixel's rank by the map resized to the images (0: most salient; ties to the lower flat index)."""
  b = maps.shape[0]
  m = jax.image.resize(maps.astype(jnp.float32), (b, *hw), "bilinear").reshape(b, -1)
  order = jnp.argsort(-m, axis=-1, stable=True)
  return jnp.zeros_like(order).at[jnp.arange(b)[:, None], order].set(jnp.arange(m.shape[1])[None])


@jax.jit
def _blend(images, baseline, ranks, count, insert):
  """The images with their `count` most salient pixels replaced by the baseline (deletion) or, from the baseline,
  put back (insertion)."""
  first = (ranks < count).reshape(images.shape[:3])[..., None]
  keep_image = jnp.where(insert, first, ~first)
  return jnp.where(keep_image, images, baseline)


def deletion_insertion(score_fn, images, maps, labels, steps: int = 16, baseline: str = "blur") -> dict:
  """The deletion and insertion curves (Petsiuk et al. 2018): the probability of `labels` as the most salient
  pixels (by `maps` (B, h, w), resized to the images) are removed in steps of 1/steps of the image (replaced by
  `baseline`: 'blur' (Gaussian, sigma = H / 16), 'zero' or the image's 'mean'), and as they are put back into
  the baseline. score_fn: images (B, H, W, C) -> probabilities (B, K). -> {'deletion', 'insertion' (B,) areas
  under the curves (trapezoids over the fraction of pixels), 'deletion_curve', 'insertion_curve' (B, steps + 1)}.
  A good map: low deletion, high insertion."""
  images = jnp.asarray(images, jnp.float32)
  b, h, w, _ = images.shape
  if baseline == "blur":
    base = _blur(images, h / 16)
  elif baseline == "zero":
    base = jnp.zeros_like(images)
  elif baseline == "mean":
    base = jnp.broadcast_to(jnp.mean(images, axis=(1, 2), keepdims=True), images.shape)
  else:
    raise ValueError(f"unknown baseline {baseline!r}: blur, zero or mean")
  ranks = _ranks(jnp.asarray(maps), (h, w))
  labels = jnp.asarray(labels)
  curves = {}
  for name, insert in (("deletion", False), ("insertion", True)):
    points = []
    for t in range(steps + 1):
      count = round(t * h * w / steps)
      probs = score_fn(_blend(images, base, ranks, count, insert))
      points.append(jnp.take_along_axis(probs, labels[:, None], axis=1)[:, 0])
    curve = jnp.stack(points, axis=1)
    curves[f"{name}_curve"] = curve
    curves[name] = jnp.sum((curve[:, 1:] + curve[:, :-1]) / 2, axis=1) / steps
  return curves
