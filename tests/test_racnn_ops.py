"""RA-CNN ops: the soft mask and the attention crop against independent float64 NumPy references, box gradients
against finite differences, the planted-patch behaviour the zoom is for, the ranking loss, the APN box bounds and
the APN pretraining target."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bilinear_reference import reference_crop, smooth_image

from fgattn_jax.ops import racnn

# Compiled whole: op-by-op dispatch compiles every primitive separately, seconds per test on a busy CPU.
apn_box = jax.jit(
  racnn.apn_box, static_argnums=1, static_argnames=("min_half_fraction", "max_half_fraction", "keep_inside")
)
square_box = jax.jit(racnn.square_box)
box_mask = jax.jit(racnn.box_mask, static_argnums=1)
attention_crop = jax.jit(racnn.attention_crop, static_argnums=2)
ranking_loss = jax.jit(racnn.ranking_loss)
apn_targets = jax.jit(racnn.apn_targets, static_argnums=(1, 2), static_argnames="keep_inside")
smooth_l1 = jax.jit(racnn.smooth_l1)


# ---- independent float64 references ----------------------------------------------------------------------------


def sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def central_differences(f, x, eps):
  """d f / d x by central differences, one coordinate of the array x at a time."""
  numeric = np.zeros_like(x)
  for i in np.ndindex(x.shape):
    e = np.zeros_like(x)
    e[i] = eps
    numeric[i] = (f(jnp.asarray(x + e)) - f(jnp.asarray(x - e))) / (2 * eps)
  return numeric


def reference_mask(box, hw, k):
  """One pixel at a time, at its centre; k per pixel."""
  h, w = hw
  x0, y0, x1, y1 = (float(v) for v in box)
  out = np.zeros((h, w))
  for r in range(h):
    for c in range(w):
      x, y = c + 0.5, r + 0.5
      mx = sigmoid(k * (x - x0)) - sigmoid(k * (x - x1))
      my = sigmoid(k * (y - y0)) - sigmoid(k * (y - y1))
      out[r, c] = mx * my
  return out


def indicator(box, hw):
  """1 where the pixel centre lies inside the box: the mask's k -> infinity limit."""
  h, w = hw
  x, y = np.arange(w) + 0.5, np.arange(h) + 0.5
  inside_x = (x > box[0]) & (x < box[2])
  inside_y = (y > box[1]) & (y < box[3])
  return (inside_y[:, None] & inside_x[None, :]).astype(np.float64)


def reference_ranking(pc_logits, pf_logits, labels, margin, mask=None):
  total, count = 0.0, 0
  for b, label in enumerate(labels):
    if mask is not None and not mask[b]:
      continue
    pc = np.exp(pc_logits[b] - pc_logits[b].max())
    pf = np.exp(pf_logits[b] - pf_logits[b].max())
    total += max(0.0, pc[label] / pc.sum() - pf[label] / pf.sum() + margin)
    count += 1
  return total / max(count, 1)


# ---- the mask --------------------------------------------------------------------------------------------------

BOXES = np.array([[2.3, 1.6, 7.4, 5.2], [-1.5, 2.0, 4.0, 9.5], [0.0, 0.0, 10.0, 6.0]], np.float32)


@pytest.mark.parametrize("k", [1.5, 10.0])  # a soft step and the default (BOXES has edges 0.1 px from centres)
def test_mask_matches_formula(k):
  hw = (6, 10)  # non-square: x runs along W, y along H
  mask = box_mask(BOXES, hw, k)
  assert mask.shape == (3, *hw) and mask.dtype == jnp.float32
  for b in range(3):
    np.testing.assert_allclose(np.asarray(mask[b]), reference_mask(BOXES[b], hw, k), atol=1e-6)


