"""MA-CNN as a scheme. Losses (a phase weights any of them):

    cls         object stream cross-entropy           parts     mean cross-entropy of the attention-pooled parts
    cng         channel-grouping loss Dis + lam Div   streams   mean cross-entropy of the part streams (crops)
                                                                and of the object crop's stream when on
    joint       joint classifier cross-entropy        group_init  regression of the grouping layers' channel
                                                                  weights to the k-means indicator targets
Parameter groups: 'grouping' (the channel-grouping layers), 'convs' (object stream and part classifiers),
'parts' (part streams, object-crop stream and joint classifier), 'all'. The phase named `init` first computes
the k-means targets from the current model (channel peaks over a sample of training images).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fgattn_jax.models.macnn import MACNN
from fgattn_jax.ops import grouping_init, losses
from fgattn_jax.ops import macnn as macnn_ops
from fgattn_jax.ops.images import normalize
from fgattn_jax.schemes.base import Scheme, backbone_from_config, check_stage, load_into


def _under(*names):
  return lambda path, x: isinstance(x, nnx.Param) and bool(path) and path[0] in names


class MACNNScheme(Scheme):
  name = "macnn"
  loss_names = ("cls", "parts", "cng", "streams", "joint", "group_init")
  lam, margin = 2.0, 0.02

  def create(self, config):
    m = config.macnn
    if m.num_parts < 1 or m.part_input < 1 or m.object_input < 0 or not 0 < m.crop_fraction <= 1:
      self.refuse(
        "macnn.num_parts and .part_input must be 1 or more, .object_input 0 or more and .crop_fraction in (0, 1]; "
        f"got {m.num_parts}, {m.part_input}, {m.object_input}, {m.crop_fraction}"
      )
    for key, value, allowed in (("part_maps", m.part_maps, ("centred", "deploy", "paper")),
                                ("part_pooling", m.part_pooling, ("weighted", "sum")),
                                ("crop_reference", m.crop_reference, ("image", "object"))):  # fmt: skip
      if value not in allowed:
        self.refuse(f"macnn.{key} must be {' or '.join(map(repr, allowed))}, got {value!r}")
    if m.object_crop and not m.part_streams:
      self.refuse("macnn.object_crop is a stream beside the part streams: it needs macnn.part_streams=True")
    self.lam, self.margin = m.lam, m.margin
    backbone = backbone_from_config(config)
    check_stage(backbone, m.feature_stage or -1, "macnn.feature_stage")  # ('': the last stage)
    part_nets = (
      [backbone_from_config(config, seed_offset=2 + i) for i in range(m.num_parts)] if m.part_streams else None
    )
    object_net = backbone_from_config(config, seed_offset=2 + m.num_parts) if m.object_crop else None
    return MACNN(
      backbone,
      config.data.num_classes,
      m.num_parts,
      feature_stage=m.feature_stage or -1,
      part_nets=part_nets,
      crop_fraction=m.crop_fraction,
      crop_reference=m.crop_reference,
      object_net=object_net,
      part_input=m.part_input,
      part_maps=m.part_maps,
      part_pooling=m.part_pooling,
      object_input=m.object_input,
      rngs=nnx.Rngs(config.seed + 1),
    )

  def groups(self, model):
    return {
      "all": nnx.Param,
      "grouping": _under("grouping"),
      "convs": nnx.All(nnx.Param, nnx.Not(_under("grouping", "part_nets", "object_net", "joint"))),
      "parts": _under("part_nets", "object_net", "joint"),
    }

  # How far each loss needs the model to run (MACNN.__call__'s `until`): the alternating schedule's phases before
  # 'parts' run neither the part streams nor, in the grouping phases, the object stream's last stages.
  NEEDS = {
    "cng": "parts",
    "group_init": "parts",
    "parts": "parts",
    "cls": "object",
    "streams": "joint",
    "joint": "joint",
  }
  LEVELS = ("parts", "object", "joint")

  def forward(self, model, images, batch, *, train, wanted=None):
    wanted = self.loss_names if wanted is None else wanted
    until = max((self.NEEDS[k] for k in wanted), key=self.LEVELS.index, default="joint")
    out = model(images, until=until)
    labels, mask = batch["label"], batch["mask"]
    ce = lambda logits: losses.cross_entropy(logits, labels, mask)  # noqa: E731
    mean_ce = lambda many: jnp.mean(jnp.stack([ce(lg) for lg in many]))  # noqa: E731
    cng, _ = macnn_ops.channel_grouping_loss(out["maps"], lam=self.lam, margin=self.margin, mask=mask)
    # Every loss the run reached (the cheap ones beside the wanted ones: their curves show what a phase does to them).
    result = {
      "parts": mean_ce(out["part_logits"]),
      "cng": cng,
      "group_init": losses.masked_mean(
        jnp.mean((out["channel_weights"] - model.group_targets[None]) ** 2, axis=(1, 2)), mask
      ),
    }
    if until == "parts":
      return result, {}
    result["cls"], outputs = ce(out["object"]), {"object": out["object"]}
    if until == "object":
      return result, outputs
    streams = out.get("stream_logits", out["part_logits"])
    object_crop = [out["object_crop_logits"]] if "object_crop_logits" in out else []
    result |= {"streams": mean_ce(object_crop + streams), "joint": ce(out["logits"])}
    outputs = {"logits": out["logits"]} | outputs
    outputs |= {"object_crop": lg for lg in object_crop}
    outputs |= {f"part{i}": lg for i, lg in enumerate(streams)}
    return result, outputs

  def attention(self, model, images):
    out = model(images)
    parts = {"boxes": out["boxes"], "crops": list(jnp.moveaxis(out["patches"], 1, 0))} if "boxes" in out else {}
    return {"part_maps": out["maps"]} | parts

  def cam_net(self, model):
    return model.backbone, "object"

  def layer_input(self, occurrence, model):
    # The forward's order: the object stream (the image), the part streams (crops[k]), the object-crop stream.
    if occurrence == 1:
      return "image"
    return occurrence - 2 if occurrence - 2 < len(model.part_nets or ()) else None

  def load_pretrained(self, model, path):
    """torchvision weights into the object stream, every part stream and the object-crop stream."""
    nets = [(("backbone",), model.backbone)]
    nets += [(("part_nets", i), net) for i, net in enumerate(model.part_nets or [])]
    nets += [(("object_net",), model.object_net)] if model.object_net is not None else []
    return load_into(nets, path)

  def before_phase(self, key, model, sample_batches):
    """Phase 'init': k-means of the channels' peak positions over a sample of training images -> targets."""
    if key != "init":
      return
    model.eval()
    graphdef, state = nnx.split(model)
    features = jax.jit(lambda st, x: nnx.merge(graphdef, st).attend(x)[0].astype(jnp.float32))
    dtype = model.backbone.compute_dtype
    sample = [
      np.asarray(features(state, normalize(jnp.asarray(b["image"][b["mask"]]), dtype))) for b in sample_batches()
    ]
    labels, _ = grouping_init.kmeans(grouping_init.channel_peaks(np.concatenate(sample)), model.num_parts)
    model.group_targets.set_value(jnp.asarray(grouping_init.indicator_targets(labels, model.num_parts)))
    model.train()
