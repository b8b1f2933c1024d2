"""Attention Branch Network (Fukui et al., CVPR 2019) on any registry backbone.

    g(x)   the backbone's stages up to and including the branch stage (the feature extractor); for a VGG, branch
           'pool5' is the last block followed by its 2x2 max pool (pool5: the 7x7 map at 224)
    attention branch   a copy of the next stage with stride 1 (none when the branch is the last stage)
                       -> BN -> 1x1 conv to K -> BN -> ReLU, then
                          logits: 1x1 conv K -> K -> global average pool
                          map M(x): conv K -> T (kernel 1 as in the paper, or 3 as in the official code)
                                    -> BN -> sigmoid, one map per task
    perception branch  g(x) * (1 + M(x))  (or g(x) * M(x): the paper's Table 1 variant)
                       -> the rest of the backbone -> its head

Multi-task (e.g. facial attributes): `num_classes` is a tuple of class counts, one per task. Each task gets its
own attention map and attention logits; the perception branch (shared weights) runs once per task on
g(x) weighted by that task's map, the tasks folded into the batch, and a linear layer per task classifies.
Single-task keeps the backbone's own head, so its pretrained classifier still applies.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
from flax import nnx

from fgattn_jax.models import layers, resnet, vgg
from fgattn_jax.models.backbone import Backbone, output_width
from fgattn_jax.ops import pooling

# The branch point by family: the stage after which the attention branch starts.
DEFAULT_BRANCH = {"vgg": -1, "resnet": 3, "cifar": 2}  # VGG: the last conv block; ResNet: layer3; CIFAR: layer2
AFTER_POOL = "pool5"  # a VGG's branch after its last pooling: the perception branch is then the head alone


def default_branch(backbone_name: str) -> int:
  if backbone_name.startswith("vgg"):
    return DEFAULT_BRANCH["vgg"]
  return DEFAULT_BRANCH["resnet"] if backbone_name in resnet.IMAGENET_DEPTHS else DEFAULT_BRANCH["cifar"]


def stride_one(stage: nnx.Module) -> nnx.Module:
  """A stage's copy that keeps its input's resolution: every strided conv at stride 1, no VGG pooling. A WRN's
  closing BN-ReLU (which belongs to the network's end, before its pool: wideresnet.py) is left out: the branch's
  own BN follows the blocks (as in ABN's code)."""
  if getattr(stage, "final_bn", None) is not None:
    stage.final_bn = None
  for _, node in nnx.iter_graph(stage):
    if isinstance(node, nnx.Conv) and tuple(node.strides) != (1, 1):
      node.strides = (1, 1)
    if isinstance(node, vgg.VGGBlock):
      node.pool = False
  return stage


class ABN(nnx.Module):
  def __init__(
    self,
    backbone: Backbone,
    num_classes: int | tuple[int, ...],
    *,
    branch: int | str = -1,
    map_kernel: int = 1,
    residual: bool = True,
    freeze_extractor: bool = False,
    rngs: nnx.Rngs,
  ):
    if map_kernel not in (1, 3):
      raise ValueError(f"map_kernel must be 1 (the paper) or 3 (the official code), got {map_kernel}")
    self.after_pool = branch == AFTER_POOL
    if self.after_pool and not isinstance(backbone, vgg.VGG):
      raise ValueError(f"branch {AFTER_POOL!r} is a VGG's last pooling; {type(backbone).__name__} has none")
    self.branch = len(backbone.stages) - 1 if self.after_pool else backbone.stage_index(branch, "branch")
    self.backbone, self.residual = backbone, residual
    self.tasks = tuple(num_classes) if isinstance(num_classes, (tuple, list)) else (num_classes,)
    dtype = backbone.compute_dtype
    if freeze_extractor:  # only the branches train: the extractor's statistics stay as loaded
      for i in range(self.branch + 1):
        for _, node in nnx.iter_graph(backbone.stages[i]):
          if isinstance(node, layers.BatchNorm):
            node.frozen = True
    self.freeze_extractor = freeze_extractor

    nxt = self.branch + 1
    self.att_stage = stride_one(nnx.clone(backbone.stages[nxt])) if nxt < len(backbone.stages) else None
    self.copy_attention_stage()
    channels = output_width(self, lambda m, x: m._attention_input(m._extract(x)[0]))
    k, t = sum(self.tasks), len(self.tasks)
    norm = lambda c: layers.BatchNorm(c, dtype=dtype, rngs=rngs)  # noqa: E731
    self.bn_att = norm(channels)
    self.att_conv = layers.conv(channels, k, 1, dtype=dtype, rngs=rngs)
    self.bn_att2 = norm(k)
    self.att_logits = layers.conv(k, k, 1, dtype=dtype, rngs=rngs)
    self.att_map = layers.conv(k, t, map_kernel, dtype=dtype, rngs=rngs)
    self.bn_att3 = norm(t)
    if t > 1:  # a perception classifier per task on the shared pooled perception features
      width = output_width(self, lambda m, x: m.backbone.head(m.backbone.features(x)[0])[0])
      self.task_heads = nnx.List([nnx.Linear(width, c, dtype=dtype, rngs=rngs) for c in self.tasks])
    else:
      self.task_heads = None

  def _extract(self, x):
    """g(x) and the backbone's stage outputs up to it."""
    g, feats = self.backbone.features(x, stop=self.branch + 1)
    return (pooling.max_pool(g, 2, 2) if self.after_pool else g), feats

  def _attention_input(self, g):
    return g if self.att_stage is None else self.att_stage(g)

  def __call__(self, x):
    """-> {'logits': perception logits, 'attention_logits': attention-branch logits, 'attention': maps (B, h, w, T)
    in [0, 1] at the branch stage's resolution, 'features': the backbone's named stages}. In multi-task mode
    both logits are lists, one (B, K_t) array per task."""
    g, feats = self._extract(x)
    a = layers.relu(self.bn_att2(self.att_conv(self.bn_att(self._attention_input(g)))))
    att_logits = pooling.global_avg_pool(self.att_logits(a)).astype(jnp.float32)
    maps = jax.nn.sigmoid(self.bn_att3(self.att_map(a)).astype(jnp.float32))
    t, b = len(self.tasks), g.shape[0]
    m = jnp.moveaxis(maps, -1, 0)[..., None].astype(g.dtype)  # (T, B, h, w, 1)
    h = (g * (1 + m) if self.residual else g * m).reshape(t * b, *g.shape[1:])
    h, rest = self.backbone.features(h, start=self.branch + 1)
    feats.update({k: v[:b] for k, v in rest.items()})
    pre_logits, logits = self.backbone.head(h, pooled=True) if self.after_pool else self.backbone.head(h)
    feats["pre_logits"] = pre_logits[:b]
    out = {"attention": maps, "features": feats}
    if self.task_heads is None:
      return out | {"logits": logits.astype(jnp.float32), "attention_logits": att_logits}
    pre = pre_logits.reshape(t, b, -1)
    ends = list(itertools.accumulate(self.tasks))
    return out | {
      "logits": [head(pre[i]).astype(jnp.float32) for i, head in enumerate(self.task_heads)],
      "attention_logits": [att_logits[:, e - c : e] for e, c in zip(ends, self.tasks)],
    }

  def extractor_filter(self):
    """nnx filter of the feature extractor's parameters (the stages up to the branch)."""
    return lambda path, x: (
      isinstance(x, nnx.Param)
      and len(path) > 2
      and path[0] == "backbone"
      and path[1] == "stages"
      and path[2] <= self.branch
    )

  def copy_attention_stage(self):
    """Re-initialises the attention stage from the backbone stage it copies (after loading pretrained weights)."""
    if self.att_stage is not None:
      # Copies of the arrays: two variables on one buffer would make the donated train step fail.
      source = nnx.to_flat_state(nnx.state(self.backbone.stages[self.branch + 1]))
      mine = {path for path, _ in nnx.to_flat_state(nnx.state(self.att_stage))}  # without what stride_one left out
      nnx.update(self.att_stage, jax.tree.map(jnp.copy, nnx.from_flat_state([(p, v) for p, v in source if p in mine])))
