"""CAM, Grad-CAM, the ReLU gradient rules and guided Grad-CAM against hand computations in NumPy float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fgattn_jax.models import build_backbone, layers
from fgattn_jax.models.backbone import Backbone
from fgattn_jax.models.resnet import LinearHead
from fgattn_jax.ops import saliency


class Pointwise(nnx.Module):
  def __init__(self, cin, cout, rngs):
    self.conv = nnx.Conv(cin, cout, (1, 1), rngs=rngs)

  def __call__(self, x):
    return layers.relu(self.conv(x))


class Toy(Backbone):
  """x -> relu(1x1 conv) 's1' -> relu(1x1 conv) 's2' -> global average pool -> linear: small enough to
  differentiate by hand."""

  def __init__(self, seed=0):
    rngs = nnx.Rngs(seed)
    self.stage_names = ("s1", "s2")
    self.stages = nnx.List([Pointwise(3, 6, rngs), Pointwise(6, 5, rngs)])
    self.head = LinearHead(5, 4, dtype=jnp.float32, rngs=rngs)


def params(toy):
  p = [(np.asarray(s.conv.kernel[...], np.float64)[0, 0], np.asarray(s.conv.bias[...], np.float64)) for s in toy.stages]
  return p, np.asarray(toy.head.fc.kernel[...], np.float64)


RULES = {
  "plain": lambda z, g: g * (z > 0),
  "deconvnet": lambda z, g: g * (g > 0),
  "guided": lambda z, g: g * (z > 0) * (g > 0),
}


def by_hand(toy, x, classes, rule="plain"):
  """NumPy float64: the activations a1, a2, and d y_k / d a1, d y_k / d x with `rule` at both ReLUs."""
  ((w1, b1), (w2, b2)), wf = params(toy)
  x = np.asarray(x, np.float64)
  z1 = x @ w1 + b1
  a1 = np.maximum(z1, 0)
  z2 = a1 @ w2 + b2
  a2 = np.maximum(z2, 0)
  hw = x.shape[1] * x.shape[2]
  da2 = np.broadcast_to(wf[:, classes].T[:, None, None, :] / hw, a2.shape)
  da1 = RULES[rule](z2, da2) @ w2.T
  dx = RULES[rule](z1, da1) @ w1.T
  return a1, a2, da1, dx


@pytest.fixture(scope="module")
def toy_case():
  toy = Toy()
  x = jax.random.normal(jax.random.key(1), (3, 5, 6, 3))
  classes = jnp.array([0, 2, 3])
  return toy, x, classes, lambda im: toy(im)[0]


def test_grad_cam_equals_the_hand_computation_at_every_stage(toy_case):
  toy, x, classes, fn = toy_case
  a1, a2, da1, _ = by_hand(toy, x, classes)
  ((_, _), _), wf = params(toy)
  want = {
    "s1": np.maximum(np.einsum("bhwc,bc->bhw", a1, da1.mean(axis=(1, 2))), 0),
    "s2": np.maximum(np.einsum("bhwc,cb->bhw", a2, wf[:, classes]) / (5 * 6), 0),
  }
  for layer, expected in want.items():
    got = jax.jit(lambda im: saliency.grad_cam(fn, im, classes, layer))(x)
    assert got.shape == (3, 5, 6) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    assert (expected > 0).any() and (expected == 0).any()  # the ReLU has something to clip


def test_cam_is_grad_cam_up_to_scale_for_a_pooled_linear_head():
  net = build_backbone("resnet18", 5, width=0.125, rngs=nnx.Rngs(0))
  net.eval()
  x = jax.random.normal(jax.random.key(2), (2, 64, 64, 3))  # a 2x2 layer4
  fn = lambda im: net(im)[0]  # noqa: E731
  classes = jnp.argmax(fn(x), axis=-1)  # the predicted class: the one whose map has something positive to show
  gc = saliency.grad_cam(fn, x, classes, "layer4")
  _, feats = net(x)
  c = saliency.cam(feats["layer4"], net.head.fc.kernel[...], classes)
  h, w = feats["layer4"].shape[1:3]
  np.testing.assert_allclose(gc, jax.nn.relu(c) / (h * w), rtol=1e-4, atol=1e-7)
  assert float(jnp.max(gc)) > 0


@pytest.mark.parametrize("rule", ["plain", "deconvnet", "guided"])
def test_input_gradient_applies_the_rule_at_every_relu(toy_case, rule):
  toy, x, classes, fn = toy_case
  *_, dx = by_hand(toy, x, classes, rule)
  got = jax.jit(lambda im: saliency.input_gradient(fn, im, classes, rule))(x)
  np.testing.assert_allclose(got, dx, rtol=1e-4, atol=1e-7)


def test_relu_rules_backward_signals():
  x = jnp.array([-2.0, -1.0, 1.0, 2.0])
  g = jnp.array([1.0, -1.0, 1.0, -1.0])
  want = {"plain": [0, 0, 1, -1], "deconvnet": [1, 0, 1, 0], "guided": [0, 0, 1, 0]}
  for rule, expected in want.items():
    with layers.relu_rule(rule):
      y, vjp = jax.vjp(layers.relu, x)
    np.testing.assert_array_equal(y, [0, 0, 1, 2])
    np.testing.assert_array_equal(vjp(g)[0], expected)
  with pytest.raises(ValueError, match="guided"):
    with layers.relu_rule("gided"):
      pass
  _, vjp = jax.vjp(layers.relu, x)  # outside every context: plain again
  np.testing.assert_array_equal(vjp(g)[0], want["plain"])


def test_guided_grad_cam_is_guided_gradient_times_upsampled_grad_cam(toy_case):
  toy, x, classes, fn = toy_case
  ggc = saliency.guided_grad_cam(fn, x, classes, "s1")
  gc = jax.image.resize(saliency.grad_cam(fn, x, classes, "s1"), (3, 5, 6), "bilinear")  # same size: identity
  np.testing.assert_allclose(
    ggc, by_hand(toy, x, classes, "guided")[3] * np.asarray(gc)[..., None], rtol=1e-4, atol=1e-7
  )


def test_layers_of_repeated_backbones_are_named_by_occurrence():
  first, second = Toy(0), Toy(1)
  # A two-network chain, as RA-CNN's scales: the second sees the first's stage s1 output's first three channels.
  fn = lambda im: second(first.features(im)[1]["s1"][..., :3])[0]  # noqa: E731
  x = jax.random.normal(jax.random.key(3), (2, 4, 4, 3))
  assert saliency.layer_names(fn, x) == ["s1", "s2", "s1#2", "s2#2"]
  _, a = saliency.tapped(fn, x, "s1#2")
  np.testing.assert_allclose(a, second.features(first.features(x)[1]["s1"][..., :3])[1]["s1"], rtol=1e-6)
  with pytest.raises(ValueError, match=r"'s1#3' does not run.*s1, s2, s1#2, s2#2"):
    saliency.tapped(fn, x, "s1#3")
  with pytest.raises(ValueError, match="occurrence"):
    saliency.parse_layer("s1#0")


def test_amplify_raises_its_objective_and_keeps_the_range(toy_case):
  toy, x, classes, fn = toy_case

  def objective(im, channel):
    return float(jnp.mean(toy.features(im)[1]["s2"][..., channel]))

  out = jax.jit(
    lambda im: saliency.amplify(fn, im, layer="s2", channel=1, steps=10, step_size=0.1, low=-2.0, high=2.0)
  )(x)
  assert objective(out, 1) > objective(x, 1) + 0.1
  assert float(out.min()) >= -2.0 and float(out.max()) <= 2.0
  out = saliency.amplify(fn, x, classes=classes, steps=5)
  assert float(saliency.class_score(fn(out), classes)) > float(saliency.class_score(fn(x), classes))
  with pytest.raises(ValueError, match="either a layer"):
    saliency.amplify(fn, x, layer="s2", classes=classes)
  channels = saliency.layer_shape(fn, x, "s2")[-1]
  for channel in (channels, -1):  # out of range: refused, not clamped to another channel
    with pytest.raises(ValueError, match=rf"s2 has {channels} channels \(0\.\.{channels - 1}\); there is no channel"):
      saliency.amplify(fn, x, layer="s2", channel=channel, steps=1)
