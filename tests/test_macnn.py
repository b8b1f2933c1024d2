"""MA-CNN's module and scheme: outputs, parameter groups, where each loss's gradient goes, the
channel-grouping initialisation, part boxes at the maps' peaks, the configs."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from gradient_routes import loss_jacobian, norm
from phase_step import batch_stats, changed, train_once

from configs import macnn as macnn_config
from data_pipelines import pipeline as data
from fgattn_jax.config import load_config
from fgattn_jax.ops import crops, hooks
from fgattn_jax.schemes import get_scheme
from fgattn_jax.training import phases


def tiny(part_streams=True, **macnn):
  c = load_config("configs/macnn.py")
  c.unlock()
  c.model.width = 1 / 16
  c.macnn.part_streams = part_streams
  c.macnn.update(macnn)
  c.data.synthetic.num_train, c.data.synthetic.num_test = 32, 16
  c.data.batch_size, c.data.eval_batch_size = 8, 8
  return c


BATCH = {"label": jnp.array([1, 2]), "mask": jnp.array([True, True])}
X = jax.random.normal(jax.random.key(0), (2, 96, 96, 3))


@pytest.fixture(scope="module")
def built():
  scheme = get_scheme("macnn")
  return scheme, scheme.build(tiny())


def test_outputs(built):
  scheme, model = built
  out = model(X)
  assert out["maps"].shape == (2, 24, 24, 4)  # conv3_2 of a 96-pixel input, one map per part
  assert 0 <= float(out["maps"].min()) and float(out["maps"].max()) <= 1
  assert out["logits"].shape == out["object"].shape == (2, 10)
  assert len(out["part_logits"]) == len(out["stream_logits"]) == 4 and out["boxes"].shape == (2, 4, 4)
  _, outputs = scheme.forward(model, X, BATCH, train=True)
  assert set(outputs) == {"logits", "object", "part0", "part1", "part2", "part3"}
  plain = get_scheme("macnn").build(tiny(part_streams=False))
  assert plain(X)["logits"].shape == (2, 10) and "stream_logits" not in plain(X)


def test_part_map_forms(built):
  """'centred': relu(tanh(mean_c d_c (F_c - mean_xy F_c))), zero where the weighted features are below their
  mean over the grid; 'deploy': tanh(mean_c d_c F_c), the released model's form, never below zero; 'paper':
  sigmoid(sum_c d_c F_c), the paper's equation."""
  _, model = built
  f, maps, d, _ = model.attend(X)
  f = np.asarray(f, np.float64)
  weighted = np.einsum("bhwc,bnc->bhwn", f - f.mean(axis=(1, 2), keepdims=True), np.asarray(d)) / f.shape[-1]
  np.testing.assert_allclose(maps, np.maximum(np.tanh(weighted), 0), atol=1e-6)
  assert 0.2 < float(np.mean(maps == 0)) < 0.9  # sparse: zero off the part, unlike the deploy form
  model.part_maps = "deploy"
  try:
    deploy = model.attend(X)[1]
  finally:
    model.part_maps = "centred"
  np.testing.assert_allclose(deploy, np.tanh(np.einsum("bhwc,bnc->bhwn", f, np.asarray(d)) / f.shape[-1]), atol=1e-6)
  assert float(deploy.min()) >= 0
  model.part_maps = "paper"
  try:
    paper = model.attend(X)[1]
  finally:
    model.part_maps = "centred"
  expected = 1 / (1 + np.exp(-np.einsum("bhwc,bnc->bhwn", f, np.asarray(d))))
  np.testing.assert_allclose(paper, expected, atol=1e-5)
  with pytest.raises(ValueError, match="part_maps"):
    get_scheme("macnn").build(tiny(part_maps="sigmoid"))


def test_part_features_keep_the_features_scale(built):
  """'weighted' (the default): P_i = sum_xy M_i F / sum_xy M_i, a map-weighted mean of F; 'sum' (the paper): the sum
  over the grid. The grid's mean, as before, left P_i about 1e-3 of F and the part classifiers at chance."""
  _, model = built
  f, maps, _, _ = model.attend(X)
  f, m = np.asarray(f, np.float64), np.asarray(maps, np.float64)
  total = np.einsum("bhwn,bhwc->bnc", m, f)
  weighted = np.asarray(model.pool_parts(maps, jnp.asarray(f, jnp.float32)))
  np.testing.assert_allclose(weighted, total / m.sum(axis=(1, 2))[..., None], rtol=1e-4, atol=1e-6)
  # Each P_i lies within the range of the features it averages, whatever the maps' scale (here ~1e-2).
  assert float(m.mean()) < 0.05 and np.all(weighted <= f.max(axis=(1, 2))[:, None] + 1e-5)
  assert np.mean(np.abs(weighted)) > 0.2 * np.mean(np.abs(f))
  np.testing.assert_allclose(
    np.asarray(model.pool_parts(0.001 * maps, jnp.asarray(f, jnp.float32))), weighted, rtol=1e-4, atol=1e-6
  )
  model.part_pooling = "sum"
  try:
    np.testing.assert_allclose(
      np.asarray(model.pool_parts(maps, jnp.asarray(f, jnp.float32))), total, rtol=1e-4, atol=1e-5
    )
  finally:
    model.part_pooling = "weighted"
  with pytest.raises(ValueError, match="part_pooling"):
    get_scheme("macnn").build(tiny(part_pooling="mean"))


