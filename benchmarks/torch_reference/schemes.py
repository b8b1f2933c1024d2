"""The four schemes in PyTorch at our layer sizes with our losses (fgattn_jax/models, fgattn_jax/schemes), for the
throughput comparison only: forward(images, labels) -> the end-to-end training loss (every loss at weight 1, as
benchmarks/throughput.py weighs ours; the pretraining regressions left out on both sides).

    baseline  CE of the backbone's logits
    abn       attention branch (a stride-1 copy of the stage after the branch point -> BN -> 1x1 conv to K -> BN ->
              ReLU; logits: 1x1 conv K -> K, global average pool; map: 1x1 conv K -> 1 -> BN -> sigmoid) and the
              perception branch on g * (1 + M); CE of both (ResNet: branch after layer3; VGG: after the last block)
    macnn     the 'cub' preset: grouping FCs per part on the last conv stage, centred part maps, map-weighted part
              features, part classifiers, Dis + 2 Div, part crops (squares of 128/448 of the side on the maps'
              peaks) and the object crop (the SCDA box) resampled to part_input, one backbone per stream, the joint
              classifier
    racnn     three backbones; APN (7x7 pool -> FC 1024 -> tanh -> FC 3 -> sigmoid -> the kept-inside square,
              half side in [1/4, 1/2] of the side); soft box mask (k = 10 per pixel) times the image,
              resampled bilinearly to scale_input; CE per scale, ranking loss on probabilities, fused CE
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.torch_reference.backbones import Net, backbone


def crop_resize(images, boxes, size: int):
  """(B, C, H, W) images, (B, 4) boxes (x0, y0, x1, y1) in pixels -> (B, C, size, size): bilinear, zeros outside,
  the samples at x0 + (j + 0.5) (x1 - x0) / size (fgattn_jax/ops/crops.py's positions)."""
  b, _, h, w = images.shape
  t = (torch.arange(size, device=images.device, dtype=images.dtype) + 0.5) / size
  xs = boxes[:, 0:1] + t * (boxes[:, 2:3] - boxes[:, 0:1])  # (B, size) pixel positions
  ys = boxes[:, 1:2] + t * (boxes[:, 3:4] - boxes[:, 1:2])
  grid = torch.stack(torch.broadcast_tensors(xs[:, None, :] / w * 2 - 1, ys[:, :, None] / h * 2 - 1), dim=-1)
  return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def crop_resize_many(images, boxes, size: int):
  """(B, C, H, W) images, (B, N, 4) boxes -> (N, B, C, size, size): every box's crop_resize in one grid_sample (the
  N grids stacked along the output's rows), not N calls."""
  b, n = boxes.shape[:2]
  _, _, h, w = images.shape
  t = (torch.arange(size, device=images.device, dtype=images.dtype) + 0.5) / size
  xs = boxes[..., 0:1] + t * (boxes[..., 2:3] - boxes[..., 0:1])  # (B, N, size)
  ys = boxes[..., 1:2] + t * (boxes[..., 3:4] - boxes[..., 1:2])
  grid = torch.stack(torch.broadcast_tensors(xs[:, :, None, :] / w * 2 - 1, ys[:, :, :, None] / h * 2 - 1), dim=-1)
  out = F.grid_sample(
    images, grid.reshape(b, n * size, size, 2), mode="bilinear", padding_mode="zeros", align_corners=False
  )
  return out.reshape(b, -1, n, size, size).permute(2, 0, 1, 3, 4)


class Baseline(nn.Module):
  def __init__(self, name, num_classes, width):
    super().__init__()
    self.net = backbone(name, num_classes, width)

  def forward(self, x, y):
    return F.cross_entropy(self.net(x), y)


def _stride_one(stage: nn.Module) -> nn.Module:
  stage = copy.deepcopy(stage)
  for m in stage.modules():
    if isinstance(m, nn.Conv2d) and m.stride != (1, 1):
      m.stride = (1, 1)
  if isinstance(stage, nn.Sequential) and isinstance(stage[0], nn.MaxPool2d):
    stage = nn.Sequential(*list(stage)[1:])
  return stage


class ABN(nn.Module):
  def __init__(self, name, num_classes, width):
    super().__init__()
    self.net = backbone(name, num_classes, width)
    self.branch = len(self.net.stages) - 1 if name.startswith("vgg") else 3
    nxt = self.branch + 1
    self.att_stage = _stride_one(self.net.stages[nxt]) if nxt < len(self.net.stages) else nn.Identity()
    with torch.no_grad():
      c = self.att_stage(self.net.features(torch.zeros(1, 3, 64, 64), stop=nxt)).shape[1]
    k = num_classes
    self.bn_att, self.att_conv, self.bn_att2 = nn.BatchNorm2d(c), nn.Conv2d(c, k, 1, bias=False), nn.BatchNorm2d(k)
    self.att_logits, self.att_map = nn.Conv2d(k, k, 1, bias=False), nn.Conv2d(k, 1, 1, bias=False)
    self.bn_att3 = nn.BatchNorm2d(1)

  def forward(self, x, y):
    g = self.net.features(x, stop=self.branch + 1)
    a = torch.relu(self.bn_att2(self.att_conv(self.bn_att(self.att_stage(g)))))
    att_logits = self.att_logits(a).mean(dim=(2, 3))
    m = torch.sigmoid(self.bn_att3(self.att_map(a)))
    logits = self.net.head(self.net.features(g * (1 + m), start=self.branch + 1))[1]
    return F.cross_entropy(att_logits, y) + F.cross_entropy(logits, y)


def _normalised_grid(h, w, device, dtype):
  ys, xs = torch.meshgrid(
    (torch.arange(h, device=device, dtype=dtype) + 0.5) / h,
    (torch.arange(w, device=device, dtype=dtype) + 0.5) / w,
    indexing="ij",
  )
  return xs, ys


def channel_grouping_loss(maps, lam=2.0, margin=0.02):
  """Dis + lam Div on (B, N, h, w) maps (fgattn_jax/ops/macnn.py)."""
  b, n, h, w = maps.shape
  m = maps / maps.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
  xs, ys = _normalised_grid(h, w, maps.device, maps.dtype)
  flat = maps.reshape(b, n, h * w).argmax(-1)
  tx, ty = xs.reshape(-1)[flat], ys.reshape(-1)[flat]  # (B, N)
  d2 = (xs - tx[..., None, None]) ** 2 + (ys - ty[..., None, None]) ** 2
  dis = (m * d2).sum(dim=(2, 3)).mean()
  top2 = m.topk(2, dim=1).values
  others = torch.where(m >= top2[:, :1], top2[:, 1:2], top2[:, :1]) - margin
  return dis + lam * (m * others).sum(dim=(2, 3)).mean()


def _peaks(maps, hw):
  """(B, N, h, w) -> (B, N, 2) input pixels of each map's argmax cell centre."""
  b, n, h, w = maps.shape
  flat = maps.reshape(b, n, h * w).argmax(-1)
  return torch.stack([(flat % w + 0.5) * hw[1] / w, (flat // w + 0.5) * hw[0] / h], dim=-1).to(maps.dtype)


def _squares(centres, half, hw):
  cx = centres[..., 0].clamp(half, hw[1] - half)
  cy = centres[..., 1].clamp(half, hw[0] - half)
  return torch.stack([cx - half, cy - half, cx + half, cy + half], dim=-1)


def _object_boxes(f, hw):
  """The SCDA box: the extent of the cells whose channel sum is above its mean (fgattn_jax/ops/localization.py)."""
  total = f.float().sum(1)  # (B, h, w)
  on = total >= total.mean(dim=(1, 2), keepdim=True)
  h, w = total.shape[1:]
  rows, cols = on.any(2), on.any(1)
  idx_r, idx_c = torch.arange(h, device=f.device), torch.arange(w, device=f.device)
  r0, r1 = torch.where(rows, idx_r, h).amin(1), torch.where(rows, idx_r, -1).amax(1) + 1
  c0, c1 = torch.where(cols, idx_c, w).amin(1), torch.where(cols, idx_c, -1).amax(1) + 1
  sy, sx = hw[0] / h, hw[1] / w
  return torch.stack([c0 * sx, r0 * sy, c1 * sx, r1 * sy], dim=-1).float()


class MACNN(nn.Module):
  def __init__(self, name, num_classes, width, num_parts=4, part_input=224, crop_fraction=128 / 448, object_crop=True):
    super().__init__()
    self.net, self.part_input, self.crop_fraction = backbone(name, num_classes, width), part_input, crop_fraction
    c = self.net.width
    self.grouping = nn.ModuleList(
      [nn.Sequential(nn.Linear(c, c), nn.Tanh(), nn.Linear(c, c), nn.Sigmoid()) for _ in range(num_parts)]
    )
    self.part_fc = nn.ModuleList([nn.Linear(c, num_classes) for _ in range(num_parts)])
    self.part_nets = nn.ModuleList([backbone(name, num_classes, width) for _ in range(num_parts)])
    self.object_net = backbone(name, num_classes, width) if object_crop else None
    streams = num_parts + (1 if object_crop else 0)
    self.joint = nn.Linear(c + streams * self.part_nets[0].width, num_classes)

  def forward(self, x, y):
    hw = x.shape[2:]
    f = self.net.features(x)
    obj_pre, obj_logits = self.net.head(f)
    d = torch.stack([g(obj_pre) for g in self.grouping], dim=1)  # (B, N, C)
    centred = f - f.mean(dim=(2, 3), keepdim=True)
    maps = torch.relu(torch.tanh(torch.einsum("bchw,bnc->bnhw", centred, d) / f.shape[1])).float()
    # The map-weighted mean of the features (ours: MACNN.pool_parts, part_pooling='weighted')
    part_feats = torch.einsum("bnhw,bchw->bnc", maps.to(f.dtype), f) / maps.sum(dim=(2, 3)).clamp_min(1e-6)[
      ..., None
    ].to(f.dtype)
    loss = F.cross_entropy(obj_logits, y) + channel_grouping_loss(maps)
    loss = loss + sum(F.cross_entropy(fc(part_feats[:, i]), y) for i, fc in enumerate(self.part_fc)) / len(self.part_fc)
    with torch.no_grad():
      boxes = _squares(_peaks(maps, hw), self.crop_fraction * min(hw) / 2, hw)  # (B, N, 4)
    pre, stream_losses = [obj_pre], []
    nets = list(self.part_nets)
    if self.object_net is not None:
      boxes = torch.cat([_object_boxes(f.detach(), hw).to(boxes.dtype)[:, None], boxes], dim=1)
      nets.insert(0, self.object_net)
    crops = crop_resize_many(x, boxes.to(x.dtype), self.part_input)  # every stream's crop in one call
    for net, crop in zip(nets, crops):
      p, logits = net.head(net.features(crop))
      pre.append(p)
      stream_losses.append(F.cross_entropy(logits, y))
    return loss + sum(stream_losses) / len(stream_losses) + F.cross_entropy(self.joint(torch.cat(pre, 1)), y)


def box_mask(boxes, hw, k=10.0):
  """(B, 4) boxes -> (B, 1, H, W): the product of two pairs of logistic steps of steepness k per pixel."""
  h, w = hw
  xs = torch.arange(w, device=boxes.device, dtype=boxes.dtype) + 0.5
  ys = torch.arange(h, device=boxes.device, dtype=boxes.dtype) + 0.5
  mx = torch.sigmoid(k * (xs - boxes[:, 0:1])) - torch.sigmoid(k * (xs - boxes[:, 2:3]))
  my = torch.sigmoid(k * (ys - boxes[:, 1:2])) - torch.sigmoid(k * (ys - boxes[:, 3:4]))
  return (my[:, :, None] * mx[:, None, :])[:, None]


class RACNN(nn.Module):
  def __init__(
    self,
    name,
    num_classes,
    width,
    num_scales=3,
    scale_input=224,
    apn_grid=7,
    apn_hidden=1024,
    k=10.0,
    min_half=0.25,
    max_half=0.5,
  ):
    super().__init__()
    self.nets = nn.ModuleList([backbone(name, num_classes, width) for _ in range(num_scales)])
    c = self.nets[0].width
    self.apns = nn.ModuleList(
      [
        nn.Sequential(
          nn.AdaptiveAvgPool2d(apn_grid),
          nn.Flatten(),
          nn.Linear(c * apn_grid**2, apn_hidden),
          nn.Tanh(),
          nn.Linear(apn_hidden, 3),
          nn.Sigmoid(),
        )
        for _ in range(num_scales - 1)
      ]
    )
    self.fused = nn.Linear(c * num_scales, num_classes)
    self.scale_input, self.k, self.min_half, self.max_half = scale_input, k, min_half, max_half

  def forward(self, x, y):
    pre, probs, loss = [], [], 0.0
    for s, net in enumerate(self.nets):
      f = net.features(x)
      p, logits = net.head(f)
      pre.append(p)
      probs.append(torch.softmax(logits.float(), -1).gather(1, y[:, None])[:, 0])
      loss = loss + F.cross_entropy(logits, y) / len(self.nets)
      if s == len(self.nets) - 1:
        break
      h, w = x.shape[2:]
      side = min(h, w)
      sx, sy, sl = self.apns[s](f.detach()).float().unbind(-1)
      t_l = self.min_half * side + (self.max_half - self.min_half) * side * sl
      t_x, t_y = t_l + sx * (w - 2 * t_l), t_l + sy * (h - 2 * t_l)
      box = torch.stack([t_x - t_l, t_y - t_l, t_x + t_l, t_y + t_l], -1)
      masked = x.float() * box_mask(box, (h, w), self.k)
      x = crop_resize(masked, box, self.scale_input).to(x.dtype)
    rank = sum(torch.relu(c - f + 0.05).mean() for c, f in zip(probs[:-1], probs[1:]))
    return loss + rank + F.cross_entropy(self.fused(torch.cat(pre, 1)), y)


def build(scheme: str, name: str, num_classes: int, res: int, width: float = 1.0) -> nn.Module:
  """The scheme at the sizes benchmarks/throughput.py gives ours: crops and zooms seen at res / 2."""
  if scheme == "baseline":
    return Baseline(name, num_classes, width)
  if scheme == "abn":
    return ABN(name, num_classes, width)
  if scheme == "macnn":
    return MACNN(name, num_classes, width, part_input=max(8, res // 2))
  if scheme == "racnn":
    return RACNN(name, num_classes, width, scale_input=max(8, res // 2))
  raise ValueError(f"unknown scheme {scheme!r}: baseline, abn, macnn or racnn")


__all__ = ["Net", "build", "crop_resize", "crop_resize_many", "box_mask"]
