"""Augmentation keeps boxes and part points on the pixels they marked."""

import numpy as np
import pytest
from PIL import Image

from data_pipelines import transforms as T

RED, GREEN = np.array([255, 0, 0]), np.array([0, 255, 0])


def planted(h=150, w=200):
  """A red rectangle (the box) with green 5x5 dots at three points, one of them outside the rectangle."""
  img = np.zeros((h, w, 3), np.uint8)
  box = np.array([60, 30, 150, 100], np.float32)
  img[30:100, 60:150] = RED
  parts = np.array([[70.5, 40.5], [140.5, 90.5], [20.5, 120.5]], np.float32)
  for x, y in parts:
    img[int(y) - 2 : int(y) + 3, int(x) - 2 : int(x) + 3] = GREEN
  return img, box, parts


@pytest.mark.parametrize("seed,pad", [(seed, 0) for seed in range(12)] + [(seed, 24) for seed in range(4)])
def test_train_transform_keeps_points_and_box_on_their_pixels(seed, pad):
  img, box, parts = planted()
  aug = T.Augment(resize=128, size=112, flip=True, rotation=45, pad=pad)
  out, b, p = T.train(img, box, parts, aug, np.random.default_rng(seed))
  assert out.shape == (112, 112, 3) and out.dtype == np.uint8
  for x, y in p:
    if np.isnan(x) or min(x, y, 112 - x, 112 - y) < 4:  # a dot on the border may be cut away by the crop
      continue
    # The point's pixel is still green: the dot moved with it.
    assert out[int(y), int(x), 1] > 150 and out[int(y), int(x), 0] < 100, (x, y)
  red = (out[..., 0] > 128) & (out[..., 1] < 100)
  rows, cols = np.nonzero(red)
  # Every red pixel lies inside the transformed box, and the box is tight around them.
  assert cols.min() >= b[0] - 1.5 and cols.max() + 1 <= b[2] + 1.5
  assert rows.min() >= b[1] - 1.5 and rows.max() + 1 <= b[3] + 1.5
  for edge, seen in zip(b, (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)):
    assert abs(edge - seen) < 3 or edge in (0, 112)


def test_evaluation_maps_coordinates_exactly():
  img, box, parts = planted()
  # Shorter side 150 -> 112: the 200 side becomes 149 (rounded); the centre crop starts at 18.5.
  out, b, p = T.evaluate(img, box, parts, T.Augment(resize=112, size=112))
  s, off = 112 / 150, (149 - 112) / 2
  np.testing.assert_allclose(b, [60 * s - off, 30 * s, 150 * s - off, 100 * s], atol=1e-3)
  np.testing.assert_allclose(p[:2], parts[:2] * s - [off, 0], atol=1e-3)
  assert np.all(np.isnan(p[2]))  # x = 20.5 * s - 18.5 < 0: cropped away
  assert out[int(p[0, 1]), int(p[0, 0]), 1] > 150


def test_a_box_partly_outside_the_crop_is_clipped_and_one_fully_outside_is_nan():
  img = np.zeros((150, 300, 3), np.uint8)  # resized to 112 x 224: the centre crop keeps x in [75, 225)
  boxes = np.array([[60, 30, 150, 100], [0, 0, 50, 50]], np.float32)
  none = np.zeros((0, 2), np.float32)
  s = 112 / 150
  b, _ = T.evaluate(img, boxes[0], none, T.Augment(resize=112, size=112))[1:]
  np.testing.assert_allclose(b, [0, 30 * s, 150 * s - 56, 100 * s], atol=1e-3)
  b, _ = T.evaluate(img, boxes[1], none, T.Augment(resize=112, size=112))[1:]
  assert np.all(np.isnan(b))


def test_flip_mirrors_coordinates():
  img, box, parts = planted(150, 150)  # square: the crop cannot move, only the flip changes the output
  aug = T.Augment(resize=150, size=150, flip=True)
  flipped = [T.train(img, box, parts, aug, np.random.default_rng(s)) for s in range(8)]
  ref = T.evaluate(img, box, parts, T.Augment(resize=150, size=150))
  mirrored = [f for f in flipped if not np.array_equal(f[0], ref[0])]
  assert mirrored, "no seed flipped"
  for out, b, p in mirrored:
    np.testing.assert_array_equal(out, ref[0][:, ::-1])
    np.testing.assert_allclose(b, [150 - ref[1][2], ref[1][1], 150 - ref[1][0], ref[1][3]], atol=1e-4)
    np.testing.assert_allclose(p[:, 0], 150 - ref[2][:, 0], atol=1e-4)


