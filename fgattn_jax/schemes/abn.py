"""ABN as a scheme: loss alpha * L_att + beta * L_per (the phase's loss weights 'att' and 'per'); evaluation
ranks by the perception branch and reports the attention branch beside it.

Multi-task (abn.task_classes non-empty): one task per entry of the batch's 'attributes' (e.g. facial
attributes, or the synthetic birds' part patterns), a map and both branches' logits per task; the losses
are the mean over tasks, and evaluation reports every task ('task0', 'task0_attention_branch', ...).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from fgattn_jax.errors import ConfigError
from fgattn_jax.models.abn import ABN, AFTER_POOL, default_branch
from fgattn_jax.ops import losses
from fgattn_jax.schemes.base import Scheme, backbone_from_config, check_stage, load_into


class ABNScheme(Scheme):
  name = "abn"
  loss_names = ("att", "per")
  multi_task = False  # set by build() from config.abn.task_classes

  def create(self, config):
    tasks = tuple(config.abn.task_classes)
    self.multi_task = bool(tasks)
    self.main_output = "task0" if tasks else "logits"
    # model.freeze_features freezes ABN's feature extractor only; the perception stages keep training.
    backbone = backbone_from_config(config, freeze_features=False)
    branch = config.abn.branch or default_branch(config.model.backbone)
    if branch == AFTER_POOL and not config.model.backbone.startswith("vgg"):
      raise ConfigError(
        f"abn.branch={AFTER_POOL!r} (after a VGG's last pooling) needs a VGG backbone, not "
        f"{config.model.backbone!r}: set --config.abn.branch to one of its stages, or '' for its "
        "default"
      )
    if branch != AFTER_POOL:
      check_stage(backbone, branch, "abn.branch")
    if config.abn.map_kernel not in (1, 3):
      self.refuse(f"abn.map_kernel must be 1 (the paper) or 3 (the official code), got {config.abn.map_kernel}")
    return ABN(
      backbone,
      tasks or config.data.num_classes,
      branch=branch,
      map_kernel=config.abn.map_kernel,
      residual=config.abn.residual,
      freeze_extractor=config.model.freeze_features,
      rngs=nnx.Rngs(config.seed + 1),
    )

  def check_data(self, config, source):
    # A task without its attribute would index past the batch's 'attributes' (clamped, silently wrong).
    tasks, have = tuple(config.abn.task_classes), tuple(source.attribute_classes)
    if tasks and tasks != have:
      fix = (
        f"set abn.task_classes to the data's {have}"
        if have
        else "leave abn.task_classes empty (one task on the labels) or use a data set with attributes"
      )
      raise ConfigError(
        f"abn.task_classes={tasks} does not match the attributes of {source.name} ({have or 'none'}): {fix}."
      )

  def groups(self, model):
    branches = nnx.All(nnx.Param, nnx.Not(model.extractor_filter()))
    return {"all": branches if model.freeze_extractor else nnx.Param, "branches": branches}

  def forward(self, model, images, batch, *, train, wanted=None):
    out, mask = model(images), batch["mask"]
    if not self.multi_task:
      return (
        {
          "att": losses.cross_entropy(out["attention_logits"], batch["label"], mask),
          "per": losses.cross_entropy(out["logits"], batch["label"], mask),
        },
        {"logits": out["logits"], "attention_branch": out["attention_logits"]},
      )
    targets = batch["attributes"]

    def mean_ce(per_task):
      return jnp.mean(jnp.stack([losses.cross_entropy(lg, targets[:, t], mask) for t, lg in enumerate(per_task)]))

    outputs = {f"task{t}": lg for t, lg in enumerate(out["logits"])}
    outputs |= {f"task{t}_attention_branch": lg for t, lg in enumerate(out["attention_logits"])}
    return {"att": mean_ce(out["attention_logits"]), "per": mean_ce(out["logits"])}, outputs

  def attention(self, model, images):
    return {"maps": model(images)["attention"]}

  def cam_net(self, model):
    # Single task: the perception branch ends in the backbone's own head. Multi-task heads read the same pooled
    # features but per-task copies of the maps; no single CAM then.
    return None if self.multi_task else (model.backbone, "logits")

  def labels_for(self, output, batch):
    if not self.multi_task:
      return batch["label"]
    return batch["attributes"][:, int(output.removeprefix("task").split("_")[0])]

  def load_pretrained(self, model, path):
    """torchvision weights into the backbone; the attention stage starts as a copy of the stage it copies."""
    loaded = set(load_into([(("backbone",), model.backbone)], path))
    model.copy_attention_stage()
    nxt = model.branch + 1
    loaded |= {("att_stage", *p[3:]) for p in loaded if p[1:3] == ("stages", nxt)}
    return frozenset(loaded)
