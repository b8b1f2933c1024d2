"""Maps over images and panels of tiles: what the visualize command draws (NumPy and Pillow only, fast)."""

import colorsys
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from fgattn_jax import overlays

IMAGE = np.full((20, 30, 3), 100, np.uint8)
NOISE = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
JET_LOW, JET_HIGH = (0, 0, 128), (128, 0, 0)  # jet's ends: dark blue, dark red


def hue(rgb) -> float:
  return colorsys.rgb_to_hsv(*(np.asarray(rgb, np.float64) / 255))[0]


def reference_upsample(m, hw):
  """Bilinear over pixel centres, separable, edges clamped: what Pillow and jax.image.resize do when enlarging."""
  m = np.asarray(m, np.float64)
  for axis, n_out in enumerate(hw):
    n_in = m.shape[axis]
    x = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(x).astype(int)
    hi, f = np.minimum(lo + 1, n_in - 1), x - lo
    shape = [1, 1]
    shape[axis] = n_out
    m = np.take(m, lo, axis) * (1 - f).reshape(shape) + np.take(m, hi, axis) * f.reshape(shape)
  return m


def test_heatmap_rgb_spans_the_colormap_from_the_maps_own_min_to_max():
  m = np.zeros((5, 7), np.float32)
  m[2, 3] = 1.0
  heat = overlays.heatmap_rgb(m)
  assert heat.shape == (5, 7, 3) and heat.dtype == np.uint8
  assert tuple(heat[2, 3]) == JET_HIGH  # the hot pixel: jet's hot end
  others = np.delete(heat.reshape(-1, 3), 2 * 7 + 3, axis=0)
  np.testing.assert_array_equal(others, np.broadcast_to(JET_LOW, others.shape))
  np.testing.assert_array_equal(overlays.heatmap_rgb(m * 7 - 3), heat)  # own min and max: scale does not matter
  np.testing.assert_array_equal(overlays.heatmap_rgb(m * 1e-4 + 1), heat)  # nor does a tiny one
  gray = overlays.heatmap_rgb(m, cmap="gray")
  assert tuple(gray[2, 3]) == (255, 255, 255) and tuple(gray[0, 0]) == (0, 0, 0)
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # a constant map: no 0 / 0
    flat = overlays.heatmap_rgb(np.full((3, 4), 2.5))
  np.testing.assert_array_equal(flat, np.broadcast_to(JET_LOW, (3, 4, 3)))


def test_resize_map_is_bilinear_over_pixel_centres():
  r = overlays.resize_map(np.full((3, 5), 3.0), (12, 20))
  assert r.shape == (12, 20) and r.dtype == np.float32
  np.testing.assert_allclose(r, 3.0, atol=1e-6)
  m = np.array([[0.0, 4.0], [8.0, 12.0]], np.float32)
  r = overlays.resize_map(m, (4, 4))
  # Output pixel 1's centre (1.5 of 4) sits at 0.75 of the input, a quarter of the way from centre 0 (0.5) to
  # centre 1 (1.5), on both axes: 0.75 * 0.75 * 0 + 0.75 * 0.25 * 4 + 0.25 * 0.75 * 8 + 0.25 * 0.25 * 12 = 3.
  assert r[1, 1] == pytest.approx(3.0, abs=1e-5)
  np.testing.assert_allclose(r[0], [0.0, 1.0, 3.0, 4.0], atol=1e-5)  # the edge row: clamped to row 0
  m = np.random.default_rng(1).normal(size=(3, 4))
  np.testing.assert_allclose(overlays.resize_map(m, (10, 7)), reference_upsample(m, (10, 7)), atol=1e-5)
  same = overlays.resize_map(m, (3, 4))
  np.testing.assert_allclose(same, m, atol=1e-6)