def test_colour_jitter_against_numpy():
  img = np.random.default_rng(0).integers(0, 256, (8, 9, 3), dtype=np.uint8)
  x = img.astype(np.float64)
  for brightness, saturation in [(1.25, 1.0), (1.0, 0.0), (0.8, 1.3), (1.1, 0.6)]:
    out = np.asarray(T._jitter(Image.fromarray(img), brightness, saturation))
    grey = x @ [0.299, 0.587, 0.114]
    expected = np.clip(brightness * (grey[..., None] + saturation * (x - grey[..., None])), 0, 255)
    assert out.dtype == np.uint8
    np.testing.assert_allclose(out, expected, atol=0.5 + 1e-3)  # rounded to the nearest level
  grey = np.asarray(T._jitter(Image.fromarray(img), 1.0, 0.0))
  assert (np.ptp(grey.astype(int), axis=-1) <= 1).all()  # no saturation left


@pytest.mark.parametrize("resize", [200, 128])  # the window enlarged (one affine map), then shrunk (resize first)
def test_one_resampling_equals_crop_flip_and_rotation_in_turn(resize):
  # A smooth image, so that one interpolation and three in a row agree closely away from the turned-in corners.
  yy, xx = np.mgrid[:150, :200]
  img = np.stack([128 + 100 * np.sin(xx / 9), 128 + 100 * np.cos(yy / 11), np.full_like(xx, 90)], -1)
  img = img.astype(np.uint8)
  n, region = 112, T._window(img, resize, 112, (10, 7))
  for flip, degrees in [(False, 0.0), (True, 0.0), (False, 12.0), (True, -20.0)]:
    out = np.asarray(T._resample(Image.fromarray(img), region, n, flip, degrees))
    step = Image.fromarray(img).resize((n, n), Image.BILINEAR, box=region)
    step = step.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else step
    step = np.asarray(step.rotate(degrees, Image.BILINEAR))
    assert out.shape == (n, n, 3) and out.dtype == np.uint8
    inner = (slice(20, -20), slice(20, -20))  # clear of the corners the turn brings in
    if degrees:
      assert np.abs(out[inner].astype(int) - step[inner]).mean() < 1.0  # a wrong flip or turn: 20 or more
    else:
      np.testing.assert_array_equal(out, step)


def test_same_rng_same_result_and_bad_sizes():
  img, box, parts = planted()
  aug = T.Augment(resize=128, size=96, rotation=30, brightness=0.25, colour=0.25)
  a = T.train(img, box, parts, aug, np.random.default_rng(5))
  b = T.train(img, box, parts, aug, np.random.default_rng(5))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  with pytest.raises(ValueError, match="resize_size=64 must be at least data.image_size=96"):
    T.Augment(resize=64, size=96)
  with pytest.raises(ValueError, match="data.augment.pad=-1 must be 0 or more"):
    T.Augment(resize=96, size=96, pad=-1)


def test_cifar_pad_and_crop_shifts_the_image_by_whole_pixels_into_black_borders():
  """CIFAR's augmentation: the 32 x 32 image padded with 4 black pixels on every side, a random 32 x 32 window of
  that: the output is the image shifted by -4..4 pixels in each direction, exactly, and the points move with it."""
  img = np.random.default_rng(0).integers(1, 256, (32, 32, 3), dtype=np.uint8)  # no black pixel of its own
  part = np.array([[10.5, 20.5]], np.float32)
  aug = T.Augment(resize=32, size=32, flip=False, pad=4)
  shifts = set()
  for seed in range(60):
    out, b, p = T.train(img, np.array([0, 0, 32, 32], np.float32), part, aug, np.random.default_rng(seed))
    black = np.all(out == 0, axis=-1)
    rows, cols = np.nonzero(~black)
    x0, y0 = cols.min(), rows.min()  # > 0: the image moved right (down) by that much
    dx = x0 if x0 > 0 else cols.max() + 1 - 32
    dy = y0 if y0 > 0 else rows.max() + 1 - 32
    shifts.add((dx, dy))
    expected = np.zeros_like(img)
    expected[max(dy, 0) : 32 + min(dy, 0), max(dx, 0) : 32 + min(dx, 0)] = img[
      max(-dy, 0) : 32 - max(dy, 0), max(-dx, 0) : 32 - max(dx, 0)
    ]
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_allclose(p, part + [dx, dy], atol=1e-5)
    np.testing.assert_allclose(b, [max(dx, 0), max(dy, 0), 32 + min(dx, 0), 32 + min(dy, 0)], atol=1e-5)
  assert {dx for dx, _ in shifts} == set(range(-4, 5)) and {dy for _, dy in shifts} == set(range(-4, 5))