def test_object_input_sees_a_coarse_view_while_the_crops_sample_the_full_image():
  from fgattn_jax.ops.images import resize_square

  model = get_scheme("macnn").build(tiny(object_input=48))
  model.eval()
  out = model(X)
  assert out["maps"].shape == (2, 12, 12, 4)  # conv3_2 of the 48-pixel view
  np.testing.assert_allclose(model.attend(X)[1], model.attend(resize_square(X, 48))[1], atol=1e-6)
  assert float(out["boxes"].max()) > 48  # boxes in the 96-pixel input's pixels
  np.testing.assert_allclose(out["patches"][:, 0], crops.crop_resize(X, out["boxes"][:, 0], (32, 32)), atol=1e-5)


def test_parameter_groups_partition_the_model(built):
  scheme, model = built
  groups = scheme.groups(model)
  paths = {g: {p for p, _ in nnx.to_flat_state(nnx.state(model, f))} for g, f in groups.items()}
  assert paths["grouping"] | paths["convs"] | paths["parts"] == paths["all"]
  assert not (paths["grouping"] & paths["convs"]) and not (paths["convs"] & paths["parts"])
  assert all(p[0] == "grouping" for p in paths["grouping"]) and any(p[0] == "part_fc" for p in paths["convs"])
  assert all(p[0] in ("part_nets", "joint") for p in paths["parts"])


def grad_norms(scheme, model, *losses):
  """{loss: {submodule: sum of |d loss / d parameter|}}, the losses in one jitted Jacobian."""
  jac = loss_jacobian(scheme, model, X, BATCH, losses)
  return {name: {k: norm(v, i) for k, v in jac.items()} for i, name in enumerate(losses)}


def test_where_each_loss_trains(built):
  scheme, model = built
  g = grad_norms(scheme, model, "cng", "streams", "joint", "parts")
  cng, streams, joint, parts = g["cng"], g["streams"], g["joint"], g["parts"]
  assert cng["grouping"] > 0 and cng["backbone"] > 0 and cng["part_nets"] == 0 and cng["joint"] == 0
  assert streams["part_nets"] > 0 and streams["grouping"] == 0  # the crops carry no gradient
  assert joint["joint"] > 0 and joint["part_nets"] > 0 and joint["backbone"] > 0
  assert parts["part_fc"] > 0 and parts["grouping"] > 0


def test_an_example_masked_out_changes_no_loss(built):
  """An unreadable image arrives blank with mask False: no loss may count it (L_cng and the grouping layers'
  regression averaged over the whole batch did). In evaluation mode each example is computed on its own, so every
  loss over [a, masked] is the loss over [a] alone, i.e. over [a, a]: the same shapes as the other tests (their
  compiled operations serve)."""
  scheme, model = built
  masked = {"label": BATCH["label"], "mask": jnp.array([True, False])}
  same = {"label": BATCH["label"][:1].repeat(2), "mask": BATCH["mask"]}
  model.eval()
  try:  # (the module's shared model goes back to training mode whatever happens)
    alone, _ = scheme.forward(model, jnp.concatenate([X[:1], X[:1]]), same, train=False)
    for other in (X[1:], jnp.zeros_like(X[1:])):
      got, _ = scheme.forward(model, jnp.concatenate([X[:1], other]), masked, train=False)
      assert set(got) == set(alone)
      for k in alone:
        np.testing.assert_allclose(float(got[k]), float(alone[k]), rtol=1e-5, atol=1e-7, err_msg=k)
  finally:
    model.train()


