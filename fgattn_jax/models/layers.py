"""Layers shared by the backbones, written so that torchvision weights map onto them one to one.

Convolutions use explicit symmetric padding (PyTorch's), never 'SAME': for a stride-2 convolution on an
even input 'SAME' pads only at the end, which would shift every feature map by half a pixel against the
PyTorch model and break exact weight import.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx.nn import normalization

# The backbones' ReLU and stage taps live in ops/hooks.py (saliency, in ops, sets their rules); the models use them
# through this module.
from fgattn_jax.ops.hooks import RELU_RULES, relu, relu_rule, tap, tapping  # noqa: F401

# He initialisation over the fan-out, as torchvision initialises its convolutions.
conv_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def scaled(channels: int, width: float) -> int:
  """Channel count under a width multiplier (tests run tiny versions of the real networks)."""
  return max(1, int(round(channels * width)))


def _conv_ohwi(lhs, rhs, window_strides, padding, *, dimension_numbers=None, **kwargs):
  del dimension_numbers  # nnx.Conv's (HWIO kernels)
  return jax.lax.conv_general_dilated(
    lhs, rhs, window_strides, padding, dimension_numbers=("NHWC", "OHWI", "NHWC"), **kwargs
  )


class Conv(nnx.Conv):
  """nnx.Conv (2-D, channels-last) with its kernel stored (out, kh, kw, in), the layout cuDNN convolves
  channels-last images with, instead of flax's (kh, kw, in, out). Otherwise XLA transposes every kernel into that
  layout in each step and the weight gradient back, and the optimiser's update, which then reads through a
  transpose, cannot write the state in place: two copies per kernel per step. MA-CNN's ResNet-50 step compiled for
  an H200 (benchmarks/hlo_report.py): 6115 -> 5479 kernels, 637 -> 1 copies. The values are flax's initialisation,
  moved: the same model as nnx.Conv's from the same seed."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.kernel = nnx.Param(jnp.moveaxis(self.kernel.get_value(), -1, 0))
    self.kernel_shape = self.kernel.get_value().shape
    self.conv_general_dilated = _conv_ohwi


def conv(cin, cout, kernel, *, stride=1, padding=None, bias=False, dtype=jnp.float32, rngs):
  pad = (kernel - 1) // 2 if padding is None else padding
  return Conv(
    cin,
    cout,
    (kernel, kernel),
    strides=(stride, stride),
    padding=((pad, pad), (pad, pad)),
    use_bias=bias,
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=conv_init,
    rngs=rngs,
  )


class BatchNorm(nnx.BatchNorm):
  """BatchNorm with PyTorch's defaults and an optional freeze.

  A frozen BatchNorm normalises with its running statistics and never updates them, also in training
  mode (fine-tuning with frozen batch statistics); `model.train()` does not unfreeze it.
  """

  def __init__(self, features, *, frozen=False, dtype=jnp.float32, scale_init=nnx.initializers.ones, rngs):
    # PyTorch: running = 0.9 * running + 0.1 * batch, eps 1e-5. Flax's momentum is the kept fraction.
    super().__init__(
      features, momentum=0.9, epsilon=1e-5, dtype=dtype, param_dtype=jnp.float32, scale_init=scale_init, rngs=rngs
    )
    self.frozen = frozen

  def __call__(self, x):
    if self.frozen or self.use_running_average is not False:  # also None: flax's error for an unset mode
      return super().__call__(x, use_running_average=True if self.frozen else None)
    # Training mode: flax's own arithmetic, but the running statistics stored with set_value. Flax stores them with
    # `self.mean[...] = new`, which asks the traced value for its sharding; a tracer has none and builds an error
    # message that walks the whole program traced so far, at every BatchNorm: quadratic in the model's size
    # (tracing MA-CNN's ResNet-50 training step: 110 s -> 12 s, benchmarks/RESULTS.md).
    axes, features = tuple(range(x.ndim - 1)), (x.ndim - 1,)
    x, scale, bias = self.promote_dtype((x, self.scale[...], self.bias[...]), dtype=self.dtype)
    mean, var = normalization._compute_stats(x, axes, dtype=self.dtype, use_fast_variance=self.use_fast_variance)
    keep = self.momentum
    self.mean.set_value(jax.lax.stop_gradient(keep * self.mean[...] + (1 - keep) * mean))
    self.var.set_value(jax.lax.stop_gradient(keep * self.var[...] + (1 - keep) * var))
    return normalization._normalize(x, mean, var, scale, bias, axes, features, self.dtype, self.epsilon)


# "slices" (max_pool below), "reduce_window" (XLA's own pooling op) or "auto": the one the backend runs better.
# Only benchmarks set it, to time the two.
POOLING = "auto"


def pooling(backend: str | None = None) -> str:
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
  if pooling() == "reduce_window":
    return nnx.max_pool(x, (kernel, kernel), strides=(stride, stride), padding=((padding, padding),) * 2)
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
