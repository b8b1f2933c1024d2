"""The shape every backbone shares: a chain of named stages, then a head.

Stage i maps the output of stage i-1 (the image for i = 0) to the feature map called stage_names[i];
the head maps the last feature map to (pre_logits, logits). The attention schemes branch off a stage
with `features(x, stop=k)` and continue the trunk with `features(h, start=k)`; CAM reads the dict.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx


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
      x = self.stages[i](x)
      feats[self.stage_names[i]] = x
    return x, feats

  def __call__(self, x):
    """NHWC normalised images -> (float32 logits, {stage name: feature map, 'pre_logits': vector})."""
    x, feats = self.features(x)
    pre_logits, logits = self.head(x)
    feats["pre_logits"] = pre_logits
    return logits.astype(jnp.float32), feats

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