def test_phases_run_only_what_their_losses_need(built):
  """The alternating schedule's phases before 'parts' run no part streams (most of a step's work), the grouping
  phases not even the object stream's last stages: same losses as the full forward, the streams' batch statistics
  untouched by their steps."""
  scheme, model = built
  full, _ = scheme.forward(model, X, BATCH, train=True)
  for wanted, computed, outputs in (
    (("cng",), {"parts", "cng", "group_init"}, set()),
    (("cls", "parts"), {"parts", "cng", "group_init", "cls"}, {"object"}),
  ):
    losses, out = scheme.forward(model, X, BATCH, train=True, wanted=wanted)
    assert set(losses) == computed and set(out) == outputs
    for k in computed:
      np.testing.assert_allclose(float(losses[k]), float(full[k]), rtol=1e-5, err_msg=k)
  with pytest.raises(ValueError, match="until"):
    model(X, until="streams")
  # Through the engine's step: the phase's loss weights decide. (The full step, streams included, is the
  # learning test's 'parts' phase.)
  images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3))
  streams, tail = batch_stats(model.part_nets), batch_stats(model.backbone.stages[-1])
  for losses, trains, tail_runs in (
    ({"cng": 1.0}, "grouping", False),
    ({"cls": 1.0, "parts": 1.0, "streams": 0.0}, "convs", True),
  ):  # 0: not run
    after, metrics = train_once(scheme, model, losses, trains, images)
    assert not changed(streams, batch_stats(after.part_nets)), losses
    assert changed(tail, batch_stats(after.backbone.stages[-1])) == tail_runs, losses
    assert ("accuracy" in metrics) == tail_runs  # the object stream's; the grouping phases compute no logits
    assert {k.removeprefix("loss/") for k in metrics if k.startswith("loss/")} == {"parts", "cng", "group_init"} | (
      {"cls"} if tail_runs else set()
    )
    assert metrics["loss"] == pytest.approx(sum(metrics[f"loss/{k}"] for k, w in losses.items() if w), rel=1e-5)


def test_init_phase_sets_indicator_targets():
  c = tiny()
  scheme = get_scheme("macnn")
  model = scheme.build(c)
  scheme.before_phase("classify", model, lambda: [])  # other phases do nothing
  assert not np.any(np.asarray(model.group_targets.get_value()))
  scheme.before_phase("init", model, lambda: itertools.islice(data.build(c, "train", training=False), 2))
  t = np.asarray(model.group_targets.get_value())
  assert t.shape == (4, 16) and set(np.unique(t)) <= {0.0, 1.0}
  np.testing.assert_array_equal(t.sum(axis=0), 1)  # every channel in exactly one part
  losses, _ = scheme.forward(model, X, BATCH, train=True)
  assert float(losses["group_init"]) > 0


def test_part_boxes_sit_on_the_peaks(built):
  _, model = built
  maps = jnp.zeros((1, 12, 12, 2)).at[0, 3, 6, 0].set(1).at[0, 0, 0, 1].set(1)
  boxes = np.asarray(model.part_boxes(maps, (96, 96)))
  np.testing.assert_allclose(boxes[0, 0], [52 - 12, 28 - 12, 52 + 12, 28 + 12])  # centred on cell (3, 6)
  np.testing.assert_allclose(boxes[0, 1], [0, 0, 24, 24])  # a corner peak: shifted inside the image


def test_crop_size_adapted_to_the_object():
  model = get_scheme("macnn").build(tiny(crop_reference="object"))
  maps = jnp.zeros((3, 12, 12, 2)).at[:, 6, 6, :].set(1)
  objects = jnp.array([[0, 0, 96, 96], [40, 40, 56, 72], [50, 50, 52, 52]], jnp.float32)
  side = np.asarray(model.part_boxes(maps, (96, 96), objects))
  side = side[..., 2] - side[..., 0]
  # crop_fraction 0.25 of the object's extent (the geometric mean of its sides), at least two 8-pixel cells
  np.testing.assert_allclose(side, [[24, 24], [16, 16], [16, 16]], rtol=1e-6)
  out = model(X)
  np.testing.assert_allclose(
    out["boxes"][..., 2] - out["boxes"][..., 0],
    np.broadcast_to(
      np.clip(
        0.25
        * np.sqrt(
          (out["object_box"][:, 2] - out["object_box"][:, 0]) * (out["object_box"][:, 3] - out["object_box"][:, 1])
        ),
        16,
        96,
      )[:, None],
      (2, 4),
    ),
    rtol=1e-5,
  )
  with pytest.raises(ValueError, match="crop_reference"):
    get_scheme("macnn").build(tiny(crop_reference="bird"))


def test_object_crop_stream():
  scheme = get_scheme("macnn")
  model = scheme.build(tiny(object_crop=True))
  out = model(X)
  assert out["object_crop_logits"].shape == (2, 10) and out["object_box"].shape == (2, 4)
  b = np.asarray(out["object_box"])
  assert np.all(b[:, :2] >= 0) and np.all(b[:, 2:] <= 96) and np.all(b[:, 2:] > b[:, :2])
  # the joint classifier reads the whole-image feature, the object crop's and the four parts'
  plain = scheme.build(tiny())
  assert model.joint.in_features == plain.joint.in_features // 5 * 6
  _, outputs = scheme.forward(model, X, BATCH, train=True)
  assert list(outputs)[:3] == ["logits", "object", "object_crop"]
  paths = {p[0] for p, _ in nnx.to_flat_state(nnx.state(model, scheme.groups(model)["parts"]))}
  assert paths == {"part_nets", "object_net", "joint"}
  streams = grad_norms(scheme, model, "streams")["streams"]
  assert streams["object_net"] > 0 and streams["part_nets"] > 0 and streams["backbone"] == 0
  with pytest.raises(ValueError, match="part streams"):
    scheme.build(tiny(part_streams=False, object_crop=True))


