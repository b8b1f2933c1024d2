"""Differentiable box crops: bilinear resampling of an image region to a fixed size (MA-CNN parts, RA-CNN zooms).

Conventions, shared with localization.py: boxes are (x0, y0, x1, y1) in continuous pixel coordinates, pixel (r, c)
covering [c, c + 1) x [r, r + 1) with its centre at (c + 0.5, r + 0.5). Output pixel (i, j) of an (oh, ow) crop
samples x = x0 + (j + 0.5) * (x1 - x0) / ow, y = y0 + (i + 0.5) * (y1 - y0) / oh, bilinearly between the four
nearest pixel centres.

Outside the image: the image is a grid of samples at the pixel centres, extended with zeros. A sample less than
half a pixel beyond the outermost centres therefore blends towards zero, and one a full pixel or more outside is
exactly zero (PyTorch's grid_sample with padding_mode='zeros', align_corners=False behaves the same way).

The sampling is written out (no jax.image.resize, which cannot take a box, and no map_coordinates) so that plain
autodiff gives gradients to the images and to the boxes: the sampling positions are linear in the box and the
bilinear weights are linear in the positions' fractional parts. Two formulations of the same function (RESAMPLE):
"gather" gathers the four taps of every output pixel, and its gradient to the images is a scatter-add (atomics on
a GPU; slow on a TPU); "matmul" writes each box's sampling as an (oh, H) and an (ow, W) interpolation matrix and
the crop as two batched products, whose gradients are products too. They agree to rounding (tests/test_crops.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# "gather", "matmul" (module docstring) or "auto"; `python -m benchmarks.throughput --crop` times either. A module
# switch, read at trace time, as pooling.POOLING.
RESAMPLE = "auto"


def formulation(backend: str | None = None) -> str:
  """The crops' formulation in force: RESAMPLE, or for "auto" the products on a TPU (RA-CNN's compiled VGG-19 step
  moves 1.38 TB per step with the gathers' scatter-add there, 66 GB with the products: benchmarks/RESULTS.md) and
  the gathers elsewhere. backend: as pooling.formulation's."""
  if RESAMPLE != "auto":
    return RESAMPLE
  return "matmul" if (backend or jax.default_backend()) == "tpu" else "gather"


def _axis_taps(lo, hi, n_out, size, dtype):
  """The two pixel indices around each sample along one axis, (..., n_out, 2), and their bilinear weights.

  Taps that fall off the image get weight zero (the zero extension) and an index clipped into range, so the
  gather stays in bounds and contributes nothing.
  """
  step = (hi - lo) / n_out  # spec formula order, so that a whole-image box at full size samples exact centres
  pos = lo[..., None] + (jnp.arange(n_out, dtype=dtype) + 0.5) * step[..., None] - 0.5  # pixel k's centre is k
  base = jnp.floor(pos)
  frac = pos - base  # floor is locally constant: d frac / d pos = 1, which carries the gradient to the box
  idx = base.astype(jnp.int32)[..., None] + jnp.arange(2, dtype=jnp.int32)
  inside = (idx >= 0) & (idx < size)
  weights = jnp.stack([1 - frac, frac], axis=-1) * inside.astype(dtype)
  return jnp.clip(idx, 0, size - 1), weights


def _axis_matrix(lo, hi, n_out, size, dtype):
  """(..., n_out, size) bilinear interpolation matrix along one axis: row i holds sample i's two tap weights."""
  idx, weights = _axis_taps(lo, hi, n_out, size, dtype)
  # The taps' indices are constant w.r.t. the box; the gradient reaches it through the weights, as in the gather.
  return jnp.sum(weights[..., None] * (idx[..., None] == jnp.arange(size)), axis=-2)


def axis_matrices(boxes, image_hw, out_hw, dtype):
  """(..., 4) boxes -> ((..., oh, H), (..., ow, W)) the rows' and the columns' interpolation matrices."""
  (h, w), (oh, ow) = image_hw, (int(n) for n in out_hw)
  return (
    _axis_matrix(boxes[..., 1], boxes[..., 3], oh, h, dtype),
    _axis_matrix(boxes[..., 0], boxes[..., 2], ow, w, dtype),
  )


