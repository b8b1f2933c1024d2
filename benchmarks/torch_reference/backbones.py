"""PyTorch backbones cut into the same stages as ours (fgattn_jax/models): VGG blocks ([pool] + convs, no final pool:
the last stage is conv5_x at stride 16) and ResNet's stem, layer1..layer4; a global-average-pool + linear head.

torchvision's modules when torchvision imports and the width is 1 (the GPU machine: its cuDNN-tuned reference);
otherwise a self-contained copy of the same architectures with a width multiplier (CPU smoke tests).
"""

from __future__ import annotations

import torch
from torch import nn

VGG_DEPTHS = {"vgg11": (1, 1, 2, 2, 2), "vgg13": (2, 2, 2, 2, 2), "vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
RESNET = {
  "resnet18": ("basic", (2, 2, 2, 2)),
  "resnet34": ("basic", (3, 4, 6, 3)),
  "resnet50": ("bottleneck", (3, 4, 6, 3)),
  "resnet101": ("bottleneck", (3, 4, 23, 3)),
  "resnet152": ("bottleneck", (3, 8, 36, 3)),
}


def _c(channels: int, width: float) -> int:
  return max(1, int(round(channels * width)))


class Net(nn.Module):
  """stages (ModuleList) -> global average pool -> fc."""

  def __init__(self, stages: list[nn.Module], width: int, num_classes: int):
    super().__init__()
    self.stages, self.fc, self.width = nn.ModuleList(stages), nn.Linear(width, num_classes), width

  def features(self, x, start: int = 0, stop: int | None = None):
    for stage in self.stages[start:stop]:
      x = stage(x)
    return x

  def head(self, f):
    pooled = f.mean(dim=(2, 3))
    return pooled, self.fc(pooled)

  def forward(self, x):
    return self.head(self.features(x))[1]


def _vgg_stages(name: str, width: float, bn: bool) -> tuple[list[nn.Module], int]:
  try:
    if width != 1.0:
      raise ImportError
    import torchvision

    features = list(getattr(torchvision.models, name + ("_bn" if bn else ""))().features)
  except ImportError:
    features, cin = [], 3
    for block, depth in enumerate(VGG_DEPTHS[name]):
      if block:
        features.append(nn.MaxPool2d(2, 2))
      cout = _c(min(64 * 2**block, 512), width)
      for _ in range(depth):
        features += [nn.Conv2d(cin, cout, 3, padding=1)] + ([nn.BatchNorm2d(cout)] if bn else []) + [nn.ReLU(True)]
        cin = cout
    features.append(nn.MaxPool2d(2, 2))
  stages, current = [], []
  for layer in features[:-1]:  # the last pool belongs to torchvision's classifier side, not to conv5_x
    if isinstance(layer, nn.MaxPool2d) and current:
      stages.append(nn.Sequential(*current))
      current = []
    current.append(layer)
  stages.append(nn.Sequential(*current))
  return stages, next(m.out_channels for m in reversed(features) if isinstance(m, nn.Conv2d))


class _Block(nn.Module):
  def __init__(self, kind: str, cin: int, planes: int, stride: int):
    super().__init__()
    out = planes * (4 if kind == "bottleneck" else 1)
    if kind == "basic":
      self.body = nn.Sequential(
        nn.Conv2d(cin, planes, 3, stride, 1, bias=False),
        nn.BatchNorm2d(planes),
        nn.ReLU(True),
        nn.Conv2d(planes, planes, 3, 1, 1, bias=False),
        nn.BatchNorm2d(planes),
      )
    else:
      self.body = nn.Sequential(
        nn.Conv2d(cin, planes, 1, bias=False),
        nn.BatchNorm2d(planes),
        nn.ReLU(True),
        nn.Conv2d(planes, planes, 3, stride, 1, bias=False),
        nn.BatchNorm2d(planes),
        nn.ReLU(True),
        nn.Conv2d(planes, out, 1, bias=False),
        nn.BatchNorm2d(out),
      )
    self.downsample = (
      nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))
      if stride != 1 or cin != out
      else None
    )

  def forward(self, x):
    return torch.relu(self.body(x) + (x if self.downsample is None else self.downsample(x)))


def _resnet_stages(name: str, width: float) -> tuple[list[nn.Module], int]:
  try:
    if width != 1.0:
      raise ImportError
    import torchvision

    m = getattr(torchvision.models, name)()
    stem = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool)
    return [stem, m.layer1, m.layer2, m.layer3, m.layer4], m.fc.in_features
  except ImportError:
    kind, depths = RESNET[name]
    cin = _c(64, width)
    stages = [
      nn.Sequential(nn.Conv2d(3, cin, 7, 2, 3, bias=False), nn.BatchNorm2d(cin), nn.ReLU(True), nn.MaxPool2d(3, 2, 1))
    ]
    for i, depth in enumerate(depths):
      planes, blocks = _c(64 * 2**i, width), []
      for j in range(depth):
        blocks.append(_Block(kind, cin, planes, 2 if i and not j else 1))
        cin = planes * (4 if kind == "bottleneck" else 1)
      stages.append(nn.Sequential(*blocks))
    return stages, cin


def backbone(name: str, num_classes: int, width: float = 1.0) -> Net:
  """'vgg19', 'vgg16_bn', 'resnet50', ... -> Net (stages as fgattn_jax's, GAP + linear head)."""
  base = name.removesuffix("_bn")
  if base in VGG_DEPTHS:
    stages, channels = _vgg_stages(base, width, name.endswith("_bn"))
  elif name in RESNET:
    stages, channels = _resnet_stages(name, width)
  else:
    raise ValueError(f"unknown backbone {name!r}: {', '.join([*VGG_DEPTHS, *RESNET])} (VGG also with _bn)")
  return Net(stages, channels, num_classes)
