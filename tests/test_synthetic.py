"""The embedded synthetic fine-grained data set."""

import numpy as np
import pytest

from data_pipelines.sources.base import DataError
from data_pipelines.sources.synthetic import PATTERNS, SyntheticBirds, _texture, class_codes


def test_deterministic_from_seed_split_and_index():
  a, b = SyntheticBirds("train", seed=3), SyntheticBirds("train", seed=3)
  np.testing.assert_array_equal(a[7]["image"], b[7]["image"])
  np.testing.assert_array_equal(a[7]["parts"], b[7]["parts"])
  assert not np.array_equal(a[7]["image"], SyntheticBirds("train", seed=4)[7]["image"])
  assert not np.array_equal(a[7]["image"], SyntheticBirds("test", seed=3)[7]["image"])


def test_examples_have_boxes_parts_and_balanced_labels():
  src = SyntheticBirds("train", num_examples=40, resolution=96, num_classes=8, num_parts=3)
  assert len(src) == 40 and src.num_parts == 3 and len(src.class_names) == 8
  assert np.bincount(src.labels).tolist() == [5] * 8
  for i in range(10):
    ex = src[i]
    assert ex["image"].shape == (96, 96, 3) and ex["image"].dtype == np.uint8
    assert ex["label"] == src.labels[i] and ex["index"] == i
    x0, y0, x1, y1 = ex["box"]
    assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96
    # Parts sit on the body, inside its box.
    assert np.all((ex["parts"] >= ex["box"][:2]) & (ex["parts"] <= ex["box"][2:]))


def test_each_part_shows_its_class_pattern():
  src = SyntheticBirds("train", resolution=128, num_classes=10, num_parts=4)
  for i in range(10):
    ex = src[i]
    code = src.codes[ex["label"]]
    for (x, y), pattern in zip(ex["parts"], code):
      patch = ex["image"][int(y) - 3 : int(y) + 3, int(x) - 3 : int(x) + 3].astype(float).sum(-1)
      rows_flat = np.ptp(patch, axis=1).max() < 1  # horizontal stripes: each row one colour
      cols_flat = np.ptp(patch, axis=0).max() < 1
      assert rows_flat == (PATTERNS[pattern] == "horizontal"), (i, pattern)
      assert cols_flat == (PATTERNS[pattern] == "vertical"), (i, pattern)


def test_the_class_detail_vanishes_at_a_quarter_resolution():
  # Every pattern averages to the same flat grey over 2x2 periods: what tells classes apart is fine detail.
  for pattern in range(len(PATTERNS)):
    tex = _texture(pattern, 16, period=2).astype(float)
    blocks = tex.reshape(4, 4, 4, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(blocks, 0.5)


def test_class_codes_are_distinct_and_fixed():
  codes = class_codes(30, 4)
  assert len({tuple(c) for c in codes}) == 30
  np.testing.assert_array_equal(codes, class_codes(30, 4))
  with pytest.raises(DataError, match="at most 9 classes"):
    class_codes(20, 2)
  with pytest.raises(DataError, match="no split 'validation'"):
    SyntheticBirds("validation")


def test_drawn_examples_are_kept_within_the_budget(monkeypatch):
  from data_pipelines.sources import synthetic

  drawn = []
  render = synthetic.render
  monkeypatch.setattr(synthetic, "render", lambda *a: drawn.append(1) or render(*a))
  monkeypatch.setattr(synthetic, "CACHE_BYTES", 2 * 3 * 48**2)  # room for two 48-pixel images
  src = SyntheticBirds("train", num_examples=6, resolution=48)
  first = [src[i] for i in range(4)]
  again = [src[i] for i in range(4)]
  assert len(drawn) == 6  # examples 0 and 1 kept, 2 and 3 drawn twice
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["parts"], b["parts"])
  np.testing.assert_array_equal(again[1]["image"], SyntheticBirds("train", num_examples=6, resolution=48)[1]["image"])
  with pytest.raises(ValueError, match="read-only"):  # a shared image cannot be changed by one reader
    first[0]["image"][0, 0] = 0
  import pickle

  sent = pickle.dumps(src)  # what a worker process receives: the recipe, not the two kept images
  assert len(sent) < 48 * 48 * 3
  np.testing.assert_array_equal(pickle.loads(sent)[0]["image"], first[0]["image"])


def test_detail_task_hides_the_stripes_at_the_backbones_side_and_keeps_them_at_full_resolution():
  """The detail task (configs/common.py): 2-pixel stripes at 288 pixels. The pipeline's 4x antialiased reduction to
  64 leaves every part a flat patch, whatever its pattern, while the 256-pixel input keeps the stripes."""
  from configs import baseline, macnn
  from data_pipelines import pipeline

  def part_contrast(config, half):
    config.data.synthetic.num_test = 12
    batch = next(iter(pipeline.build(config, "test", training=False)))
    return np.mean(
      [
        batch["image"][i, int(y) - half : int(y) + half, int(x) - half : int(x) + half]
        .astype(float)
        .std(axis=(0, 1))
        .mean()
        for i in range(12)
        for x, y in batch["parts"][i]
      ]
    )

  assert part_contrast(baseline.get_config("detail"), 2) < 0.5  # 4-pixel squares at 64 of 6.5-pixel parts: flat
  assert part_contrast(macnn.get_config("detail"), 8) > 20  # 16-pixel squares of 26-pixel parts: striped
  src = SyntheticBirds("test", num_examples=1, resolution=288, stripe=2)
  assert src.stripe == 2 and SyntheticBirds("test", num_examples=1, resolution=288).stripe == 4
  with pytest.raises(DataError, match="stripe"):
    SyntheticBirds("test", stripe=-1)
