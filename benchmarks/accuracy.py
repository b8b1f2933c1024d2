"""Accuracy of every scheme on one embedded synthetic task (RESULTS.md, "Attention that pays"): each head's top-1
over seeds, where each scheme's attention points against chance, and the targets judged from them.

    python -m benchmarks.accuracy                                   # the standard table: 4 schemes x seeds 0 1 2
    python -m benchmarks.accuracy --schemes macnn racnn --seeds 0   # some of it
    python -m benchmarks.accuracy --epochs-scale 0.1                # a quick look (every phase at a tenth)
    python -m benchmarks.accuracy --table-only [JSON]               # reprint the table of an earlier run

Runs the schemes baseline, abn, macnn and racnn with their `--preset` (default 'detail': the same data, the same
backbone seeing the image at the same side, comparable budgets) on the embedded synthetic birds, where classes differ
only by the stripe patterns of the parts, each over `--seeds` (the seed draws the parameters, the data and its
order). The default form, four schemes by three seeds of the 'detail' presets, is sized to finish in under 90 minutes
on a 2-core CPU; --epochs-scale, --num-train and --num-test shrink it for a quick look (not a result).

Measured, per run: every head's top-1 on the test split after training (the run's final evaluation); the training
wall time; and on the test split, the scheme's own attention (Scheme.attention) against the ground-truth part
centres:
    maps (ABN's map, the first task's; MA-CNN's part maps, each)   hit: the share of map peaks within --part-radius
        (a fraction of the image side, default 0.1, as in evaluate --localization) of some part; chance: the same
        share for a uniformly random point on the same image (exact on the pixel grid)
    boxes (RA-CNN's, at each zoomed scale, in the image's pixels)  hit: the share of parts inside the box; chance:
        the same share for a box of the same size placed uniformly at random inside the image (exact)
    the baseline has no attention of its own: its CAM of the true class (Grad-CAM where its head allows no CAM) is
        scored like a map, for reference, and is no target.
ratio = hit / chance (target: 2 or more). Per scheme and head, the mean over seeds, the range (min-max) and the
standard deviation; then the issue's targets, each 'met' or 'not met' with its numbers.

Each run trains in <workdir>/<scheme>-seed<seed>-<hash of its config>, with evaluation only at the end of each phase,
no TensorBoard. Its record (accuracy_run.json there) is reused when the same command runs again; a run cut short
resumes from its checkpoint; a changed preset or flag trains anew beside it (another hash). A run that fails is
reported with its error's first line, and the others still run. The JSON (--out) is rewritten after every run.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback

SCHEMES = ("baseline", "abn", "macnn", "racnn")
ATTENTION_SCHEMES = ("abn", "macnn", "racnn")
RECORD = "accuracy_run.json"  # a finished run's record, in its workdir
TARGET_RATIO = 2.0
HEAD_NOTES = {
  ("abn", "logits"): "perception",
  ("macnn", "logits"): "joint",
  ("racnn", "logits"): "fused",
  ("macnn", "object"): "object stream",
  ("racnn", "average"): "softmax average",
}
METRICS = ("top1", "top5", "mean_class_accuracy", "count")  # of each head's evaluation, into the JSON


# --- Configs.


def config_for(
  scheme: str,
  preset: str,
  seed: int,
  *,
  overrides=(),
  epochs_scale: float = 1.0,
  num_train: int | None = None,
  num_test: int | None = None,
):
  """The scheme's preset with the overrides (those of its keys) and this seed, evaluated only at the end of each
  phase, no TensorBoard; every phase's length (and its warm-up and step boundaries) times epochs_scale, at least
  one step."""
  import configs
  from fgattn_jax import config as config_lib

  path = os.path.join(os.path.dirname(configs.__file__), f"{scheme}.py")
  c = config_lib.load_config(f"{path}:{preset}" if preset else path)
  keys = set(config_lib.flat_keys(c))
  for key, text in overrides:
    if key in keys:
      config_lib.override(c, key, text)
  if num_train is not None:
    c.data.synthetic.num_train = num_train
  if num_test is not None:
    c.data.synthetic.num_test = num_test
  c.seed = seed
  c.log.tensorboard = False
  c.eval.every_epochs = 0.0  # (each phase's end still evaluates; the final evaluation is the result)
  if epochs_scale != 1.0:
    steps_per_epoch = max(1, c.data.synthetic.num_train // c.data.batch_size)
    for name in c.phase_order:
      p = c.phases[name]
      if p.steps > 0:
        p.steps = max(1, round(p.steps * epochs_scale))
      elif p.epochs > 0:
        p.epochs = max(p.epochs * epochs_scale, 1 / steps_per_epoch)
      p.schedule.warmup_epochs *= epochs_scale
      p.schedule.boundaries = tuple(b * epochs_scale for b in p.schedule.boundaries)
  config_lib.validate(c)
  return c


def run_name(c) -> str:
  """<scheme>-seed<seed>-<8 hex digits of the resolved config>: a changed preset or flag gets a workdir of its own."""
  digest = hashlib.sha1(c.to_json(sort_keys=True).encode()).hexdigest()[:8]
  return f"{c.scheme}-seed{c.seed}-{digest}"


def training_steps(c) -> int:
  """The run's training steps (phases.plan's lengths, cycles counted, before any plateau rule ends a phase early)."""
  steps_per_epoch = max(1, c.data.synthetic.num_train // c.data.batch_size)
  total = 0
  for name in c.phase_order:
    p = c.phases[name]
    steps = p.steps or int(round(p.epochs * steps_per_epoch))
    total += steps * (c.cycles if p.cycle else 1)
  return total


def first_view(c) -> int:
  """The side at which the scheme's first network sees the input: MA-CNN's object stream (macnn.object_input),
  RA-CNN's scale 1 (racnn.scale1_input), else the input itself (data.image_size)."""
  for key in ("object_input", "scale1_input"):
    side = c.get(c.scheme, {}).get(key)
    if side:
      return side
  return c.data.image_size


