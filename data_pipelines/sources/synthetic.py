"""The embedded synthetic fine-grained data set: no files, no download, generated from (seed, split, index).

Each image shows one "bird": an ellipse body of nearly grey colour, random size, position and orientation
on a cluttered, nearly grey background, a dark head at its front, and `num_parts` small square parts on a
ring inside the body (front, left, back, right for four), far enough apart for a coarse attention map to
tell them apart. A part's texture is one of three patterns (horizontal stripes, vertical stripes, checker)
in a light and a dark shade of the part's own hue. The hue belongs to the part, in every image and class
(its identity, as a bird's head, wing and tail each look like themselves whatever the species: a network
that learns parts learns channels for each); the pattern belongs to the class: a class is a combination of
part patterns, so two classes often differ in a single part. The hue names a part wherever it sits and the
textures are their own mirror images, so a horizontal flip keeps every class the same (rotation
augmentation would turn stripes and is off by default). The patterns have a period of a few pixels:
downsampled by four they blur to the same flat patch of the part's hue, so a network that looks closely at
the parts (attention, zoomed crops) does better than one that sees the whole image at low resolution.
(`stripe` sets the stripes' width in pixels instead: 2-pixel stripes, a 4-pixel cycle, average to exactly their
mean under a 4x antialiased reduction, the detail task's, configs/common.py.)
Two distractor patches with grey patterns sit in the background.

Ground truth: the object box (the body's extent with its head) and the part centres, in pixels; and, as
multi-task attributes, each part's pattern (one 3-way task per part).
"""

from __future__ import annotations

import itertools

import numpy as np

from data_pipelines.sources.base import DataError, Source

PATTERNS = ("horizontal", "vertical", "checker")
# Part k's hue (k modulo 4), the same in every image, class and split: its stripes are a light and a dark
# shade of it. Everything else in the image is nearly grey, so a part's colour names it.
PART_HUES = np.array([[1, 0.15, 0.15], [0.15, 1, 0.15], [0.2, 0.35, 1], [1, 0.9, 0.1]], np.float64)
SPLITS = {"train": 0, "val": 1, "test": 2}
# Drawn examples are kept, up to this many bytes of images per source and process: a training run draws every
# example once per epoch, and drawing one costs more than augmenting it (1.4 ms at 72 pixels, 13 ms at 256; the
# MA-CNN learning test's 9 epochs of data: 47 -> 12 CPU-seconds). grain's worker processes keep their own.
CACHE_BYTES = 256 << 20


def class_codes(num_classes: int, num_parts: int) -> np.ndarray:
  """(num_classes, num_parts) pattern ids: distinct codes in a fixed shuffled order (the same for every
  split and seed, so that train and test agree on what a class is)."""
  total = len(PATTERNS) ** num_parts
  if num_classes > total:
    raise DataError(
      f"The synthetic set with {num_parts} parts has at most {total} classes; "
      f"asked for {num_classes}. Raise data.synthetic.num_parts."
    )
  order = np.random.default_rng(1234).permutation(total)[:num_classes]
  return np.array(list(itertools.product(range(len(PATTERNS)), repeat=num_parts)))[order]


