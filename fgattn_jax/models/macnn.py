"""MA-CNN, the Multi-Attention CNN (Zheng, Fu, Mei, Luo, ICCV 2017), on any registry backbone.

object stream      the backbone on the whole image; F = its feature map at `feature_stage` (conv5_4 for VGG-19)
channel grouping   per part i: GAP(F) -> FC C -> tanh -> FC C -> sigmoid = channel weights d_i
part maps          part_maps='paper': M_i = sigmoid(sum_c d_i[c] F[c]), the paper's equation. part_maps='deploy':
                   M_i = tanh(mean_c d_i[c] F[c]), the released deploy file's form (F is
                   non-negative, after a ReLU, so the paper's sigmoid would never fall below 0.5); the mean
                   keeps the scale independent of the channel count. part_maps='centred' (the default):
                   M_i = relu(tanh(mean_c d_i[c] (F[c] - mean_xy F[c]))), each channel minus its mean over
                   the grid. Why: the deploy maps are never zero, and L_cng on them is dominated by their
                   floors, which it lowers most by putting every map on the same sharpest part (on conv3_2
                   of the synthetic model, grouping alone took the deploy maps from 2.26 to 1.88 distinct
                   parts per image, the centred ones from 2.26 to 2.61); centred maps are zero off their part
part features      part_pooling='weighted' (the default): P_i = sum_xy M_i F / sum_xy M_i, the map-weighted mean
                   of F, at F's scale whatever the maps' scale and the grid's size; 'sum' (the paper): P_i =
                   sum_xy M_i F, which grows with the grid and the maps' mass. -> a classifier per part (trains
                   the features under each map to tell the classes apart, the channel-grouping loss keeping
                   the maps compact and apart). Not the grid's mean: with maps of mean 1e-2 (a channel mean
                   through a tanh) P_i was 1e-3 of F, the part classifiers stayed at chance and the part loss
                   at ln(classes)
part streams       optional: the input cropped around each map's peak (a square, shifted inside the image),
                   resized to the part network's input, a backbone per part; the crop carries no gradient.
                   The square's side is crop_fraction of the image's shorter side (the paper), or of the
                   object's extent (crop_reference='object': parts of a small bird get small crops)
object_input       0 (the paper): the object stream sees the image as it comes. Else it sees the image resized
                   (antialiased) to object_input x object_input while the part and object crops sample the
                   full-resolution image: details finer than the object stream resolves, seen in the crops
object crop        optional (the paper's "+ object" for birds, here for any data): the object's box, found
                   from the object stream's last conv activations (SCDA: cells whose channel sum is above
                   its mean; no annotation), cropped, resized to the part input, its own backbone
joint classifier   [object pooled feature, object-crop and part-stream pooled features] -> linear (without
                   part streams: the object feature and the attention-pooled part features)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from fgattn_jax.models.backbone import Backbone, output_width
from fgattn_jax.ops import crops, hooks, images, localization, pooling

# How the crop streams (part streams and object crop: one backbone each, same architecture, same input size) run:
# "loop", one backbone after another; "vmap", as one network over their stacked weights (each convolution a grouped
# convolution of all streams, each elementwise kernel one for all). Same values and gradients (tests/test_macnn.py).
# A module switch read at trace time, as ops.pooling.POOLING; `python -m benchmarks.throughput --streams` times either.
STREAMS = "loop"


def run_streams(nets, inputs):
  """nets: backbones of one architecture; inputs: one (B, h, w, 3) batch per net -> [(pre_logits, logits)] per net,
  batch statistics updated in each net as its own call would. STREAMS picks the formulation; a traced saliency tap
  (ops/hooks.py, which counts the stages it sees one stream at a time) always gets the loop."""
  if STREAMS == "loop" or len(nets) == 1 or hooks.tapping_active():
    return [net.head(net.features(x)[0]) for net, x in zip(nets, inputs)]
  graphdef = nnx.graphdef(nets[0])

  def one(state, x):
    net = nnx.merge(graphdef, state)
    return net.head(net.features(x)[0]), nnx.state(net, nnx.Not(nnx.Param))  # what a forward pass changes

  stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[nnx.state(net) for net in nets])
  (pre, logits), new = jax.vmap(one)(stacked, jnp.stack(inputs))
  for i, net in enumerate(nets):  # the batch statistics each stream computed
    nnx.update(net, jax.tree.map(lambda leaf: leaf[i], new))
  return [(pre[i], logits[i]) for i in range(len(nets))]


class GroupTargets(nnx.Variable):
  """The channel-grouping initialisation's indicator targets (not trained, but checkpointed)."""