def setup_of(c) -> dict:
  """What makes the schemes comparable: backbone, width, the side it sees the image at, data, budget."""
  return {
    "backbone": c.model.backbone,
    "width": c.model.width,
    "image_size": c.data.image_size,
    "seen": first_view(c),
    "num_train": c.data.synthetic.num_train,
    "num_test": c.data.synthetic.num_test,
    "num_classes": c.data.num_classes,
    "batch_size": c.data.batch_size,
    "steps": training_steps(c),
    "phases": list(c.phase_order),
    "cycles": c.cycles,
  }


# --- Attention against chance.


def score_maps(maps, parts, image_hw, radius: float, boxes=None) -> dict:
  """(B, h, w, N) maps, (B, P, 2) parts of real images (and their (B, 4) object boxes) -> sums over the images with a
  part: {'hits': map peaks near a part, 'peaks': peaks counted, 'chance': sum of each peak's chance, 'chance_box':
  the same for a random point of the object's box (a map that finds the bird but not its parts scores this),
  'distinct': parts hit per image, summed, 'images'}."""
  import numpy as np

  from fgattn_jax import localize
  from fgattn_jax.ops import localization

  parts = np.asarray(parts, np.float32)
  with_parts = np.isfinite(parts).all(axis=-1).any(axis=-1)
  if not with_parts.any():
    return {"hits": 0.0, "peaks": 0, "chance": 0.0, "chance_box": 0.0, "distinct": 0.0, "images": 0}
  maps, parts = np.asarray(maps)[with_parts], parts[with_parts]
  in_box = (
    np.nan_to_num(localize.part_hit_chance(parts, image_hw, radius, np.asarray(boxes)[with_parts]))
    if boxes is not None
    else np.zeros(len(parts))
  )
  n = maps.shape[-1]
  hit = localize.peak_part_hits(maps, parts, image_hw, radius)  # (B, N)
  chance = localize.part_hit_chance(parts, image_hw, radius)  # (B,)
  nearest = np.asarray(localization.nearest_part_hits(maps, parts, image_hw, radius)["nearest"])
  distinct = [len(set(nearest[i][hit[i]].tolist())) for i in range(len(hit))]
  return {
    "hits": float(hit.sum()),
    "peaks": int(hit.size),
    "chance": float(chance.sum() * n),
    "chance_box": float(in_box.sum() * n),
    "distinct": float(sum(distinct)),
    "images": int(len(hit)),
  }


