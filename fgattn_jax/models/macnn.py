"""MA-CNN, the Multi-Attention CNN (Zheng, Fu, Mei, Luo, ICCV 2017), on any registry backbone.

    object stream      the backbone on the whole image; F = its feature map at `feature_stage` (conv5_4 for VGG-19)
    channel grouping   per part i: GAP(F) -> FC C -> tanh -> FC C -> sigmoid = channel weights d_i
    part maps          M_i = tanh(mean_c d_i[c] F[c]), the released deploy file's form: F is non-negative (after
                       a ReLU), so the paper's sigmoid would never fall below 0.5 and its maps could not be
                       sparse; the mean keeps the scale independent of the channel count
    part features      P_i = mean over the grid of M_i * F -> a classifier per part (trains the grouping's maps
                       to find discriminative parts, with the channel-grouping loss keeping them compact and apart)
    part streams       optional: the input cropped around each map's peak (a square, shifted inside the image),
                       resized to the part network's input, a backbone per part; the crop carries no gradient
    joint classifier   [object pooled feature, part-stream pooled features] -> linear (without part streams: the
                       object feature and the attention-pooled part features)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from fgattn_jax.models import layers
from fgattn_jax.models.backbone import Backbone, output_width
from fgattn_jax.ops import crops


class GroupTargets(nnx.Variable):
  """The channel-grouping initialisation's indicator targets (not trained, but checkpointed)."""


class ChannelGrouping(nnx.Module):

  def __init__(self, channels: int, *, dtype, rngs):
    self.fc1 = nnx.Linear(channels, channels, dtype=dtype, rngs=rngs)
    self.fc2 = nnx.Linear(channels, channels, dtype=dtype, rngs=rngs)

  def __call__(self, pooled):
    return jax.nn.sigmoid(self.fc2(jnp.tanh(self.fc1(pooled))).astype(jnp.float32))


class MACNN(nnx.Module):

  def __init__(self, backbone: Backbone, num_classes: int, num_parts: int, *, feature_stage: int | str = -1,
               part_nets: list[Backbone] | None = None, crop_fraction: float = 0.25, part_input: int = 224,
               rngs: nnx.Rngs):
    self.stage = backbone.stage_index(feature_stage, "feature_stage")
    self.backbone, self.num_parts = backbone, num_parts
    self.crop_fraction, self.part_input = crop_fraction, part_input
    dtype = backbone.compute_dtype
    c = output_width(backbone, lambda m, x: m.features(x, stop=self.stage + 1)[0])
    obj = output_width(backbone, lambda m, x: m.head(m.features(x)[0])[0])
    self.grouping = nnx.List([ChannelGrouping(c, dtype=dtype, rngs=rngs) for _ in range(num_parts)])
    self.part_fc = nnx.List([nnx.Linear(c, num_classes, dtype=dtype, rngs=rngs) for _ in range(num_parts)])
    self.group_targets = GroupTargets(jnp.zeros((num_parts, c), jnp.float32))
    self.part_nets = nnx.List(part_nets) if part_nets else None
    part = (output_width(part_nets[0], lambda m, x: m.head(m.features(x)[0])[0], (part_input, part_input))
            if part_nets else c)
    self.joint = nnx.Linear(obj + num_parts * part, num_classes, dtype=dtype, rngs=rngs)

  def attend(self, x):
    """-> (F, maps (B, h, w, N) float32, channel weights d (B, N, C), the backbone's named stages)."""
    f, feats = self.backbone.features(x, stop=self.stage + 1)
    d = jnp.stack([g(layers.global_avg_pool(f)) for g in self.grouping], axis=1)
    maps = jnp.tanh(jnp.einsum("bhwc,bnc->bhwn", f.astype(jnp.float32), d) / f.shape[-1])
    return f, maps, d, feats

  def part_boxes(self, maps, image_hw):
    """Square crops around each map's peak in input pixels, side crop_fraction of the shorter image side."""
    b, h, w, n = maps.shape
    flat = jnp.argmax(maps.reshape(b, h * w, n), axis=1)
    centres = jnp.stack([(flat % w + 0.5) * image_hw[1] / w, (flat // w + 0.5) * image_hw[0] / h], axis=-1)
    half = self.crop_fraction * min(image_hw) / 2
    return jax.lax.stop_gradient(crops.square_boxes(centres, half, image_hw))

  def __call__(self, x):
    f, maps, d, feats = self.attend(x)
    h, rest = self.backbone.features(f, start=self.stage + 1)
    feats.update(rest)
    obj_pre, obj_logits = self.backbone.head(h)
    part_feats = jnp.einsum("bhwn,bhwc->bnc", maps, f.astype(jnp.float32)) / (f.shape[1] * f.shape[2])
    part_logits = [fc(part_feats[:, i].astype(f.dtype)).astype(jnp.float32) for i, fc in enumerate(self.part_fc)]
    out = {"object": obj_logits.astype(jnp.float32), "part_logits": part_logits, "maps": maps,
           "channel_weights": d, "features": feats}
    if self.part_nets is None:
      joint_in = [obj_pre.astype(jnp.float32), part_feats.reshape(part_feats.shape[0], -1)]
    else:
      boxes = self.part_boxes(maps, x.shape[1:3])
      patches = crops.crop_parts(x, boxes, (self.part_input, self.part_input)).astype(x.dtype)
      streams = [net.head(net.features(patches[:, i])[0]) for i, net in enumerate(self.part_nets)]
      out["stream_logits"] = [logits.astype(jnp.float32) for _, logits in streams]
      out["boxes"] = boxes
      joint_in = [obj_pre.astype(jnp.float32)] + [pre.astype(jnp.float32) for pre, _ in streams]
    out["logits"] = self.joint(jnp.concatenate(joint_in, axis=-1).astype(f.dtype)).astype(jnp.float32)
    return out
