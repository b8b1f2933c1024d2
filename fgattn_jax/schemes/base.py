"""What a scheme declares. The engine calls these and nothing else."""

from __future__ import annotations

from flax import nnx

from fgattn_jax.errors import ConfigError
from fgattn_jax.models import build_backbone, pretrained, registry, resnet


class Scheme:
  name = "scheme"
  # Loss names that forward() returns; a phase weights any subset of them.
  loss_names: tuple[str, ...] = ()
  # The output (logits) that evaluation ranks the run by, among those forward() returns.
  main_output = "logits"

  def build(self, config) -> nnx.Module:
    """The model (create) with its parameters drawn in the layout that compiles fast (registry.initializing). A
    value the model cannot be built with is a ConfigError (a one-line error in the commands). The models name their
    constructor's arguments; the config keys are the scheme's business: create() maps the keys to arguments, and the
    message says which section of the config they come from."""
    with registry.initializing():
      try:
        return self.create(config)
      except ConfigError:
        raise
      except ValueError as e:
        section = self.name if self.name in config else "model"
        raise ConfigError(f"{self.name} cannot be built from this config (its {section}.* keys): {e}") from e

  def create(self, config) -> nnx.Module:
    """The model, float32 parameters, compute dtype from config.model.dtype. Checks the config's values first
    (refuse), naming the keys: the models name only their constructor's arguments."""
    raise NotImplementedError

  def refuse(self, problem: str):
    """A config value the model cannot be built with, as a one-line error naming its key."""
    raise ConfigError(f"{self.name} cannot be built from this config: {problem}")

  def groups(self, model) -> dict[str, nnx.filterlib.Filter]:
    """Parameter groups that phases name in `trains`; 'all' must exist."""
    return {"all": nnx.Param}

  def forward(self, model, images, batch, *, train: bool, wanted=None):
    """Normalised images (compute dtype) and the batch ('label', 'mask', and e.g. 'attributes') ->
    ({loss name: float32 scalar}, {output name: float32 logits}). wanted: the loss names the caller weights (None:
    all of them, and every output); a scheme may then leave out the work that only the others need, and the losses
    and outputs it did not compute (a training phase's step)."""
    raise NotImplementedError

  def labels_for(self, output: str, batch):
    """The targets an output's logits are scored against (evaluation, training accuracy)."""
    return batch["label"]

  def attention(self, model, images) -> dict:
    """The scheme's own attention on normalised images, for drawing and the localisation metrics; any of
    'maps' (B, h, w, T) float32, higher where attended (ABN's map, one per task), 'part_maps' (B, h, w, N) (MA-CNN's,
    one per part), 'boxes' (B, N, 4) in input pixels (x0, y0, x1, y1: MA-CNN's part crops, RA-CNN's box at each
    scale), 'crops' (a list of (B, s, s, C) normalised images: what the scheme zoomed in on)."""
    return {}

  def cam_net(self, model):
    """(the backbone whose last stage and global-average-pool + linear head CAM reads, the output name those
    logits have), or None where no such head classifies."""
    return None

  def layer_input(self, occurrence: int, model):
    """What the `occurrence`-th run of a stage name (saliency.parse_layer: conv5_4#2 is the second) sees: 'image'
    (the input's frame: ABN's attention stage, a stage run once), the index of attention()'s 'crops' it reads
    (RA-CNN's scales, MA-CNN's part streams: a Grad-CAM there is in that crop's frame), or None (an input
    attention() does not return, e.g. MA-CNN's object crop)."""
    return "image"

  def check_data(self, config, source) -> None:
    """Raises ConfigError when the data source cannot feed this scheme as configured (before any compiling)."""

  def before_phase(self, key: str, model, sample_batches) -> None:
    """Called as a phase starts (not when resuming inside it); sample_batches() gives a few evaluation-mode
    batches of training examples spread over every class (e.g. MA-CNN's channel-grouping initialisation)."""

  def load_pretrained(self, model, path: str) -> frozenset:
    """Loads torchvision weights into the backbone; returns the nnx paths of the parameters it filled."""
    return pretrained.load_torchvision(model, path).paths


def load_into(nets, path: str) -> frozenset:
  """torchvision weights into several backbones of one model (MA-CNN's streams, RA-CNN's scales), the file read
  once. nets: (path prefix of the backbone in the model, backbone) pairs -> the model's nnx paths filled."""
  state_dict = pretrained.read_state_dict(path)
  return frozenset((*prefix, *p) for prefix, net in nets for p in pretrained.load_torchvision(net, state_dict).paths)


def backbone_from_config(config, num_classes=None, seed_offset=0, freeze_features=None):
  """The backbone config.model describes (every scheme builds its networks with it): the config's keys checked and
  mapped to the constructor's arguments here, where the scheme meets the config, not in the models."""
  m = config.model
  freeze = m.freeze_features if freeze_features is None else freeze_features
  kw = dict(width=m.width, frozen_bn=m.frozen_bn, freeze_features=freeze)
  if m.backbone.startswith("vgg"):
    if m.head not in ("classifier", "gap"):
      raise ConfigError(
        f"model.head of a VGG must be 'classifier' (torchvision's FC-4096 x2) or 'gap', got {m.head!r}: set "
        "--config.model.head"
      )
    kw["head"] = m.head
  if m.dropout is not None:
    kw["dropout"] = m.dropout
  if m.block:
    if m.backbone not in resnet.CIFAR_DEPTHS or m.block not in resnet.CIFAR_BLOCKS:
      raise ConfigError(
        f"model.block={m.block!r} applies to the CIFAR ResNets ({', '.join(resnet.CIFAR_DEPTHS)}) "
        f"and is one of {', '.join(resnet.CIFAR_BLOCKS)}: model.backbone is {m.backbone!r}; "
        "set --config.model.block='' or a CIFAR ResNet"
      )
    kw["block"] = m.block
  return build_backbone(
    m.backbone, num_classes or config.data.num_classes, dtype=m.dtype, rngs=nnx.Rngs(config.seed + seed_offset), **kw
  )


def check_stage(backbone, stage, key: str) -> None:
  """A stage the config names by key (abn.branch, macnn.feature_stage) must be one the backbone has (a VGG stage name
  left in a config switched to a ResNet is the usual slip)."""
  if isinstance(stage, str) and stage not in backbone.stage_names:
    raise ConfigError(
      f"{key} {stage!r} is not a stage of this backbone ({', '.join(backbone.stage_names)}): set --config.{key} to "
      "one of them"
    )
