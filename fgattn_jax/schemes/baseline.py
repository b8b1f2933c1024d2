"""The plain backbone classifier: the baseline every attention scheme is compared with."""

from __future__ import annotations

from flax import nnx

from fgattn_jax.ops import losses
from fgattn_jax.schemes.base import Scheme, backbone_from_config


class Baseline(Scheme):
  name = "baseline"
  loss_names = ("ce",)

  def create(self, config):
    return backbone_from_config(config)

  def groups(self, model):
    # 'all' respects model.freeze_features; 'head' is the classifier-only warm-up.
    return {"all": model.trainable(), "head": nnx.All(nnx.Param, nnx.PathContains("head"))}

  def cam_net(self, model):
    return model, "logits"

  def forward(self, model, images, batch, *, train, wanted=None):
    logits, _ = model(images)
    return {"ce": losses.cross_entropy(logits, batch["label"], batch["mask"])}, {"logits": logits}