def test_mask_inside_outside_edge_and_hard_limit():
  hw, k = (16, 16), 12.5  # per pixel
  box = np.array([[4.5, 3.0, 12.5, 11.0]], np.float32)  # x0 and x1 on pixel centres (columns 4 and 12)
  mask = np.asarray(box_mask(box, hw, k))[0]
  assert mask[7, 8] > 0.999 and mask[5, 6] > 0.99  # well inside
  assert mask[0, 0] < 1e-4 and mask[14, 8] < 1e-4 and mask[7, 15] < 1e-4  # well outside
  # On the left edge: h(0) - h(-8 k) = 0.5 - sigmoid(-100), times the y factor at row 7.
  my = sigmoid(k * (7.5 - 3.0)) - sigmoid(k * (7.5 - 11.0))
  np.testing.assert_allclose(mask[7, 4], (0.5 - sigmoid(-k * 8)) * my, rtol=1e-6)
  np.testing.assert_allclose(mask[7, 12], 0.5 * my, rtol=1e-5)
  # k -> infinity: the indicator of the pixel centres inside the box (edges 0.25 px or more from the centres).
  hard = np.array([[2.25, 3.3, 9.7, 12.75]], np.float32)
  np.testing.assert_allclose(np.asarray(box_mask(hard, hw, 312.5))[0], indicator(hard[0], hw), atol=1e-6)
  assert np.abs(np.asarray(box_mask(hard, hw, 3.125))[0] - indicator(hard[0], hw)).max() > 0.1  # k matters


# ---- the crop --------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("resample")
def test_attention_crop_with_large_k_is_bilinear_resize_of_the_masked_box():
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (3, 16, 16, 2)).astype(np.float32)
  # Edges at least 0.25 px from every pixel centre; the last box hangs over the bottom-right corner.
  boxes = np.array([[2.25, 3.3, 9.7, 12.75], [0.8, 0.2, 15.2, 14.7], [9.3, 7.8, 19.2, 18.8]], np.float32)
  crop = attention_crop(images, boxes, (8, 8), 1000.0)
  assert crop.shape == (3, 8, 8, 2) and crop.dtype == jnp.float32
  for b in range(3):
    masked = images[b] * indicator(boxes[b], (16, 16))[..., None]
    np.testing.assert_allclose(np.asarray(crop[b]), reference_crop(masked, boxes[b], (8, 8)), atol=1e-5)


def inner_taps(lo, hi, n):
  """(n,) whether both bilinear taps (the pixel centres around the sample) of each of the n samples of [lo, hi]
  lie half a pixel or more inside it."""
  pos = lo + (np.arange(n) + 0.5) * (hi - lo) / n
  first = np.floor(pos - 0.5) + 0.5
  return (first >= lo + 0.5) & (first + 1 <= hi - 0.5)


# The smallest boxes the presets allow: half side 0.25 of a 96-pixel side, centred and off centre at fractional
# coordinates; 'closer's 0.2 of scale 1's 96 pixels, i.e. 25.6 of the 128-pixel image its zoom samples.
SMALL_BOXES = [(96, (24.0, 24.0, 72.0, 72.0)), (96, (6.37, 37.81, 54.37, 85.81)), (128, (14.7, 59.95, 65.9, 111.15))]


