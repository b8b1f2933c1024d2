"""RA-CNN's module and scheme: outputs, the zoom between scales, boxes inside each scale's image, parameter
groups, where each loss's gradient goes, pretrained weights in every scale, the configs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from gradient_routes import loss_jacobian, norm
from phase_step import batch_stats, changed, train_once

from configs import racnn as racnn_config
from fgattn_jax.config import load_config
from fgattn_jax.ops import losses as loss_lib
from fgattn_jax.ops import racnn
from fgattn_jax.schemes import get_scheme
from fgattn_jax.training import phases


def tiny(**options):
  c = load_config("configs/racnn.py")
  c.unlock()
  c.model.width = 1 / 16
  c.racnn.update(options)
  return c


BATCH = {"label": jnp.array([1, 2]), "mask": jnp.array([True, True])}
X = jax.random.normal(jax.random.key(0), (2, 96, 96, 3))


@pytest.fixture(scope="module")
def built():
  scheme = get_scheme("racnn")
  return scheme, scheme.build(tiny())


def test_outputs(built):
  scheme, model = built
  out = model(X)
  assert out["logits"].shape == (2, 10) and [lg.shape for lg in out["scale_logits"]] == [(2, 10)] * 3
  assert [b.shape for b in out["boxes"]] == [(2, 4)] * 2 and [t.shape for t in out["txyl"]] == [(2, 3)] * 2
  assert [t.shape for t in out["apn_targets"]] == [(2, 3)] * 2 and out["input_hw"] == [(96, 96), (64, 64)]
  assert out["features"]["conv5_2"].shape[1:3] == (6, 6) and "pre_logits" in out["features"]
  # the fused classifier reads the three scales' pooled features
  assert model.fused.in_features == 3 * out["features"]["pre_logits"].shape[-1]
  losses, outputs = scheme.forward(model, X, BATCH, train=True)
  assert set(losses) == set(scheme.loss_names) and all(np.isfinite(float(v)) for v in losses.values())
  assert list(outputs) == ["logits", "scale1", "scale2", "scale3", "average"]
  probs = jnp.mean(jnp.stack([jax.nn.softmax(lg) for lg in out["scale_logits"]]), axis=0)
  np.testing.assert_allclose(np.exp(outputs["average"]), probs, rtol=1e-5, atol=1e-7)


def test_each_scale_sees_the_previous_scales_attended_crop(built):
  _, model = built
  out = model(X)
  crop = racnn.attention_crop(X, out["boxes"][0], (64, 64), model.k)
  f, _ = model.nets[0].features(X)
  np.testing.assert_allclose(
    out["scale_logits"][1], model.nets[1].head(model.nets[1].features(crop)[0])[1], rtol=1e-4, atol=1e-5
  )
  np.testing.assert_allclose(out["apn_targets"][0], racnn.apn_targets(f, (96, 96), 1 / 3), rtol=1e-6)
  np.testing.assert_allclose(out["boxes"][0], racnn.square_box(out["txyl"][0]))
  f2, _ = model.nets[1].features(crop)
  np.testing.assert_allclose(out["txyl"][1], model.propose(1, f2, (64, 64)), rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(out["zooms"][0], crop, rtol=1e-5, atol=1e-5)
  # The boxes in the image's pixels (what visualisation draws): scale 2's box as is, scale 3's through its crop.
  np.testing.assert_allclose(out["image_boxes"][0], out["boxes"][0], rtol=1e-6)
  b2 = np.asarray(out["boxes"][0])
  unit = (b2[:, 2:] - b2[:, :2]) / 64
  np.testing.assert_allclose(
    out["image_boxes"][1], np.tile(b2[:, :2], 2) + np.tile(unit, 2) * out["boxes"][1], rtol=1e-5, atol=1e-4
  )


def test_zooms_sample_the_full_resolution_image():
  """scale1_input: scale 1 sees the image resized to 48, each box is mapped from its scale's frame to the image's
  (scale 2's box times 96 / 48; scale 3's through scale 2's crop) and the zoom samples the 96-pixel image."""
  model = get_scheme("racnn").build(tiny(scale1_input=48, scale_input=32))
  out = model(X)
  assert out["input_hw"] == [(48, 48), (32, 32)]
  small = jax.image.resize(X, (2, 48, 48, 3), "linear", antialias=True)
  np.testing.assert_allclose(
    out["scale_logits"][0], model.nets[0].head(model.nets[0].features(small)[0])[1], rtol=1e-4, atol=1e-5
  )
  box2 = out["boxes"][0] * 2.0  # 96 / 48
  crop2 = racnn.attention_crop(X, box2, (32, 32), model.k)
  np.testing.assert_allclose(
    out["scale_logits"][1], model.nets[1].head(model.nets[1].features(crop2)[0])[1], rtol=1e-4, atol=1e-5
  )
  side = (box2[:, 2:] - box2[:, :2]) / 32  # one pixel of scale 2's input, in the image's pixels
  box3 = jnp.tile(box2[:, :2], 2) + jnp.tile(side, 2) * out["boxes"][1]
  box2, box3 = np.asarray(box2), np.asarray(box3)
  assert np.all(box3[:, :2] >= box2[:, :2] - 1e-4) and np.all(box3[:, 2:] <= box2[:, 2:] + 1e-4)  # nested
  np.testing.assert_allclose(out["image_boxes"][1], box3, rtol=1e-5, atol=1e-4)
  crop3 = racnn.attention_crop(X, box3, (32, 32), model.k)
  np.testing.assert_allclose(
    out["scale_logits"][2], model.nets[2].head(model.nets[2].features(crop3)[0])[1], rtol=1e-4, atol=1e-5
  )


@pytest.mark.parametrize(
  "bias,bounds",
  [(-20.0, (0.25, 0.5)), (0.0, (0.25, 0.5)), (20.0, (0.25, 0.5)), (-20.0, (0.15, 0.25)), (20.0, (0.15, 0.25))],
)
def test_boxes_lie_inside_each_scales_image(bias, bounds):
  lo, hi = bounds
  model = get_scheme("racnn").build(tiny(min_half_fraction=lo, max_half_fraction=hi))
  for apn in model.apns:  # saturate the APNs' sigmoids towards a corner (or not)
    apn.fc2.bias.set_value(apn.fc2.bias.get_value() + bias * jnp.array([1.0, -1.0, 1.0]))
  for seed in range(2):
    out = model(3 * jax.random.normal(jax.random.key(seed), (2, 96, 96, 3)) + seed)
    for box, side in zip(out["boxes"], (96, 64)):
      b = np.asarray(box)
      assert np.all(b[:, :2] >= -1e-4) and np.all(b[:, 2:] <= side + 1e-4)
      w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
      np.testing.assert_allclose(w, h, rtol=1e-5)  # squares
      assert np.all(w >= 2 * lo * side - 1e-3) and np.all(w <= 2 * hi * side + 1e-3)  # t_l in [lo, hi] x side


def test_bounds_are_checked():
  with pytest.raises(ValueError, match="min_half_fraction <= max_half_fraction"):
    get_scheme("racnn").build(tiny(min_half_fraction=0.3, max_half_fraction=0.2))
  with pytest.raises(ValueError, match="cls_over_scales='max': use 'mean'"):
    get_scheme("racnn").build(tiny(cls_over_scales="max"))


def test_cls_is_the_mean_over_the_scales_or_the_papers_sum(built):
  scheme, model = built
  per_scale = [float(loss_lib.cross_entropy(lg, BATCH["label"], BATCH["mask"])) for lg in model(X)["scale_logits"]]
  try:
    for reduce, want in (("mean", np.mean(per_scale)), ("sum", np.sum(per_scale))):
      scheme.cls_over_scales = reduce
      np.testing.assert_allclose(float(scheme.forward(model, X, BATCH, train=False)[0]["cls"]), want, rtol=1e-5)
  finally:
    scheme.cls_over_scales = "mean"


def test_parameter_groups_partition_the_model(built):
  scheme, model = built
  groups = scheme.groups(model)
  paths = {g: {p for p, _ in nnx.to_flat_state(nnx.state(model, f))} for g, f in groups.items()}
  assert paths["apn"] | paths["convs"] == paths["all"] and not (paths["apn"] & paths["convs"])
  assert {p[:2] for p in paths["apn"]} == {("apns", 0), ("apns", 1)}
  assert {p[:2] for p in paths["convs"] if p[0] == "nets"} == {("nets", 0), ("nets", 1), ("nets", 2)}
  assert any(p[0] == "fused" for p in paths["convs"])


def grad_norms(scheme, model):
  """{loss: {part: sum of |d loss / d parameter|}}, every loss in one jitted Jacobian."""
  jac = loss_jacobian(scheme, model, X, BATCH, scheme.loss_names)
  return {
    n: {
      "apn0": norm(jac["apns"][0], i),
      "apn1": norm(jac["apns"][1], i),
      "net0": norm(jac["nets"][0], i),
      "net1": norm(jac["nets"][1], i),
      "net2": norm(jac["nets"][2], i),
      "fused": norm(jac["fused"], i),
    }
    for i, n in enumerate(scheme.loss_names)
  }


def test_where_each_loss_trains(built):
  scheme, model = built
  g = grad_norms(scheme, model)
  rank, cls, fused, init = g["rank"], g["cls"], g["fused"], g["apn_init"]
  assert rank["apn0"] > 0 and rank["apn1"] > 0 and rank["fused"] == 0  # through the zoom into the APNs
  # The paper's loss, through both sides' p_t (holding the coarser one was measured worse: benchmarks/RESULTS.md).
  # (Scale 2's p_t enters both hinges with opposite signs: where both are active, as here, its gradient cancels.)
  assert rank["net0"] > 0 and rank["net2"] > 0
  assert cls["net0"] > 0 and cls["net1"] > 0 and cls["net2"] > 0 and cls["fused"] == 0
  assert fused["fused"] > 0 and fused["net0"] > 0 and fused["net2"] > 0
  assert init["apn0"] > 0 and init["apn1"] > 0  # the regression reaches the APNs' layers only
  assert init["net0"] == init["net1"] == init["net2"] == init["fused"] == 0


def test_apn_init_is_resolution_independent(built):
  scheme, model = built
  out = model(X)
  pred, target = out["apn_out"][0], out["apn_targets"][0]
  expected = np.mean(
    [racnn.smooth_l1(p / min(hw), t / min(hw)) for p, t, hw in zip(out["apn_out"], out["apn_targets"], out["input_hw"])]
  )
  losses, _ = scheme.forward(model, X, BATCH, train=True)
  np.testing.assert_allclose(float(losses["apn_init"]), expected, rtol=1e-5)
  assert float(racnn.smooth_l1(pred / 96, target / 96)) <= 0.5  # side-normalised: |d| <= 1


def test_apn_pretraining_skips_the_last_scale(built):
  """The APN pretraining's phase (apn_init alone) stops before the last scale's network: the same loss as the full
  forward, the last network's batch statistics untouched by its step (the other scales' updated)."""
  scheme, model = built
  full, _ = scheme.forward(model, X, BATCH, train=True)
  losses, outputs = scheme.forward(model, X, BATCH, train=True, wanted=("apn_init",))
  assert set(losses) == {"apn_init"} and list(outputs) == ["scale1", "scale2"]
  np.testing.assert_allclose(float(losses["apn_init"]), float(full["apn_init"]), rtol=1e-5)
  images = np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3))
  before = [batch_stats(net) for net in model.nets]
  after, metrics = train_once(scheme, model, {"apn_init": 1.0}, "apn", images)
  assert [changed(b, batch_stats(net)) for b, net in zip(before, after.nets)] == [True, True, False]
  assert np.isfinite(metrics["loss/apn_init"]) and "accuracy" in metrics  # scale 1's, the main output's missing


