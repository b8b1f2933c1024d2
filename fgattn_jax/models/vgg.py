"""VGG-11/13/16/19 with and without BatchNorm (Simonyan & Zisserman 2015), torchvision's layout.

Named features: the last convolution of every block after its ReLU and before its pooling, e.g.
conv5_4 for VGG-19 (MA-CNN's and RA-CNN's feature map: 28x28 at a 448 input). Two heads:
- 'classifier': torchvision's, pool5 -> adaptive average pool to 7x7 -> FC-4096, ReLU, dropout (twice)
  -> class layer; needed to import the full ImageNet classifier.
- 'gap': global average pool of the last conv block (no pool5) -> linear; CAM-compatible, any input size.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
from flax import nnx

from fgattn_jax.models import layers
from fgattn_jax.models.backbone import Backbone
from fgattn_jax.ops import pooling

# Convolutions per block.
DEPTHS = {"vgg11": (1, 1, 2, 2, 2), "vgg13": (2, 2, 2, 2, 2), "vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
WIDTHS = (64, 128, 256, 512, 512)


class ConvBNReLU(nnx.Module):
  def __init__(self, cin, cout, *, bn, frozen_bn, dtype, rngs):
    self.conv = layers.conv(cin, cout, 3, bias=True, dtype=dtype, rngs=rngs)
    self.bn = layers.BatchNorm(cout, frozen=frozen_bn, dtype=dtype, rngs=rngs) if bn else None

  def __call__(self, x):
    x = self.conv(x)
    return layers.relu(x, after_conv=True) if self.bn is None else layers.relu(self.bn(x))


class VGGBlock(nnx.Module):
  """[2x2 max pool, except in the first block] then the block's convolutions."""

  def __init__(self, cin, cout, depth, *, pool, **kw):
    self.pool = pool
    self.convs = nnx.List([ConvBNReLU(cin if i == 0 else cout, cout, **kw) for i in range(depth)])

  def __call__(self, x):
    if self.pool:
      x = pooling.max_pool(x, 2, 2)
    for c in self.convs:
      x = c(x)
    return x


class ClassifierHead(nnx.Module):
  """torchvision's VGG classifier; pre_logits is the second FC-4096 output (after ReLU and dropout)."""

  def __init__(self, cin, hidden, num_classes, *, dropout, dtype, rngs):
    linear = functools.partial(
      nnx.Linear, dtype=dtype, param_dtype=jnp.float32, kernel_init=nnx.initializers.normal(0.01), rngs=rngs
    )
    self.fc1 = linear(cin * 49, hidden)
    self.fc2 = linear(hidden, hidden)
    self.fc = linear(hidden, num_classes)
    self.drop1 = nnx.Dropout(dropout, rngs=rngs)
    self.drop2 = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, x, pooled: bool = False):
    """pooled: x is already pool5's output (ABN's branch after pool5)."""
    x = pooling.adaptive_avg_pool(x if pooled else pooling.max_pool(x, 2, 2), (7, 7))
    x = x.reshape(x.shape[0], -1)  # (h, w, c) order; the import permutes torchvision's (c, h, w)
    x = self.drop1(layers.relu(self.fc1(x), after_conv=True))
    x = self.drop2(layers.relu(self.fc2(x), after_conv=True))
    return x, self.fc(x)


class GAPHead(nnx.Module):
  pooled_linear = True  # global average pool -> linear: CAM applies

  def __init__(self, cin, num_classes, *, dropout, dtype, rngs):
    self.drop = nnx.Dropout(dropout, rngs=rngs)
    self.fc = nnx.Linear(
      cin, num_classes, dtype=dtype, param_dtype=jnp.float32, kernel_init=nnx.initializers.normal(0.01), rngs=rngs
    )

  def __call__(self, x, pooled: bool = False):  # noqa: ARG002 - averages the map it gets, pool5's or the last block's
    x = pooling.global_avg_pool(x)
    return x, self.fc(self.drop(x))


def _torch_fc1(cin: int):
  """torchvision flattens NCHW as (c, h, w); our NHWC flatten is (h, w, c)."""

  def transform(w: np.ndarray) -> np.ndarray:  # torch (out, c*49) -> ours (49*c, out)
    return w.reshape(w.shape[0], cin, 7, 7).transpose(2, 3, 1, 0).reshape(49 * cin, w.shape[0])

  return transform


class VGG(Backbone):
  def __init__(
    self,
    depth_name: str,
    num_classes: int,
    *,
    bn: bool = False,
    head: str = "classifier",
    width: float = 1.0,
    dropout: float | None = None,
    frozen_bn: bool = False,
    freeze_features: bool = False,
    dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    if head not in ("classifier", "gap"):
      raise ValueError(f"head of a VGG must be 'classifier' (torchvision's FC-4096 x2) or 'gap', got {head!r}")
    depths = DEPTHS[depth_name]
    widths = [layers.scaled(w, width) for w in WIDTHS]
    self.bn, self.head_kind, self.freeze_features = bn, head, freeze_features
    self.stage_names = tuple(f"conv{b + 1}_{d}" for b, d in enumerate(depths))
    kw = dict(bn=bn, frozen_bn=frozen_bn or freeze_features, dtype=dtype, rngs=rngs)
    self.stages = nnx.List(
      [VGGBlock(3 if b == 0 else widths[b - 1], widths[b], depths[b], pool=b > 0, **kw) for b in range(5)]
    )
    if head == "classifier":
      self.head = ClassifierHead(
        widths[-1],
        layers.scaled(4096, width),
        num_classes,
        dropout=0.5 if dropout is None else dropout,
        dtype=dtype,
        rngs=rngs,
      )
    else:
      self.head = GAPHead(widths[-1], num_classes, dropout=dropout or 0.0, dtype=dtype, rngs=rngs)

  def torchvision_modules(self):
    i = 0  # torchvision's index into `features`: conv, [bn], relu per conv, one max pool per block.
    for block in self.stages:
      for unit in block.convs:
        yield f"features.{i}", unit.conv, None
        if unit.bn is not None:
          yield f"features.{i + 1}", unit.bn, None
        i += 3 if unit.bn is not None else 2
      i += 1
    if self.head_kind == "classifier":
      yield "classifier.0", self.head.fc1, _torch_fc1(self.head.fc1.in_features // 49)
      yield "classifier.3", self.head.fc2, None
      yield "classifier.6", self.head.fc, None

  def torchvision_class_layer(self):
    return "classifier.6"

  def torchvision_ignored(self):
    if self.head_kind == "gap":
      return {"classifier.": "the model has the 'gap' head; torchvision's FC-4096 classifier does not apply"}
    return {}
