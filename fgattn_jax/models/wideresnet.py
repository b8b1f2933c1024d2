"""Wide ResNet for CIFAR (Zagoruyko & Komodakis 2016): WRN-d-k, pre-activation blocks.

The network ends with BN-ReLU before pooling; that final activation belongs to the last stage here, so
'layer3' is the map that the global pool sees (what CAM and ABN's attention branch need).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from fgattn_jax.models import layers
from fgattn_jax.models.backbone import Backbone
from fgattn_jax.models.resnet import LinearHead

CONFIGS = {"wrn28_10": (28, 10), "wrn16_8": (16, 8), "wrn40_4": (40, 4)}


class PreActBlock(nnx.Module):
  """BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3; the projection shortcut reads the activated input."""

  def __init__(self, cin, cout, stride, *, dropout, norm, dtype, rngs):
    self.bn1 = norm(cin)
    self.conv1 = layers.conv(cin, cout, 3, stride=stride, dtype=dtype, rngs=rngs)
    self.bn2 = norm(cout)
    self.drop = nnx.Dropout(dropout, rngs=rngs)
    self.conv2 = layers.conv(cout, cout, 3, dtype=dtype, rngs=rngs)
    self.shortcut = (
      layers.conv(cin, cout, 1, stride=stride, dtype=dtype, rngs=rngs) if stride != 1 or cin != cout else None
    )

  def __call__(self, x):
    a = layers.relu(self.bn1(x))
    y = self.conv1(a)
    y = self.conv2(self.drop(layers.relu(self.bn2(y))))
    return y + (x if self.shortcut is None else self.shortcut(a))


class WideStage(nnx.Module):
  def __init__(self, cin, cout, count, stride, *, final_norm=None, **kw):
    self.blocks = nnx.List(
      [PreActBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, **kw) for i in range(count)]
    )
    self.final_bn = final_norm

  def __call__(self, x):
    for b in self.blocks:
      x = b(x)
    return x if self.final_bn is None else layers.relu(self.final_bn(x))


class WideResNet(Backbone):
  def __init__(
    self,
    name: str,
    num_classes: int,
    *,
    width: float = 1.0,
    dropout: float = 0.0,
    frozen_bn: bool = False,
    freeze_features: bool = False,
    dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    depth, k = CONFIGS[name]
    n = (depth - 4) // 6
    widths = [layers.scaled(c, width) for c in (16, 16 * k, 32 * k, 64 * k)]
    self.freeze_features = freeze_features
    frozen = frozen_bn or freeze_features
    norm = lambda c: layers.BatchNorm(c, frozen=frozen, dtype=dtype, rngs=rngs)  # noqa: E731
    kw = dict(dropout=dropout, norm=norm, dtype=dtype, rngs=rngs)
    self.stage_names = ("stem", "layer1", "layer2", "layer3")
    self.stages = nnx.List(
      [
        layers.conv(3, widths[0], 3, dtype=dtype, rngs=rngs),
        WideStage(widths[0], widths[1], n, 1, **kw),
        WideStage(widths[1], widths[2], n, 2, **kw),
        WideStage(widths[2], widths[3], n, 2, final_norm=norm(widths[3]), **kw),
      ]
    )
    self.head = LinearHead(widths[3], num_classes, dtype=dtype, rngs=rngs)