@pytest.mark.usefixtures("resample")
@pytest.mark.parametrize("side,box", SMALL_BOXES)
@pytest.mark.parametrize("out", [64, 80])
def test_zoom_of_a_constant_is_not_darkened(x64, side, box, out):
  """The zoom of a constant image (100) with the default k = 10 per pixel keeps the constant: within 2% at every
  sample whose two bilinear taps lie half a pixel or more inside the box along both axes, within 1% at the centre.
  The outer ring (a tap less than half a pixel inside the edge, or outside it) blends in the masked-out neighbour,
  as a crop of X times a hard box would: darker, but at least 0.5 of the constant along one edge, and 0.25 at the
  ring's corners, where the two axes' losses multiply (the zoom of a constant is separable; swept over 200 random
  offsets the worst edge is 0.55 and the worst corner 0.30). With k per unit of the image the centre was 0.72
  (half side 0.25) or 0.58 (25.6 of 128)."""
  image = jnp.full((1, side, side, 1), 100.0)
  zoom = np.asarray(attention_crop(image, jnp.asarray([box]), (out, out)))[0, :, :, 0] / 100
  rows, cols = inner_taps(box[1], box[3], out), inner_taps(box[0], box[2], out)
  assert 2 <= (~rows).sum() <= 4 and 2 <= (~cols).sum() <= 4  # the ring is one or two samples deep
  inner = rows[:, None] & cols[None, :]
  corner = ~rows[:, None] & ~cols[None, :]
  np.testing.assert_allclose(zoom[inner], 1.0, rtol=0.02)
  np.testing.assert_allclose(zoom[out // 2, out // 2], 1.0, rtol=0.01)
  assert zoom.max() <= 1.0 + 1e-9
  assert zoom[~inner & ~corner].min() >= 0.5 and zoom[corner].min() >= 0.25


@pytest.mark.usefixtures("resample")
def test_zoom_gradient_to_the_apn_box_matches_finite_differences(x64):
  """d crop / d (t_x, t_y, t_l) through square_box and the steep default mask, on a textured image, against central
  differences. The mask's route is part of it: the gradient differs from the plain crop's of the same box."""
  image = jnp.asarray(smooth_image(32, 32, 2, 9) + 0.5 * np.random.default_rng(10).uniform(-1, 1, (32, 32, 2)))
  images = jnp.stack([image, image[::-1]])
  weights = jnp.asarray(np.random.default_rng(11).normal(size=(2, 24, 24, 2)))
  # One box from the APN's map (half side in [0.25, 0.5] of the side), one with its edges 0.07 or 0.08 px from
  # pixel centres, where the mask's step is steepest. Zoomed in (as RA-CNN does), so that the outer samples' taps
  # reach the pixels on the edges: a coarser sampling would skip them and the mask's route with them.
  t = np.concatenate(
    [np.asarray(apn_box(np.array([[0.31, 0.64, 0.27]]), (32, 32), min_half_fraction=0.25)), [[14.995, 17.995, 11.425]]]
  )
  edges = np.asarray(square_box(t))
  near = np.abs((edges[1] - 0.5) - np.round(edges[1] - 0.5))
  assert np.all((near >= 0.05) & (near <= 0.1)), edges[1]
  pos = [e[0] + (np.arange(24) + 0.5) * (e[2] - e[0]) / 24 for e in edges] + [
    e[1] + (np.arange(24) + 0.5) * (e[3] - e[1]) / 24 for e in edges
  ]
  kink = min(np.abs((p - 0.5) - np.round(p - 0.5)).min() for p in pos)
  assert kink > 1e-3  # bilinear sampling has kinks where a sample crosses a pixel centre: none within eps

  def loss_with(crop):
    return jax.jit(lambda t: jnp.sum(crop(images, racnn.square_box(t)) * weights))

  loss = loss_with(lambda im, b: racnn.attention_crop(im, b, (24, 24)))
  grad = np.asarray(jax.grad(loss)(jnp.asarray(t)))
  numeric = central_differences(loss, t, eps=1e-6)  # pixels
  np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)
  assert np.all(np.abs(numeric) > 1e-2)  # every coordinate moves the crop
  plain = np.asarray(jax.grad(loss_with(lambda im, b: racnn.crops.crop_resize(im, b, (24, 24))))(jnp.asarray(t)))
  assert np.abs(grad[1] - plain[1]).max() > 0.1 * np.abs(grad[1]).max()  # the mask's route counts


@pytest.mark.usefixtures("resample")
def test_bfloat16_images_give_bfloat16_close_to_float32():
  images = np.random.default_rng(1).uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
  boxes = np.array([[1.3, 2.2, 12.9, 13.8], [4.0, 0.5, 15.5, 12.0]], np.float32)
  full = attention_crop(images, boxes, (8, 8), 10.0)
  low = attention_crop(jnp.asarray(images, jnp.bfloat16), boxes, (8, 8), 10.0)
  assert low.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(low, np.float32), np.asarray(full), atol=2e-2)


