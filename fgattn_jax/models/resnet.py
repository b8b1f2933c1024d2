"""ResNets: torchvision's ImageNet ResNet-18..152 (v1.5: stride on the 3x3 convolution) and the CIFAR
ResNet-20..110 of He et al. 2016 (3x3 stem, three stages of 16/32/64 channels, projection shortcuts).

A CIFAR ResNet-d has n = (d - 2) / 6 blocks per stage. `block` picks them: 'basic' (He et al.: two 3x3 convs,
final width 64), 'bottleneck' (1x1, 3x3, 1x1 convs, 4x wider out: final width 256 and 9n + 2 weighted layers, so
ABN's code's ResNet-110 is He et al.'s 164-layer network), or 'auto', the rule of ABN's (and its base,
pytorch-classification's) code: Bottleneck from depth 44 up. Both ResNet-110s have about 1.7M parameters.

Named features: 'stem' (after the stem's pooling for ImageNet ResNets), 'layer1'..'layer4' (or
'layer3' for CIFAR), each the output of its stage; 'pre_logits' the pooled vector.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from fgattn_jax.models import layers
from fgattn_jax.models.backbone import Backbone
from fgattn_jax.ops import pooling

IMAGENET_DEPTHS = {  # (block kind, blocks per stage)
  "resnet18": ("basic", (2, 2, 2, 2)),
  "resnet34": ("basic", (3, 4, 6, 3)),
  "resnet50": ("bottleneck", (3, 4, 6, 3)),
  "resnet101": ("bottleneck", (3, 4, 23, 3)),
  "resnet152": ("bottleneck", (3, 8, 36, 3)),
}
CIFAR_DEPTHS = {f"resnet{d}": (d - 2) // 6 for d in (20, 32, 44, 56, 110)}
CIFAR_BLOCKS = ("basic", "bottleneck", "auto")  # 'auto': ABN's code, Bottleneck from depth 44


class Downsample(nnx.Module):
  """1x1 projection shortcut (torchvision's `downsample` Sequential: conv, bn)."""

  def __init__(self, cin, cout, stride, *, norm, dtype, rngs):
    self.conv = layers.conv(cin, cout, 1, stride=stride, dtype=dtype, rngs=rngs)
    self.bn = norm(cout)

  def __call__(self, x):
    return self.bn(self.conv(x))


class BasicBlock(nnx.Module):
  expansion = 1

  def __init__(self, cin, planes, stride, *, norm, dtype, rngs):
    self.conv1 = layers.conv(cin, planes, 3, stride=stride, dtype=dtype, rngs=rngs)
    self.bn1 = norm(planes)
    self.conv2 = layers.conv(planes, planes, 3, dtype=dtype, rngs=rngs)
    self.bn2 = norm(planes)
    self.downsample = (
      Downsample(cin, planes, stride, norm=norm, dtype=dtype, rngs=rngs) if stride != 1 or cin != planes else None
    )

  def __call__(self, x):
    y = layers.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return layers.relu(y + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nnx.Module):
  expansion = 4

  def __init__(self, cin, planes, stride, *, norm, dtype, rngs):
    cout = planes * self.expansion
    self.conv1 = layers.conv(cin, planes, 1, dtype=dtype, rngs=rngs)
    self.bn1 = norm(planes)
    self.conv2 = layers.conv(planes, planes, 3, stride=stride, dtype=dtype, rngs=rngs)
    self.bn2 = norm(planes)
    self.conv3 = layers.conv(planes, cout, 1, dtype=dtype, rngs=rngs)
    self.bn3 = norm(cout)
    self.downsample = (
      Downsample(cin, cout, stride, norm=norm, dtype=dtype, rngs=rngs) if stride != 1 or cin != cout else None
    )

  def __call__(self, x):
    y = layers.relu(self.bn1(self.conv1(x)))
    y = layers.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return layers.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResStage(nnx.Module):
  def __init__(self, block, cin, planes, count, stride, **kw):
    self.blocks = nnx.List(
      [block(cin if i == 0 else planes * block.expansion, planes, stride if i == 0 else 1, **kw) for i in range(count)]
    )

  def __call__(self, x):
    for b in self.blocks:
      x = b(x)
    return x


class Stem(nnx.Module):
  """ImageNet: 7x7/2 conv, BN, ReLU, 3x3/2 max pool. CIFAR: 3x3 conv, BN, ReLU."""

  def __init__(self, cout, *, imagenet, norm, dtype, rngs):
    self.imagenet = imagenet
    self.conv1 = layers.conv(3, cout, 7 if imagenet else 3, stride=2 if imagenet else 1, dtype=dtype, rngs=rngs)
    self.bn1 = norm(cout)

  def __call__(self, x):
    x = layers.relu(self.bn1(self.conv1(x)))
    return pooling.max_pool(x, 3, 2, padding=1) if self.imagenet else x


class LinearHead(nnx.Module):
  """Global average pool -> (dropout) -> linear."""

  pooled_linear = True  # CAM applies

  def __init__(self, cin, num_classes, *, dropout=0.0, dtype, rngs):
    self.drop = nnx.Dropout(dropout, rngs=rngs)
    self.fc = nnx.Linear(cin, num_classes, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)

  def __call__(self, x):
    x = pooling.global_avg_pool(x)
    return x, self.fc(self.drop(x))


class ResNet(Backbone):
  def __init__(
    self,
    depth_name: str,
    num_classes: int,
    *,
    width: float = 1.0,
    block: str = "",
    dropout: float | None = None,
    frozen_bn: bool = False,
    freeze_features: bool = False,
    dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    """block: CIFAR ResNets only, one of CIFAR_BLOCKS ('' = 'basic'); dropout: before the class layer."""
    imagenet = depth_name in IMAGENET_DEPTHS
    if imagenet:
      if block:
        raise ValueError(
          f"{depth_name}'s blocks are fixed (torchvision's); a block choice ({block!r}) applies to "
          f"the CIFAR ResNets ({', '.join(CIFAR_DEPTHS)}) only: leave it empty"
        )
      kind, counts = IMAGENET_DEPTHS[depth_name]
      block, planes = (BasicBlock if kind == "basic" else Bottleneck), (64, 128, 256, 512)
    else:
      block = block or "basic"
      if block not in CIFAR_BLOCKS:
        raise ValueError(f"CIFAR ResNet block {block!r}: use one of {', '.join(CIFAR_BLOCKS)}")
      n = CIFAR_DEPTHS[depth_name]
      bottleneck = block == "bottleneck" or (block == "auto" and 6 * n + 2 >= 44)
      block, counts, planes = (Bottleneck if bottleneck else BasicBlock), (n,) * 3, (16, 32, 64)
    planes = [layers.scaled(p, width) for p in planes]
    self.freeze_features = freeze_features
    frozen = frozen_bn or freeze_features
    norm = lambda c: layers.BatchNorm(c, frozen=frozen, dtype=dtype, rngs=rngs)  # noqa: E731
    self.stage_names = ("stem",) + tuple(f"layer{i + 1}" for i in range(len(counts)))
    stages, cin = [Stem(planes[0], imagenet=imagenet, norm=norm, dtype=dtype, rngs=rngs)], planes[0]
    for i, (p, n) in enumerate(zip(planes, counts)):
      stages.append(ResStage(block, cin, p, n, 1 if i == 0 else 2, norm=norm, dtype=dtype, rngs=rngs))
      cin = p * block.expansion
    self.stages = nnx.List(stages)
    self.imagenet = imagenet
    self.head = LinearHead(cin, num_classes, dropout=dropout or 0.0, dtype=dtype, rngs=rngs)

  def torchvision_modules(self):
    if not self.imagenet:
      raise NotImplementedError("torchvision has no CIFAR ResNet to import weights from")
    yield "conv1", self.stages[0].conv1, None
    yield "bn1", self.stages[0].bn1, None
    for k, stage in enumerate(self.stages[1:], start=1):
      for j, block in enumerate(stage.blocks):
        p = f"layer{k}.{j}"
        for name in ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3"):
          if hasattr(block, name):
            yield f"{p}.{name}", getattr(block, name), None
        if block.downsample is not None:
          yield f"{p}.downsample.0", block.downsample.conv, None
          yield f"{p}.downsample.1", block.downsample.bn, None
    yield "fc", self.head.fc, None
