"""Host-side classification metrics, checked against independent computations."""

import json
import sys

import ml_dtypes
import numpy as np
import pytest
from PIL import Image

from fgattn_jax.evaluation import Accumulator, NonFiniteLogits, save, summary_line


def _random_batch(rng, n, k):
  return rng.normal(0, 3, (n, k)).astype(np.float32), rng.integers(0, k, n), np.ones(n, bool)


def _assert_same(a, b, exact=True):
  assert a.keys() == b.keys()
  for key in a:
    if isinstance(a[key], np.ndarray):
      (np.testing.assert_array_equal if exact else np.testing.assert_allclose)(a[key], b[key])
    elif exact or not isinstance(a[key], float):
      assert a[key] == b[key], key
    else:
      assert a[key] == pytest.approx(b[key], rel=1e-12, abs=1e-15), key


def _reference_ece(confidence, correct, bins):
  # The textbook definition, one bin at a time.
  edges = np.linspace(0, 1, bins + 1)
  ece = 0.0
  for b in range(bins):
    in_bin = (confidence > edges[b]) & (confidence <= edges[b + 1])
    if b == 0:
      in_bin |= confidence == 0
    if in_bin.any():
      ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
  return ece


def test_hand_built_accuracies_and_confusion():
  # 6 classes, 4 examples; the true class is ranked 1st, 2nd, 6th and 1st.
  logits = np.array(
    [
      [9, 1, 2, 3, 4, 5],  # true 0, predicted 0
      [1, 9, 8, 0, 0, 0],  # true 2, predicted 1, true class second
      [0, 9, 8, 7, 6, 5],  # true 0, predicted 1, true class last: a top-5 miss
      [0, 0, 0, 9, 0, 0],  # true 3, predicted 3
    ],
    np.float32,
  )
  labels = np.array([0, 2, 0, 3])
  acc = Accumulator(6)
  acc.add(logits, labels, np.ones(4, bool))
  r = acc.result()
  assert r["count"] == 4
  assert r["top1"] == pytest.approx(2 / 4)
  assert r["top5"] == pytest.approx(3 / 4)
  expected_per_class = [1 / 2, np.nan, 0 / 1, 1 / 1, np.nan, np.nan]
  np.testing.assert_array_equal(r["per_class_accuracy"], expected_per_class)
  assert r["mean_class_accuracy"] == pytest.approx((0.5 + 0 + 1) / 3)
  expected_confusion = np.zeros((6, 6), np.int64)
  for true, pred in [(0, 0), (2, 1), (0, 1), (3, 3)]:
    expected_confusion[true, pred] += 1
  np.testing.assert_array_equal(r["confusion"], expected_confusion)
  assert r["confusion"].dtype == np.int64
  assert summary_line(r) == "top-1 50.00%  top-5 75.00%  mean class 50.00%  ECE " + f"{r['ece']:.3f}  (n=4)"


def test_ties_follow_stable_argsort():
  # All logits equal: the ranking is 0, 1, 2, ... so only classes 0..4 are top-5 hits and only 0 is top-1.
  acc = Accumulator(7)
  acc.add(np.zeros((7, 7), np.float32), np.arange(7), np.ones(7, bool))
  r = acc.result()
  assert r["top1"] == pytest.approx(1 / 7) and r["top5"] == pytest.approx(5 / 7)
  np.testing.assert_array_equal(r["confusion"][:, 0], np.ones(7))


def test_fewer_than_five_classes_use_top_k():
  acc = Accumulator(3)
  acc.add(np.array([[0, 1, 2]], np.float32), np.array([0]), np.array([True]))
  r = acc.result()
  assert r["top1"] == 0 and r["top5"] == 1
  assert summary_line(r).startswith("top-1 0.00%  top-3 100.00%")


def test_padding_rows_change_nothing():
  rng = np.random.default_rng(0)
  logits, labels, mask = _random_batch(rng, 20, 10)
  plain = Accumulator(10)
  plain.add(logits, labels, mask)
  # Padding may hold garbage: NaN logits, out-of-range labels.
  pad_logits = np.full((5, 10), np.nan, np.float32)
  padded = Accumulator(10)
  padded.add(
    np.concatenate([logits[:7], pad_logits[:2], logits[7:], pad_logits[2:]]),
    np.concatenate([labels[:7], [-1, 99], labels[7:], [-1, -1, 10]]),
    np.concatenate([mask[:7], np.zeros(2, bool), mask[7:], np.zeros(3, bool)]),
  )
  padded.add(pad_logits, np.full(5, -1), np.zeros(5, bool))  # a batch of padding only
  _assert_same(plain.result(), padded.result())


def test_batches_accumulate_like_one():
  rng = np.random.default_rng(1)
  logits, labels, mask = _random_batch(rng, 100, 12)
  whole = Accumulator(12)
  whole.add(logits, labels, mask)
  split = Accumulator(12)
  for lo, hi in [(0, 1), (1, 33), (33, 34), (34, 100)]:
    split.add(logits[lo:hi], labels[lo:hi], mask[lo:hi])
  _assert_same(whole.result(), split.result(), exact=False)


