"""An independent float64 NumPy bilinear crop: the reference for ops/crops.py and the RA-CNN zoom's tests."""

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
      out[i, j] = ((1 - fy) * ((1 - fx) * pixel(r0, c0) + fx * pixel(r0, c0 + 1))
                   + fy * ((1 - fx) * pixel(r0 + 1, c0) + fx * pixel(r0 + 1, c0 + 1)))
  return out
