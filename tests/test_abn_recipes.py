"""ABN's presets are the networks and recipes its authors ran: parameter counts equal to PyTorch models built as
ABN's official code builds them (models/cifar/resnet.py, wrn.py: written out below from their description, not
imported), the CIFAR block rule, WRN dropout and the x0.2 decays, the ImageNet crop, the branch after VGG's pool5."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from torch import nn

from configs import abn as abn_config
from configs import baseline as baseline_config
from fgattn_jax.config import ConfigError
from fgattn_jax.models import build_backbone
from fgattn_jax.models.abn import ABN
from fgattn_jax.schemes import get_scheme


def torch_count(module: nn.Module) -> int:
  return sum(p.numel() for p in module.parameters())


def jax_count(config) -> int:
  """The parameter count of the scheme's model for `config`, built abstractly (shapes only: a WRN-28-10 with its
  attention stage is 60M parameters)."""
  model = nnx.eval_shape(lambda: get_scheme(config.scheme).build(config))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def bn_conv(cin, cout, k, stride=1):
  return [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]


class Bottleneck(nn.Module):
  def __init__(self, cin, planes, stride):
    super().__init__()
    self.body = nn.Sequential(
      *bn_conv(cin, planes, 1),
      nn.ReLU(),
      *bn_conv(planes, planes, 3, stride),
      nn.ReLU(),
      *bn_conv(planes, 4 * planes, 1),
    )
    self.short = nn.Sequential(*bn_conv(cin, 4 * planes, 1, stride)) if stride != 1 or cin != 4 * planes else None


class Basic(nn.Module):
  def __init__(self, cin, planes, stride):
    super().__init__()
    self.body = nn.Sequential(*bn_conv(cin, planes, 3, stride), nn.ReLU(), *bn_conv(planes, planes, 3))
    self.short = nn.Sequential(*bn_conv(cin, planes, 1, stride)) if stride != 1 or cin != planes else None


def attention_head(width, classes, map_kernel=3):
  """ABN's branch after its stage: BN, 1x1 conv to K, BN, ReLU; logits 1x1 conv K -> K; map conv K -> 1, BN."""
  return nn.ModuleList(
    [
      nn.BatchNorm2d(width),
      nn.Conv2d(width, classes, 1, bias=False),
      nn.BatchNorm2d(classes),
      nn.Conv2d(classes, classes, 1, bias=False),
      nn.Conv2d(classes, 1, map_kernel, padding=map_kernel // 2, bias=False),
      nn.BatchNorm2d(1),
    ]
  )


class ABNCifarResNet(nn.Module):
  """ABN code's CIFAR ResNet-depth: n = (depth - 2) / 6 blocks per stage, Bottleneck from depth 44; its attention
  stage a stride-1 copy of the third stage."""

  def __init__(self, depth, classes, attention=True, block=None):
    super().__init__()
    n, block = (depth - 2) // 6, block or (Bottleneck if depth >= 44 else Basic)
    out = 4 if block is Bottleneck else 1
    self.stem = nn.Sequential(*bn_conv(3, 16, 3))
    stages, cin = [], 16
    for planes, stride in ((16, 1), (32, 2), (64, 2)):
      stages.append(
        nn.Sequential(*[block(cin if i == 0 else planes * out, planes, stride if i == 0 else 1) for i in range(n)])
      )
      cin = planes * out
    self.stages = nn.Sequential(*stages)
    if attention:
      self.att_stage = nn.Sequential(*[block(32 * out if i == 0 else 64 * out, 64, 1) for i in range(n)])
      self.att = attention_head(64 * out, classes)
    self.fc = nn.Linear(64 * out, classes)


class WideBlock(nn.Module):
  def __init__(self, cin, cout, stride):
    super().__init__()
    self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.short = nn.Conv2d(cin, cout, 1, stride, bias=False) if cin != cout else None


class ABNWideResNet(nn.Module):
  def __init__(self, depth, k, classes):
    super().__init__()
    n, widths = (depth - 4) // 6, (16, 16 * k, 32 * k, 64 * k)
    self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)

    def stage(cin, cout, stride):
      return nn.Sequential(*[WideBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(n)])

    self.stages = nn.Sequential(
      stage(widths[0], widths[1], 1), stage(widths[1], widths[2], 2), stage(widths[2], widths[3], 2)
    )
    self.bn = nn.BatchNorm2d(widths[3])
    self.att_stage = stage(widths[2], widths[3], 1)
    self.att = attention_head(widths[3], classes)
    self.fc = nn.Linear(widths[3], classes)


@pytest.mark.parametrize(
  "preset, reference, millions",
  [
    ("cifar100_resnet110", lambda: ABNCifarResNet(110, 100), 3.1),
    ("cifar100_resnet110_basic", lambda: ABNCifarResNet(110, 100, block=Basic), 3.1),
    ("cifar100_wrn28_10", lambda: ABNWideResNet(28, 10, 100), 60.0),
  ],
)
def test_abn_cifar_presets_have_the_authors_parameter_counts(preset, reference, millions):
  with torch.device("meta"):  # shapes only
    expected = torch_count(reference())
  assert jax_count(abn_config.get_config(preset)) == expected
  assert abs(expected / 1e6 - millions) < 0.1 * millions


