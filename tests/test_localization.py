"""Localisation helpers: the object box found from activations (SCDA), the pointing game."""

import numpy as np

from fgattn_jax.ops import localization


def test_object_box_covers_the_cells_above_the_mean():
  f = np.zeros((2, 8, 8, 3), np.float32)
  f[0, 2:4, 5:7, 0] = 4.0  # a bright object on rows 2-3, columns 5-6
  f[0, 6, 1, 1] = 0.1  # a faint spot below the mean: not the object
  f[1] = 1.0  # nothing stands out: the whole image
  boxes = np.asarray(localization.object_boxes(f, (64, 96)))
  np.testing.assert_allclose(boxes[0], [5 * 12, 2 * 8, 7 * 12, 4 * 8])  # cells of 12 x 8 pixels
  np.testing.assert_allclose(boxes[1], [0, 0, 96, 64])


def test_object_box_spans_separate_blobs():
  f = np.zeros((1, 4, 4, 1), np.float32)
  f[0, 0, 0, 0] = f[0, 3, 2, 0] = 1.0
  np.testing.assert_allclose(np.asarray(localization.object_boxes(f, (4, 4)))[0], [0, 0, 3, 4])


def test_pointing_game_on_planted_maps():
  maps = np.zeros((3, 4, 4), np.float32)
  maps[0, 1, 1] = maps[1, 3, 3] = 1.0  # third map: all zero, its peak is the first cell
  boxes = np.array([[8, 8, 24, 24], [8, 8, 24, 24], [0, 0, 8, 8]], np.float32)
  hits = np.asarray(localization.pointing_game(maps, boxes, (32, 32)))
  np.testing.assert_array_equal(hits, [True, False, True])
  np.testing.assert_allclose(np.asarray(localization.box_area_fraction(boxes, (32, 32))), [0.25, 0.25, 1 / 16])
