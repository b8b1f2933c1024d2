"""Image transforms that carry the object box and part points along, deterministic given an rng.

Training: resize the shorter side to `resize`, random `size` x `size` crop, horizontal flip, optional
rotation about the crop's centre, brightness and colour (saturation) jitter. Evaluation: resize and
centre crop. Resize and crop are one resampling of the source region (PIL's resize with a box), which
costs less than resizing the whole image first and gives the same geometry.

Coordinates are continuous pixels (a pixel's centre at +0.5), so every geometric step is an exact affine
map of them. After the transform, a box is clipped to the image (NaN if nothing of it is left) and a part
point that left the image is NaN. A flip does not swap left and right part identities.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image


@dataclasses.dataclass(frozen=True)
class Augment:
  resize: int  # shorter side before the crop
  size: int  # output side
  flip: bool = True
  rotation: float = 0.0  # maximum degrees either way
  brightness: float = 0.0  # maximum relative change
  colour: float = 0.0  # maximum relative change of saturation

  def __post_init__(self):
    if self.resize < self.size:
      raise ValueError(f"data.resize_size={self.resize} must be at least data.image_size={self.size}")


def _crop_resize(image: np.ndarray, box, parts, resize: int, size: int, offset):
  """Resize so the shorter side is `resize`, then take the size x size window at `offset` (resized pixels)."""
  h, w = image.shape[:2]
  s = resize / min(h, w)
  ox, oy = offset
  # The window in source pixels; rounding the resized size can push its far edge a hair past the image.
  region = (ox / s, oy / s, min((ox + size) / s, w), min((oy + size) / s, h))
  out = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR, box=region))
  scale = np.array([size / (region[2] - region[0]), size / (region[3] - region[1])], np.float32)
  move = lambda xy: (xy - np.array(region[:2], np.float32)) * scale  # noqa: E731
  return out, move(box.reshape(2, 2)).reshape(4), move(parts)


def _resized_shape(image, resize):
  h, w = image.shape[:2]
  s = resize / min(h, w)
  return int(round(h * s)), int(round(w * s))


def evaluate(image, box, parts, aug: Augment):
  rh, rw = _resized_shape(image, aug.resize)
  image, box, parts = _crop_resize(image, box, parts, aug.resize, aug.size,
                                   ((rw - aug.size) / 2, (rh - aug.size) / 2))
  return image, *_clip(box, parts, aug.size)


def train(image, box, parts, aug: Augment, rng: np.random.Generator):
  rh, rw = _resized_shape(image, aug.resize)
  offset = (rng.integers(0, rw - aug.size + 1), rng.integers(0, rh - aug.size + 1))
  image, box, parts = _crop_resize(image, box, parts, aug.resize, aug.size, offset)
  n = aug.size
  box, parts = _clip(box, parts, n)  # what the crop cut away must not come back with the rotation
  if aug.flip and rng.random() < 0.5:
    image = image[:, ::-1]
    box = np.array([n - box[2], box[1], n - box[0], box[3]], np.float32)
    parts = parts * np.array([-1, 1], np.float32) + np.array([n, 0], np.float32)
  if aug.rotation > 0:
    image, box, parts = _rotate(image, box, parts, rng.uniform(-aug.rotation, aug.rotation))
  if aug.brightness > 0 or aug.colour > 0:
    image = _photometric(image, 1 + rng.uniform(-aug.brightness, aug.brightness),
                         1 + rng.uniform(-aug.colour, aug.colour))
  return image, *_clip(box, parts, n)


def _rotate(image, box, parts, degrees: float):
  """Counter-clockwise (as seen) about the image centre; the box becomes that of its rotated corners."""
  n = image.shape[0]
  image = np.asarray(Image.fromarray(image).rotate(degrees, Image.BILINEAR))
  t = np.deg2rad(degrees)
  # With y pointing down, a counter-clockwise turn maps the offset (dx, dy) to
  # (dx cos t + dy sin t, -dx sin t + dy cos t).
  rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]], np.float32)
  turn = lambda xy: (xy - n / 2) @ rot + n / 2  # noqa: E731
  corners = turn(np.array([[box[0], box[1]], [box[2], box[1]], [box[0], box[3]], [box[2], box[3]]], np.float32))
  box = np.concatenate([corners.min(0), corners.max(0)])
  return image, box, turn(parts)


def _photometric(image, brightness: float, saturation: float):
  x = image.astype(np.float32)
  grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
  x = grey[..., None] + saturation * (x - grey[..., None])
  return np.clip(x * brightness, 0, 255).astype(np.uint8)


def _clip(box, parts, n):
  box = np.clip(box, 0, n).astype(np.float32)
  if not (box[2] > box[0] and box[3] > box[1]):
    box = np.full(4, np.nan, np.float32)
  inside = np.all((parts >= 0) & (parts < n), axis=1)
  parts = np.where(inside[:, None], parts, np.nan).astype(np.float32)
  return box, parts
