"""RA-CNN's zoom (Fu, Zheng and Mei, "Look Closer to See Better", CVPR 2017): APN boxes, the soft box mask, the
attention crop, the inter-scale ranking loss and the APN pretraining target.

Conventions, shared with crops.py: pixel coordinates are continuous, pixel (r, c) covers [c, c + 1) x [r, r + 1)
with its centre at (c + 0.5, r + 0.5); boxes are (x0, y0, x1, y1). The attention proposal network (APN) describes
a square by (t_x, t_y, t_l): its centre and HALF its side, in pixels of the scale it looks at.

The steepness k of the mask's soft step is per pixel of the image the mask is applied to, as in the paper (and
its reference PyTorch port): the default k = 10 is a near-step, h going from 0.27 to 0.73 within a tenth of a
pixel either side of the edge, and a pixel centre half a pixel inside the box keeps sigmoid(5) = 0.993 of its
value, whatever the box's size. (Per unit of the image's side, k = 10 darkened the zoom of a box half the image's
side to 0.72 at its centre and 0.25 at its corners.) Sizes (image_hw, hw, out_hw) are static Python integers
under jit.

The zoom is differentiable w.r.t. the box by plain autodiff: the mask is a smooth function of the box, and the
crop's sampling positions are linear in it (crops.py). Arithmetic runs in at least float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from fgattn_jax.ops import crops, localization, losses
from fgattn_jax.ops.dtypes import at_least_float32

# How far inside apn_box's range of centres a pretraining target stays, as a fraction of that range. At the range's
# ends (the square touching the border) a target is reached only as the sigmoid saturates (s_x -> 0 or 1): the APN
# pretraining then drives the logits out without end and leaves the ranking loss a vanishing gradient, and that is
# most targets (on a 28-cell grid with the target's side a third of the image's, 64% of the peak cells per axis lie
# outside the middle third). At 0.05 the extreme target is s = 0.05 (a logit of -2.9), the box 1.7% of the side
# off the border.
TARGET_MARGIN = 0.05


def _keep_inside(t_x, t_y, t_l, image_hw):
  """Clips a target's centre to [t_l, side - t_l] per axis, less TARGET_MARGIN times that interval's length at each
  end; t_l <= min(H, W) / 2 makes it non-empty."""
  h, w = image_hw
  mx, my = TARGET_MARGIN * (w - 2 * t_l), TARGET_MARGIN * (h - 2 * t_l)
  return jnp.clip(t_x, t_l + mx, w - t_l - mx), jnp.clip(t_y, t_l + my, h - t_l - my)


def apn_box(s, image_hw, *, min_half_fraction=1 / 3, max_half_fraction=0.5, keep_inside=True):
  """(..., 3) APN outputs (s_x, s_y, s_l) in [0, 1] (after a sigmoid) -> (..., 3) (t_x, t_y, t_l) in pixels.

  The half side is an affine map of s_l between the bounds, t_l = lo + (hi - lo) * s_l with lo = min_half_fraction
  * side and hi = max_half_fraction * side, side = min(H, W), so it has a gradient everywhere in [0, 1] (a hard
  clamp, as in the PyTorch ports' t_l >= side / 3, would have none below the bound). min_half_fraction = 0
  disables the lower bound; lo is capped at hi.

  The centre: t_x = s_x * W and t_y = s_y * H (the paper), or with keep_inside an affine map into the positions
  that keep the square inside the image, t_x = t_l + s_x * (W - 2 t_l) (and t_y alike). Not a clip of s_x * W
  into [t_l, W - t_l]: a clipped centre has no gradient w.r.t. s_x, and measured, the APN pretraining then
  stuck the centre at the clip and pushed t_l to its upper bound, the only way left to move a clipped centre.

  s is clipped to [0, 1] first, so that the bounds hold for any input; on a sigmoid's output that clip is the
  identity and passes gradients unchanged.
  """
  s = jnp.clip(at_least_float32(s), 0.0, 1.0)
  h, w = image_hw
  side = min(h, w)
  hi = max_half_fraction * side
  lo = min(min_half_fraction * side, hi)
  t_l = lo + (hi - lo) * s[..., 2]
  if keep_inside:
    t_x, t_y = t_l + s[..., 0] * (w - 2 * t_l), t_l + s[..., 1] * (h - 2 * t_l)
  else:
    t_x, t_y = s[..., 0] * w, s[..., 1] * h
  return jnp.stack([t_x, t_y, t_l], axis=-1)


def square_box(txyl):
  """(..., 3) (t_x, t_y, t_l) -> (..., 4) the square (x0, y0, x1, y1) = (t_x - t_l, t_y - t_l, t_x + t_l, t_y + t_l)."""
  t_x, t_y, t_l = txyl[..., 0], txyl[..., 1], txyl[..., 2]
  return jnp.stack([t_x - t_l, t_y - t_l, t_x + t_l, t_y + t_l], axis=-1)


def box_mask(boxes, hw, k=10.0):
  """(B, 4) boxes -> (B, H, W) soft masks M = [h(x - x0) - h(x - x1)] * [h(y - y0) - h(y - y1)], h(z) = 1 / (1 + e^-kz).

  Evaluated at pixel centres (c + 0.5, r + 0.5); z is in pixels, so k is per pixel (module docstring). Float32 at
  least (float64 boxes stay float64).
  """
  rows, cols = _mask_factors(at_least_float32(boxes), hw, k)
  return rows[:, :, None] * cols[:, None, :]


def _mask_factors(boxes, hw, k):
  """(B, 4) boxes -> the box mask's two factors, (B, H) along the rows and (B, W) along the columns."""
  h, w = hw
  x = jnp.arange(w, dtype=boxes.dtype) + 0.5
  y = jnp.arange(h, dtype=boxes.dtype) + 0.5

  def step(u, lo, hi):  # (n,), (B,), (B,) -> (B, n); jax.nn.sigmoid saturates cleanly for large |k z|
    return jax.nn.sigmoid(k * (u - lo[:, None])) - jax.nn.sigmoid(k * (u - hi[:, None]))

  return step(y, boxes[:, 1], boxes[:, 3]), step(x, boxes[:, 0], boxes[:, 2])


def attention_crop(images, boxes, out_hw, k=10.0):
  """(B, H, W, C) images and (B, 4) boxes -> (B, oh, ow, C): X * M(box) resampled bilinearly from the box to out_hw.

  k: the mask's steepness per pixel of `images` (module docstring). The mask is RA-CNN's route for the gradient to
  the box; the bilinear sampling (crops.crop_resize) adds the second route, through the sampling positions.
  Computed in at least float32 and returned in the images' float dtype (float32 for integer images). out_hw must
  be static under jit.
  """
  images = jnp.asarray(images)
  out_dtype = images.dtype if jnp.issubdtype(images.dtype, jnp.floating) else jnp.float32
  boxes = at_least_float32(boxes)
  x = at_least_float32(images)
  x = x.astype(jnp.promote_types(x.dtype, boxes.dtype))  # bfloat16 images are masked and sampled in float32
  if crops.formulation() == "matmul":
    # The mask is separable, M = rows x cols: folded into the interpolation matrices, the masked image is never
    # formed and the mask's gradient is a product as well.
    mask_rows, mask_cols = _mask_factors(boxes, images.shape[1:3], k)
    rows, cols = crops.axis_matrices(boxes[:, None], images.shape[1:3], out_hw, x.dtype)  # (B, 1, oh, H), ...
    return crops.resample(
      x, rows * mask_rows[:, None, None, :].astype(x.dtype), cols * mask_cols[:, None, None, :].astype(x.dtype)
    )[:, 0].astype(out_dtype)
  masked = x * box_mask(boxes, images.shape[1:3], k).astype(x.dtype)[..., None]
  return crops.crop_resize(masked, boxes, out_hw).astype(out_dtype)


def ranking_loss(logits_coarse, logits_fine, labels, margin=0.05, mask=None):
  """Mean over the batch of max(0, p_t(s) - p_t(s + 1) + margin), p_t the softmax probability of the true class.

  On probabilities, not logits: the paper's loss, and a logit gap would not be comparable across the two scales'
  classifiers. The gradient reaches both scales; stop it on one side in the caller if the schedule needs that.
  mask: optional (B,) booleans of real examples (masked mean; all masked -> 0). Float32.
  """

  def true_prob(logits):
    p = jax.nn.softmax(jnp.asarray(logits).astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(p, jnp.asarray(labels)[:, None], axis=-1)[:, 0]

  per_example = jnp.maximum(0.0, true_prob(logits_coarse) - true_prob(logits_fine) + margin)
  if mask is None:
    return jnp.mean(per_example)
  return losses.masked_mean(per_example, jnp.asarray(mask))


def apn_targets(features, image_hw, half_fraction=1 / 3, keep_inside=True):
  """(B, h, w, C) conv features -> (B, 3) APN pretraining targets (t_x, t_y, t_l) in input pixels; no gradient.

  The square centred on the cell with the largest channel sum (the cell's centre mapped to input pixels; ties go to
  the first cell in row-major order), half side = half_fraction * min(H, W). keep_inside clips the centre into
  apn_box's kept-inside centres, TARGET_MARGIN of their range short of each end, so that a kept-inside prediction
  reaches the target without saturating its sigmoid.
  """
  total = jnp.sum(jnp.asarray(features).astype(jnp.float32), axis=-1)  # (B, h, w)
  centre = localization.peak_points(total, image_hw).astype(jnp.float32)  # (B, 2)
  t_l = jnp.full(centre.shape[:1], half_fraction * min(image_hw), jnp.float32)
  t_x, t_y = centre[:, 0], centre[:, 1]
  if keep_inside:
    t_x, t_y = _keep_inside(t_x, t_y, t_l, image_hw)
  return jax.lax.stop_gradient(jnp.stack([t_x, t_y, t_l], axis=-1))


def smooth_l1(pred, target, beta=1.0, mask=None):
  """Smooth-L1 (0.5 d^2 / beta for |d| < beta, |d| - beta / 2 beyond), the mean over elements; float32.

  optax.huber_loss with delta = beta is beta times it (the two agree at beta = 1, PyTorch's default). With a (B,)
  mask: the mean over each example's elements, then the masked mean over the batch.
  """
  per = optax.huber_loss(jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.float32), delta=beta) / beta
  if mask is None:
    return jnp.mean(per)
  return losses.masked_mean(jnp.mean(per.reshape(per.shape[0], -1), axis=-1), jnp.asarray(mask))