@pytest.mark.usefixtures("resample")
def test_gradients_match_finite_differences(x64):
  images = jnp.asarray(np.stack([smooth_image(16, 16, 2, seed) for seed in (2, 3)]))
  weights = jnp.asarray(np.random.default_rng(4).normal(size=(2, 8, 8, 2)))
  # Example 1 sits near the top edge: t_y = t_l + 0.2 (16 - 2 t_l) with t_l = 16 (1/3 + 0.72 / 6) = 7.25, which a
  # clip of s_y * 16 = 3.2 into [t_l, 16 - t_l] would have frozen (no gradient); the affine keep-inside map does not.
  # Bilinear sampling has kinks where a sample crosses a pixel centre: every sample here is 0.02 px or more away.
  s = np.array([[0.47, 0.55, 0.4], [0.53, 0.2, 0.72]])

  @jax.jit
  def loss(s):
    box = racnn.square_box(racnn.apn_box(s, (16, 16)))
    return jnp.sum(racnn.attention_crop(images, box, (8, 8), k=10.0) * weights)

  grad = np.asarray(jax.grad(loss)(jnp.asarray(s)))
  numeric = central_differences(loss, s, eps=1e-6)  # 1.6e-5 px: no sample crosses a pixel centre
  np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)
  assert np.all(np.abs(numeric) > 1e-3)  # every coordinate moves the crop: not vacuous


@pytest.mark.usefixtures("resample")
def test_gradient_reaches_the_box_through_the_mask_and_through_the_sampling():
  box = jnp.asarray([[3.25, 2.75, 12.2, 11.75]])  # edges 0.25 px or more from the pixel centres

  def grad_of(fn, image):
    return np.asarray(jax.jit(jax.grad(lambda b: jnp.mean(fn(image, b))))(box))

  # A constant image: the plain crop does not move with the box, the masked one does, through the mask alone.
  flat = jnp.ones((1, 16, 16, 1))
  np.testing.assert_allclose(grad_of(lambda im, b: racnn.crops.crop_resize(im, b, (8, 8)), flat), 0.0, atol=1e-6)
  assert np.all(np.abs(grad_of(lambda im, b: racnn.attention_crop(im, b, (8, 8), 10.0), flat)) > 1e-3)
  # A ramp with a near-hard mask (no pixel centre near an edge): the gradient is the sampling's alone.
  ramp = jnp.broadcast_to(jnp.arange(16.0)[None, None, :, None], (1, 16, 16, 1))
  hard = indicator(np.asarray(box[0]), (16, 16))[None, :, :, None]
  sampled = grad_of(lambda im, b: racnn.crops.crop_resize(im * hard, b, (8, 8)), ramp)
  assert np.abs(sampled).max() > 0.1
  np.testing.assert_allclose(
    grad_of(lambda im, b: racnn.attention_crop(im, b, (8, 8), 1000.0), ramp), sampled, atol=1e-3
  )


@pytest.mark.usefixtures("resample")
def test_planted_patch_pulls_the_box_towards_it():
  image = np.zeros((1, 16, 16, 1), np.float32)
  image[:, 10:14, 11:15] = 1.0  # the bright patch, centred at (13, 12); the box overlaps its top-left corner

  @jax.jit
  def share(t):  # the patch's share of the crop: its mean over the bright channel
    return jnp.mean(racnn.attention_crop(image, racnn.square_box(t)[None], (8, 8), k=10.0))

  t = jnp.asarray([8.2, 7.6, 4.6])
  grad = np.asarray(jax.grad(share)(t))
  assert grad[0] > 0 and grad[1] > 0  # towards the patch, along both axes
  step = np.array([grad[0], grad[1], 0.0]) / np.hypot(grad[0], grad[1])
  before, after = float(share(t)), float(share(t + 0.5 * step))
  assert after > before + 1e-3


