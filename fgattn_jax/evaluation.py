"""Classification metrics accumulated on the host over evaluation batches.

Only running sums are kept (confusion matrix, calibration bins, NLL and top-k hits), never the logits, so an
evaluation set of any size costs O(K^2 + bins) memory. Feed every example exactly once: padding rows that
complete the last batch carry mask False and count for nothing.

Conventions:
  * top-1 is the argmax with ties going to the lowest class index; top-k counts a hit when the true class is
    among `np.argsort(-logits, kind="stable")[:, :k]`, so ties are also broken toward lower indices. k is
    min(5, K); the result key stays "top5".
  * ECE uses `ece_bins` equal-width bins over the max softmax probability; bin b holds confidences in
    (b/n, (b+1)/n] (edges from np.linspace(0, 1, n + 1)), and each bin's |accuracy - confidence| is weighted
    by its share of the examples.
"""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np

TOPK = 5
_CELL_TEXT_MAX_CLASSES = 30  # beyond this, numbers in cells are unreadable


class NonFiniteLogits(ValueError):
  """A model's outputs hold NaN or infinity: its weights diverged."""


class Accumulator:
  """Running classification metrics; `add` each batch, then `result()`."""

  def __init__(self, num_classes: int, class_names: list[str] | None = None, ece_bins: int = 15):
    if num_classes < 1:
      raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    if ece_bins < 1:
      raise ValueError(f"ece_bins must be at least 1, got {ece_bins}")
    if class_names is not None and len(class_names) != num_classes:
      raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
    self.num_classes = num_classes
    self.class_names = None if class_names is None else [str(n) for n in class_names]
    self.k = min(TOPK, num_classes)
    self._edges = np.linspace(0.0, 1.0, ece_bins + 1)
    self._confusion = np.zeros((num_classes, num_classes), np.int64)
    self._bin_count = np.zeros(ece_bins, np.int64)
    self._bin_confidence = np.zeros(ece_bins, np.float64)
    self._bin_correct = np.zeros(ece_bins, np.int64)
    self._nll_sum = 0.0
    self._topk_hits = 0

  def add(self, logits, labels, mask) -> None:
    """Adds one batch: logits (B, K), integer labels (B,), bool mask (B,) with False for padding rows."""
    logits, labels, mask = np.asarray(logits), np.asarray(labels), np.asarray(mask, bool)
    if logits.ndim != 2 or logits.shape[1] != self.num_classes:
      raise ValueError(f"logits must be (batch, {self.num_classes}), got shape {logits.shape}")
    if labels.shape != logits.shape[:1] or mask.shape != logits.shape[:1]:
      raise ValueError(f"labels {labels.shape} and mask {mask.shape} must both be ({logits.shape[0]},)")
    # Padding rows may hold anything (NaN logits, label -1): drop them before looking at the values.
    logits = logits[mask].astype(np.float64)
    labels = labels[mask].astype(np.int64)
    if not len(labels):
      return
    if labels.min() < 0 or labels.max() >= self.num_classes:
      raise ValueError(f"labels must lie in [0, {self.num_classes}), got {labels.min()}..{labels.max()}")
    if not np.isfinite(logits).all():
      raise NonFiniteLogits("logits of unmasked examples contain NaN or infinity")

    shifted = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    rows = np.arange(len(labels))
    self._nll_sum += float(np.sum(log_norm - shifted[rows, labels]))
    # The max shifted logit is 0, so the max softmax probability is exp(-log_norm).
    confidence = np.exp(-log_norm)

    ranked = np.argsort(-logits, axis=1, kind="stable")[:, : self.k]
    predicted = ranked[:, 0]
    correct = predicted == labels
    self._topk_hits += int((ranked == labels[:, None]).any(axis=1).sum())
    self._confusion += np.bincount(labels * self.num_classes + predicted, minlength=self.num_classes**2).reshape(
      self.num_classes, self.num_classes
    )

    bins = np.clip(np.searchsorted(self._edges, confidence, side="left") - 1, 0, len(self._bin_count) - 1)
    self._bin_count += np.bincount(bins, minlength=len(self._bin_count))
    self._bin_confidence += np.bincount(bins, weights=confidence, minlength=len(self._bin_count))
    self._bin_correct += np.bincount(bins, weights=correct, minlength=len(self._bin_count)).astype(np.int64)

  def result(self) -> dict:
    count = int(self._bin_count.sum())
    if count == 0:
      raise ValueError("no examples were accumulated (every add() was empty or fully masked)")
    confusion = self._confusion.copy()
    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
      per_class = np.where(support > 0, np.diag(confusion) / support, np.nan)
    return {
      "count": count,
      "top1": float(np.trace(confusion) / count),
      "top5": self._topk_hits / count,
      "mean_class_accuracy": float(np.nanmean(per_class)),
      "per_class_accuracy": per_class,
      "ece": float(np.abs(self._bin_correct - self._bin_confidence).sum() / count),
      "nll": self._nll_sum / count,
      "confusion": confusion,
      # Carried so that save() can label its files.
      "class_names": None if self.class_names is None else list(self.class_names),
    }