def _texture(pattern: int, size: int, period: int) -> np.ndarray:
  """0/1 stripes of `period` pixels: horizontal, vertical or a checkerboard (all half ones)."""
  r, c = np.mgrid[:size, :size]
  return [(r // period) % 2, (c // period) % 2, (r // period + c // period) % 2][pattern]


class SyntheticBirds(Source):
  name = "synthetic"

  def __init__(
    self,
    split: str = "train",
    *,
    num_examples: int = 2000,
    resolution: int = 112,
    num_classes: int = 10,
    num_parts: int = 4,
    seed: int = 0,
    stripe: int = 0,
  ):
    if split not in SPLITS:
      raise DataError(f"The synthetic set has no split {split!r}; use one of {', '.join(SPLITS)}.")
    if resolution < 32:
      raise DataError(f"data.synthetic.resolution={resolution} is too small to draw parts; use 32 or more.")
    if stripe < 0:
      raise DataError(f"data.synthetic.stripe={stripe} must be 0 (resolution / 64) or a width in pixels.")
    self.split, self.resolution, self.seed = split, resolution, seed
    self.stripe = stripe or max(1, int(round(resolution / 64)))
    self._n = num_examples
    self.num_classes, self.num_parts = num_classes, num_parts
    self.codes = class_codes(num_classes, num_parts)
    self.attribute_classes = (len(PATTERNS),) * num_parts
    self.class_names = ["-".join(PATTERNS[p][0] for p in code) for code in self.codes]
    self._cache, self._keep = {}, CACHE_BYTES // (3 * resolution**2)

  def __getstate__(self):  # a copy (a worker process) gets the recipe, not the images drawn so far
    return self.__dict__ | {"_cache": {}}

  def __len__(self):
    return self._n

  @property
  def labels(self):
    return np.arange(self._n) % self.num_classes

  def describe(self, index):
    return f"synthetic {self.split} example {index}"

  def _example(self, index):
    if not 0 <= index < self._n:
      raise IndexError(index)
    ex = self._cache.get(index)
    if ex is None:
      rng = np.random.default_rng([self.seed, SPLITS[self.split], index])
      label = index % self.num_classes
      image, box, parts = render(rng, self.codes[label], self.resolution, self.stripe)
      for array in (image, box, parts):  # shared by every later draw of the example: no one may write to them
        array.flags.writeable = False
      ex = {"image": image, "label": label, "box": box, "parts": parts, "attributes": self.codes[label]}
      if len(self._cache) < self._keep:
        self._cache[index] = ex
    return ex


def render(rng: np.random.Generator, code: np.ndarray, res: int, period: int | None = None):
  """Draws one image, its parts' stripes `period` pixels wide (default res / 64); returns (uint8 image, box (x0, y0,
  x1, y1), parts (P, 2) as (x, y))."""
  yy, xx = np.mgrid[:res, :res] + 0.5  # pixel centres
  # Background: a random two-colour gradient plus low-frequency waves.
  c0, c1 = rng.uniform(40, 215, (2, 1)) + rng.uniform(-12, 12, (2, 3))
  g = rng.uniform(0, 2 * np.pi)
  t = np.clip((xx * np.cos(g) + yy * np.sin(g)) / res * 0.7 + 0.5, 0, 1)
  img = c0 + t[..., None] * (c1 - c0)
  for _ in range(3):
    f, ph, d = rng.uniform(1, 4) * 2 * np.pi / res, rng.uniform(0, 2 * np.pi), rng.uniform(0, 2 * np.pi)
    img += rng.uniform(5, 20) * np.sin(f * (xx * np.cos(d) + yy * np.sin(d)) + ph)[..., None]

  # Body: a rotated ellipse with a head in front, placed so that it fits in the image with its parts.
  a = rng.uniform(0.22, 0.28) * res
  b = a * rng.uniform(0.55, 0.75)
  theta = rng.uniform(0, 2 * np.pi)
  ext_x = np.sqrt((a * np.cos(theta)) ** 2 + (b * np.sin(theta)) ** 2)
  ext_y = np.sqrt((a * np.sin(theta)) ** 2 + (b * np.cos(theta)) ** 2)
  half = max(2, int(round(0.045 * res)))  # part half-side
  head, reach = 0.3 * b, a + 0.18 * b  # head radius; its centre's distance from the body's
  hdx, hdy = reach * np.cos(theta), reach * np.sin(theta)
  span_x = max(ext_x, abs(hdx) + head) + half + 1
  span_y = max(ext_y, abs(hdy) + head) + half + 1
  cx, cy = rng.uniform(span_x, res - span_x), rng.uniform(span_y, res - span_y)
  dx, dy = xx - cx, yy - cy
  u = (dx * np.cos(theta) + dy * np.sin(theta)) / a
  v = (-dx * np.sin(theta) + dy * np.cos(theta)) / b
  body = u**2 + v**2 <= 1
  img[body] = rng.uniform(60, 200) + rng.uniform(-12, 12, 3)

  hx, hy = cx + hdx, cy + hdy
  img[(xx - hx) ** 2 + (yy - hy) ** 2 <= head**2] = rng.uniform(10, 50, 3)

  # Parts on a ring at 0.6 of the body's radii, part k at angle 2 pi k / n from the front.
  phi = 2 * np.pi * np.arange(len(code)) / len(code)
  u, v = 0.6 * a * np.cos(phi), 0.6 * b * np.sin(phi)
  px, py = cx + u * np.cos(theta) - v * np.sin(theta), cy + u * np.sin(theta) + v * np.cos(theta)
  period = period or max(1, int(round(res / 64)))
  for k, (x, y, pattern) in enumerate(zip(px, py, code)):
    hue = PART_HUES[k % len(PART_HUES)]
    _stamp(img, x, y, half, pattern, period, hue * rng.uniform(210, 250), hue * rng.uniform(70, 110))

  # Distractors: random patterns away from the body.
  for _ in range(2):
    for _try in range(10):
      x, y = rng.uniform(half, res - half, 2)
      if ((x - cx) / (span_x + half)) ** 2 + ((y - cy) / (span_y + half)) ** 2 > 1:
        _stamp(
          img,
          x,
          y,
          half,
          rng.integers(len(PATTERNS)),
          period,
          rng.uniform(170, 230) + rng.uniform(-12, 12, 3),
          rng.uniform(30, 80) + rng.uniform(-12, 12, 3),
        )
        break

  box = np.array(
    [min(cx - ext_x, hx - head), min(cy - ext_y, hy - head), max(cx + ext_x, hx + head), max(cy + ext_y, hy + head)],
    np.float32,
  )
  parts = np.stack([px, py], axis=1).astype(np.float32)
  return np.clip(img, 0, 255).astype(np.uint8), box, parts


def _stamp(img, x, y, half, pattern, period, light, dark):
  """A (2 half)^2 square of stripes of two colours centred on pixel (x, y)."""
  r0, c0 = int(y) - half, int(x) - half
  tex = _texture(int(pattern), 2 * half, period)[..., None]
  img[r0 : r0 + 2 * half, c0 : c0 + 2 * half] = np.where(tex > 0, light, dark)
