"""Classification losses and metrics over a masked batch, in float32 whatever the compute dtype.

The mask marks real examples (False: evaluation padding or an unreadable image); means are over real
examples only, so that padding never counts.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax


def masked_mean(values, mask):
  mask = mask.astype(jnp.float32)
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def cross_entropy(logits, labels, mask):
  """Mean softmax cross-entropy over the real examples."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  return masked_mean(ce, mask)


def accuracy(logits, labels, mask):
  return masked_mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32), mask)
