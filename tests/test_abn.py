"""ABN: outputs on every backbone family, the map, both perception inputs and map kernels, the loss,
where gradients go, frozen extractor, pretrained weights, multi-task."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from gradient_routes import loss_jacobian, norm
from phase_step import batch_stats, changed
from torch_reference import TorchResNet, randomize_

from configs import abn as abn_config
from fgattn_jax.config import ConfigError
from fgattn_jax.models import build_backbone
from fgattn_jax.models.abn import ABN, default_branch
from fgattn_jax.ops import localization
from fgattn_jax.schemes import get_scheme
from fgattn_jax.training import loop

X = jax.random.normal(jax.random.key(0), (2, 64, 48, 3))
# The model's forward as one program: op by op, a ResNet's forward (and gradient) takes seconds more per call.
forward = nnx.jit(lambda model, x: model(x))


def abn(name, tasks=5, **kw):
  extra = {"head": "gap"} if name.startswith("vgg") else {}
  backbone = build_backbone(
    name, tasks if isinstance(tasks, int) else 2, width=1 / 16 if "wrn" not in name else 0.1, rngs=0, **extra
  )
  return ABN(backbone, tasks, branch=kw.pop("branch", default_branch(name)), rngs=nnx.Rngs(1), **kw)


@pytest.mark.parametrize(
  "name, branch_stage",
  [
    ("resnet18", "layer3"),
    ("resnet50", "layer3"),
    ("resnet20", "layer2"),
    ("wrn16_8", "layer2"),
    ("vgg11_bn", "conv5_2"),
    ("vgg16", "conv5_3"),
  ],
)
def test_outputs_and_map_on_every_family(name, branch_stage):
  model = abn(name)  # training mode: batch statistics keep an untrained deep net's map off saturation
  assert model.backbone.stage_names[model.branch] == branch_stage
  out = forward(model, X)
  assert out["logits"].shape == out["attention_logits"].shape == (2, 5)
  assert out["logits"].dtype == jnp.float32
  g = out["features"][branch_stage]
  assert out["attention"].shape == (2, *g.shape[1:3], 1)  # the branch stage's resolution
  m = np.asarray(out["attention"])
  assert m.min() >= 0 and m.max() <= 1 and np.ptp(m) > 0


def test_branch_by_stage_name_and_bad_names():
  model = abn("vgg11_bn", branch="conv4_2")
  model.eval()
  out = forward(model, X)
  assert out["attention"].shape == (2, 8, 6, 1)  # conv4 at stride 8, the copied conv5 block unpooled
  with pytest.raises(ValueError, match="not a stage.*conv5_2"):
    abn("vgg11_bn", branch="conv6_1")
  with pytest.raises(ValueError, match="map_kernel"):
    abn("resnet18", map_kernel=5)


def test_perception_input_variants_and_map_kernels():
  outs = {}
  for residual in (True, False):
    model = abn("resnet18", residual=residual)
    model.eval()
    outs[residual] = forward(model, X)
  # Same weights (same seeds); only the perception input differs: g (1 + M) against g M.
  np.testing.assert_array_equal(outs[True]["attention"], outs[False]["attention"])
  assert not np.allclose(outs[True]["logits"], outs[False]["logits"])
  assert abn("resnet18", map_kernel=1).att_map.kernel.get_value().shape[1:3] == (1, 1)
  assert abn("resnet18", map_kernel=3).att_map.kernel.get_value().shape[1:3] == (3, 3)


def log_softmax_ce(logits, labels):
  logits = np.asarray(logits, np.float64)
  z = logits - logits.max(-1, keepdims=True)
  return np.mean(np.log(np.exp(z).sum(-1)) - z[np.arange(len(labels)), labels])


def test_loss_is_the_weighted_sum_of_the_two_cross_entropies():
  scheme = get_scheme("abn")
  model = abn("resnet18")
  model.eval()
  labels, mask = jnp.array([1, 3]), jnp.array([True, True])
  losses, outputs = scheme.forward(model, X, {"label": labels, "mask": mask}, train=False)
  out = forward(model, X)
  np.testing.assert_allclose(losses["att"], log_softmax_ce(out["attention_logits"], [1, 3]), rtol=1e-5)
  np.testing.assert_allclose(losses["per"], log_softmax_ce(out["logits"], [1, 3]), rtol=1e-5)
  assert set(outputs) == {"logits", "attention_branch"}


def test_gradients_reach_both_branches_and_the_shared_extractor():
  batch = {"label": jnp.array([1, 3]), "mask": jnp.array([True, True])}
  jac = loss_jacobian(get_scheme("abn"), abn("resnet18"), X, batch, ("att", "per"))  # both in one program
  stages = jac["backbone"]["stages"]
  parts = {
    "extractor0": stages[0],
    "extractor1": stages[1],
    "extractor3": stages[3],
    "perception": stages[4],
    "head": jac["backbone"]["head"],
  } | {k: jac[k] for k in ("att_stage", "att_conv", "att_map", "att_logits")}
  att, per = ({k: norm(v, i) for k, v in parts.items()} for i in (0, 1))
  # Both losses train the shared extractor; the attention loss its branch, the perception loss its stage and head.
  assert all(g[k] > 0 for g in (att, per) for k in ("extractor0", "extractor1", "extractor3"))
  assert att["att_stage"] > 0 and att["att_conv"] > 0 and att["att_logits"] > 0
  assert per["perception"] > 0 and per["head"] > 0
  # The perception loss alone trains the map through g (1 + M); the attention loss alone leaves the perception
  # branch untouched.
  assert per["att_map"] > 0 and per["att_logits"] == 0
  assert att["perception"] == 0 and att["head"] == 0


def test_frozen_extractor_trains_only_the_branches():
  model = abn("resnet18", freeze_extractor=True)
  groups = get_scheme("abn").groups(model)
  trained = {p[:3] for p, _ in nnx.to_flat_state(nnx.state(model, groups["all"]))}
  assert ("backbone", "stages", 3) not in trained and ("backbone", "stages", 4) in trained
  assert any(p[0] == "att_conv" for p in trained)
  stats = batch_stats(model.backbone.stages[1])
  model(X * 3 + 1)  # training mode: the frozen extractor's statistics stay
  assert not changed(stats, batch_stats(model.backbone.stages[1]))


def test_pretrained_weights_fill_the_backbone_and_the_attention_stage_copy(tmp_path):
  from safetensors.numpy import save_file

  ref = randomize_(TorchResNet("resnet18", 1000, width=1 / 16))
  save_file({k: v.numpy() for k, v in ref.state_dict().items()}, str(tmp_path / "r18.safetensors"))
  model = abn("resnet18", tasks=10)
  loaded = get_scheme("abn").load_pretrained(model, str(tmp_path / "r18.safetensors"))
  copy, source = nnx.state(model.att_stage), nnx.state(model.backbone.stages[4])
  for a, b in zip(jax.tree.leaves(copy), jax.tree.leaves(source)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert ("att_stage", "blocks", 0, "conv1", "kernel") in loaded
  assert ("backbone", "stages", 0, "conv1", "kernel") in loaded and ("att_conv", "kernel") not in loaded
  assert model.att_stage.blocks[0].conv1.strides == (1, 1) and model.backbone.stages[4].blocks[0].conv1.strides == (
    2,
    2,
  )


def test_multi_task_has_a_map_and_heads_per_task():
  model = abn("resnet18", tasks=(3, 3, 2), map_kernel=3)
  model.eval()
  out = forward(model, X)
  assert [lg.shape for lg in out["logits"]] == [(2, 3), (2, 3), (2, 2)]
  assert [lg.shape for lg in out["attention_logits"]] == [(2, 3), (2, 3), (2, 2)]
  assert out["attention"].shape[-1] == 3

  def task0(m):
    o = m(X)
    return jnp.sum(o["logits"][0]) + jnp.sum(o["attention_logits"][0])

  kernel = np.asarray(nnx.jit(nnx.grad(task0))(model)["att_map"]["kernel"])  # (out, kh, kw, in): layers.Conv
  assert np.abs(kernel[0]).sum() > 0 and np.abs(kernel[1:]).sum() == 0  # task 0 trains map 0 only


def test_pointing_game():
  maps = jnp.zeros((3, 4, 4)).at[0, 1, 2].set(1).at[1, 3, 0].set(1).at[2, 0, 0].set(1)
  boxes = jnp.array([[32, 16, 48, 32], [0, 0, 64, 32], [np.nan] * 4])
  np.testing.assert_allclose(localization.peak_points(maps, (64, 64))[0], [40, 24])
  assert localization.pointing_game(maps, boxes, (64, 64)).tolist() == [True, False, False]
  np.testing.assert_allclose(localization.box_area_fraction(boxes[:2], (64, 64)), [1 / 16, 0.5])


def test_config_presets_build():
  for preset in abn_config.PRESETS:
    c = abn_config.get_config(preset or None)
    assert c.scheme == "abn" and set(c.phases.main.losses.keys()) == {"att", "per"}
  frozen = abn_config.get_config("cub_frozen")
  assert frozen.model.freeze_features and dict(frozen.phases.main.losses) == {"att": 0.25, "per": 1.0}


def test_multi_task_trains_end_to_end_on_the_part_attributes(tmp_path):
  from engine_config import tiny

  c = tiny(main=3)
  c.scheme = "abn"
  c.abn = abn_config.get_config("synthetic_parts").abn
  c.model.backbone, c.model.head, c.abn.branch = "vgg11_bn", "gap", "conv4_2"
  c.phases.main.losses = {"att": 1.0, "per": 1.0}
  results = loop.run(c, str(tmp_path), progress=False)
  assert set(results) == {f"task{t}" for t in range(4)} | {f"task{t}_attention_branch" for t in range(4)}
  assert all(r["count"] == 30 and r["confusion"].shape == (3, 3) for r in results.values())
  model = get_scheme("abn").build(c)
  assert model(jnp.zeros((2, 32, 32, 3)))["attention"].shape == (2, 4, 4, 4)  # a map per part
  c.abn.task_classes = (3,) * 3  # one task fewer than the data's attributes: refused before anything compiles
  with pytest.raises(ConfigError, match=r"abn.task_classes=\(3, 3, 3\) does not match .*\(3, 3, 3, 3\)"):
    loop.run(c, str(tmp_path / "mismatch"), progress=False)