def summary_line(result: dict) -> str:
  k = min(TOPK, len(result["confusion"]))
  return (
    f"top-1 {100 * result['top1']:.2f}%  top-{k} {100 * result['top5']:.2f}%  "
    f"mean class {100 * result['mean_class_accuracy']:.2f}%  ECE {result['ece']:.3f}  (n={result['count']})"
  )


def save(result: dict, directory, prefix: str = "eval") -> dict[str, str]:
  """Writes metrics JSON, confusion CSV/NPY and a confusion heatmap PNG into `directory`; returns {kind: path}."""
  directory = os.fspath(directory)
  os.makedirs(directory, exist_ok=True)
  confusion = np.asarray(result["confusion"], np.int64)
  names = result.get("class_names") or [str(i) for i in range(len(confusion))]
  paths = {
    kind: os.path.join(directory, f"{prefix}_{name}")
    for kind, name in [
      ("metrics", "metrics.json"),
      ("confusion_csv", "confusion.csv"),
      ("confusion_npy", "confusion.npy"),
      ("confusion_png", "confusion.png"),
    ]
  }

  def nullable(x):
    return None if math.isnan(x) else float(x)

  support = confusion.sum(axis=1)
  metrics = {key: result[key] for key in ("count", "top1", "top5", "mean_class_accuracy", "ece", "nll")}
  metrics = {key: int(v) if key == "count" else nullable(v) for key, v in metrics.items()}
  metrics["num_classes"] = len(confusion)
  metrics["per_class_accuracy"] = [
    {"index": i, "name": names[i], "count": int(support[i]), "accuracy": nullable(a)}
    for i, a in enumerate(result["per_class_accuracy"])
  ]
  with open(paths["metrics"], "w") as f:
    json.dump(metrics, f, indent=2, allow_nan=False)
  with open(paths["confusion_csv"], "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["true \\ predicted", *names])
    writer.writerows([name, *row] for name, row in zip(names, confusion.tolist()))
  np.save(paths["confusion_npy"], confusion)
  _heatmap(confusion, names, paths["confusion_png"])
  return paths


def _row_normalized(confusion: np.ndarray) -> np.ndarray:
  # Colour by the fraction of each true class, so rare classes are as visible as common ones.
  support = confusion.sum(axis=1, keepdims=True)
  return confusion / np.maximum(support, 1)


def _heatmap(confusion: np.ndarray, names: list[str], path: str) -> None:
  try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
  except ImportError:
    _heatmap_pil(confusion, path)
    return
  k = len(confusion)
  size = min(max(6.0, 0.3 * k), 16.0)
  # A bare Figure on the Agg canvas: no pyplot, so the caller's backend and global figure state are untouched.
  fig = Figure(figsize=(size + 1.5, size), dpi=100)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  image = ax.imshow(_row_normalized(confusion), cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  if k <= _CELL_TEXT_MAX_CLASSES:
    ax.set_xticks(range(k), names, rotation=90, fontsize=7)
    ax.set_yticks(range(k), names, fontsize=7)
    normalized = _row_normalized(confusion)
    for (i, j), n in np.ndenumerate(confusion):
      if n:
        ax.text(
          j, i, str(n), ha="center", va="center", fontsize=6, color="white" if normalized[i, j] > 0.5 else "black"
        )
  fig.tight_layout()
  fig.savefig(path)


def _heatmap_pil(confusion: np.ndarray, path: str) -> None:
  from PIL import Image, ImageDraw

  k = len(confusion)
  cell = max(3, min(24, 800 // k))
  margin = 40
  # White to dark blue, like matplotlib's "Blues".
  t = _row_normalized(confusion)[..., None]
  rgb = np.round((1 - t) * np.array([247, 251, 255]) + t * np.array([8, 48, 107])).astype(np.uint8)
  grid = Image.fromarray(rgb).resize((k * cell, k * cell), Image.NEAREST)
  image = Image.new("RGB", (k * cell + 2 * margin, k * cell + 2 * margin), "white")
  image.paste(grid, (margin, margin))
  draw = ImageDraw.Draw(image)
  draw.text((margin, margin - 15), "predicted ->", fill="black")
  draw.text((4, margin - 15), "true", fill="black")
  draw.text((margin, k * cell + margin + 5), f"{k} classes, colour = fraction of true class", fill="black")
  if k <= _CELL_TEXT_MAX_CLASSES:
    for (i, j), n in np.ndenumerate(confusion):
      if n:
        # Centred by hand: the default font may be a bitmap font, which takes no text anchor.
        x0, y0, x1, y1 = draw.textbbox((0, 0), str(n))
        draw.text(
          (margin + (j + 0.5) * cell - (x0 + x1) / 2, margin + (i + 0.5) * cell - (y0 + y1) / 2),
          str(n),
          fill="white" if t[i, j, 0] > 0.5 else "black",
        )
  image.save(path)
