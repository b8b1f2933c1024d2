"""The shape every backbone shares: a chain of named stages, then a head.

Stage i maps the output of stage i-1 (the image for i = 0) to the feature map called stage_names[i];
the head maps the last feature map to (pre_logits, logits). The attention schemes branch off a stage
with `features(x, stop=k)` and continue the trunk with `features(h, start=k)`; CAM reads the dict.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from fgattn_jax.models import layers


def output_width(module, fn, hw=(64, 64)) -> int:
  """The channel count of fn(module, image), from shapes alone (on a copy: nothing is computed or updated)."""
  graphdef, state = nnx.split(module)
  probe = jax.ShapeDtypeStruct((1, *hw, 3), jnp.float32)
  return jax.eval_shape(lambda st, x: fn(nnx.merge(graphdef, st), x), state, probe).shape[-1]


class Backbone(nnx.Module):
  stage_names: tuple[str, ...]
  stages: nnx.List
  head: nnx.Module
  freeze_features: bool = False

  def features(self, x, start: int = 0, stop: int | None = None):
    """Runs stages [start, stop); returns the last output and a dict of every stage output by name."""
    feats = {}
    stop = len(self.stages) if stop is None else stop
    for i in range(start, stop):
      x = layers.tap(self.stage_names[i], self.stages[i](x))
      feats[self.stage_names[i]] = x
    return x, feats

  def __call__(self, x):
    """NHWC normalised images -> (float32 logits, {stage name: feature map, 'pre_logits': vector})."""
    x, feats = self.features(x)
    pre_logits, logits = self.head(x)
    feats["pre_logits"] = pre_logits
    return logits.astype(jnp.float32), feats

  def stage_index(self, stage: int | str, key: str = "stage") -> int:
    """A stage by name ('conv4_2', 'layer3') or index (negative from the end) -> its index. key: the argument that
    named it, for the error (the schemes check config keys first: schemes.base.check_stage)."""
    names = list(self.stage_names)
    if isinstance(stage, str):
      if stage not in names:
        raise ValueError(f"{key} {stage!r} is not a stage of this backbone ({', '.join(names)})")
      stage = names.index(stage)
    return stage % len(names)

  @property
  def compute_dtype(self):
    return next(n.dtype for _, n in nnx.iter_graph(self) if isinstance(n, nnx.Conv))

  def trainable(self):
    """The nnx filter of the parameters an optimiser should update (the head only when features are frozen).

    Differentiate with respect to this filter only: frozen parameters then get neither gradients nor
    optimiser state, and XLA drops the frozen part of the backward pass.
    """
    return nnx.All(nnx.Param, nnx.PathContains("head")) if self.freeze_features else nnx.Param

  def torchvision_modules(self):
    """Yields (torchvision module prefix, our module, weight transform or None) for weight import."""
    raise NotImplementedError(f"{type(self).__name__} has no torchvision counterpart to import weights from")

  def torchvision_class_layer(self) -> str:
    """The torchvision prefix of the class layer, which a file of another class count may not fill."""
    return "fc"

  def torchvision_ignored(self) -> dict[str, str]:
    """torchvision key prefixes that this model does not use on purpose -> why."""
    return {}
