"""Pooling as the PyTorch backbones pool (torch-exact windows and bins), channels-last, pure JAX: max pooling in two
formulations of one function (POOLING), adaptive average pooling as two small matrices, global average pooling.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# "slices" (max_pool below), "reduce_window" (XLA's own pooling op) or "auto": the one the backend runs better.
# A module switch read at trace time; only benchmarks set it (`python -m benchmarks.throughput --pool`), to time the
# two.
POOLING = "auto"


def formulation(backend: str | None = None) -> str:
  """The max-pooling formulation in force: POOLING, or for "auto" XLA's reduce_window on a TPU (whose compiled VGG-19
  step moves 26% fewer bytes and needs half the memory with it: benchmarks/RESULTS.md) and max_pool's own gradient
  elsewhere (a select-and-scatter is atomic additions on a GPU). Read at trace time; backend: another than JAX's
  default (compiling for a TPU elsewhere)."""
  if POOLING != "auto":
    return POOLING
  return "reduce_window" if (backend or jax.default_backend()) == "tpu" else "slices"


def max_pool(x, kernel: int, stride: int, padding: int = 0):
  """torch.nn.MaxPool2d(kernel, stride, padding) on NHWC input: -inf padding, the windows that fit (floor).

  Written as a running maximum over the kernel x kernel strided slices that also records which slice won, with its
  own gradient: each window's first maximum (row-major, as PyTorch and XLA choose) takes the window's gradient.
  XLA's reduce_window pooling computes the same function, but its gradient is a select-and-scatter, whose bf16
  additions are atomic compare-and-swap loops on a GPU; here the gradient is integer comparisons with the recorded
  winner and strided pads, elementwise work XLA can fuse into one pass. (The winner is recorded, not found again by
  comparing the input with the output: XLA may recompute the input inside each fusion that reads it, rounded
  differently, and an equality test would then lose or double a window's gradient.)"""
  if formulation() == "reduce_window":
    pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, kernel, kernel, 1), (1, stride, stride, 1), pad)
  return _max_pool(x, kernel, stride, padding)


def _pool_views(x, kernel, stride, padding):
  """The kernel * kernel strided views of x padded with -inf, row-major: view i * kernel + j holds element (i, j) of
  every window."""
  b, h, w, c = x.shape
  if padding:
    x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)), constant_values=-jnp.inf)
  ho, wo = (x.shape[1] - kernel) // stride + 1, (x.shape[2] - kernel) // stride + 1
  return [
    jax.lax.slice(x, (0, i, j, 0), (b, i + stride * (ho - 1) + 1, j + stride * (wo - 1) + 1, c), (1, stride, stride, 1))
    for i in range(kernel)
    for j in range(kernel)
  ]


def _max_pool(x, kernel, stride, padding):
  if kernel * kernel > 127:
    raise ValueError(f"max_pool: a {kernel}x{kernel} window has more elements than its int8 winner index can name")
  hp, wp = x.shape[1] + 2 * padding, x.shape[2] + 2 * padding

  def forward(x):
    views = _pool_views(x, kernel, stride, padding)
    best, winner = views[0], jnp.zeros(views[0].shape, jnp.int8)
    for k, v in enumerate(views[1:], 1):
      take = (v > best) | jnp.isnan(v)  # strictly greater: the first maximum keeps ties; NaN propagates
      best, winner = jnp.where(take, v, best), jnp.where(take, jnp.int8(k), winner)
    return best, winner

  @jax.custom_vjp
  def pool(x):
    return forward(x)[0]

  def pool_bwd(winner, g):
    zero = jnp.zeros((), g.dtype)
    ho, wo = g.shape[1], g.shape[2]
    dx = None
    for k in range(kernel * kernel):
      i, j = divmod(k, kernel)
      # Back to the padded input's grid: element (a, b) of view (i, j) sits at (i + stride a, j + stride b).
      part = jax.lax.pad(
        jnp.where(winner == k, g, zero),
        zero,
        (
          (0, 0, 0),
          (i, hp - i - (stride * (ho - 1) + 1), stride - 1),
          (j, wp - j - (stride * (wo - 1) + 1), stride - 1),
          (0, 0, 0),
        ),
      )
      dx = part if dx is None else dx + part
    return (dx[:, padding : hp - padding, padding : wp - padding],)

  pool.defvjp(forward, pool_bwd)
  return pool(x)


def _adaptive_matrix(size_in: int, size_out: int) -> np.ndarray:
  # PyTorch's AdaptiveAvgPool bins: [floor(i * in / out), ceil((i + 1) * in / out)).
  m = np.zeros((size_out, size_in), np.float32)
  for i in range(size_out):
    lo, hi = (i * size_in) // size_out, -((-(i + 1) * size_in) // size_out)
    m[i, lo:hi] = 1.0 / (hi - lo)
  return m


def adaptive_avg_pool(x, out_hw: tuple[int, int]):
  """torch.nn.AdaptiveAvgPool2d on NHWC input, as two small averaging matrices (exact, any input size)."""
  ph = jnp.asarray(_adaptive_matrix(x.shape[1], out_hw[0]), x.dtype)
  pw = jnp.asarray(_adaptive_matrix(x.shape[2], out_hw[1]), x.dtype)
  return jnp.einsum("ih,bhwc,jw->bijc", ph, x, pw)


def global_avg_pool(x):
  return jnp.mean(x, axis=(1, 2))
