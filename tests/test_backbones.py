"""Backbone shapes, dtypes, freezing and gradient flow, on tiny widths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fgattn_jax.models import BACKBONES, build_backbone

# name -> (expected stage names, their strides in input pixels)
FAMILIES = {
  "vgg": (("conv1_", "conv2_", "conv3_", "conv4_", "conv5_"), (1, 2, 4, 8, 16)),
  "imagenet_resnet": (("stem", "layer1", "layer2", "layer3", "layer4"), (4, 4, 8, 16, 32)),
  "cifar": (("stem", "layer1", "layer2", "layer3"), (1, 1, 2, 4)),
}


def family(name):
  if name.startswith("vgg"):
    return "vgg"
  return "imagenet_resnet" if name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152") else "cifar"


def tiny(name, **kw):
  return build_backbone(name, 7, width=1 / 16, rngs=0, **kw)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_returns_logits_and_named_stages(name):
  model = tiny(name)
  model.eval()
  logits, feats = model(jnp.ones((2, 64, 96, 3)))
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32
  names, strides = FAMILIES[family(name)]
  stage_keys = [k for k in feats if k != "pre_logits"]
  assert len(stage_keys) == len(names)
  for key, prefix, stride in zip(stage_keys, names, strides):
    assert key.startswith(prefix)
    assert feats[key].shape[:3] == (2, 64 // stride, 96 // stride), key
  assert feats["pre_logits"].shape[0] == 2 and feats["pre_logits"].ndim == 2
  assert np.all(np.isfinite(np.asarray(logits)))


def test_vgg_stage_names_count_the_convolutions():
  assert list(tiny("vgg19").stage_names) == ["conv1_2", "conv2_2", "conv3_4", "conv4_4", "conv5_4"]
  assert list(tiny("vgg16_bn").stage_names) == ["conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"]
  assert list(tiny("vgg11").stage_names) == ["conv1_1", "conv2_1", "conv3_2", "conv4_2", "conv5_2"]


def test_bfloat16_compute_keeps_float32_parameters_and_logits():
  model = tiny("resnet18", dtype="bfloat16")
  model.eval()
  logits, feats = model(jnp.ones((1, 64, 64, 3)))
  assert feats["layer4"].dtype == jnp.bfloat16
  assert logits.dtype == jnp.float32
  params = jax.tree.leaves(nnx.state(model, nnx.Param))
  assert params and all(p.dtype == jnp.float32 for p in params)


def test_width_multiplier_scales_channels():
  full = build_backbone("resnet50", 5, rngs=0)
  assert full.head.fc.in_features == 2048
  assert tiny("resnet50").head.fc.in_features == 128


def test_vgg_heads():
  gap, clf = tiny("vgg16", head="gap"), tiny("vgg16", head="classifier")
  gap.eval(), clf.eval()
  x = jnp.ones((1, 64, 80, 3))
  assert gap(x)[1]["pre_logits"].shape == (1, 32)  # pooled conv5_3
  assert clf(x)[1]["pre_logits"].shape == (1, 256)  # 4096 / 16
  with pytest.raises(ValueError, match="head"):
    tiny("vgg16", head="fc")


def test_unknown_backbone_names_the_nearest():
  with pytest.raises(ValueError, match="Did you mean .*resnet50"):
    build_backbone("resnet05", 10)
  with pytest.raises(ValueError, match="compute dtype"):
    build_backbone("resnet18", 10, dtype="bf16")


def _batch_stats(model):
  return [np.asarray(v) for v in jax.tree.leaves(nnx.state(model, nnx.BatchStat))]


def _loss_grads(model, x, wrt=nnx.Param):
  def loss(m):
    return jnp.mean(m(x)[0] ** 2)

  # One compiled program: op by op, a backward pass dispatches and compiles each primitive on its own.
  return nnx.jit(lambda m: nnx.grad(loss, argnums=nnx.DiffState(0, wrt))(m))(model)


def test_gradients_reach_every_parameter():
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  for name in ("resnet18", "vgg11_bn", "resnet20", "wrn16_8"):
    model = tiny(name, **({"head": "classifier", "dropout": 0.0} if name.startswith("vgg") else {}))
    grads = nnx.to_flat_state(_loss_grads(model, x))
    assert len(grads) == len(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    for path, g in grads:
      assert np.any(np.asarray(g.get_value()) != 0), f"{name}: no gradient at {path}"


def test_training_mode_updates_batch_statistics_and_frozen_bn_does_not():
  x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3)) * 3 + 1
  live = tiny("resnet18")
  before = _batch_stats(live)
  live(x)
  assert any(not np.allclose(a, b) for a, b in zip(before, _batch_stats(live)))

  frozen = tiny("resnet18", frozen_bn=True)
  frozen.train()  # train mode must not unfreeze it
  before = _batch_stats(frozen)
  train_out = frozen(x)[0]
  assert all(np.array_equal(a, b) for a, b in zip(before, _batch_stats(frozen)))
  frozen.eval()
  np.testing.assert_allclose(np.asarray(train_out), np.asarray(frozen(x)[0]), rtol=1e-6)


def test_frozen_features_train_only_the_head():
  x = jax.random.normal(jax.random.key(2), (2, 32, 32, 3))
  model = tiny("resnet18", freeze_features=True)
  grads = nnx.to_flat_state(_loss_grads(model, x, model.trainable()))
  assert {path[0] for path, _ in grads} == {"head"}
  before = _batch_stats(model)
  model(x)  # train mode: the frozen feature extractor keeps its statistics
  assert all(np.array_equal(a, b) for a, b in zip(before, _batch_stats(model)))
  assert tiny("resnet18").trainable() is nnx.Param


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_batchnorm_training_matches_flax_exactly(dtype):
  # layers.BatchNorm computes training mode itself (to store the running statistics without flax's slow path):
  # outputs, input and parameter gradients and running statistics bit-equal to flax's BatchNorm with its settings.
  from fgattn_jax.models import layers

  x = jax.random.normal(jax.random.key(3), (4, 6, 5, 8)) * 2 + 0.5
  ours = layers.BatchNorm(8, dtype=dtype, rngs=nnx.Rngs(0))
  theirs = nnx.BatchNorm(8, momentum=0.9, epsilon=1e-5, dtype=dtype, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
  for bn in (ours, theirs):  # the same non-trivial parameters and running statistics in both
    bn.scale.set_value(jnp.linspace(0.5, 2.0, 8))
    bn.bias.set_value(jnp.linspace(-1.0, 1.0, 8))
    bn.mean.set_value(jnp.full(8, 0.3))
    bn.var.set_value(jnp.full(8, 1.7))
    bn.train()

  @nnx.jit
  def step(bn, x):
    def loss(bn, x):
      y = bn(x)
      return jnp.sum(y.astype(jnp.float32) * jnp.cos(jnp.arange(y.size).reshape(y.shape))), y

    (_, y), (g_bn, g_x) = nnx.value_and_grad(loss, argnums=(0, 1), has_aux=True)(bn, x)
    return y, g_bn, g_x

  for _ in range(2):  # the second step starts from the statistics the first stored
    (y1, g1, gx1), (y2, g2, gx2) = step(ours, x), step(theirs, x)
    assert y1.dtype == dtype
    np.testing.assert_array_equal(np.asarray(y1, np.float32), np.asarray(y2, np.float32))
    np.testing.assert_array_equal(gx1, gx2)
    np.testing.assert_array_equal(g1.scale.get_value(), g2.scale.get_value())
    np.testing.assert_array_equal(g1.bias.get_value(), g2.bias.get_value())
    np.testing.assert_array_equal(ours.mean.get_value(), theirs.mean.get_value())
    np.testing.assert_array_equal(ours.var.get_value(), theirs.var.get_value())
  assert not np.allclose(ours.mean.get_value(), 0.3)  # the statistics did move
  ours.eval(), theirs.eval()
  np.testing.assert_array_equal(np.asarray(ours(x), np.float32), np.asarray(theirs(x), np.float32))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_relu_after_conv_equals_jax_relu_and_reads_its_mask_off_the_output(dtype):
  # layers.relu(x, after_conv=True) takes its gradient mask from the output, so that XLA can fuse it into the
  # convolution before it: values, gradients (reverse, forward, second order, batched) must be jax.nn.relu's.
  from fgattn_jax.models import layers

  x = jnp.concatenate(
    [jnp.array([0.0, -0.0, 1e-30, -1e-30, jnp.inf, -jnp.inf, jnp.nan]), jax.random.normal(jax.random.key(0), (57,))]
  ).astype(dtype)
  w = jnp.cos(jnp.arange(x.size, dtype=jnp.float32)).astype(dtype)
  ours = lambda x: layers.relu(x, after_conv=True)  # noqa: E731
  same = lambda a, b: np.testing.assert_array_equal(np.float32(a), np.float32(b))  # noqa: E731  (NaN == NaN)
  for f in (lambda r: r, jax.vmap):
    same(f(ours)(x), f(jax.nn.relu)(x))
  grad = lambda relu: jax.grad(lambda x: jnp.sum(relu(x) * w).astype(jnp.float32))  # noqa: E731
  same(grad(ours)(x), grad(jax.nn.relu)(x))
  same(jax.jvp(ours, (x,), (w,))[1], jax.jvp(jax.nn.relu, (x,), (w,))[1])
  second = lambda relu: jax.grad(lambda x: jnp.sum(grad(relu)(x) * x).astype(jnp.float32))(x)  # noqa: E731
  same(second(ours), second(jax.nn.relu))
  # The backward's comparison reads the output (through a barrier XLA cannot simplify away), not the input.
  jaxpr = jax.make_jaxpr(grad(ours))(x).jaxpr
  made_by = {v: e.primitive.name for e in jaxpr.eqns for v in e.outvars}
  barriers = [e for e in jaxpr.eqns if e.primitive.name == "optimization_barrier"]
  assert len(barriers) == 1 and made_by[barriers[0].invars[0]] in ("max", "custom_jvp_call")  # ReLU's forward
  with layers.relu_rule("deconvnet"):  # saliency's rules still apply
    _, vjp = jax.vjp(ours, x)
  same(vjp(w)[0], jax.nn.relu(w))