def test_overlay_blends_the_coloured_map():
  m = np.zeros((4, 6), np.float32)
  m[1, 2] = 5.0
  np.testing.assert_array_equal(overlays.overlay(NOISE, m, alpha=0.0), NOISE)
  heat = overlays.overlay(NOISE, m, alpha=1.0)
  assert heat.shape == NOISE.shape and heat.dtype == np.uint8
  expected_heat = overlays.heatmap_rgb(overlays.resize_map(m, (20, 30)))
  np.testing.assert_array_equal(heat, expected_heat)
  y, x = np.unravel_index(np.argmax(overlays.resize_map(m, (20, 30))), (20, 30))
  assert heat[y, x, 0] > 100 and heat[y, x, 2] < 50  # jet's hot end is red
  assert tuple(heat[0, 29]) == JET_LOW  # its cold end is blue
  half = overlays.overlay(NOISE, m, alpha=0.25)
  np.testing.assert_array_equal(half, np.round(0.75 * NOISE + 0.25 * expected_heat.astype(np.float64)))


def test_part_overlay_colours_each_part_and_leaves_the_rest():
  maps = np.zeros((20, 30, 3), np.float32)
  maps[2:5, 2:5, 0] = 1.0
  maps[10:15, 20:25, 1] = 1.0
  maps[2:5, 2:5, 2] = 1.0  # overlaps part 0
  maps[10:15, 2:5, 2] = 1.0
  out = overlays.part_overlay(NOISE, maps)
  assert out.shape == NOISE.shape and out.dtype == np.uint8
  active = maps.max(axis=-1) > 0
  np.testing.assert_array_equal(out[~active], NOISE[~active])  # no part: the image
  grey = overlays.part_overlay(IMAGE, maps)
  red, green, blue = overlays.PALETTE[:3]
  assert hue(grey[12, 22]) == pytest.approx(hue(green), abs=0.01)  # only part 1: its hue (grey keeps hues)
  assert hue(grey[12, 3]) == pytest.approx(hue(blue), abs=0.01)
  both = np.clip(np.add(red, blue), 0, 255)  # parts 0 and 2: the sum of their colours, clipped
  np.testing.assert_array_equal(grey[3, 3], np.round(0.4 * 100 + 0.6 * both))
  np.testing.assert_array_equal(overlays.part_overlay(NOISE, np.zeros((5, 6, 4))), NOISE)
  small = overlays.part_overlay(IMAGE, maps[::4, ::5], alpha=0.6)  # maps of another size: resized to the image
  assert small.shape == IMAGE.shape


def test_part_overlay_cycles_the_palette_and_takes_colours():
  maps = np.zeros((20, 30, 9), np.float32)
  maps[5:10, 5:10, 8] = 1.0  # the ninth part: the palette again from its start
  out = overlays.part_overlay(IMAGE, maps, alpha=1.0)
  assert tuple(out[7, 7]) == overlays.PALETTE[0]
  assert len(set(overlays.PALETTE)) >= 8
  out = overlays.part_overlay(
    IMAGE, maps[..., :2] + maps[..., 8:], colours=np.array([[0, 0, 0], [0, 0, 255]]), alpha=1.0
  )
  assert tuple(out[7, 7]) == (0, 0, 255)


def box_edge(x0, y0, x1, y1, width, shape=(20, 30)):
  """True on the `width` outermost rings of pixels columns x0..x1 - 1, rows y0..y1 - 1."""
  mask = np.zeros(shape, bool)
  mask[y0:y1, x0:x1] = True
  mask[y0 + width : y1 - width, x0 + width : x1 - width] = False
  return mask


@pytest.mark.parametrize("width", [1, 2])
def test_boxes_mark_their_edge_only_on_a_copy(width):
  image = NOISE.copy()
  out = overlays.draw_boxes(image, np.array([[5, 5, 25, 15], [np.nan, 0, 10, 10]]), width=width)
  np.testing.assert_array_equal(image, NOISE)  # the input is left alone
  assert out.shape == NOISE.shape and out.dtype == np.uint8
  edge = box_edge(5, 5, 25, 15, width)
  np.testing.assert_array_equal(out[edge], np.broadcast_to(overlays.PALETTE[0], (edge.sum(), 3)))
  np.testing.assert_array_equal(out[~edge], NOISE[~edge])  # inside, outside and the NaN box: untouched
  fractional = overlays.draw_boxes(image, [[4.6, 5.2, 24.9, 14.7]], width=width)  # pixel centres inside: the same
  np.testing.assert_array_equal(fractional, out)


