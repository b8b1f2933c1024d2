"""Localisation metrics of every map kind, accumulated over a split (evaluate --localization).

Map kinds: 'attention' (the scheme's own: ABN's map (the first task's), MA-CNN's part maps, RA-CNN's boxes drawn as
pyramids peaked at their centres, the finest on top), 'cam' where the head allows, 'gradcam' (both for the true
class). For each, over the images with a ground-truth box:
    pointing     the map's peak inside the box (MA-CNN: each part map's peak, averaged over the parts; a flat map,
                 e.g. an all-zero Grad-CAM, is a miss); 'chance' is the box's share of the image, what a uniformly
                 random point scores
    deletion     area under the true class's probability as the most salient pixels are removed (lower: better)
    insertion    area under it as they are put back into a blurred image (higher: better)
and for part maps with ground-truth parts: 'part_hit' (a map's peak within part_radius of its nearest part) and
'distinct_parts' (different parts hit per image).

Against chance, for any attention on images with ground-truth parts (benchmarks/accuracy.py): peak_part_hits and
part_hit_chance (a map's peak near some part; the same for a uniformly random point), parts_inside and
random_box_holds (the parts a box holds; the same for a box of its size placed uniformly inside the image).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fgattn_jax import explain
from fgattn_jax.ops import localization
from fgattn_jax.ops.images import normalize


def box_pyramids(boxes, image_hw, grid: int = 32):
  """(B, N, 4) boxes -> (B, grid, grid) map: per box a pyramid of height 1 + its rank peaked at its centre and zero
  outside it, summed, so the peak is the centre of the last (finest) box."""
  h, w = image_hw
  ys = (jnp.arange(grid) + 0.5) * h / grid
  xs = (jnp.arange(grid) + 0.5) * w / grid
  total = 0.0
  for n in range(boxes.shape[1]):
    b = boxes[:, n, :, None]
    cx, cy, hx, hy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, (b[:, 2] - b[:, 0]) / 2, (b[:, 3] - b[:, 1]) / 2
    px = jax.nn.relu(1 - jnp.abs(xs[None] - cx) / jnp.maximum(hx, 1e-6))  # (B, grid)
    py = jax.nn.relu(1 - jnp.abs(ys[None] - cy) / jnp.maximum(hy, 1e-6))
    total = total + (1 + n) * py[:, :, None] * px[:, None, :]
  return total


def map_kinds(maps: dict, image_hw) -> dict:
  """explain()'s output -> {kind: (B, h, w, N) maps}, N = 1 but for MA-CNN's parts."""
  kinds = {}
  att = maps["attention"]
  if "part_maps" in att:
    kinds["attention"] = att["part_maps"]
  elif "maps" in att:
    kinds["attention"] = att["maps"][..., :1]  # the first task's
  elif "boxes" in att:
    kinds["attention"] = box_pyramids(att["boxes"], image_hw)[..., None]
  if "cam_true" in maps:
    kinds["cam"] = maps["cam_true"][..., None]
  kinds["gradcam"] = maps["gradcam_true"][..., None]
  return kinds


class Accumulator:
  def __init__(self, part_radius: float):
    self.part_radius, self.sums, self.counts = part_radius, {}, {}

  def add(self, kind: str, metric: str, values, where) -> None:
    values, where = np.asarray(values, np.float64), np.asarray(where, bool)
    key = (kind, metric)
    self.sums[key] = self.sums.get(key, 0.0) + float(values[where].sum())
    self.counts[key] = self.counts.get(key, 0) + int(where.sum())

  def result(self) -> dict:
    out = {}
    for (kind, metric), n in self.counts.items():
      out.setdefault(kind, {})[metric] = self.sums[(kind, metric)] / n if n else float("nan")
      out[kind]["count"] = max(out[kind].get("count", 0), n)
    return out


COLUMNS = ("pointing", "chance", "deletion", "insertion", "part_hit", "distinct_parts", "count")


def table(results: dict) -> str:
  """The metrics of each map kind as a text table ('-' where a metric does not apply)."""
  rows = [f"  {'map':<10}" + "".join(f"{c:>15}" for c in COLUMNS)]
  for kind, r in results.items():
    rows.append(
      f"  {kind:<10}"
      + "".join(f"{r[c]:>15.3f}" if c in r and c != "count" else f"{r.get(c, '-'):>15}" for c in COLUMNS)
    )
  return "\n".join(rows)


def evaluate(
  scheme,
  model,
  pipe,
  *,
  layer: str,
  dtype,
  steps: int = 16,
  part_radius: float | None = None,
  max_images: int | None = None,
  progress=None,
) -> dict:
  """Every map kind's metrics over the pipeline's images (those with a box; parts where present)."""
  cam = explain.has_cam(scheme, model)
  probs_of = nnx.jit(lambda m, batch, x: jax.nn.softmax(explain.logits_fn(scheme, m, batch)(x), axis=-1))
  acc, seen = Accumulator(part_radius), 0
  for batch in pipe:
    hw = batch["image"].shape[1:3]
    radius = part_radius if part_radius is not None else 0.1 * min(hw)
    real = np.asarray(batch["mask"]).copy()
    if max_images is not None:
      real &= np.cumsum(real) <= max_images - seen
    seen += int(real.sum())
    boxed = real & np.isfinite(batch["box"]).all(axis=1)
    if not boxed.any():
      if max_images is not None and seen >= max_images:
        break
      continue
    maps = explain.explain(scheme, model, batch, layer=layer, dtype=dtype, cam=cam, guided=False)
    images = normalize(jnp.asarray(batch["image"]), dtype)
    score = lambda x: probs_of(model, batch, x)  # noqa: E731
    boxes = jnp.asarray(np.nan_to_num(batch["box"]))
    chance = localization.box_area_fraction(np.asarray(batch["box"]), hw)
    for kind, m in map_kinds(maps, hw).items():
      n = m.shape[-1]
      hits = np.mean([np.asarray(localization.pointing_game(m[..., i], boxes, hw)) for i in range(n)], axis=0)
      acc.add(kind, "pointing", hits, boxed)
      acc.add(kind, "chance", chance, boxed)
      curves = localization.deletion_insertion(score, images, jnp.max(m, axis=-1), maps["classes"]["true"], steps=steps)
      acc.add(kind, "deletion", curves["deletion"], boxed)
      acc.add(kind, "insertion", curves["insertion"], boxed)
      if n == 1 or "parts" not in batch:  # one map, or a source without part points (Aircraft, Cars, Dogs)
        continue
      parts = np.asarray(batch["parts"])
      with_parts = real & np.isfinite(parts).all(axis=2).any(axis=1)
      if with_parts.any():
        found = localization.nearest_part_hits(m, jnp.asarray(parts), hw, radius)
        acc.add(kind, "part_hit", np.asarray(found["hit"]).mean(axis=1), with_parts)
        acc.add(kind, "distinct_parts", found["distinct"], with_parts)
    if progress is not None:
      progress(seen)
    if max_images is not None and seen >= max_images:
      break
  return acc.result()


def peak_part_hits(maps, parts, image_hw, radius: float) -> np.ndarray:
  """(B, h, w, N) maps, (B, P, 2) ground-truth parts (x, y; NaN rows absent) -> (B, N) booleans: each map's peak
  lies within `radius` pixels of some present part. A flat map (one value everywhere, e.g. an all-zero CAM) points
  nowhere: a miss, as in the pointing game."""
  maps = jnp.asarray(maps)
  hit = np.asarray(localization.nearest_part_hits(maps, jnp.asarray(parts), image_hw, radius)["hit"])
  flat = np.asarray(jnp.max(maps, axis=(1, 2)) == jnp.min(maps, axis=(1, 2)))  # (B, N)
  return hit & ~flat


def part_hit_chance(parts, image_hw, radius: float, boxes=None) -> np.ndarray:
  """(B, P, 2) parts -> (B,) the chance that a uniformly random point of the image lies within `radius` pixels of a
  present part: peak_part_hits' score for a map peaked anywhere at random. With (B, 4) object boxes, a random point
  of the object's box instead (a stricter control: a map that finds the object but not its parts). Computed on the
  image's pixel centres (exact up to the pixel grid); NaN for an image without a present part (or box pixel)."""
  h, w = image_hw
  ys, xs = np.mgrid[:h, :w] + 0.5
  parts = np.asarray(parts, np.float64)
  out = np.full(parts.shape[0], np.nan)
  for i, points in enumerate(parts):
    points = points[np.isfinite(points).all(axis=-1)]
    where = np.ones((h, w), bool)
    if boxes is not None:
      x0, y0, x1, y1 = np.asarray(boxes, np.float64)[i]
      where = (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
    if len(points) and where.any():
      d2 = (xs[..., None] - points[:, 0]) ** 2 + (ys[..., None] - points[:, 1]) ** 2  # (h, w, P)
      out[i] = float(np.mean((d2.min(axis=-1) <= radius**2)[where]))
  return out


def parts_inside(boxes, parts) -> np.ndarray:
  """(B, 4) boxes (x0, y0, x1, y1), (B, P, 2) parts -> (B, P) booleans: each part lies in its image's box (edges
  included); absent (NaN) parts never do."""
  boxes, parts = np.asarray(boxes, np.float64), np.asarray(parts, np.float64)
  x, y = parts[..., 0], parts[..., 1]
  with np.errstate(invalid="ignore"):
    return (
      (x >= boxes[:, None, 0])
      & (x <= boxes[:, None, 2])
      & (y >= boxes[:, None, 1])
      & (y <= boxes[:, None, 3])
      & np.isfinite(parts).all(axis=-1)
    )


def random_box_holds(boxes, parts, image_hw) -> np.ndarray:
  """(B, 4) boxes, (B, P, 2) parts -> (B, P) the probability that a box of each box's width and height (at most the
  image's), placed uniformly at random inside the image, holds each part: parts_inside's chance level, exact. 0 for
  absent parts; a box as wide as the image holds every part within its width."""
  boxes, parts = np.asarray(boxes, np.float64), np.asarray(parts, np.float64)

  def along(lo, hi, point, side):  # the chance that [x0, x0 + size], x0 uniform on [0, side - size], holds point
    size = np.clip(hi - lo, 0.0, side)[:, None]
    free = side - size
    covered = np.clip(np.minimum(point, free) - np.maximum(point - size, 0.0), 0.0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
      p = np.where(free > 0, covered / np.where(free > 0, free, 1.0), (point >= 0) & (point <= side))
    return np.nan_to_num(p)

  h, w = image_hw
  p = along(boxes[:, 0], boxes[:, 2], parts[..., 0], w) * along(boxes[:, 1], boxes[:, 3], parts[..., 1], h)
  return np.where(np.isfinite(parts).all(axis=-1), p, 0.0)
