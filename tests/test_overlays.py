"""Maps over images and panels of tiles: what the visualize command draws."""

import numpy as np
import pytest
from PIL import Image

from fgattn_jax import overlays

IMAGE = np.full((20, 30, 3), 100, np.uint8)


def test_overlay_blends_the_coloured_map():
  m = np.zeros((4, 6), np.float32)
  m[1, 2] = 5.0
  np.testing.assert_array_equal(overlays.overlay(IMAGE, m, alpha=0.0), IMAGE)
  heat = overlays.overlay(IMAGE, m, alpha=1.0)
  assert heat.shape == IMAGE.shape and heat.dtype == np.uint8
  np.testing.assert_array_equal(heat, overlays.heatmap_rgb(overlays.resize_map(m, (20, 30))))
  y, x = np.unravel_index(np.argmax(overlays.resize_map(m, (20, 30))), (20, 30))
  assert heat[y, x, 0] > 100 and heat[y, x, 2] < 50  # jet's hot end is red
  assert heat[0, 29, 2] > 100 and heat[0, 29, 0] < 50  # its cold end is blue
  flat = overlays.heatmap_rgb(np.ones((3, 3)))  # a flat map: the cold end everywhere, no NaN
  np.testing.assert_array_equal(flat, np.broadcast_to(overlays.heatmap_rgb(np.eye(2))[0, 1], (3, 3, 3)))


def test_resize_map_uses_pixel_centres():
  np.testing.assert_allclose(overlays.resize_map(np.full((2, 2), 3.0), (4, 4)), 3.0)
  m = np.array([[0.0, 4.0], [0.0, 4.0]], np.float32)
  r = overlays.resize_map(m, (4, 4))
  # Output pixel 1's centre (1.5 of 4) sits at 0.75 of input pixel 0 -> 0.25 of the way to pixel 1.
  np.testing.assert_allclose(r[0], [0.0, 1.0, 3.0, 4.0], atol=1e-5)


def test_part_overlay_colours_each_part_and_leaves_the_rest():
  maps = np.zeros((20, 30, 2), np.float32)
  maps[2:5, 2:5, 0] = 1.0
  maps[10:15, 20:25, 1] = 1.0
  out = overlays.part_overlay(IMAGE, maps)
  np.testing.assert_array_equal(out[18, 5], IMAGE[18, 5])  # no part: the image
  red, green = overlays.PALETTE[:2]
  assert np.argmax(out[3, 3]) == np.argmax(red) and np.argmax(out[12, 22]) == np.argmax(green)


def test_boxes_and_points_are_drawn_on_a_copy():
  image = IMAGE.copy()
  out = overlays.draw_boxes(image, np.array([[5, 5, 25, 15], [np.nan, 0, 1, 1]]), width=1)
  np.testing.assert_array_equal(image, IMAGE)
  assert tuple(out[5, 10]) == overlays.PALETTE[0] and tuple(out[14, 10]) == overlays.PALETTE[0]
  np.testing.assert_array_equal(out[10, 15], IMAGE[10, 15])  # inside
  np.testing.assert_array_equal(out[2, 2], IMAGE[2, 2])  # outside
  out = overlays.draw_points(image, np.array([[10, 10], [np.nan, np.nan]]), radius=3)
  np.testing.assert_array_equal(image, IMAGE)
  assert tuple(out[10, 10]) == overlays.PALETTE[0]
  np.testing.assert_array_equal(out[10, 20], IMAGE[10, 20])


def test_guided_rgb_centres_on_grey():
  g = np.random.default_rng(0).normal(size=(8, 8, 3))
  out = overlays.guided_rgb(g)
  assert out.dtype == np.uint8 and abs(float(out.mean()) - 127.5) < 3


def test_panel_size_follows_its_formula_and_captions_are_drawn():
  tiles = [(f"tile {i}", np.full((32, 32, 3), 30 * i, np.uint8)) for i in range(8)]
  out = overlays.panel(tiles, title="title", footer_lines=["a", "b"])
  th = tw = 160  # 32 px enlarged 5x to reach MIN_TILE
  g = overlays.GAP
  width = 6 * tw + 7 * g
  height = overlays.TITLE_H + 2 * (overlays.CAPTION_H + th + g) + g + 2 * overlays.LINE_H
  assert out.shape == (height, width, 3)
  caption_band = out[overlays.TITLE_H:overlays.TITLE_H + overlays.CAPTION_H, g:g + tw]
  assert (caption_band < 128).any()  # text
  top = overlays.TITLE_H + overlays.CAPTION_H
  tile = out[top:top + th, g + tw + g:g + 2 * tw + g]
  np.testing.assert_array_equal(tile, 30)  # the second tile, enlarged
  assert overlays.panel(tiles[:2], tile_size=(40, 50)).shape[1] == 2 * 50 + 3 * g
  with pytest.raises(ValueError, match="at least one tile"):
    overlays.panel([])


def test_save_png_and_index(tmp_path):
  path = overlays.save_png(tmp_path / "a" / "b" / "p.png", IMAGE)
  assert Image.open(path).size == (30, 20)
  index = overlays.write_index(tmp_path / "a", [{"png": "b/p.png", "caption": "<b>&"}], "runs <1>")
  text = open(index).read()
  assert 'src="b/p.png"' in text and "&lt;b&gt;&amp;" in text and "<b>&" not in text and "runs &lt;1&gt;" in text
