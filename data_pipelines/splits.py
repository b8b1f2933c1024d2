"""Deterministic class-stratified splits of a labelled set (for data sets that ship without a split)."""

from __future__ import annotations

import numpy as np


def _apportion(total: int, weights: np.ndarray) -> np.ndarray:
  """Largest-remainder apportionment of `total` items by `weights`; ties go to the earlier entry."""
  if total <= 0 or weights.sum() <= 0:
    return np.zeros(len(weights), np.int64)
  quota = total * weights / weights.sum()
  counts = np.floor(quota).astype(np.int64)
  leftover = total - counts.sum()
  # A stable sort on the negated remainder keeps the tie-break (dict order) independent of float noise order.
  order = np.argsort(-(quota - counts), kind="stable")
  counts[order[:leftover]] += 1
  return counts


def _class_counts(n: int, fractions: np.ndarray) -> np.ndarray:
  """How many of a class's n examples each split gets: one for every split with a positive fraction where
  n allows it (so small classes still show up everywhere), the rest as close to n * fraction as possible."""
  positive = fractions > 0
  if n < positive.sum():
    return _apportion(n, fractions)
  counts = positive.astype(np.int64)
  need = np.maximum(n * fractions - counts, 0.0)  # what each split still lacks of its ideal share
  return counts + _apportion(n - counts.sum(), need)


def stratified_split(labels, fractions: dict[str, float], seed: int = 0) -> dict[str, np.ndarray]:
  """Splits indices 0..len(labels)-1 into the named parts, class by class.

  fractions: e.g. {"train": 0.8, "val": 0.1, "test": 0.1}; non-negative, summing to 1.
  Returns {name: sorted int64 indices}: disjoint, covering every index, each class divided in the given
  proportions (at least one example per split with a positive fraction where the class is large enough).
  The same labels, fractions and seed always give the same split; another seed shuffles differently.
  """
  labels = np.asarray(labels).reshape(-1)
  names = list(fractions)
  frac = np.asarray([float(fractions[k]) for k in names], np.float64)
  if not names or (frac < 0).any() or abs(frac.sum() - 1.0) > 1e-6:
    raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
  rng = np.random.default_rng(seed)
  parts = {k: [] for k in names}
  # Each class's indices, ascending (what np.flatnonzero(labels == cls) gave), from one stable sort: a scan of every
  # label per class costs examples x classes, 4M x 200k on Google Landmarks.
  order = np.argsort(labels, kind="stable")
  _, starts = np.unique(labels[order], return_index=True)
  for members in np.split(order, starts[1:]) if len(order) else []:  # classes ascending: a fixed random stream
    members = rng.permutation(members)
    bounds = np.cumsum(_class_counts(len(members), frac))[:-1]
    for name, chunk in zip(names, np.split(members, bounds)):
      parts[name].append(chunk)
  return {k: np.sort(np.concatenate(v)).astype(np.int64) if v else np.zeros(0, np.int64) for k, v in parts.items()}
