"""MA-CNN channel-grouping loss: against a loop-by-loop NumPy float64 reference, edge cases (one part, identical
and constant maps, peaks on the border), gradients against finite differences, and the behaviour it is for."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgattn_jax.ops import macnn

SHAPES = [(3, 7, 5, 4), (2, 28, 28, 2), (1, 1, 6, 3)]

# Jitted once: op-by-op dispatch compiles every small op and would make this file slow.
cng = jax.jit(macnn.channel_grouping_loss, static_argnames="clamp")
dis_loss = jax.jit(macnn.distance_loss)
div_loss = jax.jit(macnn.diversity_loss, static_argnames="clamp")
peaks = jax.jit(macnn.peaks)
peaks_of_each = jax.jit(jax.vmap(macnn.peaks))


# ---- an independent reference: plain loops over batch, parts and cells, float64 --------------------------------


def reference(maps, lam=2.0, margin=0.02, clamp=False, eps=1e-6):
  """(dis, div, total) as the paper writes them, one cell at a time."""
  maps = np.asarray(maps, np.float64)
  b_, h_, w_, n_ = maps.shape
  norm = np.zeros_like(maps)
  for b in range(b_):
    for n in range(n_):
      norm[b, :, :, n] = maps[b, :, :, n] / max(maps[b, :, :, n].max(), eps)
  dis = div = 0.0
  for b in range(b_):
    for n in range(n_):
      best, ty, tx = -np.inf, 0, 0
      for r in range(h_):  # first maximum in row-major order
        for c in range(w_):
          if maps[b, r, c, n] > best:
            best, ty, tx = maps[b, r, c, n], r, c
      px, py = (tx + 0.5) / w_, (ty + 0.5) / h_
      for r in range(h_):
        for c in range(w_):
          m = norm[b, r, c, n]
          dis += m * (((c + 0.5) / w_ - px) ** 2 + ((r + 0.5) / h_ - py) ** 2)
          others = [norm[b, r, c, k] for k in range(n_) if k != n]
          if others:
            term = max(others) - margin
            div += m * (max(term, 0.0) if clamp else term)
  dis, div = dis / (b_ * n_), div / (b_ * n_)
  return dis, div, dis + lam * div


def random_maps(shape, seed=0):
  return np.random.default_rng(seed).uniform(0.0, 1.0, shape).astype(np.float32)


def gaussian(h, w, cy, cx, sigma):
  y, x = np.mgrid[:h, :w]
  return np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))


def check(maps, ref_maps, rtol, **kw):
  dis, div, total = reference(ref_maps, **kw)
  got_total, parts = cng(maps, **kw)
  for got, want in [(parts["dis"], dis), (parts["div"], div), (got_total, total)]:
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(float(got), want, rtol=rtol, atol=1e-7)


# ---- against the reference -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("clamp, margin", [(False, 0.02), (True, 0.3)])
def test_matches_reference(shape, clamp, margin):
  maps = random_maps(shape)
  check(maps, maps, 1e-5, lam=1.5, margin=margin, clamp=clamp)


@pytest.mark.parametrize("shape", SHAPES[:2])
def test_bfloat16_input_computes_in_float32(shape):
  maps = jnp.asarray(random_maps(shape, seed=1), jnp.bfloat16)
  assert macnn.normalize_maps(maps).dtype == jnp.float32
  check(maps, np.asarray(maps.astype(jnp.float32)), 1e-4)


def test_grid_coordinates_and_normalisation():
  grid = np.asarray(macnn.grid_coordinates(2, 4))
  assert grid.shape == (2, 4, 2)
  np.testing.assert_allclose(grid[1, 2], [2.5 / 4, 1.5 / 2])
  np.testing.assert_allclose(grid[0, 0], [0.125, 0.25])
  maps = random_maps((2, 5, 6, 3)) * 7.0
  norm = np.asarray(jax.jit(macnn.normalize_maps)(maps))
  np.testing.assert_allclose(norm.max(axis=(1, 2)), 1.0)
  np.testing.assert_allclose(norm * maps.max(axis=(1, 2), keepdims=True), maps, rtol=1e-6)
  assert np.all(np.asarray(macnn.normalize_maps(np.zeros((1, 3, 3, 2)))) == 0)  # no division by zero


# ---- edge cases --------------------------------------------------------------------------------------------------


def test_one_part_has_no_diversity_term():
  maps = random_maps((2, 6, 5, 1))
  assert float(div_loss(maps)) == 0.0
  total, parts = cng(maps)
  assert float(parts["div"]) == 0.0 and float(total) == pytest.approx(float(parts["dis"]))
  np.testing.assert_allclose(float(total), reference(maps)[2], rtol=1e-5)


def test_constant_maps_peak_at_the_first_cell():
  """argmax convention: ties go to the first cell in row-major order, so a constant map peaks top-left."""
  h, w, margin = 4, 6, 0.02
  maps = np.full((2, h, w, 3), 0.5, np.float32)
  np.testing.assert_allclose(np.asarray(peaks(maps)), np.broadcast_to([0.5 / w, 0.5 / h], (2, 3, 2)))
  y, x = np.mgrid[:h, :w]
  want_dis = np.sum(((x + 0.5) / w - 0.5 / w) ** 2 + ((y + 0.5) / h - 0.5 / h) ** 2)
  _, parts = cng(maps, margin=margin)
  np.testing.assert_allclose(float(parts["dis"]), want_dis, rtol=1e-5)
  # Every map is 1 everywhere once normalised; the max over the others is a tie at 1.
  np.testing.assert_allclose(float(parts["div"]), h * w * (1 - margin), rtol=1e-6)
  check(maps, maps, 1e-5)


def test_identical_maps_diversity_is_m_times_m_minus_margin():
  one = random_maps((2, 5, 7, 1), seed=3)
  maps = np.repeat(one, 3, axis=-1)  # three copies: max over the others is the map itself (a tie)
  norm = one / one.max(axis=(1, 2), keepdims=True)
  want = np.mean(np.sum(norm * (norm - 0.1), axis=(1, 2)))
  np.testing.assert_allclose(float(div_loss(maps, margin=0.1)), want, rtol=1e-5)


@pytest.mark.parametrize("row, col", [(0, 0), (6, 4), (0, 4), (3, 0)])
def test_peak_on_border_or_corner(row, col):
  h, w = 7, 5
  maps = random_maps((1, h, w, 2), seed=4) * 0.5
  maps[0, row, col, 0] = 1.0
  np.testing.assert_allclose(np.asarray(peaks(maps))[0, 0], [(col + 0.5) / w, (row + 0.5) / h])
  check(maps, maps, 1e-5)


# ---- gradients ---------------------------------------------------------------------------------------------------


def grad_points(shape, seed):
  """Random maps whose peak is clearly the largest cell, so that the argmax survives the perturbation."""
  rng = np.random.default_rng(seed)
  maps = rng.uniform(0.05, 0.8, shape)
  b_, h_, w_, n_ = shape
  for b in range(b_):
    for n in range(n_):
      maps[b, rng.integers(h_), rng.integers(w_), n] = 1.0
  return maps


LOSSES = {
  "dis": macnn.distance_loss,
  "div": lambda m: macnn.diversity_loss(m, margin=0.02),
  "div_clamp": lambda m: macnn.diversity_loss(m, margin=0.3, clamp=True),
  "cng": lambda m: macnn.channel_grouping_loss(m, lam=2.0)[0],
}


@pytest.mark.parametrize("name", LOSSES)
def test_gradients_match_finite_differences(x64, name):
  maps = jnp.asarray(grad_points((2, 4, 3, 3), seed=5), jnp.float64)
  # The point itself, then every one-element perturbation up and down, in one compiled call.
  step = 1e-6
  basis = np.eye(maps.size).reshape(maps.size, *maps.shape) * step
  points = jnp.concatenate([maps[None], maps + basis, maps - basis])
  assert np.all(np.asarray(peaks_of_each(points)) == np.asarray(peaks_of_each(points[:1]))), "the argmax moved"
  values, grads = jax.jit(jax.vmap(jax.value_and_grad(LOSSES[name])))(points)
  assert values.dtype == jnp.float64
  values, grad = np.asarray(values[1:]), np.asarray(grads[0])
  numeric = ((values[: maps.size] - values[maps.size :]) / (2 * step)).reshape(maps.shape)
  assert np.abs(grad).max() > 0
  np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_peak_location_carries_no_gradient():
  grad = jax.jit(jax.jacobian(macnn.peaks))(jnp.asarray(random_maps((1, 3, 4, 2))))
  assert np.all(np.asarray(grad) == 0)


# ---- behaviour ---------------------------------------------------------------------------------------------------


def test_compact_map_has_lower_distance_than_spread_map():
  compact = gaussian(28, 28, 10, 14, 1.5)[None, :, :, None]
  spread = gaussian(28, 28, 10, 14, 8.0)[None, :, :, None]
  assert float(dis_loss(compact)) < 0.1 * float(dis_loss(spread))
  one_hot = np.zeros((1, 28, 28, 1))
  one_hot[0, 3, 5, 0] = 1.0
  assert float(dis_loss(one_hot)) == 0.0


def test_overlapping_maps_have_higher_diversity_than_disjoint_maps():
  a, b = gaussian(28, 28, 7, 7, 3.0), gaussian(28, 28, 20, 20, 3.0)
  overlapping = np.stack([a, gaussian(28, 28, 8, 8, 3.0)], axis=-1)[None]
  disjoint = np.stack([a, b], axis=-1)[None]
  assert float(div_loss(overlapping)) > float(div_loss(disjoint)) + 1.0
  assert float(div_loss(disjoint, clamp=True)) < 1e-3  # no overlap above the margin anywhere


def test_batch_matches_per_example_calls():
  """The batch loss is the mean of per-example losses (every example has the same number of parts)."""
  maps = random_maps((4, 9, 6, 3), seed=6)
  total, parts = cng(maps, lam=0.5)
  singles = [cng(maps[i : i + 1], lam=0.5) for i in range(4)]
  np.testing.assert_allclose(float(total), np.mean([float(s[0]) for s in singles]), rtol=1e-5)
  for key in ("dis", "div"):
    np.testing.assert_allclose(float(parts[key]), np.mean([float(s[1][key]) for s in singles]), rtol=1e-5)
  per_example = np.asarray(peaks(maps))
  np.testing.assert_array_equal(per_example, np.concatenate([np.asarray(peaks(maps[i : i + 1])) for i in range(4)]))