class ChannelGrouping(nnx.Module):
  def __init__(self, channels: int, *, dtype, rngs):
    self.fc1 = nnx.Linear(channels, channels, dtype=dtype, rngs=rngs)
    self.fc2 = nnx.Linear(channels, channels, dtype=dtype, rngs=rngs)

  def __call__(self, pooled):
    return jax.nn.sigmoid(self.fc2(jnp.tanh(self.fc1(pooled))).astype(jnp.float32))


class MACNN(nnx.Module):
  def __init__(
    self,
    backbone: Backbone,
    num_classes: int,
    num_parts: int,
    *,
    feature_stage: int | str = -1,
    part_nets: list[Backbone] | None = None,
    crop_fraction: float = 0.25,
    crop_reference: str = "image",
    object_net: Backbone | None = None,
    part_input: int = 224,
    part_maps: str = "centred",
    part_pooling: str = "weighted",
    object_input: int = 0,
    rngs: nnx.Rngs,
  ):
    if num_parts < 1 or part_input < 1 or object_input < 0 or not 0 < crop_fraction <= 1:
      raise ValueError(
        f"num_parts and part_input must be 1 or more, object_input 0 or more and "
        f"crop_fraction in (0, 1]; got {num_parts}, {part_input}, {object_input}, {crop_fraction}"
      )
    if part_maps not in ("centred", "deploy", "paper"):
      raise ValueError(f"part_maps must be 'centred', 'deploy' or 'paper', got {part_maps!r}")
    if part_pooling not in ("weighted", "sum"):
      raise ValueError(f"part_pooling must be 'weighted' or 'sum', got {part_pooling!r}")
    if crop_reference not in ("image", "object"):
      raise ValueError(f"crop_reference must be 'image' or 'object', got {crop_reference!r}")
    if object_net is not None and not part_nets:
      raise ValueError("The object crop is a stream beside the part streams: it needs the part streams")
    self.stage = backbone.stage_index(feature_stage, "feature_stage")
    self.backbone, self.num_parts = backbone, num_parts
    self.crop_fraction, self.crop_reference, self.part_input = crop_fraction, crop_reference, part_input
    self.part_maps, self.part_pooling, self.object_input = part_maps, part_pooling, object_input
    dtype = backbone.compute_dtype
    c = output_width(backbone, lambda m, x: m.features(x, stop=self.stage + 1)[0])
    obj = output_width(backbone, lambda m, x: m.head(m.features(x)[0])[0])
    self.grouping = nnx.List([ChannelGrouping(c, dtype=dtype, rngs=rngs) for _ in range(num_parts)])
    self.part_fc = nnx.List([nnx.Linear(c, num_classes, dtype=dtype, rngs=rngs) for _ in range(num_parts)])
    self.group_targets = GroupTargets(jnp.zeros((num_parts, c), jnp.float32))
    self.part_nets = nnx.List(part_nets) if part_nets else None
    self.object_net = object_net

    def pooled_width(net):
      return output_width(net, lambda m, x: m.head(m.features(x)[0])[0], (part_input, part_input))

    part = pooled_width(part_nets[0]) if part_nets else c
    obj += pooled_width(object_net) if object_net is not None else 0
    self.joint = nnx.Linear(obj + num_parts * part, num_classes, dtype=dtype, rngs=rngs)

  def attend(self, x):
    """Images (at full resolution) -> (F, maps (B, h, w, N) float32, channel weights d (B, N, C), the backbone's
    named stages)."""
    if self.object_input:
      x = images.resize_square(x, self.object_input)
    f, feats = self.backbone.features(x, stop=self.stage + 1)
    d = jnp.stack([g(pooling.global_avg_pool(f)) for g in self.grouping], axis=1)
    f32 = f.astype(jnp.float32)
    if self.part_maps == "paper":  # the paper's equation: a sigmoid of the weighted channel sum
      return f, jax.nn.sigmoid(jnp.einsum("bhwc,bnc->bhwn", f32, d)), d, feats
    if self.part_maps == "deploy":
      return f, jnp.tanh(jnp.einsum("bhwc,bnc->bhwn", f32, d) / f.shape[-1]), d, feats
    centred = f32 - jnp.mean(f32, axis=(1, 2), keepdims=True)
    maps = jax.nn.relu(jnp.tanh(jnp.einsum("bhwc,bnc->bhwn", centred, d) / f.shape[-1]))
    return f, maps, d, feats

  def pool_parts(self, maps, f):
    """(B, h, w, N) maps, (B, h, w, C) features -> (B, N, C) part features P_i, float32 (part_pooling)."""
    total = jnp.einsum("bhwn,bhwc->bnc", maps, f.astype(jnp.float32))
    if self.part_pooling == "sum":
      return total
    return total / jnp.maximum(jnp.sum(maps, axis=(1, 2)), 1e-6)[..., None]

  def part_boxes(self, maps, image_hw, object_boxes=None):
    """Square crops around each map's peak in input pixels, side crop_fraction of the shorter image side, or
    with object_boxes (B, 4) of each object's extent (the geometric mean of its box's sides): never smaller
    than two cells of the map (the map cannot place a part more finely) nor larger than the image."""
    b, h, w, n = maps.shape
    flat = jnp.argmax(maps.reshape(b, h * w, n), axis=1)
    centres = jnp.stack([(flat % w + 0.5) * image_hw[1] / w, (flat // w + 0.5) * image_hw[0] / h], axis=-1)
    if object_boxes is None:
      side = jnp.full((b, 1), self.crop_fraction * min(image_hw))
    else:
      extent = jnp.sqrt((object_boxes[:, 2] - object_boxes[:, 0]) * (object_boxes[:, 3] - object_boxes[:, 1]))
      side = jnp.clip(self.crop_fraction * extent, 2 * max(image_hw[0] / h, image_hw[1] / w), min(image_hw))[:, None]
    return jax.lax.stop_gradient(crops.square_boxes(centres, jnp.broadcast_to(side / 2, (b, n)), image_hw))

  def __call__(self, x, *, until: str = "joint"):
    """-> {'maps', 'channel_weights', 'part_logits' (the attention-pooled parts' classifiers), 'features'} and,
    from until='object' on, 'object' (the object stream's logits); with until='joint' (the default) also 'logits'
    (the joint classifier) and, with part streams, 'stream_logits', 'boxes', 'patches' (and 'object_box',
    'object_crop_logits'). The shorter forms are for the phases that need no more: the part streams are most of a
    step's work, and in training mode they would run (updating their batch statistics) even unused."""
    if until not in ("parts", "object", "joint"):
      raise ValueError(f"until must be 'parts', 'object' or 'joint', got {until!r}")
    f, maps, d, feats = self.attend(x)
    part_feats = self.pool_parts(maps, f)
    part_logits = [fc(part_feats[:, i].astype(f.dtype)).astype(jnp.float32) for i, fc in enumerate(self.part_fc)]
    out = {"part_logits": part_logits, "maps": maps, "channel_weights": d, "features": feats}
    if until == "parts":
      return out
    h, rest = self.backbone.features(f, start=self.stage + 1)
    feats.update(rest)
    obj_pre, obj_logits = self.backbone.head(h)
    out["object"] = obj_logits.astype(jnp.float32)
    if until == "object":
      return out
    if self.part_nets is None:
      joint_in = [obj_pre.astype(jnp.float32), part_feats.reshape(part_feats.shape[0], -1)]
    else:
      size = (self.part_input, self.part_input)
      object_boxes = None
      if self.crop_reference == "object" or self.object_net is not None:  # only what uses it computes it
        object_boxes = out["object_box"] = localization.object_boxes(h, x.shape[1:3])
      boxes = self.part_boxes(maps, x.shape[1:3], object_boxes if self.crop_reference == "object" else None)
      patches = crops.crop_parts(x, boxes, size).astype(x.dtype)
      nets, inputs = list(self.part_nets), [patches[:, i] for i in range(self.num_parts)]
      if self.object_net is not None:
        nets.append(self.object_net)
        inputs.append(crops.crop_resize(x, object_boxes, size).astype(x.dtype))
      streams = run_streams(nets, inputs)
      out["stream_logits"] = [logits.astype(jnp.float32) for _, logits in streams[: self.num_parts]]
      out["boxes"], out["patches"] = boxes, patches
      if self.object_net is not None:
        out["object_crop_logits"] = streams[-1][1].astype(jnp.float32)
        streams = streams[-1:] + streams[: self.num_parts]
      joint_in = [obj_pre.astype(jnp.float32)] + [pre.astype(jnp.float32) for pre, _ in streams]
    out["logits"] = self.joint(jnp.concatenate(joint_in, axis=-1).astype(f.dtype)).astype(jnp.float32)
    return out