def test_a_crop_at_the_far_edge_survives_the_rounded_resize():
  # 375 x 500 -> shorter side 512 makes the long side 682.67, rounded to 683: the window at the far edge
  # reaches 500.24 source pixels, past the image; it is clamped and the coordinates follow the clamp.
  img = np.zeros((375, 500, 3), np.uint8)
  img[:, 497:] = GREEN  # the last three columns
  out, _, p = T._crop_resize(
    img, np.zeros(4, np.float32), np.array([[498.5, 200.0]], np.float32), 512, 448, (683 - 448, 0)
  )
  assert out.shape == (448, 448, 3)
  assert 444 < p[0, 0] < 448 and out[int(p[0, 1]), int(p[0, 0]), 1] > 150


@pytest.mark.parametrize("seed", range(8))
def test_random_resized_crop_keeps_points_and_box_on_their_pixels(seed):
  img, box, parts = planted()
  aug = T.Augment(resize=128, size=112, flip=True, crop="random_resized", crop_area=(0.3, 1.0))
  out, b, p = T.train(img, box, parts, aug, np.random.default_rng(seed))
  assert out.shape == (112, 112, 3) and out.dtype == np.uint8
  for x, y in p:
    if not np.isnan(x) and min(x, y, 112 - x, 112 - y) >= 4:
      assert out[int(y), int(x), 1] > 150 and out[int(y), int(x), 0] < 100, (x, y)
  red = (out[..., 0] > 128) & (out[..., 1] < 100)
  if red.sum() > 20:  # the box is in the window: it is tight around its red pixels
    rows, cols = np.nonzero(red)
    for edge, seen in zip(b, (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)):
      assert abs(edge - seen) < 3 or edge in (0, 112)


def test_random_resized_crop_draws_torchvisions_window():
  """The window's area fraction is uniform on crop_area and its aspect ratio log-uniform on crop_ratio (torchvision's
  RandomResizedCrop), anywhere in the image; an impossible draw falls back to the centre window."""
  img = np.zeros((300, 400, 3), np.uint8)
  windows = np.array(
    [T._random_resized_region(img, (0.08, 1.0), (3 / 4, 4 / 3), np.random.default_rng(s)) for s in range(2000)]
  )
  w, h = windows[:, 2] - windows[:, 0], windows[:, 3] - windows[:, 1]
  area, aspect = w * h / (300 * 400), w / h
  assert (windows[:, :2] >= 0).all() and (windows[:, 2] <= 400).all() and (windows[:, 3] <= 300).all()
  assert area.min() < 0.1 and area.max() > 0.9 and 0.4 < np.median(area) < 0.6  # not the resize crop's fixed area
  assert np.all((aspect > 3 / 4 - 0.02) & (aspect < 4 / 3 + 0.02))
  assert windows[:, 0].std() > 30 and windows[:, 1].std() > 20  # placed anywhere
  # A 1000 x 10 strip admits no window of ratio 3/4..4/3 and area >= 0.9: the centre 13 x 10 window.
  strip = np.zeros((10, 1000, 3), np.uint8)
  x0, y0, x1, y1 = T._random_resized_region(strip, (0.9, 1.0), (3 / 4, 4 / 3), np.random.default_rng(0))
  assert (x1 - x0, y1 - y0) == (13, 10) and x0 == (1000 - 13) // 2
  with pytest.raises(ValueError, match="crop='random_resized'"):
    T.Augment(resize=128, size=112, crop="random_resized", pad=4)
  with pytest.raises(ValueError, match="data.augment.crop='random'"):
    T.Augment(resize=128, size=112, crop="random")


def test_evaluation_rotation_turns_the_centre_crop_with_its_coordinates():
  img, box, parts = planted()
  plain = T.Augment(resize=112, size=112)
  turned = T.Augment(resize=112, size=112, eval_rotation=45)
  ref = T.evaluate(img, box, parts, plain)
  angles = set()
  for seed in range(6):
    out, b, p = T.evaluate(img, box, parts, turned, np.random.default_rng(seed))
    again = T.evaluate(img, box, parts, turned, np.random.default_rng(seed))
    np.testing.assert_array_equal(out, again[0])  # the same example's angle every pass
    assert not np.array_equal(out, ref[0])
    for x, y in p[:2]:
      assert out[int(y), int(x), 1] > 150 and out[int(y), int(x), 0] < 100, (x, y)  # the dots turned with them
    # The turned point lies at the reference point's distance from the centre.
    np.testing.assert_allclose(np.linalg.norm(p[:2] - 56, axis=1), np.linalg.norm(ref[2][:2] - 56, axis=1), rtol=1e-4)
    angles.add(round(float(np.degrees(np.arctan2(*(p[0] - 56)[::-1]) - np.arctan2(*(ref[2][0] - 56)[::-1]))), 1))
  assert len(angles) == 6
  with pytest.raises(ValueError, match="eval_rotation"):
    T.evaluate(img, box, parts, turned)