def test_boxes_skip_nan_rows_cycle_colours_and_show_degenerate_ones():
  np.testing.assert_array_equal(overlays.draw_boxes(NOISE, np.full((2, 4), np.nan)), NOISE)
  colours = np.array([[255, 0, 0], [0, 255, 0]], np.uint8)  # an array, not only a list
  out = overlays.draw_boxes(IMAGE, [[1, 1, 4, 4], [6, 1, 9, 4], [11, 1, 14, 4]], colours=colours, width=1)
  assert tuple(out[1, 1]) == (255, 0, 0) and tuple(out[1, 6]) == (0, 255, 0) and tuple(out[1, 11]) == (255, 0, 0)
  point = overlays.draw_boxes(IMAGE, [[10, 10, 10, 10]], width=1)  # empty box: still one pixel, no error
  changed = (point != IMAGE).any(axis=-1)
  assert changed.sum() == 1 and changed[10, 10]


def test_points_are_outlined_discs_on_a_copy():
  image = NOISE.copy()
  out = overlays.draw_points(image, np.array([[10, 10], [np.nan, np.nan], [22.7, 12.2]]), radius=3)
  np.testing.assert_array_equal(image, NOISE)
  assert out.shape == NOISE.shape and out.dtype == np.uint8
  assert tuple(out[10, 10]) == overlays.PALETTE[0] and tuple(out[12, 22]) == overlays.PALETTE[2]
  for y, x in [(10, 7), (10, 13), (7, 10), (13, 10)]:  # the outline, radius 3 from the centre
    assert tuple(out[y, x]) == (0, 0, 0)
  changed = (out != NOISE).any(axis=-1)
  yy, xx = np.mgrid[:20, :30]
  near = ((yy - 10) ** 2 + (xx - 10) ** 2 <= 16) | ((yy - 12) ** 2 + (xx - 22) ** 2 <= 16)
  assert changed[near].sum() > 40 and not changed[~near].any()  # two discs, nothing else (the NaN row skipped)
  np.testing.assert_array_equal(overlays.draw_points(NOISE, [[np.nan, 3.0]]), NOISE)


def test_guided_rgb_centres_on_grey():
  g = np.random.default_rng(0).normal(size=(8, 8, 3))
  out = overlays.guided_rgb(g)
  assert out.shape == (8, 8, 3) and out.dtype == np.uint8
  expected = np.round(np.clip((g - g.mean()) / g.std() * 0.1 + 0.5, 0, 1) * 255)
  np.testing.assert_array_equal(out, expected)
  assert abs(float(out.mean()) - 127.5) < 3
  # The same picture at any scale: an early layer's guided gradients spread over 1e-10 once came out nearly grey.
  for scale in (1e-12, 1e-9, 1e6):
    np.testing.assert_array_equal(overlays.guided_rgb((g * scale).astype(np.float32)), out, err_msg=str(scale))
  spike = np.zeros((4, 4, 3))
  spike[0, 0, 0] = 1.0  # far beyond 5 standard deviations: clipped to white
  assert overlays.guided_rgb(spike)[0, 0, 0] == 255
  np.testing.assert_array_equal(overlays.guided_rgb(np.ones((4, 4, 3))), 128)


def test_panel_size_follows_its_formula_and_captions_are_drawn():
  tiles = [(f"tile {i}", np.full((32, 32, 3), 30 * i, np.uint8)) for i in range(8)]
  out = overlays.panel(tiles, title="title", footer_lines=["top-5: 3 (0.81)", "b"])
  th = tw = 160  # 32 px enlarged 5x to reach MIN_TILE
  g = overlays.GAP
  width = 6 * tw + 7 * g
  height = overlays.TITLE_H + 2 * (overlays.CAPTION_H + th + g) + g + 2 * overlays.LINE_H
  assert out.shape == (height, width, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out[0, 0], 255)  # white background
  caption_band = np.s_[overlays.TITLE_H : overlays.TITLE_H + overlays.CAPTION_H, g : g + tw]
  assert (out[caption_band] < 128).any()  # text above the first tile
  bare = overlays.panel([("", t) for _, t in tiles], footer_lines=["top-5: 3 (0.81)", "b"])
  np.testing.assert_array_equal(bare[caption_band], 255)  # no caption, no text
  assert (out[: overlays.TITLE_H] < 128).any() and (bare[: overlays.TITLE_H] == 255).all()  # the title
  footer = out[height - 2 * overlays.LINE_H :]
  assert (footer < 128).any()
  top = overlays.TITLE_H + overlays.CAPTION_H
  np.testing.assert_array_equal(out[top : top + th, g + tw + g : g + 2 * tw + g], 30)  # the second tile, enlarged
  second_row = top + th + g + overlays.CAPTION_H
  np.testing.assert_array_equal(out[second_row : second_row + th, g + tw + g : g + 2 * tw + g], 30 * 7)  # wrapped
  assert overlays.panel(tiles[:2], tile_size=(40, 50)).shape == (
    overlays.TITLE_H + overlays.CAPTION_H + 40 + 2 * g,
    2 * 50 + 3 * g,
    3,
  )
  assert overlays.panel(tiles[:7]).shape[:2] == (height - 2 * overlays.LINE_H, width)  # 7 tiles: 6 + 1
  with pytest.raises(ValueError, match="at least one tile"):
    overlays.panel([])


