"""Where an attention map points, measured against ground-truth boxes."""

from __future__ import annotations

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