def test_ece_and_nll_against_reference():
  rng = np.random.default_rng(2)
  logits, labels, mask = _random_batch(rng, 500, 8)
  for bins in (1, 10, 15):
    acc = Accumulator(8, ece_bins=bins)
    acc.add(logits, labels, mask)
    r = acc.result()
    x = logits.astype(np.float64)
    probs = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)  # fine unshifted at this scale
    correct = (probs.argmax(axis=1) == labels).astype(float)
    assert r["ece"] == pytest.approx(_reference_ece(probs.max(axis=1), correct, bins), rel=1e-9)
    assert r["nll"] == pytest.approx(-np.log(probs[np.arange(500), labels]).mean(), rel=1e-12)


def test_ece_known_cases():
  one_hot = 100 * np.eye(4, dtype=np.float32)
  calibrated = Accumulator(4)
  calibrated.add(one_hot, np.arange(4), np.ones(4, bool))
  assert calibrated.result()["ece"] == pytest.approx(0, abs=1e-12)
  assert calibrated.result()["nll"] == pytest.approx(0, abs=1e-12)
  # Always fully confident, right half the time.
  overconfident = Accumulator(4)
  overconfident.add(one_hot, np.array([0, 1, 3, 2]), np.ones(4, bool))
  assert overconfident.result()["ece"] == pytest.approx(0.5)


def test_extreme_and_bfloat16_logits():
  # Huge logits would overflow a naive softmax; the shifted one gives the exact NLL.
  acc = Accumulator(3)
  acc.add(np.array([[1e4, 0, -1e4]], np.float32), np.array([1]), np.array([True]))
  assert acc.result()["nll"] == pytest.approx(1e4)
  rng = np.random.default_rng(3)
  logits, labels, mask = _random_batch(rng, 50, 6)
  as_bf16 = logits.astype(ml_dtypes.bfloat16)
  from_bf16, from_f32 = Accumulator(6), Accumulator(6)
  from_bf16.add(as_bf16, labels, mask)
  from_f32.add(as_bf16.astype(np.float32), labels, mask)
  _assert_same(from_bf16.result(), from_f32.result())


def test_empty_and_invalid_inputs():
  acc = Accumulator(4)
  with pytest.raises(ValueError, match="no examples"):
    acc.result()
  acc.add(np.zeros((3, 4)), np.zeros(3, int), np.zeros(3, bool))
  with pytest.raises(ValueError, match="no examples"):
    acc.result()
  with pytest.raises(ValueError, match="labels must lie"):
    acc.add(np.zeros((1, 4)), np.array([4]), np.array([True]))
  with pytest.raises(ValueError, match="logits must be"):
    acc.add(np.zeros((1, 5)), np.array([0]), np.array([True]))
  with pytest.raises(NonFiniteLogits, match="NaN"):  # diverged weights: the engine and evaluate say so in a line
    acc.add(np.full((1, 4), np.nan), np.array([0]), np.array([True]))
  with pytest.raises(ValueError, match="class names"):
    Accumulator(4, class_names=["a", "b"])


def _saved_result(names=None, k=5):
  acc = Accumulator(k, class_names=names)
  # Classes 0 and 1 seen, the rest without examples.
  acc.add(np.eye(k, dtype=np.float32)[[0, 1, 1]] * 5, np.array([0, 1, 0]), np.ones(3, bool))
  return acc.result()


def test_save_writes_exactly_four_readable_files(tmp_path):
  names = ["Black-footed Albatross", "Laysan, Albatross", "c", "d", "e"]
  result = _saved_result(names)
  out = tmp_path / "new" / "dir"
  paths = save(result, out, prefix="test")
  assert sorted(p.name for p in out.iterdir()) == sorted(
    ["test_metrics.json", "test_confusion.csv", "test_confusion.npy", "test_confusion.png"]
  )
  assert sorted(paths) == ["confusion_csv", "confusion_npy", "confusion_png", "metrics"]
  assert list(tmp_path.iterdir()) == [tmp_path / "new"]

  metrics = json.loads((out / "test_metrics.json").read_text())
  assert metrics["count"] == 3 and metrics["top1"] == pytest.approx(2 / 3)
  assert [c["accuracy"] for c in metrics["per_class_accuracy"]] == [0.5, 1.0, None, None, None]
  assert [c["name"] for c in metrics["per_class_accuracy"]] == names

  rows = (out / "test_confusion.csv").read_text().splitlines()
  assert rows[0] == 'true \\ predicted,Black-footed Albatross,"Laysan, Albatross",c,d,e'
  assert rows[1] == "Black-footed Albatross,1,1,0,0,0"
  np.testing.assert_array_equal(np.load(out / "test_confusion.npy"), result["confusion"])
  with Image.open(out / "test_confusion.png") as image:
    image.verify()


@pytest.mark.parametrize("matplotlib", [True, False])
@pytest.mark.parametrize("k", [5, 200])
def test_heatmap_with_and_without_matplotlib(tmp_path, monkeypatch, matplotlib, k):
  if matplotlib:
    pytest.importorskip("matplotlib")
  else:
    # A None entry makes the import fail even when an earlier test already loaded matplotlib.
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
      monkeypatch.setitem(sys.modules, module, None)
  paths = save(_saved_result(k=k), tmp_path)
  assert len(list(tmp_path.iterdir())) == 4
  with Image.open(paths["confusion_png"]) as image:
    assert image.format == "PNG" and min(image.size) >= 3 * k
  assert np.load(paths["confusion_npy"]).shape == (k, k)
  csv_header = open(paths["confusion_csv"]).readline().strip()
  assert csv_header == "true \\ predicted," + ",".join(str(i) for i in range(k))