def resample(images, rows, cols):
  """(B, H, W, C) images, (B, N, oh, H) and (B, N, ow, W) matrices -> (B, N, oh, ow, C) = rows @ image @ cols^T.

  At full float32 precision (a TF32 or bfloat16 product would lose the sub-pixel positions on accelerators)."""
  highest = jax.lax.Precision.HIGHEST
  columns = jnp.einsum("bnjw,bhwc->bnhjc", cols, images, precision=highest)
  return jnp.einsum("bnih,bnhjc->bnijc", rows, columns, precision=highest)


def _float_images(images):
  images = jnp.asarray(images)
  return images if jnp.issubdtype(images.dtype, jnp.floating) else images.astype(jnp.float32)


def crop_parts(images, boxes, out_hw):
  """(B, H, W, C) images and (B, N, 4) boxes -> (B, N, oh, ow, C) bilinear crops, N per image.

  One batched gather of the four taps of every output pixel, or two batched products (RESAMPLE); no loop over the
  batch or the boxes. Arithmetic runs
  in at least float32 (bfloat16 images would lose the sub-pixel positions) and the result is cast back to the
  images' float dtype; uint8 images become float32. out_hw must be static under jit.
  """
  images = _float_images(images)
  boxes = jnp.asarray(boxes)
  out_dtype = images.dtype
  dtype = jnp.promote_types(out_dtype, jnp.result_type(boxes.dtype, jnp.float32))
  boxes = boxes.astype(dtype)
  oh, ow = (int(n) for n in out_hw)
  b, h, w, _ = images.shape
  if formulation() == "matmul":
    return resample(images.astype(dtype), *axis_matrices(boxes, (h, w), (oh, ow), dtype)).astype(out_dtype)
  rows, wy = _axis_taps(boxes[..., 1], boxes[..., 3], oh, h, dtype)  # (B, N, oh, 2)
  cols, wx = _axis_taps(boxes[..., 0], boxes[..., 2], ow, w, dtype)  # (B, N, ow, 2)
  batch = jnp.arange(b)[:, None, None, None, None, None]
  # Index shapes broadcast to (B, N, oh, ow, 2, 2); the gather appends C.
  taps = images[batch, rows[:, :, :, None, :, None], cols[:, :, None, :, None, :]].astype(dtype)
  weights = wy[:, :, :, None, :, None] * wx[:, :, None, :, None, :]
  # An elementwise weighted sum rather than einsum: a dot would run at reduced precision on accelerators.
  out = jnp.sum(taps * weights[..., None], axis=(-3, -2))
  return out.astype(out_dtype)


def crop_resize(images, boxes, out_hw):
  """(B, H, W, C) images and (B, 4) boxes (x0, y0, x1, y1) -> (B, oh, ow, C): each image's box resampled to out_hw.

  Bilinear with zero extension outside the image (module docstring); differentiable w.r.t. images and boxes.
  Returns the images' float dtype (float32 for integer images).
  """
  return crop_parts(images, jnp.asarray(boxes)[:, None], out_hw)[:, 0]


def _shift_inside(center, half, size):
  """Moves the centre the least distance that puts [center - half, center + half] inside [0, size].

  A square wider than the image along this axis cannot fit; it is centred on the image, overhanging both sides
  equally, rather than pushed against one border.
  """
  return jnp.where(2 * half <= size, jnp.clip(center, half, size - half), size / 2)


def square_boxes(centers, half_sizes, image_hw, keep_inside=True):
  """(B, N, 2) centres (x, y) in pixels and half sizes ((B, N) or scalar) -> (B, N, 4) square boxes (x0, y0, x1, y1).

  With keep_inside (MA-CNN's part crops near the border) each square is shifted, never shrunk, to lie inside the
  (H, W) image along every axis where it fits, and centred on the image along an axis where it does not; without
  it the square is centred on the given point. The side is always 2 * half_size.
  """
  centers = jnp.asarray(centers)
  dtype = jnp.result_type(centers.dtype, jnp.float32)
  centers = centers.astype(dtype)
  half = jnp.broadcast_to(jnp.asarray(half_sizes, dtype), centers.shape[:-1])
  cx, cy = centers[..., 0], centers[..., 1]
  if keep_inside:
    h, w = image_hw
    cx, cy = _shift_inside(cx, half, w), _shift_inside(cy, half, h)
  return jnp.stack([cx - half, cy - half, cx + half, cy + half], axis=-1)
