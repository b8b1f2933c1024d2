"""PyTorch reference backbones for the parity tests, written from torchvision's architecture with its
parameter names (torchvision itself does not import beside the CPU torch used here). Each returns the
logits and the same named intermediates as our backbones."""

import torch
from torch import nn

VGG_DEPTHS = {"vgg11": (1, 1, 2, 2, 2), "vgg13": (2, 2, 2, 2, 2), "vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}


def _scaled(c, width):
  return max(1, int(round(c * width)))


class TorchVGG(nn.Module):
  def __init__(self, name, num_classes, bn=False, width=1.0):
    super().__init__()
    self.depths = VGG_DEPTHS[name]
    widths = [_scaled(c, width) for c in (64, 128, 256, 512, 512)]
    mods, cin, self.taps = [], 3, []
    for b, d in enumerate(self.depths):
      for j in range(d):
        mods.append(nn.Conv2d(cin, widths[b], 3, padding=1))
        if bn:
          mods.append(nn.BatchNorm2d(widths[b]))
        mods.append(nn.ReLU(inplace=False))
        cin = widths[b]
      self.taps.append((len(mods) - 1, f"conv{b + 1}_{d}"))
      mods.append(nn.MaxPool2d(2, 2))
    self.features = nn.Sequential(*mods)
    self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
    hidden = _scaled(4096, width)
    self.classifier = nn.Sequential(
      nn.Linear(cin * 49, hidden),
      nn.ReLU(),
      nn.Dropout(),
      nn.Linear(hidden, hidden),
      nn.ReLU(),
      nn.Dropout(),
      nn.Linear(hidden, num_classes),
    )

  def forward(self, x):
    feats, taps = {}, dict(self.taps)
    for i, m in enumerate(self.features):
      x = m(x)
      if i in taps:
        feats[taps[i]] = x
    x = torch.flatten(self.avgpool(x), 1)
    x = self.classifier[:6](x)
    feats["pre_logits"] = x
    return self.classifier[6](x), feats


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, cin, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU()
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x):
    idt = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    return self.relu(self.bn2(self.conv2(out)) + idt)


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, cin, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.relu = nn.ReLU()
    self.downsample = downsample

  def forward(self, x):
    idt = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    return self.relu(self.bn3(self.conv3(out)) + idt)


RESNETS = {
  "resnet18": (BasicBlock, (2, 2, 2, 2)),
  "resnet34": (BasicBlock, (3, 4, 6, 3)),
  "resnet50": (Bottleneck, (3, 4, 6, 3)),
  "resnet101": (Bottleneck, (3, 4, 23, 3)),
}


class TorchResNet(nn.Module):
  def __init__(self, name, num_classes, width=1.0):
    super().__init__()
    block, counts = RESNETS[name]
    planes = [_scaled(p, width) for p in (64, 128, 256, 512)]
    self.inplanes = planes[0]
    self.conv1 = nn.Conv2d(3, planes[0], 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(planes[0])
    self.relu = nn.ReLU()
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    for i, (p, n) in enumerate(zip(planes, counts)):
      setattr(self, f"layer{i + 1}", self._make_layer(block, p, n, 1 if i == 0 else 2))
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.fc = nn.Linear(planes[-1] * block.expansion, num_classes)

  def _make_layer(self, block, planes, n, stride):
    down = None
    if stride != 1 or self.inplanes != planes * block.expansion:
      down = nn.Sequential(
        nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
        nn.BatchNorm2d(planes * block.expansion),
      )
    layers = [block(self.inplanes, planes, stride, down)]
    self.inplanes = planes * block.expansion
    layers += [block(self.inplanes, planes) for _ in range(1, n)]
    return nn.Sequential(*layers)

  def forward(self, x):
    feats = {}
    x = feats["stem"] = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    for i in range(1, 5):
      x = feats[f"layer{i}"] = getattr(self, f"layer{i}")(x)
    x = feats["pre_logits"] = torch.flatten(self.avgpool(x), 1)
    return self.fc(x), feats


def randomize_(model, seed=0):
  """Random weights everywhere, BN statistics and affine included, so that every tensor is exercised."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, nn.BatchNorm2d):
        m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
        m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
        m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
        m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
      elif isinstance(m, (nn.Conv2d, nn.Linear)):
        fan_in = m.weight[0].numel()
        m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
        if m.bias is not None:
          m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
  return model.eval()