def test_cifar_resnet110_blocks_and_the_authors_rule():
  """The backbone alone: ABN code's ResNet-110 (Bottleneck, 164 weighted layers, width 256) and He et al.'s
  (BasicBlock, width 64) both have about 1.7M parameters; the rule picks Bottleneck from depth 44."""

  def backbone_count(name, block):
    model = nnx.eval_shape(lambda: build_backbone(name, 100, block=block))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param))), model

  with torch.device("meta"):
    theirs = torch_count(ABNCifarResNet(110, 100, attention=False))
  ours, model = backbone_count("resnet110", "auto")
  assert ours == theirs and 1.7e6 < ours < 1.75e6
  assert model.head.fc.in_features == 256 and len(model.stages[1].blocks) == 18
  convs = sum(1 for _, node in nnx.iter_graph(model) if isinstance(node, nnx.Conv))
  shortcuts = sum(1 for _, node in nnx.iter_graph(model) if type(node).__name__ == "Downsample")
  assert convs - shortcuts + 1 == 164  # weighted layers: the stem, 3 per block, the class layer
  basic, basic_model = backbone_count("resnet110", "")
  with torch.device("meta"):
    assert basic == torch_count(ABNCifarResNet(110, 100, attention=False, block=Basic))
  assert basic_model.head.fc.in_features == 64 and 1.7e6 < basic < 1.75e6
  assert backbone_count("resnet32", "auto")[1].head.fc.in_features == 64  # below 44: BasicBlock
  assert backbone_count("resnet44", "auto")[1].head.fc.in_features == 256
  assert backbone_count("resnet20", "bottleneck")[1].head.fc.in_features == 256


def test_presets_as_the_authors_ran_them():
  resnet = abn_config.get_config("cifar100_resnet110")
  assert (resnet.model.backbone, resnet.model.block, resnet.abn.map_kernel) == ("resnet110", "auto", 3)
  assert abn_config.get_config("cifar100_resnet110_basic").model.block == "basic"
  wrn = abn_config.get_config("cifar100_wrn28_10")
  assert wrn.model.dropout == 0.3 and wrn.phases.main.optim.weight_decay == 5e-4
  assert tuple(wrn.phases.main.schedule.boundaries) == (150, 225) and wrn.phases.main.schedule.decay == 0.2
  assert resnet.phases.main.schedule.decay == 0.1 and resnet.phases.main.epochs == 300
  assert abn_config.get_config("imagenet_resnet50").data.augment.crop == "random_resized"
  assert baseline_config.get_config("cifar100").model.block == ""  # the baseline presets keep He et al.'s network


def test_wrn_dropout_from_the_config_reaches_every_block():
  config = abn_config.get_config("cifar100_wrn28_10")
  config.model.width = 0.1
  model = get_scheme("abn").build(config)
  rates = [node.rate for _, node in nnx.iter_graph(model) if isinstance(node, nnx.Dropout)]
  # In every block, the attention stage's 4 too; none before the class layer (the WRN paper's placement).
  assert sorted(rates) == [0.0] + [0.3] * (4 * 3 + 4)
  config.model.dropout = None
  assert {
    node.rate for _, node in nnx.iter_graph(get_scheme("abn").build(config)) if isinstance(node, nnx.Dropout)
  } == {0.0}


def test_block_choice_refused_off_cifar_resnets():
  config = abn_config.get_config()
  config.model.block = "bottleneck"  # the default backbone is a VGG
  with pytest.raises(ConfigError, match="model.block='bottleneck' applies to the CIFAR ResNets"):
    get_scheme("abn").build(config)
  config.model.update(backbone="resnet56", block="wide")
  with pytest.raises(ConfigError, match="one of basic, bottleneck, auto"):
    get_scheme("abn").build(config)


def test_branch_after_vgg_pool5():
  """The 7x7 map at 224 (2x2 at 64): the perception branch is the classifier head on g (1 + M), g = pool5's
  output, with no second pooling."""
  backbone = build_backbone("vgg16", 5, width=1 / 16, head="classifier", dropout=0.0, rngs=0)
  model = ABN(backbone, 5, branch="pool5", rngs=nnx.Rngs(1))
  model.eval()
  x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
  out = nnx.jit(lambda m, x: m(x))(model, x)
  assert out["attention"].shape == (2, 2, 2, 1) and out["logits"].shape == (2, 5)
  assert model.att_stage is None and model.branch == len(backbone.stages) - 1
  # Every stage is the extractor: a frozen extractor trains the branch and the head only.
  branches = nnx.All(nnx.Param, nnx.Not(model.extractor_filter()))
  trained = {p[:2] for p, _ in nnx.to_flat_state(nnx.state(model, branches))}
  assert ("backbone", "head") in trained and ("backbone", "stages") not in trained
  # The perception logits are the head on g (1 + M), g = pool5.
  g = nnx.jit(
    lambda b, x: jax.lax.reduce_window(b.features(x)[0], -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
  )(backbone, x)
  expected = nnx.jit(lambda b, g, m: b.head(g * (1 + m), pooled=True)[1])(backbone, g, out["attention"])
  np.testing.assert_allclose(out["logits"], expected, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="pool5"):
    ABN(build_backbone("resnet18", 5, width=1 / 16, rngs=0), 5, branch="pool5", rngs=nnx.Rngs(1))
  config = abn_config.get_config()
  config.model.backbone, config.abn.branch = "resnet18", "pool5"
  with pytest.raises(ConfigError, match="needs a VGG backbone"):
    get_scheme("abn").build(config)
