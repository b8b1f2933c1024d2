"""Image transforms that carry the object box and part points along, deterministic given an rng.

Training: resize the shorter side to `resize`, random `size` x `size` crop (optionally of the resized image
padded with `pad` black pixels on every side: CIFAR's pad-4 crop), horizontal flip, optional rotation about
the crop's centre, brightness and colour (saturation) jitter. Evaluation: resize and centre crop. Resize and
crop are one resampling of the source region (PIL's resize with a box), which costs less than resizing the
whole image first and gives the same geometry; with a rotation, the crop, the flip and the rotation are one
affine resampling (see _resample). Everything runs in PIL's C code: the input
pipeline has to keep up with a GPU step on the host's cores (benchmarks/input_pipeline.py).

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
  pad: int = 0  # training: black pixels (at the resized scale) around the resized image before the random crop

  def __post_init__(self):
    if self.resize < self.size:
      raise ValueError(f"data.resize_size={self.resize} must be at least data.image_size={self.size}")
    if self.pad < 0:
      raise ValueError(f"data.augment.pad={self.pad} must be 0 or more")


def _window(image, resize: int, size: int, offset, pad: int = 0):
  """The size x size window at `offset` (pixels of the image resized so that its shorter side is `resize`, from
  its corner; negative into a padding of `pad` resized pixels), in source pixels (x0, y0, x1, y1)."""
  h, w = image.shape[:2]
  s = resize / min(h, w)
  ox, oy = offset
  # Rounding the resized size can push the window's far edge a hair past the (padded) image: clamp it.
  return ox / s, oy / s, min((ox + size) / s, w + pad / s), min((oy + size) / s, h + pad / s)


def _move(region, size, box, parts):
  """Source coordinates -> the window's, resized to size x size."""
  scale = np.array([size / (region[2] - region[0]), size / (region[3] - region[1])], np.float32)
  move = lambda xy: (xy - np.array(region[:2], np.float32)) * scale  # noqa: E731
  return move(box.reshape(2, 2)).reshape(4), move(parts)


def _crop_resize(image: np.ndarray, box, parts, resize: int, size: int, offset):
  """Resize so the shorter side is `resize`, then take the size x size window at `offset` (resized pixels)."""
  region = _window(image, resize, size, offset)
  out = np.asarray(_resample(Image.fromarray(image), region, size, flip=False, degrees=0.0))
  return out, *_move(region, size, box, parts)


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
  """The random window, flip, rotation and colour jitter, resampled once where it can be (see _resample)."""
  rh, rw = _resized_shape(image, aug.resize)
  p = aug.pad
  offset = (rng.integers(-p, rw - aug.size + p + 1), rng.integers(-p, rh - aug.size + p + 1))
  flip = bool(aug.flip and rng.random() < 0.5)
  degrees = rng.uniform(-aug.rotation, aug.rotation) if aug.rotation > 0 else 0.0
  jitter = aug.brightness > 0 or aug.colour > 0
  if jitter:
    brightness, saturation = 1 + rng.uniform(-aug.brightness, aug.brightness), 1 + rng.uniform(-aug.colour, aug.colour)
  n = aug.size
  region = _window(image, aug.resize, n, offset, p)
  out = _resample(*_padded(image, region), n, flip, degrees)
  if jitter:
    out = _jitter(out, brightness, saturation)
  # The coordinates take the same steps one at a time: what the window cut away must not come back with the turn.
  box, parts = _clip(*_move(region, n, box, parts), n)
  if flip:
    box = np.array([n - box[2], box[1], n - box[0], box[3]], np.float32)
    parts = parts * np.array([-1, 1], np.float32) + np.array([n, 0], np.float32)
  if degrees:
    box, parts = _turn(box, parts, n, degrees)
  return np.asarray(out), *_clip(box, parts, n)


def _padded(image: np.ndarray, region):
  """The image and the window in it, with black borders added where the window reaches outside (PIL's resize
  takes no box outside the image). The borders are whole source pixels, so the window moves by whole pixels."""
  h, w = image.shape[:2]
  q = int(np.ceil(max(0.0, -region[0], -region[1], region[2] - w, region[3] - h)))
  if q:
    image = np.pad(image, ((q, q), (q, q)) + ((0, 0),) * (image.ndim - 2))
    region = tuple(v + q for v in region)
  return Image.fromarray(image), region


