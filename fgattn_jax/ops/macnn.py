"""MA-CNN's channel-grouping loss (Zheng et al., ICCV 2017): compact parts (Dis) that do not overlap (Div).

Maps are (B, H, W, N): N non-negative part attention maps over an H x W grid. Both terms are computed on maps
normalised by their own maximum and on grid coordinates normalised to [0, 1], so the loss does not depend on
the grid size or on the maps' scale. Everything is computed in float32 at least (bfloat16 is cast first; float64
stays float64 so that gradients can be checked against finite differences).

Gradients are the true gradients of the written loss: they reach the maps through m_i, through the normaliser
(each map's maximum) and, in Div, through max_{k != i} m_k. Only the peak location t is constant.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fgattn_jax.ops.dtypes import at_least_float32
from fgattn_jax.ops.losses import masked_mean


def normalize_maps(maps, eps=1e-6):
  """(B, H, W, N) non-negative part attention maps -> each map divided by its own maximum over the grid (float32).

  The divisor is max(peak, eps) rather than peak + eps, so a map's peak is exactly 1; an all-zero map stays zero.
  """
  maps = at_least_float32(maps)
  peak = jnp.max(maps, axis=(1, 2), keepdims=True)
  return maps / jnp.maximum(peak, eps)


def grid_coordinates(h, w):
  """(H, W, 2) cell-centre coordinates (x, y) normalised to [0, 1]: ((col + 0.5) / W, (row + 0.5) / H)."""
  x = (jnp.arange(w, dtype=jnp.float32) + 0.5) / w
  y = (jnp.arange(h, dtype=jnp.float32) + 0.5) / h
  return jnp.stack(jnp.broadcast_arrays(x[None, :], y[:, None]), axis=-1)


def peaks(maps):
  """(B, H, W, N) -> (B, N, 2) normalised (x, y) of each map's argmax cell centre (no gradient: a location).

  Ties go to the first cell in row-major order (jnp.argmax's convention): a constant map peaks at the top-left.
  """
  maps = at_least_float32(maps)
  b, h, w, n = maps.shape
  flat = jnp.argmax(maps.reshape(b, h * w, n), axis=1)  # (B, N)
  coords = grid_coordinates(h, w).reshape(h * w, 2).astype(maps.dtype)
  return jax.lax.stop_gradient(coords[flat])


def _mean_over_parts(per_cell, mask=None):
  """(B, H, W, N) -> the per-map sum over cells, averaged over parts and then over the batch's real examples
  (mask: (B,) bool, False for padding or an unreadable image; None: every example)."""
  per_example = jnp.mean(jnp.sum(per_cell, axis=(1, 2)), axis=-1)  # (B,)
  return jnp.mean(per_example) if mask is None else masked_mean(per_example, mask)


def distance_loss(maps, mask=None):
  """Dis = sum over cells of m_i(x, y) * ((x - t_x)^2 + (y - t_y)^2), t = the peak of m_i; on the normalised maps
  and normalised coordinates; returns the mean over parts and the batch's real examples (scalar float32)."""
  maps = at_least_float32(maps)
  _, h, w, _ = maps.shape
  m = normalize_maps(maps)
  # The peak of the raw maps: dividing by a positive number keeps the argmax, but rounding could create a tie.
  t = peaks(maps)  # (B, N, 2)
  grid = grid_coordinates(h, w).astype(maps.dtype)  # (H, W, 2)
  d2 = jnp.sum((grid[None, :, :, None, :] - t[:, None, None, :, :]) ** 2, axis=-1)  # (B, H, W, N)
  return _mean_over_parts(m * d2, mask)


def _max_of_others(m):
  """(B, H, W, N) -> per cell and part i, max_{k != i} m_k, in O(N) via the two largest values per cell.

  A part holding the cell's maximum sees the second largest; when two parts share the maximum, the second
  largest equals it, so ties come out right.
  """
  top2, _ = jax.lax.top_k(m, 2)  # (B, H, W, 2), sorted descending
  first, second = top2[..., :1], top2[..., 1:]
  return jnp.where(m >= first, second, first)


def diversity_loss(maps, margin=0.02, clamp=False, mask=None):
  """Div = sum over cells of m_i(x, y) * (max_{k != i} m_k(x, y) - margin)   (the paper's form: no clamp);
  clamp=True uses max(0, max_{k != i} m_k - margin). Mean over parts and the batch's real examples (mask, as in
  distance_loss). One part: 0 (no other map)."""
  maps = at_least_float32(maps)
  if maps.shape[-1] < 2:
    return jnp.zeros((), maps.dtype)
  m = normalize_maps(maps)
  others = _max_of_others(m) - margin
  if clamp:
    others = jnp.maximum(others, 0.0)
  return _mean_over_parts(m * others, mask)


def channel_grouping_loss(maps, lam=2.0, margin=0.02, clamp=False, mask=None):
  """L_cng = Dis + lam * Div over the real examples (mask: (B,) bool, None: all); returns (total, {"dis", "div"})."""
  dis = distance_loss(maps, mask)
  div = diversity_loss(maps, margin=margin, clamp=clamp, mask=mask)
  return dis + lam * div, {"dis": dis, "div": div}