def score_boxes(boxes, parts, image_hw) -> dict:
  """(B, 4) boxes, (B, P, 2) parts of real images -> sums: {'hits': parts inside, 'parts': present parts, 'chance':
  sum of each part's chance to be inside a random box of its box's size, 'all': images with every present part
  inside, 'images'}."""
  import numpy as np

  from fgattn_jax import localize

  parts = np.asarray(parts, np.float32)
  present = np.isfinite(parts).all(axis=-1)
  inside = localize.parts_inside(boxes, parts)
  chance = localize.random_box_holds(boxes, parts, image_hw)
  with_parts = present.any(axis=-1)
  every = (inside | ~present).all(axis=-1) & with_parts
  return {
    "hits": float(inside.sum()),
    "parts": int(present.sum()),
    "chance": float(chance.sum()),
    "all": int(every.sum()),
    "images": int(with_parts.sum()),
  }


def _add(total: dict, part: dict) -> dict:
  return {k: total.get(k, 0) + v for k, v in part.items()}


def finish_kind(sums: dict, **info) -> dict:
  """Sums over the split -> {'hit', 'chance', 'ratio', 'count', ...}."""
  count = sums.get("peaks", sums.get("parts", 0))
  hit = sums["hits"] / count if count else float("nan")
  chance = sums["chance"] / count if count else float("nan")
  out = {
    **info,
    "hit": hit,
    "chance": chance,
    "ratio": hit / chance if chance else float("nan"),
    "count": count,
    "images": sums["images"],
  }
  if sums.get("chance_box") and count:
    out["chance_in_box"] = sums["chance_box"] / count
  if "distinct" in sums and sums["images"]:
    out["distinct_parts"] = sums["distinct"] / sums["images"]
  if "all" in sums and sums["images"]:
    out["all_parts"] = sums["all"] / sums["images"]
  return out


def attention_scores(c, workdir: str, radius_fraction: float) -> dict:
  """The trained run's attention on the test split against chance: {kind: finish_kind(...)}. Kinds: 'map' (ABN),
  'part_maps' (MA-CNN), 'box2', 'box3', ... (RA-CNN, the box scale k zooms into), 'cam' / 'gradcam' (the baseline:
  not its own attention). 'own': the scheme's own attention; 'primary': the one its target is judged on."""
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from data_pipelines import pipeline
  from fgattn_jax import explain
  from fgattn_jax.models.registry import compute_dtype
  from fgattn_jax.ops.images import normalize
  from fgattn_jax.schemes import get_scheme
  from fgattn_jax.training import checkpoint

  scheme = get_scheme(c.scheme)
  model = scheme.build(c)
  checkpoint.load_model_weights(workdir, model, "latest")
  model.eval()
  dtype = compute_dtype(c.model.dtype)
  attend = nnx.jit(lambda m, x: {k: v for k, v in scheme.attention(m, x).items() if k != "crops"})
  cam = explain.has_cam(scheme, model)
  layer = explain.default_layer(scheme, model)
  sums, info = {}, {}
  pipe = pipeline.build(c, c.data.eval_split, training=False)
  try:
    for batch in pipe:
      real = np.asarray(batch["mask"])
      if "parts" not in batch or not real.any():
        continue
      hw = batch["image"].shape[1:3]
      radius = radius_fraction * min(hw)
      parts, boxes = np.asarray(batch["parts"])[real], np.asarray(batch["box"])[real]
      if c.scheme == "baseline":
        small = {k: jnp.asarray(batch[k]) for k in ("image", "label", "mask")}
        maps = explain.explain(scheme, model, small, layer=layer, dtype=dtype, cam=cam, guided=False)
        kind = "cam" if cam else "gradcam"
        info[kind] = dict(
          label=("CAM" if cam else f"Grad-CAM ({layer})") + " of the true class, peak", own=False, primary=False
        )
        sums[kind] = _add(
          sums.get(kind, {}), score_maps(np.asarray(maps[f"{kind}_true"])[real][..., None], parts, hw, radius, boxes)
        )
        continue
      att = attend(model, normalize(jnp.asarray(batch["image"]), dtype))
      if "part_maps" in att:
        info["part_maps"] = dict(label="part maps, each peak", own=True, primary=True)
        sums["part_maps"] = _add(
          sums.get("part_maps", {}), score_maps(np.asarray(att["part_maps"])[real], parts, hw, radius, boxes)
        )
      elif "maps" in att:
        info["map"] = dict(label="attention map (first task), peak", own=True, primary=True)
        sums["map"] = _add(
          sums.get("map", {}), score_maps(np.asarray(att["maps"])[real][..., :1], parts, hw, radius, boxes)
        )
      elif "boxes" in att:
        boxes = np.asarray(att["boxes"])[real]  # (B, S - 1, 4): the region scale k + 2 zooms into
        for k in range(boxes.shape[1]):
          kind = f"box{k + 2}"
          info[kind] = dict(label=f"scale-{k + 2} box, parts inside", own=True, primary=k == 0)
          sums[kind] = _add(sums.get(kind, {}), score_boxes(boxes[:, k], parts, hw))
  finally:
    pipe.close()
  return {kind: finish_kind(s, **info[kind]) for kind, s in sums.items()}