def test_pretrained_weights_fill_every_scale(tmp_path):
  from safetensors.numpy import save_file
  from torch_reference import TorchVGG, randomize_

  ref = randomize_(TorchVGG("vgg11", 1000, bn=True, width=1 / 16))
  save_file({k: v.numpy() for k, v in ref.state_dict().items()}, str(tmp_path / "vgg11_bn.safetensors"))
  model = get_scheme("racnn").build(tiny())
  loaded = get_scheme("racnn").load_pretrained(model, str(tmp_path / "vgg11_bn.safetensors"))
  per_scale = [{p[2:] for p in loaded if p[:2] == ("nets", s)} for s in range(3)]
  assert per_scale[0] and per_scale[0] == per_scale[1] == per_scale[2]
  assert any(p[0] == "stages" and p[-1] == "kernel" for p in per_scale[0])
  assert not any(p[0] in ("apns", "fused") for p in loaded)
  params = {p for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat)))}
  assert loaded <= params
  first = [np.asarray(jax.tree.leaves(nnx.state(model.nets[s].stages[0], nnx.Param))[0]) for s in range(3)]
  np.testing.assert_array_equal(first[0], first[1])
  np.testing.assert_array_equal(first[0], first[2])


def test_configs_and_the_alternating_plan():
  for preset in racnn_config.PRESETS:
    c = racnn_config.get_config(preset or None)
    assert c.scheme == "racnn"
  groups = {g: nnx.Param for g in ("all", "apn", "convs")}
  c = racnn_config.get_config()
  plan = phases.plan(c, 62, get_scheme("racnn").loss_names, groups)
  assert [p.name for p in plan] == ["scales", "apn_init", "classify#1", "apn#1", "classify#2", "apn#2"]
  assert [p.trains for p in plan] == ["convs", "apn", "convs", "apn", "convs", "apn"]
  assert plan[3].losses == {"rank": 1.0} and plan[1].losses == {"apn_init": 1.0}
  e2e = racnn_config.get_config("e2e")
  assert set(phases.plan(e2e, 62, get_scheme("racnn").loss_names, groups)[0].losses) == {
    "cls",
    "rank",
    "fused",
    "apn_init",
  }
  closer = racnn_config.get_config("closer")  # scale 1 on a reduced copy, the zoom on the full image
  assert closer.racnn.scale1_input < closer.data.image_size and closer.racnn.num_scales == 2
  cub = racnn_config.get_config("cub")
  assert (cub.data.image_size, cub.racnn.scale_input, cub.model.backbone, cub.model.require_pretrained) == (
    448,
    224,
    "vgg19",
    True,
  )
  assert cub.racnn.min_half_fraction < cub.racnn.apn_init_half_fraction
  # The paper's plateau rule on the alternating phases of the real presets; off in the short synthetic run.
  assert cub.phases.apn.plateau.patience > 0 and cub.phases.classify.plateau.patience > 0
  assert c.phases.apn.plateau.patience == 0 and cub.phases.scales.plateau.patience == 0


def test_alternating_presets_classify_before_apn():
  """The paper's order in every alternating preset: after the APN pretraining the classifiers first (cross-entropy,
  APNs fixed), then the APNs (ranking loss, classifiers fixed), alternating `cycles` times."""
  groups = {g: nnx.Param for g in ("all", "apn", "convs")}
  alternating = 0
  for preset in racnn_config.PRESETS:
    c = racnn_config.get_config(preset or None)
    if "apn" not in c.phases:  # end to end: one phase
      continue
    alternating += 1
    plan = phases.plan(c, 62, get_scheme("racnn").loss_names, groups)
    names = [p.name for p in plan]
    assert names[:2] == ["scales", "apn_init"], preset
    assert names[2:] == [f"{n}#{k + 1}" for k in range(c.cycles) for n in ("classify", "apn")], preset
    assert [p.losses for p in plan[2:4]] == [{"cls": 1.0, "fused": 1.0}, {"rank": 1.0}], preset
    assert [p.trains for p in plan[2:4]] == ["convs", "apn"], preset
  assert alternating >= 5  # '', closer and the three real-data presets