@pytest.mark.usefixtures("resample")
def test_end_to_end_under_jit():
  @jax.jit
  def zoom(images, s):
    return racnn.attention_crop(images, racnn.square_box(racnn.apn_box(s, (16, 16))), (12, 6))

  out = zoom(jnp.ones((2, 16, 16, 3)), jnp.full((2, 3), 0.5))
  assert out.shape == (2, 12, 6, 3) and np.isfinite(np.asarray(out)).all()


# ---- the APN box -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("image_hw", [(16, 16), (20, 30)])
def test_apn_box_bounds_hold_for_any_output(image_hw):
  h, w = image_hw
  rng = np.random.default_rng(5)
  s = np.concatenate(
    [
      rng.uniform(0, 1, (500, 3)),
      rng.normal(0.5, 3.0, (500, 3)),  # in range, and far outside
      np.zeros((1, 3)),
      np.ones((1, 3)),
      rng.integers(0, 2, (30, 3)),
    ]
  ).astype(np.float32)
  side = min(h, w)
  for lo, keep in [(1 / 3, True), (1 / 3, False), (0.0, True)]:
    t = np.asarray(apn_box(s, image_hw, min_half_fraction=lo, keep_inside=keep))
    assert t.shape == (len(s), 3) and np.isfinite(t).all()
    assert np.all(t[:, 2] >= lo * side - 1e-5) and np.all(t[:, 2] <= side / 2 + 1e-5)
    box = np.asarray(square_box(t))
    if keep:
      assert np.all(box[:, :2] >= -1e-5) and np.all(box[:, 2] <= w + 1e-4) and np.all(box[:, 3] <= h + 1e-4)
  # The extremes reach the bounds.
  t = np.asarray(apn_box(np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 1.0]], np.float32), image_hw))
  np.testing.assert_allclose(t[:, 2], [side / 3, side / 2], rtol=1e-6)


def test_apn_box_values():
  s = np.array([[0.5, 0.25, 0.5], [0.1, 0.9, 0.0], [0.1, 0.9, 0.0]], np.float32)
  t = np.asarray(apn_box(s, (20, 30), keep_inside=False))  # side 20: t_l in [20/3, 10]
  np.testing.assert_allclose(t, [[15, 5, 25 / 3], [3, 18, 20 / 3], [3, 18, 20 / 3]], rtol=1e-6)
  t = np.asarray(apn_box(s, (20, 30)))  # the centre mapped into [t_l, W - t_l]: t_l + s_x (W - 2 t_l)
  low = [20 / 3 + 0.1 * 50 / 3, 20 / 3 + 0.9 * 20 / 3, 20 / 3]  # t_l = 20 / 3: W - 2 t_l = 50 / 3, H - 2 t_l = 20 / 3
  np.testing.assert_allclose(t, [[15, 25 / 3 + 0.25 * 10 / 3, 25 / 3], low, low], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(square_box(t[:1])), [[15 - 25 / 3, 2.5 / 3, 15 + 25 / 3, 52.5 / 3]], rtol=1e-6)
  # The centre has a gradient for every s_x, at the edges too (a clip would give none there): W - 2 t_l.
  for s_x in (0.001, 0.02, 0.5, 0.999):
    grad = jax.grad(lambda s: jnp.sum(racnn.apn_box(s, (20, 30))[:, 0]))(jnp.asarray([[s_x, 0.5, 0.5]]))
    np.testing.assert_allclose(np.asarray(grad)[0, 0], 30 - 2 * 25 / 3, rtol=1e-5)
  # A lower bound above the upper one is capped at it; t_l has a gradient (hi - lo) everywhere inside [0, 1].
  np.testing.assert_allclose(np.asarray(apn_box(s, (20, 30), min_half_fraction=0.7))[:, 2], 10.0)
  grad = jax.grad(lambda s: jnp.sum(racnn.apn_box(s, (20, 30), keep_inside=False)[:, 2]))(
    jnp.asarray([[0.5, 0.5, 0.02]])
  )
  np.testing.assert_allclose(np.asarray(grad), [[0, 0, 10 - 20 / 3]], rtol=1e-5)


