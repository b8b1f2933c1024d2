"""The working precision of the ops: reductions over many cells or pixels run in float32 at least."""

from __future__ import annotations

import jax.numpy as jnp


def at_least_float32(x):
  """bfloat16/float16/integers -> float32; float32/float64 unchanged (float64 stays, for gradient checks)."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))
