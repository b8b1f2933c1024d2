"""The plain backbone classifier: the baseline every attention scheme is compared with."""

from __future__ import annotations

from flax import nnx

from fgattn_jax.config import ConfigError
from fgattn_jax.models import build_backbone, resnet
from fgattn_jax.ops import losses
from fgattn_jax.schemes.base import Scheme


def backbone_from_config(config, num_classes=None, seed_offset=0, freeze_features=None):
  m = config.model
  freeze = m.freeze_features if freeze_features is None else freeze_features
  kw = dict(width=m.width, frozen_bn=m.frozen_bn, freeze_features=freeze)
  if m.backbone.startswith("vgg"):
    kw["head"] = m.head
  if m.dropout is not None:
    kw["dropout"] = m.dropout
  if m.block:
    if m.backbone not in resnet.CIFAR_DEPTHS or m.block not in resnet.CIFAR_BLOCKS:
      raise ConfigError(f"model.block={m.block!r} applies to the CIFAR ResNets ({', '.join(resnet.CIFAR_DEPTHS)}) "
                        f"and is one of {', '.join(resnet.CIFAR_BLOCKS)}: model.backbone is {m.backbone!r}; "
                        "set --config.model.block='' or a CIFAR ResNet")
    kw["block"] = m.block
  return build_backbone(m.backbone, num_classes or config.data.num_classes, dtype=m.dtype,
                        rngs=nnx.Rngs(config.seed + seed_offset), **kw)


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
