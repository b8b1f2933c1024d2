"""Where each loss of a scheme sends its gradient: the Jacobian of several losses in one jitted program."""

import jax
import jax.numpy as jnp
from flax import nnx


def loss_jacobian(scheme, model, images, batch, losses):
  """The parameters' tree with, at each leaf, d loss_i / d parameter stacked over `losses` (axis 0). In evaluation
  mode: nnx refuses BatchNorm's statistics update under jacrev; the routes of the gradients are the same."""
  model = nnx.clone(model)
  model.eval()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def f(p, r):
    out = scheme.forward(nnx.merge(graphdef, p, r), images, batch, train=True)[0]
    return jnp.stack([out[name] for name in losses])

  return jax.jit(jax.jacrev(f))(params, rest)


def norm(tree, i) -> float:
  """Sum of |d loss_i / d parameter| over a subtree of loss_jacobian's result."""
  return float(sum(jnp.abs(x[i]).sum() for x in jax.tree.leaves(tree)))