# ---- the ranking loss ------------------------------------------------------------------------------------------


def test_ranking_loss_matches_reference():
  rng = np.random.default_rng(6)
  coarse, fine = rng.normal(0, 2, (2, 8, 5)).astype(np.float32)
  labels = rng.integers(0, 5, 8)
  mask = np.array([1, 0, 1, 1, 0, 1, 1, 1], bool)
  for margin in (0.05, 0.3):
    got = ranking_loss(coarse, fine, labels, margin)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(float(got), reference_ranking(coarse, fine, labels, margin), rtol=1e-5)
    np.testing.assert_allclose(
      float(ranking_loss(coarse, fine, labels, margin, mask)),
      reference_ranking(coarse, fine, labels, margin, mask),
      rtol=1e-5,
    )
  # Masked examples are ignored whatever they hold; all masked -> 0, and a finite gradient.
  wild = fine.copy()
  wild[~mask] = 1e4
  np.testing.assert_allclose(
    float(ranking_loss(coarse, wild, labels, 0.05, mask)),
    float(ranking_loss(coarse, fine, labels, 0.05, mask)),
    rtol=1e-6,
  )
  none = np.zeros(8, bool)
  assert float(ranking_loss(coarse, fine, labels, 0.05, none)) == 0.0
  grad = jax.grad(racnn.ranking_loss)(jnp.asarray(coarse), jnp.asarray(fine), labels, 0.05, none)
  assert np.isfinite(np.asarray(grad)).all()


def test_ranking_loss_hinge_on_probabilities():
  labels = np.array([0, 0])
  # p_c = sigmoid(1) = 0.731; fine p_f = sigmoid(3) = 0.953 beats it by more than the margin: 0. Then p_f = 0.5.
  coarse = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)
  fine = np.array([[3.0, 0.0], [0.0, 0.0]], np.float32)
  np.testing.assert_allclose(float(ranking_loss(coarse[:1], fine[:1], labels[:1])), 0.0)
  np.testing.assert_allclose(float(ranking_loss(coarse[1:], fine[1:], labels[1:])), sigmoid(1) - 0.5 + 0.05, rtol=1e-6)
  np.testing.assert_allclose(float(ranking_loss(coarse, fine, labels)), (sigmoid(1) - 0.5 + 0.05) / 2, rtol=1e-6)
  # The true class's logit is higher at the fine scale (2 > 1) but its probability is lower (1/3 < 0.576).
  c, f = np.array([[1.0, 0.0, 0.0]], np.float32), np.array([[2.0, 2.0, 2.0]], np.float32)
  pc = np.e / (np.e + 2)
  np.testing.assert_allclose(float(ranking_loss(c, f, labels[:1])), pc - 1 / 3 + 0.05, rtol=1e-6)
  # Scaling the logits changes the probabilities, and so the loss (it would not change a logit-sign hinge).
  c, f = np.array([[1.0, 0.0]], np.float32), np.array([[1.2, 0.0]], np.float32)
  small, large = float(ranking_loss(c, f, labels[:1])), float(ranking_loss(10 * c, 10 * f, labels[:1]))
  np.testing.assert_allclose(small, sigmoid(1.0) - sigmoid(1.2) + 0.05, rtol=1e-5)
  np.testing.assert_allclose(large, sigmoid(10.0) - sigmoid(12.0) + 0.05, rtol=1e-5)


# ---- the APN pretraining target --------------------------------------------------------------------------------


