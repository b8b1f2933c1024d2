"""Image transforms that carry the object box and part points along, deterministic given an rng.

Training: resize the shorter side to `resize`, random `size` x `size` crop (optionally of the resized image
padded with `pad` black pixels on every side: CIFAR's pad-4 crop), or with crop='random_resized' torchvision's
RandomResizedCrop (a window of random area and aspect ratio, resized to size x size); horizontal flip, optional
rotation about the crop's centre, brightness and colour (saturation) jitter. Evaluation: resize and centre crop,
optionally turned by a random angle (eval_rotation: a recipe that rotates its test images). Resize and
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

CROPS = ("resize", "random_resized")


@dataclasses.dataclass(frozen=True)
class Augment:
  resize: int  # shorter side before the crop
  size: int  # output side
  flip: bool = True
  rotation: float = 0.0  # maximum degrees either way
  brightness: float = 0.0  # maximum relative change
  colour: float = 0.0  # maximum relative change of saturation
  pad: int = 0  # training: black pixels (at the resized scale) around the resized image before the random crop
  crop: str = "resize"  # training: 'resize' (shorter side to `resize`, random window) | 'random_resized'
  crop_area: tuple[float, float] = (0.08, 1.0)  # 'random_resized': the window's fraction of the image's area
  crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # 'random_resized': its width / height
  eval_rotation: float = 0.0  # evaluation: maximum degrees either way (drawn per example, the same every pass)

  def __post_init__(self):
    if self.resize < self.size:
      raise ValueError(f"data.resize_size={self.resize} must be at least data.image_size={self.size}")
    if self.pad < 0:
      raise ValueError(f"data.augment.pad={self.pad} must be 0 or more")
    if self.crop not in CROPS:
      raise ValueError(f"data.augment.crop={self.crop!r}: use one of {', '.join(CROPS)}")
    if self.crop == "random_resized" and self.pad:
      raise ValueError("data.augment.pad applies to the 'resize' crop; set it to 0 with crop='random_resized'")
    (a0, a1), (r0, r1) = self.crop_area, self.crop_ratio
    if not (0 < a0 <= a1 <= 1 and 0 < r0 <= r1):
      raise ValueError(
        f"data.augment.crop_area={self.crop_area} must satisfy 0 < low <= high <= 1 and "
        f"data.augment.crop_ratio={self.crop_ratio} 0 < low <= high"
      )


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


def evaluate(image, box, parts, aug: Augment, rng: np.random.Generator | None = None):
  """The centre window; with aug.eval_rotation, turned by an angle drawn from rng."""
  rh, rw = _resized_shape(image, aug.resize)
  n, offset = aug.size, ((rw - aug.size) / 2, (rh - aug.size) / 2)
  if not aug.eval_rotation:
    image, box, parts = _crop_resize(image, box, parts, aug.resize, n, offset)
    return image, *_clip(box, parts, n)
  if rng is None:
    raise ValueError("data.augment.eval_rotation draws an angle per example: pass the example's rng")
  degrees = rng.uniform(-aug.eval_rotation, aug.eval_rotation)
  region = _window(image, aug.resize, n, offset)
  out = _resample(Image.fromarray(image), region, n, flip=False, degrees=degrees)
  box, parts = _turn(*_clip(*_move(region, n, box, parts), n), n, degrees)
  return np.asarray(out), *_clip(box, parts, n)


def _random_resized_region(image, area: tuple[float, float], ratio: tuple[float, float], rng: np.random.Generator):
  """torchvision's RandomResizedCrop window (x0, y0, x1, y1) in source pixels: up to 10 draws of an area fraction
  (uniform) and an aspect ratio (log-uniform) whose window fits, placed uniformly; else the centre window of the
  image's shape clamped to the ratio range."""
  h, w = image.shape[:2]
  for _ in range(10):
    target = h * w * rng.uniform(*area)
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
    cw, ch = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
    if 0 < cw <= w and 0 < ch <= h:
      x0, y0 = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
      return float(x0), float(y0), float(x0 + cw), float(y0 + ch)
  if w / h < ratio[0]:
    cw, ch = w, int(round(w / ratio[0]))
  elif w / h > ratio[1]:
    cw, ch = int(round(h * ratio[1])), h
  else:
    cw, ch = w, h
  x0, y0 = (w - cw) // 2, (h - ch) // 2
  return float(x0), float(y0), float(x0 + cw), float(y0 + ch)


def train(image, box, parts, aug: Augment, rng: np.random.Generator):
  """The random window, flip, rotation and colour jitter, resampled once where it can be (see _resample)."""
  n, p = aug.size, aug.pad
  if aug.crop == "random_resized":
    region = _random_resized_region(image, aug.crop_area, aug.crop_ratio, rng)
  else:
    rh, rw = _resized_shape(image, aug.resize)
    offset = (rng.integers(-p, rw - n + p + 1), rng.integers(-p, rh - n + p + 1))
    region = _window(image, aug.resize, n, offset, p)
  flip = bool(aug.flip and rng.random() < 0.5)
  degrees = rng.uniform(-aug.rotation, aug.rotation) if aug.rotation > 0 else 0.0
  jitter = aug.brightness > 0 or aug.colour > 0
  if jitter:
    brightness, saturation = 1 + rng.uniform(-aug.brightness, aug.brightness), 1 + rng.uniform(-aug.colour, aug.colour)
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
  if n >= max(x1 - x0, y1 - y0):
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
