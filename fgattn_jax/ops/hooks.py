"""The hooks saliency (ops/saliency.py) sets in the backbones: the backward rule of their ReLUs and a tap on every
stage's output. Pure JAX: the models call `relu` and `tap` (through models/layers.py); ops/saliency.py sets
`relu_rule` and `tapping` around what it traces.
"""

from __future__ import annotations

import contextlib
import contextvars

import jax
import jax.numpy as jnp

# Saliency changes how gradients pass the backbones' ReLUs and reads or perturbs their stages'
# outputs. Both are read while a function is traced, so only code traced inside the context is affected: a jitted
# function must set the context inside its own body (and be re-traced per rule), never around a cached call.
_RELU_RULE = contextvars.ContextVar("relu_rule", default="plain")
_TAP = contextvars.ContextVar("stage_tap", default=None)


def _relu_with_backward(backward):
  """A ReLU whose gradient is backward(x, g): x the forward input, g the incoming gradient."""

  @jax.custom_vjp
  def f(x):
    return jax.nn.relu(x)

  f.defvjp(lambda x: (jax.nn.relu(x), x), lambda x, g: (backward(x, g),))
  return f


@jax.custom_jvp
def _relu_masked_by_output(x):
  return jnp.maximum(x, 0)


# jax.nn.relu's gradient passes where the input x is positive; this one where the output is (the same set: equal
# gradients), so a backward pass needs the output only. Straight after a convolution with bias that lets XLA fuse
# conv + bias + ReLU into one cuDNN call and drop the pre-activation: the output is kept for the next layer anyway.
# The barrier stops XLA from rewriting `max(x, 0) > 0` back into `x > 0`. Measured on VGG-19's step (448, batch 32)
# compiled for an H200 (benchmarks/hlo_report.py): 11 fewer kernels, 4.5 GB less memory traffic, temporaries
# 6.3 -> 4.2 GiB. After a BatchNorm it gains nothing (XLA recomputes the normalisation in the backward pass instead
# of keeping its output) and costs a little: ResNet-50 keeps jax.nn.relu.
_relu_masked_by_output.defjvps(lambda g, y, x: jnp.where(jax.lax.optimization_barrier(y) > 0, g, jnp.zeros_like(g)))

_RELUS = {
  "plain": jax.nn.relu,
  # Guided backpropagation (Springenberg et al. 2015): the gradient passes where the input was positive (as the
  # plain rule) and where it is itself positive (as the deconvnet rule).
  "guided": _relu_with_backward(lambda x, g: jnp.where((x > 0) & (g > 0), g, jnp.zeros_like(g))),
  # Zeiler and Fergus's deconvnet: a ReLU on the backward signal, whatever the forward input was.
  "deconvnet": _relu_with_backward(lambda x, g: jax.nn.relu(g)),
}
RELU_RULES = tuple(_RELUS)


def relu(x, after_conv: bool = False):
  """The backbones' ReLU; its backward rule is 'plain' unless traced inside `relu_rule(...)`. after_conv=True where
  x comes straight from a convolution or dense layer with bias: the same values and gradients, computed so that
  XLA can fuse the ReLU into that layer (_relu_masked_by_output)."""
  rule = _RELU_RULE.get()
  return _relu_masked_by_output(x) if after_conv and rule == "plain" else _RELUS[rule](x)


@contextlib.contextmanager
def _setting(var: contextvars.ContextVar, value):
  token = var.set(value)
  try:
    yield
  finally:
    var.reset(token)


def relu_rule(rule: str):
  """Traces the backbones' ReLUs with a backward rule: 'plain', 'guided' or 'deconvnet'."""
  if rule not in _RELUS:
    raise ValueError(f"unknown ReLU gradient rule {rule!r}: one of {', '.join(RELU_RULES)}")
  return _setting(_RELU_RULE, rule)


def tap(name: str, x):
  """A backbone stage's output passes here: inside `tapping(fn)`, fn(name, x) may record it and return it
  perturbed (to differentiate with respect to it); elsewhere it is returned unchanged."""
  fn = _TAP.get()
  return x if fn is None else fn(name, x)


def tapping_active() -> bool:
  """Whether a stage tap is set for what is being traced."""
  return _TAP.get() is not None


def tapping(fn):
  return _setting(_TAP, fn)