# --- Runs.


def first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0] if text else ''}".strip().rstrip(":")


def _jsonable(x):
  if isinstance(x, float) and not math.isfinite(x):
    return None
  if isinstance(x, dict):
    return {k: _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  return x


def one_run(scheme: str, seed: int, args, overrides, root: str, say) -> dict:
  """Trains (or reuses) one run and measures its attention -> its record; a failure is the record's 'error'."""
  from fgattn_jax.training import loop

  rec = {"scheme": scheme, "seed": seed}
  try:
    c = config_for(
      scheme,
      args.preset,
      seed,
      overrides=overrides,
      epochs_scale=args.epochs_scale,
      num_train=args.num_train,
      num_test=args.num_test,
    )
    workdir = os.path.join(root, run_name(c))
    rec.update(workdir=workdir, setup=setup_of(c))
    path = os.path.join(workdir, RECORD)
    if os.path.exists(path):
      with open(path) as f:
        old = json.load(f)
      if "error" not in old and "attention_error" not in old:
        return old | rec | {"reused": True}  # (the setup as this code describes it)
    from fgattn_jax.training import checkpoint

    trained_before = os.path.exists(path)  # (only its attention failed)
    if not trained_before and checkpoint.has_checkpoint(workdir):
      rec["resumed"] = True  # a run cut short: its wall time counts only what this command trained
    start = time.perf_counter()
    results = loop.run(c, workdir, progress=False)
    wall = time.perf_counter() - start
    if trained_before:  # keep the training's own time
      with open(path) as f:
        wall = json.load(f).get("wall_s", wall)
    rec.update(
      wall_s=wall,
      heads={name: {k: r[k] for k in METRICS if k in r} for name, r in results.items()},
      main=get_main(scheme),
    )
  except loop.Interrupted:  # Ctrl-C or SIGTERM: the run saved a checkpoint; the benchmark stops
    raise
  except Exception as e:  # noqa: BLE001 - a failed scheme is a row of the table; the others still run
    say(traceback.format_exc().rstrip())
    return rec | {"error": first_line(e)}
  start = time.perf_counter()
  try:
    rec["attention"] = attention_scores(c, workdir, args.part_radius)
  except Exception as e:  # noqa: BLE001
    say(traceback.format_exc().rstrip())
    rec["attention_error"] = first_line(e)
  rec["attention_s"] = time.perf_counter() - start
  with open(path, "w") as f:
    json.dump(_jsonable(rec), f, indent=1)
  return rec


def get_main(scheme: str) -> str:
  from fgattn_jax.schemes import get_scheme

  return get_scheme(scheme).main_output


# --- Summary, verdict, table.


def stats(values) -> dict:
  values = [v for v in values if v is not None and math.isfinite(v)]
  if not values:
    return {"n": 0}
  return {
    "n": len(values),
    "mean": statistics.fmean(values),
    "min": min(values),
    "max": max(values),
    "range": max(values) - min(values),
    "std": statistics.stdev(values) if len(values) > 1 else 0.0,
  }


def head_order(name: str):
  """The main head, MA-CNN's object stream, the part streams or scales by number, then the rest (RA-CNN's average,
  MA-CNN's object crop)."""
  stem = name.rstrip("0123456789")
  number = int(name[len(stem) :]) if name != stem else 0
  rank = {"logits": 0, "object": 1, "part": 2, "scale": 2}.get(stem, 3)
  return rank, stem if rank == 3 else "", number


def summarize(runs: list[dict]) -> dict:
  """Per scheme: each head's top-1 and each attention kind's hit, chance and ratio over the seeds that ran."""
  out = {}
  for scheme in dict.fromkeys(r["scheme"] for r in runs):
    mine = [r for r in runs if r["scheme"] == scheme]
    good = [r for r in mine if "error" not in r]
    heads = sorted(dict.fromkeys(h for r in good for h in r["heads"]), key=head_order)
    kinds = list(dict.fromkeys(k for r in good for k in r.get("attention", {})))
    s = {
      "seeds": [r["seed"] for r in good],
      "failed": {str(r["seed"]): r["error"] for r in mine if "error" in r},
      "attention_failed": {str(r["seed"]): r["attention_error"] for r in good if "attention_error" in r},
      "heads": {h: stats([r["heads"].get(h, {}).get("top1") for r in good]) for h in heads},
      "wall_s": stats([r.get("wall_s") for r in good]),
      "setup": good[0]["setup"] if good else (mine[0].get("setup") if mine else None),
      "attention": {},
    }
    for k in kinds:
      got = [r["attention"][k] for r in good if k in r.get("attention", {})]
      s["attention"][k] = {
        "label": got[0]["label"],
        "own": got[0]["own"],
        "primary": got[0]["primary"],
        **{
          m: stats([g.get(m) for g in got])
          for m in ("hit", "chance", "ratio", "chance_in_box", "distinct_parts", "all_parts")
          if m in got[0]
        },
      }
    out[scheme] = s
  return out


def _mean(summary, scheme, head):
  return summary.get(scheme, {}).get("heads", {}).get(head, {}).get("mean")


def verdict(summary: dict) -> list[dict]:
  """The issue's targets from the summary: [{'target', 'scheme', 'met' (None: not measured), 'text'}]."""
  lines = []
  base = summary.get("baseline", {}).get("heads", {}).get("logits", {})
  for s in ATTENTION_SCHEMES:
    if s not in summary:
      continue
    mine = summary[s]["heads"].get("logits", {})
    if not base.get("n") or not mine.get("n"):
      lines.append(
        {
          "target": "a",
          "scheme": s,
          "met": None,
          "text": f"{s} logits vs baseline: not measured ({'baseline' if not base.get('n') else s} has no "
          "finished run)",
        }
      )
      continue
    gain, spread = mine["mean"] - base["mean"], max(mine["range"], base["range"])
    note = " (one seed each: no spread)" if max(mine["n"], base["n"]) < 2 else ""
    lines.append(
      {
        "target": "a",
        "scheme": s,
        "met": gain > spread,
        "gain": gain,
        "spread": spread,
        "text": f"{s} logits {mine['mean']:.3f} vs baseline {base['mean']:.3f}: {gain:+.3f}, spread {spread:.3f}{note}",
      }
    )
  for target, scheme, better, worse in (("b", "racnn", "scale2", "scale1"), ("c", "macnn", "logits", "object")):
    if scheme not in summary:
      continue
    hi, lo = _mean(summary, scheme, better), _mean(summary, scheme, worse)
    if hi is None or lo is None:
      lines.append(
        {"target": target, "scheme": scheme, "met": None, "text": f"{scheme} {better} vs {worse}: not measured"}
      )
      continue
    lines.append(
      {
        "target": target,
        "scheme": scheme,
        "met": hi > lo,
        "gain": hi - lo,
        "text": f"{scheme} {better} {hi:.3f} vs {worse} {lo:.3f}: {hi - lo:+.3f}",
      }
    )
  for s in ATTENTION_SCHEMES:
    if s not in summary:
      continue
    primary = [(k, a) for k, a in summary[s]["attention"].items() if a["primary"]]
    if not primary or not primary[0][1]["ratio"].get("n"):
      lines.append({"target": "d", "scheme": s, "met": None, "text": f"{s} attention vs chance: not measured"})
      continue
    k, a = primary[0]
    r = a["ratio"]["mean"]
    lines.append(
      {
        "target": "d",
        "scheme": s,
        "met": r >= TARGET_RATIO,
        "ratio": r,
        "text": f"{s} {a['label']}: hit {a['hit']['mean']:.3f} vs chance {a['chance']['mean']:.3f}, "
        f"ratio {r:.2f} (target {TARGET_RATIO:g})",
      }
    )
  return lines


TARGETS = {
  "a": "each attention scheme's main output ('logits') beats the baseline's top-1 mean by more than the "
  "spread (the larger of the two schemes' max-min ranges over the seeds)",
  "b": "RA-CNN's scale 2 beats its scale 1 (top-1 means)",
  "c": "MA-CNN's joint classifier ('logits') beats its object stream ('object') (top-1 means)",
  "d": f"each scheme's own attention hits the parts at {TARGET_RATIO:g}x chance or more (the mean over seeds "
  "of hit / chance; RA-CNN: its scale-2 box)",
}


def _f(x, fmt="{:.3f}"):
  return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else fmt.format(x)


def _range(st: dict, fmt="{:.3f}") -> str:
  return f"{_f(st.get('min'), fmt)}-{_f(st.get('max'), fmt)}" if st.get("n") else "-"


def _also(kind: str, a: dict) -> str:
  """The attention's extra figures: a map's chance inside the object's box (what a map that finds the bird but not its
  parts scores), how many different parts MA-CNN's maps hit, how often a box holds every part."""
  also = []
  if a.get("chance_in_box", {}).get("n"):
    also.append(f"chance in the object's box {a['chance_in_box']['mean']:.3f}")
  if kind == "part_maps" and a.get("distinct_parts", {}).get("n"):
    also.append(f"{a['distinct_parts']['mean']:.2f} distinct parts hit per image")
  if a.get("all_parts", {}).get("n"):
    also.append(f"all parts inside: {a['all_parts']['mean']:.2f}")
  return "; ".join(also)


def _setup_line(scheme: str, u: dict) -> str:
  seen = u.get("seen", u["image_size"])
  at = f"at {seen} px" + (f" (of the {u['image_size']}-px input)" if seen != u["image_size"] else "")
  cycles = f", {u['cycles']} cycles" if u["cycles"] > 1 else ""
  return (
    f"  {scheme}: {u['backbone']} x{u['width']:g} {at}, {u['num_classes']} classes, {u['num_train']} training / "
    f"{u['num_test']} test images, {u['steps']} steps of {u['batch_size']} ({', '.join(u['phases'])}{cycles})"
  )


def table(report: dict) -> str:
  """The report as Markdown: top-1 per scheme and head, attention against chance, the setups, the targets' verdict."""
  summary = report["summary"]
  lines = [
    f"Top-1 on the test split ({report['preset_label']}; seeds {' '.join(map(str, report['seeds']))}; "
    "mean, min-max and standard deviation over the seeds that finished):",
    "",
    "| scheme | head | top-1 mean | min-max | std | seeds | wall min/run |",
    "|---|---|---|---|---|---|---|",
  ]
  for scheme, s in summary.items():
    wall = _f(s["wall_s"]["mean"] / 60, "{:.1f}") if s["wall_s"].get("n") else "-"
    for i, (head, h) in enumerate(s["heads"].items()):
      note = HEAD_NOTES.get((scheme, head))
      name = f"{head} ({note})" if note else head
      lines.append(
        f"| {scheme if i == 0 else ''} | {name} | {_f(h.get('mean'))} | {_range(h)} | {_f(h.get('std'))} | "
        f"{h['n']} | {wall if i == 0 else ''} |"
      )
    if not s["heads"]:
      lines.append(f"| {scheme} | failed | - | - | - | 0 | - |")
  lines += [
    "",
    f"Attention against chance on the test split (a peak within {report['part_radius']:g} of the image "
    "side of a part, or the parts inside a box; chance: a random point, a random box of the same size):",
    "",
    "| scheme | attention | hit | chance | ratio (target 2) | ratio min-max | also |",
    "|---|---|---|---|---|---|---|",
  ]
  for scheme, s in summary.items():
    for kind, a in s["attention"].items():
      label = a["label"] + ("" if a["own"] else " (not its own attention)")
      lines.append(
        f"| {scheme} | {label} | {_f(a['hit'].get('mean'))} | {_f(a['chance'].get('mean'))} | "
        f"{_f(a['ratio'].get('mean'), '{:.2f}')} | {_range(a['ratio'], '{:.2f}')} | {_also(kind, a)} |"
      )
  resumed = [f"{r['scheme']} seed {r['seed']}" for r in report["runs"] if r.get("resumed")]
  if resumed:
    lines.append(
      f"wall time counts only the part trained by the command that finished them: {', '.join(resumed)} "
      "(resumed from a checkpoint)"
    )
  for scheme, s in summary.items():
    lines += [f"failed: {scheme} seed {seed}: {e}" for seed, e in s["failed"].items()]
    lines += [f"attention failed: {scheme} seed {seed}: {e}" for seed, e in s["attention_failed"].items()]
  setups = {scheme: s["setup"] for scheme, s in summary.items() if s.get("setup")}
  lines += ["", "Setups:"] + [_setup_line(scheme, u) for scheme, u in setups.items()]
  if len({(u["backbone"], u["width"], u.get("seen", u["image_size"])) for u in setups.values()}) > 1:
    lines.append(
      "  note: the schemes' first networks differ (backbone, width or the side they see the image at): the "
      "comparison is not like for like"
    )
  lines += ["", "Targets:"]
  for target, text in TARGETS.items():
    mine = [v for v in report["verdict"] if v["target"] == target]
    if mine:
      lines.append(f"  ({target}) {text}")
    for v in mine:
      state = "met" if v["met"] else "not met" if v["met"] is not None else "not measured"
      lines.append(f"      {state:<12} {v['text']}")
  return "\n".join(lines)


def build_report(runs: list[dict], meta: dict) -> dict:
  summary = summarize(runs)
  return {**meta, "runs": runs, "summary": summary, "verdict": verdict(summary)}


def write(report: dict, path: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(_jsonable(report), f, indent=1)
  os.replace(tmp, path)


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  from fgattn_jax import config as config_lib

  try:
    overrides, rest = config_lib.split_overrides(argv)
  except config_lib.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  p = argparse.ArgumentParser(
    prog="python -m benchmarks.accuracy",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
    epilog="--config.KEY=VALUE overrides the configs (each scheme's that has the key).",
  )
  p.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=SCHEMES, help="default: all four")
  p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="default: 0 1 2")
  p.add_argument(
    "--preset",
    default="detail",
    help="the configs' preset (default 'detail'; '' = the bare configs, each its own input side)",
  )
  p.add_argument(
    "--workdir",
    default="workdirs/accuracy",
    help="the runs' folders go here (default workdirs/accuracy); a rerun reuses the finished ones",
  )
  p.add_argument("--out", help="the JSON (default <workdir>/accuracy.json)")
  p.add_argument(
    "--epochs-scale",
    type=float,
    default=1.0,
    help="every phase's length times this (at least one step), for quick runs (default 1)",
  )
  p.add_argument("--num-train", type=int, help="training images (data.synthetic.num_train; default the preset's)")
  p.add_argument("--num-test", type=int, help="test images (data.synthetic.num_test; default the preset's)")
  p.add_argument(
    "--part-radius",
    type=float,
    default=0.1,
    help="a map's peak hits a part within this fraction of the image side (default 0.1)",
  )
  p.add_argument(
    "--table-only",
    nargs="?",
    const="",
    metavar="JSON",
    help="run nothing: print the table of an earlier run's JSON (default: --out)",
  )
  args = p.parse_args(rest)
  out = args.out or os.path.join(args.workdir, "accuracy.json")
  if args.table_only is not None:
    path = args.table_only or out
    try:
      with open(path) as f:
        report = json.load(f)
    except (OSError, ValueError) as e:
      p.error(f"--table-only: {e}: give the JSON an earlier run wrote")
    report = build_report(report["runs"], {k: v for k, v in report.items() if k not in ("runs", "summary", "verdict")})
    print(table(report))
    return 0
  if args.epochs_scale <= 0:
    p.error(f"--epochs-scale must be above 0, got {args.epochs_scale}")
  for flag in ("num_train", "num_test"):
    if getattr(args, flag) is not None and getattr(args, flag) < 1:
      p.error(f"--{flag.replace('_', '-')} must be 1 or more")
  if not 0 < args.part_radius <= 1:
    p.error("--part-radius is a fraction of the image side: above 0, at most 1")
  if any(k == "seed" for k, _ in overrides):
    p.error("--config.seed: give the seeds with --seeds")
  import configs

  known = {
    s: set(config_lib.flat_keys(config_lib.load_config(os.path.join(os.path.dirname(configs.__file__), f"{s}.py"))))
    for s in args.schemes
  }
  unknown = [k for k, _ in overrides if not any(k in keys for keys in known.values())]
  if unknown:
    p.error(f"--config.{unknown[0]}: no such key in the configs of {', '.join(args.schemes)}")

  import jax

  from fgattn_jax.training import loop

  device = f"{jax.devices()[0].device_kind} x{jax.device_count()}"
  meta = {
    "benchmark": "accuracy",
    "date": datetime.datetime.now().isoformat(timespec="seconds"),
    "machine": {
      "node": platform.node(),
      "device": device,
      "cpus": os.cpu_count(),
      "jax": jax.__version__,
      "python": platform.python_version(),
    },
    "command": "python -m benchmarks.accuracy " + " ".join(argv),
    "preset": args.preset,
    "preset_label": f"preset {args.preset!r}" if args.preset else "the bare presets",
    "schemes": args.schemes,
    "seeds": args.seeds,
    "epochs_scale": args.epochs_scale,
    "num_train": args.num_train,
    "num_test": args.num_test,
    "overrides": [f"{k}={v}" for k, v in overrides],
    "part_radius": args.part_radius,
    "workdir": args.workdir,
  }

  def say(text):
    print(text, file=sys.stderr, flush=True)

  say(
    f"# {platform.node()}: {device}, jax {jax.__version__}, python {platform.python_version()}; "
    f"{len(args.schemes)} schemes x {len(args.seeds)} seeds in {args.workdir}, JSON {out}"
  )
  runs, total = [], len(args.schemes) * len(args.seeds)
  # Seed by seed: a run cut short still has every scheme at the first seeds.
  for seed in args.seeds:
    for scheme in args.schemes:
      say(f"[{len(runs) + 1}/{total}] {scheme} seed {seed}: starting")
      try:
        rec = one_run(scheme, seed, args, overrides, args.workdir, say)
      except loop.Interrupted as e:
        write(build_report(runs, meta), out)
        say(
          f"{e} received: {scheme} seed {seed} saved a checkpoint; the finished runs are in {out}. Run the same "
          "command again to go on."
        )
        return 130 if str(e) == "SIGINT" else 143
      runs.append(rec)
      if "error" in rec:
        say(f"[{len(runs)}/{total}] {scheme} seed {seed}: FAILED: {rec['error']}")
      else:
        att = next((a for a in rec.get("attention", {}).values() if a.get("primary") or not a.get("own")), None)
        seen = (
          f"; attention hit {att['hit']:.3f} vs chance {att['chance']:.3f} ({att['ratio']:.2f}x)"
          if att and att.get("ratio") is not None and math.isfinite(att["ratio"])
          else ""
        )
        say(
          f"[{len(runs)}/{total}] {scheme} seed {seed}: {'reused, ' if rec.get('reused') else ''}"
          f"{rec['wall_s'] / 60:.1f} min, {rec['main']} top-1 {rec['heads'][rec['main']]['top1']:.3f}{seen}"
        )
      write(build_report(runs, meta), out)
  report = build_report(runs, meta)
  write(report, out)
  print(table(report))
  say(f"# written: {out}")
  return 1 if any("error" in r for r in runs) else 0


if __name__ == "__main__":
  sys.exit(main())
