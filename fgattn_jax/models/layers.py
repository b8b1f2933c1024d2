"""Layers shared by the backbones, written so that torchvision weights map onto them one to one (their pooling is
ops/pooling.py).

Convolutions use explicit symmetric padding (PyTorch's), never 'SAME': for a stride-2 convolution on an
even input 'SAME' pads only at the end, which would shift every feature map by half a pixel against the
PyTorch model and break exact weight import.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
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