def test_configs_and_the_alternating_plan():
  for preset in macnn_config.PRESETS:
    c = macnn_config.get_config(preset or None)
    assert c.scheme == "macnn"
  c = macnn_config.get_config()
  plan = phases.plan(
    c, 62, get_scheme("macnn").loss_names, {g: nnx.Param for g in ("all", "grouping", "convs", "parts")}
  )
  assert [p.name for p in plan] == ["object", "init", "grouping#1", "classify#1", "grouping#2", "classify#2", "parts"]
  cub = macnn_config.get_config("cub")
  assert (cub.data.image_size, cub.macnn.num_parts, round(cub.macnn.crop_fraction * 448)) == (448, 4, 128)
  assert cub.macnn.object_crop and not macnn_config.get_config("cars").macnn.object_crop
  assert cub.phases.grouping.plateau.patience > 0 and cub.phases.classify.plateau.patience > 0


def test_pretrained_weights_fill_every_stream(tmp_path):
  from safetensors.numpy import save_file
  from torch_reference import TorchVGG, randomize_

  ref = randomize_(TorchVGG("vgg11", 1000, bn=True, width=1 / 16))
  save_file({k: v.numpy() for k, v in ref.state_dict().items()}, str(tmp_path / "vgg11_bn.safetensors"))
  scheme = get_scheme("macnn")
  model = scheme.build(tiny(object_crop=True))
  loaded = scheme.load_pretrained(model, str(tmp_path / "vgg11_bn.safetensors"))
  streams = [("backbone",)] + [("part_nets", i) for i in range(4)] + [("object_net",)]
  filled = [{p[len(s) :] for p in loaded if p[: len(s)] == s} for s in streams]
  assert filled[0] and all(f == filled[0] for f in filled)  # the same layers in every stream
  assert any(p[0] == "stages" and p[-1] == "kernel" for p in filled[0])
  assert not any(p[0] in ("grouping", "part_fc", "joint") for p in loaded)
  first = [
    np.asarray(jax.tree.leaves(nnx.state(net.stages[0], nnx.Param))[0])
    for net in [model.backbone, *model.part_nets, model.object_net]
  ]
  for w in first[1:]:
    np.testing.assert_array_equal(w, first[0])


def test_streams_as_one_vmapped_network_equal_the_loop(monkeypatch):
  """STREAMS='vmap' runs the part streams and the object crop as one network over their stacked weights: one
  training step through the engine gives the same losses, the same updated weights and the same batch statistics
  in every stream as running them one after another."""
  from fgattn_jax.models import macnn as macnn_model

  scheme = get_scheme("macnn")
  model = scheme.build(tiny(object_crop=True, num_parts=2))  # three crop streams
  images = np.random.default_rng(1).integers(0, 256, (4, 64, 64, 3))
  graphdef, state = nnx.split(model)
  after, convs = {}, {}
  for form in ("loop", "vmap"):
    monkeypatch.setattr(macnn_model, "STREAMS", form)
    after[form] = train_once(scheme, model, {"streams": 1.0, "joint": 1.0}, "parts", images)
    convs[form] = str(jax.make_jaxpr(lambda s: nnx.merge(graphdef, s)(X)["logits"])(state)).count("conv_general")
  # the three crop streams' convolutions are traced once, not three times (the object stream's stay)
  per_net = convs["loop"] // 4
  assert convs["vmap"] == 2 * per_net, convs
  # saliency's stage taps see one stream at a time (explain counts them): with a tap set, the streams run as a loop
  seen = []
  with hooks.tapping(lambda name, x: seen.append(name) or x):
    jax.eval_shape(lambda s: nnx.merge(graphdef, s)(X)["logits"], state)
  assert seen.count(model.backbone.stage_names[0]) == 4
  (loop, loop_metrics), (vmapped, vmap_metrics) = after["loop"], after["vmap"]
  assert vmap_metrics == pytest.approx(loop_metrics, rel=1e-5)
  for a, b, before in zip(
    [loop.object_net, *loop.part_nets], [vmapped.object_net, *vmapped.part_nets], [model.object_net, *model.part_nets]
  ):
    for kind in (nnx.Param, nnx.BatchStat):
      pa, pb, p0 = (jax.tree.leaves(nnx.state(m, kind)) for m in (a, b, before))
      assert pa and changed(p0, pa)  # the step trained this stream (and updated its statistics)
      for x, y in zip(pa, pb):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)
