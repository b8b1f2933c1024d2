"""ABN as a scheme: loss alpha * L_att + beta * L_per (the phase's loss weights 'att' and 'per'); evaluation
ranks by the perception branch and reports the attention branch beside it."""

from __future__ import annotations

from flax import nnx

from fgattn_jax.models import pretrained
from fgattn_jax.models.abn import ABN, default_branch
from fgattn_jax.ops import losses
from fgattn_jax.schemes.base import Scheme
from fgattn_jax.schemes.baseline import backbone_from_config


class ABNScheme(Scheme):
  name = "abn"
  loss_names = ("att", "per")

  def build(self, config):
    # model.freeze_features freezes ABN's feature extractor only; the perception stages keep training.
    backbone = backbone_from_config(config, freeze_features=False)
    branch = config.abn.branch or default_branch(config.model.backbone)
    return ABN(backbone, config.data.num_classes, branch=branch, map_kernel=config.abn.map_kernel,
               residual=config.abn.residual, freeze_extractor=config.model.freeze_features,
               rngs=nnx.Rngs(config.seed + 1))

  def groups(self, model):
    branches = nnx.All(nnx.Param, nnx.Not(model.extractor_filter()))
    return {"all": branches if model.freeze_extractor else nnx.Param, "branches": branches}

  def forward(self, model, images, labels, mask, *, train):
    out = model(images)
    return ({"att": losses.cross_entropy(out["attention_logits"], labels, mask),
             "per": losses.cross_entropy(out["logits"], labels, mask)},
            {"logits": out["logits"], "attention_branch": out["attention_logits"]})

  def load_pretrained(self, model, path):
    """torchvision weights into the backbone; the attention stage starts as a copy of the stage it copies."""
    loaded = {("backbone", *p) for p in pretrained.load_torchvision(model.backbone, path).paths}
    model.copy_attention_stage()
    nxt = model.branch + 1
    loaded |= {("att_stage", *p[3:]) for p in loaded if p[1:3] == ("stages", nxt)}
    return frozenset(loaded)
