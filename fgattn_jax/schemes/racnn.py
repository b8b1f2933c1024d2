"""RA-CNN as a scheme. Losses (a phase weights any of them):

    cls         mean cross-entropy of the scales' classifiers (racnn.cls_over_scales='sum': the paper's sum)
    rank        sum over consecutive scales of max(0, p_t(s) - p_t(s + 1) + margin), p_t the softmax probability
                of the true class (ops.racnn.ranking_loss); it reaches the APNs through the zoom, and both
                scales' classifiers: the alternating schedule's 'apn' phase trains only the APNs (parameter group)
    fused       cross-entropy of the fused classifier (the scales' pooled features concatenated -> linear)
    apn_init    the APN pretraining: smooth-L1 (beta = 1) between the APNs' (t_x, t_y, t_l) and the squares on the
                peaks of the conv responses (ops.racnn.apn_targets), both divided by the scale's input side, so
                that the loss does not depend on the resolution (a 448-pixel and a 96-pixel run weigh it alike);
                in those units |d| <= 1, i.e. 0.5 d^2, mean over the three coordinates and the transitions
Parameter groups: 'apn' (the APNs), 'convs' (everything else: the backbones, their heads, the fused classifier),
'all'. Outputs for evaluation: 'logits' (fused, the main one), 'scale1'.. (each scale's classifier), 'average'
(log of the mean of the scales' softmax probabilities: logits-like, its argmax is the averaged prediction).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from fgattn_jax.models.racnn import RACNN
from fgattn_jax.ops import losses
from fgattn_jax.ops import racnn as racnn_ops
from fgattn_jax.schemes.base import Scheme, backbone_from_config, load_into


def _under(*names):
  return lambda path, x: isinstance(x, nnx.Param) and bool(path) and path[0] in names


class RACNNScheme(Scheme):
  name = "racnn"
  loss_names = ("cls", "rank", "fused", "apn_init")
  margin = 0.05
  cls_over_scales = "mean"

  def create(self, config):
    r = config.racnn
    if r.num_scales < 2:
      self.refuse(f"racnn.num_scales: RA-CNN needs at least two scales, got {r.num_scales}")
    if r.scale_input < 1 or r.scale1_input < 0 or r.apn_grid < 1 or r.apn_hidden < 1:
      self.refuse(
        "racnn.scale_input, .apn_grid and .apn_hidden must be 1 or more and .scale1_input 0 (the data's image_size) "
        f"or more; got {r.scale_input}, {r.apn_grid}, {r.apn_hidden}, {r.scale1_input}"
      )
    if not 0 <= r.min_half_fraction <= r.max_half_fraction <= 0.5 or not 0 < r.apn_init_half_fraction <= 0.5:
      self.refuse(
        "racnn needs 0 <= min_half_fraction <= max_half_fraction <= 0.5 and apn_init_half_fraction in (0, 0.5] (its "
        "racnn.* keys); "
        f"got {r.min_half_fraction}, {r.max_half_fraction}, {r.apn_init_half_fraction}"
      )
    # (A run saved before the key: the mean it was trained with.)
    self.cls_over_scales = r.get("cls_over_scales", "mean")
    if self.cls_over_scales not in ("mean", "sum"):
      self.refuse(f"racnn.cls_over_scales={self.cls_over_scales!r}: use 'mean' (this project's) or 'sum' (the paper's)")
    self.margin = r.margin
    nets = [backbone_from_config(config, seed_offset=0 if s == 0 else 1 + s) for s in range(r.num_scales)]
    return RACNN(
      nets,
      config.data.num_classes,
      scale_input=r.scale_input,
      apn_hidden=r.apn_hidden,
      apn_grid=r.apn_grid,
      k=r.k,
      min_half_fraction=r.min_half_fraction,
      max_half_fraction=r.max_half_fraction,
      keep_inside=r.keep_inside,
      apn_init_half_fraction=r.apn_init_half_fraction,
      scale1_input=r.scale1_input,
      rngs=nnx.Rngs(config.seed + 1),
    )

  def groups(self, model):
    return {"all": nnx.Param, "apn": _under("apns"), "convs": nnx.All(nnx.Param, nnx.Not(_under("apns")))}

  def forward(self, model, images, batch, *, train, wanted=None):
    # The APN pretraining alone (its phase) needs no last scale: its network is skipped.
    proposals_only = wanted is not None and set(wanted) == {"apn_init"}
    out = model(images, proposals_only=proposals_only)
    labels, mask = batch["label"], batch["mask"]
    ce = lambda logits: losses.cross_entropy(logits, labels, mask)  # noqa: E731
    scales = out["scale_logits"]
    apn_init = jnp.mean(
      jnp.stack(
        [
          racnn_ops.smooth_l1(pred / min(hw), target / min(hw), mask=mask)
          for pred, target, hw in zip(out["apn_out"], out["apn_targets"], out["input_hw"])
        ]
      )
    )
    if proposals_only:
      return {"apn_init": apn_init}, {f"scale{s + 1}": lg for s, lg in enumerate(scales)}
    # The paper's loss: its gradient also lowers the coarser scale's p_t(s). Holding p_t(s) constant was measured
    # worse, end to end and alternating (benchmarks/RESULTS.md, "The schemes read against DESIGN.md again").
    rank = sum(racnn_ops.ranking_loss(c, f, labels, self.margin, mask) for c, f in zip(scales[:-1], scales[1:]))
    result = {
      "cls": getattr(jnp, self.cls_over_scales)(jnp.stack([ce(lg) for lg in scales])),
      "rank": rank,
      "fused": ce(out["logits"]),
      "apn_init": apn_init,
    }
    log_probs = jnp.stack([jax.nn.log_softmax(lg, axis=-1) for lg in scales])
    average = jax.nn.logsumexp(log_probs, axis=0) - jnp.log(len(scales))
    outputs = {"logits": out["logits"]} | {f"scale{s + 1}": lg for s, lg in enumerate(scales)} | {"average": average}
    return result, outputs

  def attention(self, model, images):
    out = model(images)
    return {"boxes": jnp.stack(out["image_boxes"], axis=1), "crops": out["zooms"]}

  def cam_net(self, model):
    return model.nets[0], "scale1"

  def layer_input(self, occurrence, model):
    return "image" if occurrence == 1 else occurrence - 2  # scale k + 2 sees crops[k], the zoom of scale k + 1

  def load_pretrained(self, model, path):
    """torchvision weights into every scale's backbone."""
    return load_into([(("nets", s), net) for s, net in enumerate(model.nets)], path)
