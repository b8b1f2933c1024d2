"""Where an attention map points, measured against ground-truth boxes."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def peak_points(maps, image_hw):
  """(B, h, w) maps -> (B, 2) (x, y) input pixels of each map's maximum (the centre of its grid cell)."""
  b, h, w = maps.shape
  flat = jnp.argmax(maps.reshape(b, h * w), axis=-1)
  row, col = flat // w, flat % w
  return jnp.stack([(col + 0.5) * image_hw[1] / w, (row + 0.5) * image_hw[0] / h], axis=-1)


def pointing_game(maps, boxes, image_hw):
  """(B,) booleans: the map's peak lies inside the box (x0, y0, x1, y1); NaN boxes never count as hits."""
  x, y = peak_points(maps, image_hw).T
  return (x >= boxes[:, 0]) & (x < boxes[:, 2]) & (y >= boxes[:, 1]) & (y < boxes[:, 3])


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
