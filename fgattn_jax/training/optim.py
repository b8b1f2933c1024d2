"""Optimisers from a phase's config: SGD with momentum or AdamW, warm-up + cosine / step / constant
learning rate, weight decay on kernels only (not BatchNorm parameters or biases), global-norm clipping, and
a learning-rate multiplier for layers that did not come from pretrained weights (x10 in the papers)."""

from __future__ import annotations

import jax
import optax

from fgattn_jax.errors import ConfigError


def nnx_path(keypath) -> tuple:
  """A jax key path into an nnx.State of Variables -> the nnx path (('stages', 0, 'conv', 'kernel'))."""
  out = []
  for k in keypath:
    if isinstance(k, jax.tree_util.DictKey):
      out.append(k.key)
    elif isinstance(k, jax.tree_util.SequenceKey):
      out.append(k.idx)
  return tuple(out)


def learning_rate(optim, schedule, steps: int, steps_per_epoch: int) -> optax.Schedule:
  warmup = int(round(schedule.warmup_epochs * steps_per_epoch))
  if schedule.kind == "cosine":
    main = optax.cosine_decay_schedule(optim.lr, max(steps - warmup, 1))
  elif schedule.kind == "step":
    main = optax.piecewise_constant_schedule(
      optim.lr, {int(round(e * steps_per_epoch)) - warmup: schedule.decay for e in schedule.boundaries}
    )
  elif schedule.kind == "constant":
    main = optax.constant_schedule(optim.lr)
  else:
    raise ConfigError(f"schedule.kind={schedule.kind!r}: use 'cosine', 'step' or 'constant'")
  if warmup == 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, optim.lr, warmup), main], [warmup])


def make_optimizer(
  optim, schedule, steps: int, steps_per_epoch: int, new_paths: frozenset = frozenset(), trains_pretrained: bool = True
):
  """The optax transformation for one phase; new_paths are the nnx paths of freshly initialised parameters
  (empty when nothing was loaded from pretrained weights: then no layer is "new"). trains_pretrained: whether the
  phase trains any parameter outside new_paths."""
  lr = learning_rate(optim, schedule, steps, steps_per_epoch)
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)  # noqa: E731 - kernels only

  def base(rate):
    if optim.name == "sgd":
      return optax.chain(
        optax.add_decayed_weights(optim.weight_decay, decay_mask),
        optax.sgd(rate, momentum=optim.momentum or None, nesterov=optim.nesterov),
      )
    if optim.name == "adamw":
      return optax.adamw(rate, b1=optim.b1, b2=optim.b2, weight_decay=optim.weight_decay, mask=decay_mask)
    raise ConfigError(f"optim.name={optim.name!r}: use 'sgd' or 'adamw'")

  if new_paths and optim.new_layer_lr_mult != 1:
    # The multiplier is relative: new layers learn faster than the pretrained ones they train beside. A phase that
    # trains new layers only (a classifier warm-up, MA-CNN's grouping layers, RA-CNN's APNs) runs at its own rate,
    # the one its preset was tuned at; the optimiser state keeps the same structure either way (resume).
    mult = optim.new_layer_lr_mult if trains_pretrained else 1.0
    labels = lambda params: jax.tree_util.tree_map_with_path(  # noqa: E731
      lambda kp, _: "new" if nnx_path(kp) in new_paths else "pretrained", params
    )
    tx = optax.multi_transform({"pretrained": base(lr), "new": base(lambda s: mult * lr(s))}, labels)
  else:
    tx = base(lr)
  if optim.clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(optim.clip_norm), tx)
  return tx, lr