def test_panel_enlarges_small_tiles_sharply_by_whole_factors():
  big = overlays.panel([("a", np.zeros((64, 48, 3), np.uint8)), ("b", np.zeros((40, 40, 3), np.uint8))])
  g = overlays.GAP
  assert big.shape[:2] == (overlays.TITLE_H + overlays.CAPTION_H + 192 + 2 * g, 2 * 144 + 3 * g)  # 3x: 64 -> 192
  large = np.zeros((200, 100, 3), np.uint8)
  assert overlays.panel([("", large)]).shape[:2] == (overlays.TITLE_H + overlays.CAPTION_H + 200 + 2 * g, 100 + 2 * g)
  checker = (np.indices((16, 16)).sum(axis=0) % 2 * 255).astype(np.uint8)[..., None].repeat(3, axis=-1)
  top = overlays.TITLE_H + overlays.CAPTION_H

  def tile(size):
    return overlays.panel([("", checker)], tile_size=(size, size))[top : top + size, g : g + size]

  assert set(np.unique(tile(32))) == {0, 255}  # 2x: nearest, pixel blocks
  assert len(np.unique(tile(40))) > 2  # 2.5x: bilinear


def test_save_png_and_index(tmp_path):
  path = overlays.save_png(tmp_path / "a" / "b" / "p.png", NOISE)
  assert path == tmp_path / "a" / "b" / "p.png"
  with Image.open(path) as reopened:
    assert reopened.size == (30, 20) and reopened.format == "PNG"
    np.testing.assert_array_equal(np.asarray(reopened), NOISE)
  entries = [{"png": "b/p.png", "caption": "<b>&"}, {"png": str(tmp_path / "a" / "c" / "q.png"), "caption": "q"}]
  index = overlays.write_index(tmp_path / "a", entries, "runs <1>")
  assert os.fspath(index) == os.fspath(tmp_path / "a" / "index.html")
  text = open(index, encoding="utf-8").read()
  assert 'src="b/p.png"' in text and 'href="b/p.png"' in text and 'src="c/q.png"' in text
  assert "&lt;b&gt;&amp;" in text and "<b>&" not in text and "runs &lt;1&gt;" in text
  assert os.fspath(tmp_path) not in text  # relative links only
  assert "display: grid" in text and "max-width: 100%" in text


def test_boxes_stay_inside_thin_boxes_and_the_image():
  pad = 10  # the expected edge on a larger canvas, then cut to the image: a box partly outside loses those sides
  for box, width in [([10, 10, 11, 13], 2), ([10, 10, 13, 11], 3), ([8, 8, 14, 14], 2), ([-5, -5, 20, 12], 2)]:
    changed = (overlays.draw_boxes(IMAGE, [box], width=width) != IMAGE).any(axis=-1)
    expected = box_edge(*(v + pad for v in box), width, shape=(20 + 2 * pad, 30 + 2 * pad))[pad:-pad, pad:-pad]
    np.testing.assert_array_equal(changed, expected, err_msg=str(box))
  assert (overlays.draw_boxes(IMAGE, [[10, 10, 11, 13]], width=2) != IMAGE).any(axis=-1).sum() == 3  # all of it
  np.testing.assert_array_equal(overlays.draw_boxes(IMAGE, [[40, 40, 50, 50], [-9, 2, -1, 6]]), IMAGE)  # off the image
