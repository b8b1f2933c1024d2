"""An independent float64 NumPy bilinear crop, the reference for ops/crops.py and the RA-CNN zoom, and a smooth
test image for their finite-difference checks."""

import numpy as np


def reference_crop(image, box, out_hw):
  """One output pixel at a time: sample the box at the pixel's centre, bilinear over zero-padded pixel centres."""
  image = np.asarray(image, np.float64)
  h, w, c = image.shape
  oh, ow = out_hw
  x0, y0, x1, y1 = (float(v) for v in box)

  def pixel(r, col):
    return image[r, col] if 0 <= r < h and 0 <= col < w else np.zeros(c)

  out = np.zeros((oh, ow, c))
  for i in range(oh):
    for j in range(ow):
      # Continuous coordinates -> pixel-index units, where pixel k's centre sits at k.
      u = x0 + (j + 0.5) * (x1 - x0) / ow - 0.5
      v = y0 + (i + 0.5) * (y1 - y0) / oh - 0.5
      c0, r0 = int(np.floor(u)), int(np.floor(v))
      fx, fy = u - c0, v - r0
      out[i, j] = (1 - fy) * ((1 - fx) * pixel(r0, c0) + fx * pixel(r0, c0 + 1)) + fy * (
        (1 - fx) * pixel(r0 + 1, c0) + fx * pixel(r0 + 1, c0 + 1)
      )
  return out


def smooth_image(h, w, c, seed=0):
  """A sum of random sinusoids: smooth, so finite differences of a crop are well conditioned."""
  rng = np.random.default_rng(seed)
  yy, xx = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
  image = np.zeros((h, w, c))
  for k in range(c):
    for _ in range(3):
      fx, fy, phase = rng.uniform(0.1, 0.6), rng.uniform(0.1, 0.6), rng.uniform(0, 2 * np.pi)
      image[..., k] += np.sin(fx * xx + fy * yy + phase)
  return image