def test_apn_targets_square_on_the_planted_peak():
  features = np.random.default_rng(7).uniform(0, 0.1, (3, 7, 7, 4)).astype(np.float32)
  features[0, 2, 5, 1] = 5.0  # row 2, column 5
  features[1, 3, 3, :] = 2.0  # the centre cell, spread over channels
  features[2, 0, 6, 0] = 5.0  # the top-right corner
  image_hw = (224, 280)  # cells are 32 x 40 pixels; the shorter side is 224
  t = np.asarray(apn_targets(features, image_hw, 1 / 3, keep_inside=False))
  half = 224 / 3
  np.testing.assert_allclose(
    t, [[5.5 * 40, 2.5 * 32, half], [3.5 * 40, 3.5 * 32, half], [6.5 * 40, 0.5 * 32, half]], rtol=1e-6
  )
  inside = np.asarray(apn_targets(features, image_hw, 1 / 4))
  np.testing.assert_allclose(inside[:, 2], 56.0)
  # The corner peak, clipped inside: 5% of the centres' range (280 - 112 across, 224 - 112 down) short of the border.
  np.testing.assert_allclose(inside[2], [280 - 56 - 8.4, 56 + 5.6, 56], rtol=1e-6)
  np.testing.assert_allclose(inside[:2, :2], [[280 - 56 - 8.4, 80], [140, 112]], rtol=1e-6)
  grad = jax.grad(lambda f: jnp.sum(racnn.apn_targets(f, image_hw)))(jnp.asarray(features))
  assert not np.asarray(grad).any()


@pytest.mark.parametrize("grid, image_hw", [(28, (448, 448)), (7, (224, 280)), (6, (96, 96))])
def test_every_apn_target_is_reached_without_saturating_the_sigmoid(grid, image_hw):
  """For a peak in any cell, the kept-inside target is apn_box of an s inside [0.05, 0.95]: with the targets
  clipped onto the range's ends, 64% of a 28-cell axis's peaks were reachable only at s = 0 or 1, and the APN
  pretraining pushed those logits out without end."""
  h, w = image_hw
  n = grid * grid
  features = np.zeros((n, grid, grid, 1), np.float32)
  features[np.arange(n), np.arange(n) // grid, np.arange(n) % grid, 0] = 1.0
  t = np.asarray(apn_targets(features, image_hw, 1 / 3))
  lo, hi = 0.25 * min(h, w), 0.5 * min(h, w)  # configs/racnn.py's bounds
  s_l = (t[:, 2] - lo) / (hi - lo)
  s_x, s_y = (t[:, 0] - t[:, 2]) / (w - 2 * t[:, 2]), (t[:, 1] - t[:, 2]) / (h - 2 * t[:, 2])
  s = np.stack([s_x, s_y, s_l], axis=-1)
  assert s.min() >= 0.05 - 1e-6 and s.max() <= 0.95 + 1e-6
  box = racnn.apn_box(jnp.asarray(s), image_hw, min_half_fraction=0.25, max_half_fraction=0.5)
  np.testing.assert_allclose(box, t, rtol=1e-5, atol=1e-3)  # apn_box reaches each target exactly there


def test_smooth_l1():
  rng = np.random.default_rng(8)
  pred, target = rng.normal(0, 2, (2, 6, 3)).astype(np.float32)
  d = np.abs(pred.astype(np.float64) - target)
  for beta in (1.0, 0.5):
    want = np.where(d < beta, 0.5 * d**2 / beta, d - 0.5 * beta)
    np.testing.assert_allclose(float(smooth_l1(pred, target, beta)), want.mean(), rtol=1e-5)
  mask = np.array([1, 1, 0, 1, 0, 0], bool)
  want = np.where(d < 1, 0.5 * d**2, d - 0.5)
  np.testing.assert_allclose(float(smooth_l1(pred, target, 1.0, mask)), want[mask].mean(), rtol=1e-5)
