"""RA-CNN, the Recurrent Attention CNN (Fu, Zheng, Mei, "Look Closer to See Better", CVPR 2017), on any registry
backbone.

    scales             num_scales classification networks, each its own backbone (no weight sharing) with its own
                       head; scale 1 sees the image, scale s + 1 the attended crop of scale s's input
    APN                per transition s -> s + 1: scale s's last conv features (conv5_4 for VGG-19) -> adaptive
                       average pool to apn_grid x apn_grid (the paper flattens pool5, whose size follows the input;
                       a fixed grid keeps the layer's width independent of it) -> flatten -> FC apn_hidden -> tanh
                       -> FC 3 -> sigmoid -> (t_x, t_y, t_l) in scale s's input pixels (ops.racnn.apn_box: t_l
                       between min_half_fraction and max_half_fraction of the side, the square kept inside the image)
    zoom               ops.racnn.attention_crop: X * M(box) (soft box mask, steepness k per pixel of the image it
                       masks: scale s's input, or the full-resolution image with scale1_input) resampled bilinearly
                       from the square to scale_input x scale_input; gradients reach the box through the mask and
                       the sampling positions (plain autodiff)
    scale1_input       0 (the paper): scale 1 sees the image as it comes and every zoom samples the previous scale's
                       input. Else scale 1 sees the image resized (antialiased) to scale1_input x scale1_input, and
                       every zoom samples the full-resolution image (each box mapped from its scale's frame to the
                       image's): "look closer" at pixels scale 1 never saw, for images larger than a backbone's
                       input (the boxes' outputs stay in each scale's own frame)
    fused classifier   the scales' pooled features (pre-logits) concatenated -> linear
    APN targets        ops.racnn.apn_targets: the square centred on the peak of scale s's channel-summed last conv
                       response, half side apn_init_half_fraction of the side (the pretraining's regression target)

The APN reads its features through a stop_gradient: the APN is a head on the classification network's features,
and the losses that train it (ranking, pretraining regression) reach the APN's own layers only, through the box,
never the convolutions it reads (the paper's alternation trains the two apart; end to end this keeps the ranking
loss from reshaping the coarse scale's features to move its own box).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from fgattn_jax.models.backbone import Backbone, output_width
from fgattn_jax.ops import images, pooling, racnn


class APN(nnx.Module):
  """Features (B, h, w, C) -> (B, 3) (s_x, s_y, s_l) in [0, 1], float32."""

  def __init__(self, channels: int, grid: int, hidden: int, *, dtype, rngs):
    self.grid = grid
    self.fc1 = nnx.Linear(grid * grid * channels, hidden, dtype=dtype, rngs=rngs)
    self.fc2 = nnx.Linear(hidden, 3, dtype=dtype, rngs=rngs)

  def __call__(self, f):
    pooled = pooling.adaptive_avg_pool(f, (self.grid, self.grid))
    return jax.nn.sigmoid(self.fc2(jnp.tanh(self.fc1(pooled.reshape(pooled.shape[0], -1)))).astype(jnp.float32))


class RACNN(nnx.Module):
  def __init__(
    self,
    nets: list[Backbone],
    num_classes: int,
    *,
    scale_input: int = 224,
    apn_hidden: int = 1024,
    apn_grid: int = 7,
    k: float = 10.0,
    min_half_fraction: float = 0.25,
    max_half_fraction: float = 0.5,
    keep_inside: bool = True,
    apn_init_half_fraction: float = 1 / 3,
    scale1_input: int = 0,
    rngs: nnx.Rngs,
  ):
    if len(nets) < 2:
      raise ValueError(f"RA-CNN needs at least two scales (nets), got {len(nets)}")
    if scale_input < 1 or scale1_input < 0 or apn_grid < 1 or apn_hidden < 1:
      raise ValueError(
        "scale_input, apn_grid and apn_hidden must be 1 or more and scale1_input 0 (the "
        f"input's own size) or more; got {scale_input}, {apn_grid}, {apn_hidden}, {scale1_input}"
      )
    if not 0 <= min_half_fraction <= max_half_fraction <= 0.5 or not 0 < apn_init_half_fraction <= 0.5:
      raise ValueError(
        "RA-CNN needs 0 <= min_half_fraction <= max_half_fraction <= 0.5 and apn_init_half_fraction in "
        f"(0, 0.5]; got {min_half_fraction}, {max_half_fraction}, {apn_init_half_fraction}"
      )
    self.nets = nnx.List(nets)
    self.num_scales, self.scale_input, self.scale1_input, self.k = len(nets), scale_input, scale1_input, k
    self.max_half_fraction = max_half_fraction
    self.min_half_fraction, self.keep_inside, self.apn_init_half_fraction = (
      min_half_fraction,
      keep_inside,
      apn_init_half_fraction,
    )
    dtype = nets[0].compute_dtype
    size = (scale_input, scale_input)
    conv = [output_width(n, lambda m, x: m.features(x)[0], size) for n in nets[:-1]]
    self.apns = nnx.List([APN(c, apn_grid, apn_hidden, dtype=dtype, rngs=rngs) for c in conv])
    pooled = sum(output_width(n, lambda m, x: m.head(m.features(x)[0])[0], size) for n in nets)
    self.fused = nnx.Linear(pooled, num_classes, dtype=dtype, rngs=rngs)

  def propose(self, s: int, f, image_hw):
    """Scale s's last conv features -> (B, 3) (t_x, t_y, t_l) in pixels of scale s's input (image_hw)."""
    out = self.apns[s](jax.lax.stop_gradient(f))
    return racnn.apn_box(
      out,
      image_hw,
      min_half_fraction=self.min_half_fraction,
      max_half_fraction=self.max_half_fraction,
      keep_inside=self.keep_inside,
    )

  def __call__(self, x, *, proposals_only: bool = False):
    """Normalised images -> {'logits' (fused), 'scale_logits', 'boxes' and 'txyl' (per transition, in the coarser
    scale's input pixels), 'image_boxes' (the same boxes in the image's pixels), 'apn_out' (= txyl), 'apn_targets',
    'input_hw' (per transition), 'features' (scale 1), 'zooms' (the inputs of scales 2..)}.
    proposals_only: stop before the last scale's network (the APN pretraining needs only the proposals and their
    targets; in training mode the last network would run, updating its batch statistics, even unused): no
    'logits', and 'scale_logits' of the other scales."""
    out = {
      "scale_logits": [],
      "boxes": [],
      "image_boxes": [],
      "zooms": [],
      "txyl": [],
      "apn_targets": [],
      "input_hw": [],
    }
    pre, dtype, image = [], x.dtype, x
    # The current scale's frame in the image's: pixel (u, v) is at offset + scale * (u, v), per axis (x, y).
    offset, scale = jnp.zeros((x.shape[0], 2), jnp.float32), jnp.ones((1, 2), jnp.float32)
    if self.scale1_input:
      x = images.resize_square(x, self.scale1_input)
      scale = jnp.array([image.shape[2], image.shape[1]], jnp.float32)[None] / self.scale1_input
    for s, net in enumerate(self.nets):
      if proposals_only and s == self.num_scales - 1:
        break
      f, feats = net.features(x)
      p, logits = net.head(f)
      if s == 0:
        out["features"] = feats | {"pre_logits": p}
      pre.append(p.astype(jnp.float32))
      out["scale_logits"].append(logits.astype(jnp.float32))
      if s == self.num_scales - 1:
        break
      hw = x.shape[1:3]
      txyl = self.propose(s, f, hw)
      box = racnn.square_box(txyl)
      out["txyl"].append(txyl)
      out["boxes"].append(box)
      out["input_hw"].append(tuple(hw))
      out["apn_targets"].append(racnn.apn_targets(f, hw, self.apn_init_half_fraction, self.keep_inside))
      size = (self.scale_input, self.scale_input)
      in_image = jnp.tile(offset, 2) + jnp.tile(scale, 2) * box  # the box in the image's frame
      out["image_boxes"].append(in_image)
      offset, scale = in_image[:, :2], (in_image[:, 2:] - in_image[:, :2]) / self.scale_input
      if self.scale1_input:  # the zoom samples the full-resolution image
        x = racnn.attention_crop(image, in_image, size, self.k).astype(dtype)
      else:
        x = racnn.attention_crop(x, box, size, self.k)
      out["zooms"].append(x)
    out["apn_out"] = out["txyl"]
    if proposals_only:
      return out
    out["logits"] = self.fused(jnp.concatenate(pre, axis=-1).astype(dtype)).astype(jnp.float32)
    return out
