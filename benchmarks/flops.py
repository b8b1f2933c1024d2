"""FLOPs of a JAX function counted from its program, not from XLA's cost analysis (which does not count the
convolutions XLA hands to cuDNN): every convolution and matrix product in the jaxpr, nested ones included
(jit, custom_vjp, remat, scan bodies times their length), at 2 FLOPs per multiply-add. Elementwise work is
left out: it is memory-bound and a small share of these networks' arithmetic."""

from __future__ import annotations

import math

import jax
from jax.extend import core


def _conv(eqn) -> int:
  # Each output element is one kernel slice (the kernel's size over its output features) of multiply-adds, for
  # plain, grouped and batch-grouped convolutions alike (the weight gradient is a batch-grouped convolution). The
  # input gradient of a strided convolution is written with the zeros of lhs_dilation between the input's
  # samples: only one tap in prod(lhs_dilation) meets a real sample, and only those are real work (cuDNN skips the
  # zeros), so that gradient costs what the forward does.
  rhs = eqn.invars[1].aval.shape
  out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
  zeros = math.prod(eqn.params.get("lhs_dilation") or (1,))
  return 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(rhs) // out_features // zeros


def _dot(eqn) -> int:
  (contract, _), _ = eqn.params["dimension_numbers"]
  lhs = eqn.invars[0].aval.shape
  return 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contract)


def _subjaxprs(eqn):
  for value in eqn.params.values():
    for v in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(v, core.ClosedJaxpr):
        yield v.jaxpr
      elif isinstance(v, core.Jaxpr):
        yield v


def jaxpr_flops(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "conv_general_dilated":
      total += _conv(eqn)
    elif name == "dot_general":
      total += _dot(eqn)
    else:
      times = eqn.params.get("length", 1) if name == "scan" else 1
      total += times * sum(jaxpr_flops(sub) for sub in _subjaxprs(eqn))
  return total


def count(fn, *args, static_argnums=()) -> int:
  """Matrix-product and convolution FLOPs of one call fn(*args) (args may be jax.ShapeDtypeStruct)."""
  if hasattr(fn, "trace"):  # a jitted function: its own trace (a nested jit may not carry its compiler options)
    return jaxpr_flops(fn.trace(*args).jaxpr.jaxpr)
  return jaxpr_flops(jax.make_jaxpr(fn, static_argnums=static_argnums)(*args).jaxpr)