def _resample(image: Image.Image, region, n: int, flip: bool, degrees: float) -> Image.Image:
  """The window `region` of the source, resized to n x n, mirrored left-right if `flip`, turned `degrees` counter-
  clockwise about its centre (the corners it turns in are black). Without a turn: PIL's resize (antialiased when
  shrinking), then a mirror of its rows. With one, when the window is enlarged (the usual case at 448: CUB's
  500 x 375 images are enlarged to 512), all of it is one bilinear affine resampling of the window: one
  interpolation instead of two, and less than half the time of resize + flip + rotate; when shrinking, the
  antialiased resize first, then the mirror and the turn as one affine map."""
  if not degrees:
    out = image.resize((n, n), Image.BILINEAR, box=region)
    return out.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else out
  x0, y0, x1, y1 = region
  if n >= x1 - x0:
    left, top = int(np.floor(x0)), int(np.floor(y0))
    image = image.crop((left, top, int(np.ceil(x1)), int(np.ceil(y1))))  # outside the window stays black
    window = np.array([[(x1 - x0) / n, 0, x0 - left], [0, (y1 - y0) / n, y0 - top], [0, 0, 1]])
  else:
    image = image.resize((n, n), Image.BILINEAR, box=region)
    window = np.eye(3)
  # Output pixel -> source pixel, in continuous coordinates: undo the turn, then the mirror, then the window's
  # scaling (the inverse of what _turn, the flip and _move do to the coordinates).
  unturn = _about_centre(_rotation(degrees), n)
  mirror = np.array([[-1, 0, n], [0, 1, 0], [0, 0, 1]]) if flip else np.eye(3)
  m = window @ mirror @ unturn
  return image.transform((n, n), Image.AFFINE, tuple(m[:2].ravel()), Image.BILINEAR)


def _rotation(degrees: float) -> np.ndarray:
  """[[cos t, -sin t], [sin t, cos t]]: applied to row vectors (xy @ R), a counter-clockwise turn as seen with y
  pointing down; applied to column vectors (R @ xy), the turn back."""
  t = np.deg2rad(degrees)
  return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def _about_centre(linear, n):
  """The 3 x 3 affine map x -> linear @ (x - c) + c, c the centre of an n x n image."""
  m = np.eye(3)
  m[:2, :2] = linear
  m[:2, 2] = n / 2 - linear @ np.full(2, n / 2)
  return m


def _turn(box, parts, n, degrees: float):
  """Coordinates turned counter-clockwise (as seen) about the image centre; the box becomes that of its turned
  corners."""
  # With y pointing down, a counter-clockwise turn maps the offset (dx, dy) to
  # (dx cos t + dy sin t, -dx sin t + dy cos t).
  rot = _rotation(degrees).astype(np.float32)
  turn = lambda xy: (xy - n / 2) @ rot + n / 2  # noqa: E731
  corners = turn(np.array([[box[0], box[1]], [box[2], box[1]], [box[0], box[3]], [box[2], box[3]]], np.float32))
  box = np.concatenate([corners.min(0), corners.max(0)])
  return box, turn(parts)


def _jitter(image: Image.Image, brightness: float, saturation: float) -> Image.Image:
  """Each pixel's grey (ITU-R 601 luma) plus `saturation` times its difference from it, all times `brightness`:
  one 3 x 3 colour matrix, which PIL applies in C (rounded, clipped to 0..255) in a fraction of NumPy's time."""
  luma = np.array([0.299, 0.587, 0.114])
  m = brightness * (saturation * np.eye(3) + (1 - saturation) * luma[None, :])
  return image.convert("RGB", tuple(np.concatenate([m, np.zeros((3, 1))], axis=1).ravel()))


def _clip(box, parts, n):
  box = np.clip(box, 0, n).astype(np.float32)
  if not (box[2] > box[0] and box[3] > box[1]):
    box = np.full(4, np.nan, np.float32)
  inside = np.all((parts >= 0) & (parts < n), axis=1)
  parts = np.where(inside[:, None], parts, np.nan).astype(np.float32)
  return box, parts
