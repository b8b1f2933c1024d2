"""One configuration in both frameworks, side by side: our JAX training step against the same scheme in PyTorch
at its best (benchmarks/torch_reference: bf16 autocast, channels_last, fused SGD; eager, torch.compile, and
torch.compile with CUDA graphs), measured in the same run on the same machine, interleaved and repeated:

    python -m benchmarks.compare --scheme racnn --backbone vgg19 --res 448 --batch 16
    python -m benchmarks.compare --all [--repeats 3] [--json benchmarks/results.jsonl]   # the standard table (GPU)
    python -m benchmarks.compare --all --cpu                                # toy sizes, a smoke test
    python -m benchmarks.compare --collect jax.jsonl torch.jsonl --passes passes.jsonl   # rows measured apart

Each repeat measures every row once in every framework and mode, one process each (neither holds device memory
the other needs, and a row's measurements are spread over the run rather than back to back); the JAX processes
share a compilation cache, so only the first compiles. A row reports each side's median over the repeats and its
range (min-max), the steps and warm-up every measurement used, the fastest PyTorch mode by median (torch_best_mode)
and ratio = JAX's median images/s over that mode's (target: 1.25 or more), with ratio_range = [JAX's slowest over
that mode's fastest, JAX's fastest over its slowest]. A row without a compiled PyTorch mode compares with eager
only: its ratio is 'vs eager' (torch_best_mode says so), never a target met.

--collect joins results that were measured separately (benchmarks/gpu_session.sh: each framework's whole table in
one process, under a deadline) into the same rows, repeats included, and adds the machinery's cost: the scheme's
JAX step over the plain backbone steps at the inputs its backbones see (benchmarks.throughput --passes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from benchmarks import throughput

MODES = ("eager", "compile", "graphs", "autotune")  # benchmarks.torch_reference.run.MODES (no torch import here)
COMPILED = ("compile", "graphs", "autotune")


def torch_run(scheme, backbone, res, batch, mode, steps, warmup, width, device) -> dict | None:
  cmd = [
    sys.executable,
    "-m",
    "benchmarks.torch_reference.run",
    "--scheme",
    scheme,
    "--backbone",
    backbone,
    "--res",
    str(res),
    "--batch",
    str(batch),
    "--mode",
    mode,
    "--steps",
    str(steps),
    "--warmup",
    str(warmup),
    "--width",
    str(width),
    "--device",
    device,
  ]
  done = subprocess.run(cmd, capture_output=True, text=True)
  if done.returncode != 0:  # e.g. out of memory at this batch, or torch.compile missing a compiler: say so, go on
    print(
      f"# PyTorch {mode} failed for {scheme}/{backbone}/{res}/{batch}: {done.stderr.strip()[-400:]}", file=sys.stderr
    )
    return None
  return json.loads(done.stdout.strip().splitlines()[-1])


def jax_run(scheme, backbone, res, batch, steps, warmup, cpu: bool, cache: str) -> dict | None:
  """benchmarks.throughput for one row in its own process (the compilation cache shared between repeats)."""
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "row.jsonl")
    cmd = [
      sys.executable,
      "-m",
      "benchmarks.throughput",
      "--scheme",
      scheme,
      "--backbone",
      backbone,
      "--res",
      str(res),
      "--batch",
      str(batch),
      "--steps",
      str(steps),
      "--warmup",
      str(warmup),
      "--json",
      out,
    ]
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.environ.get("JAX_COMPILATION_CACHE_DIR", cache))
    done = subprocess.run(cmd + (["--cpu"] if cpu else []), capture_output=True, text=True, env=env)
    rows = throughput.read_json_lines(out) if os.path.exists(out) else []
  if done.returncode != 0 or not rows or "error" in rows[-1]:
    why = rows[-1]["error"] if rows and "error" in rows[-1] else done.stderr.strip()[-400:]
    print(f"# JAX failed for {scheme}/{backbone}/{res}/{batch}: {why}", file=sys.stderr)
    return None
  return rows[-1]


def _key(r: dict) -> tuple:
  return r["scheme"], r["backbone"], r["res"], r["batch"]


def _spread(values: list[float]) -> tuple[float | None, list[float] | None]:
  return (statistics.median(values), [min(values), max(values)]) if values else (None, None)


def joined(jax_rows: list[dict], torch_rows: list[dict], modes, pass_rows: list[dict] = ()) -> list[dict]:
  """One row per configuration, every measurement of it (repeats) pooled: JAX's and each PyTorch mode's median
  images/s and range, the fastest PyTorch mode by median and the ratio to it, and the step's time over its backbone
  passes' (where every pass was timed)."""
  torch = {}
  for t in torch_rows:
    if "error" not in t:
      torch.setdefault((*_key(t), t["mode"]), []).append(t)
  plain = {}
  for r in [*pass_rows, *jax_rows]:
    if r["scheme"] == "baseline" and "error" not in r:
      plain.setdefault(_key(r)[1:], []).append(r["train_ms"])
  configs = {}
  for r in jax_rows:
    configs.setdefault(_key(r), []).append(r)
  for key in [k[:4] for k in torch]:  # a configuration only PyTorch ran (JAX failed or was cut short): shown too
    configs.setdefault(key, [])
  rows = []
  for key, runs in configs.items():
    ok = [j for j in runs if "error" not in j and j.get("train_img_s")]
    jax_img_s, jax_range = _spread([j["train_img_s"] for j in ok])
    row = dict(
      zip(("scheme", "backbone", "res", "batch"), key),
      device=next((j.get("device") for j in runs), None),
      jax_img_s=jax_img_s,
      jax_img_s_range=jax_range,
      jax_repeats=len(ok),
      jax_peak_fraction=statistics.median([j["peak_fraction"] for j in ok if j.get("peak_fraction")])
      if any(j.get("peak_fraction") for j in ok)
      else None,
      jax_steps=sorted({(j.get("steps"), j.get("warmup")) for j in ok if j.get("steps")}) or None,
    )
    medians = {}
    for m in modes:
      values = [t["images_per_s"] for t in torch.get((*key, m), [])]
      row[f"torch_{m}_img_s"], row[f"torch_{m}_img_s_range"] = _spread(values)
      row[f"torch_{m}_repeats"] = len(values)
      if values:
        medians[m] = row[f"torch_{m}_img_s"]
      row[f"torch_{m}_steps"] = (
        sorted({(t.get("steps"), t.get("warmup")) for t in torch.get((*key, m), []) if t.get("steps")}) or None
      )
    best = max(medians, key=medians.get) if medians else None
    row["torch_best_mode"] = best
    row["vs_eager_only"] = best is not None and not any(m in medians for m in COMPILED)
    row["ratio"] = row["ratio_range"] = None
    if best and jax_img_s:
      low, high = row[f"torch_{best}_img_s_range"]
      row["ratio"] = jax_img_s / medians[best]
      row["ratio_range"] = [jax_range[0] / high, jax_range[1] / low]
    row["jax"], row["torch"] = (
      ok[-1] if ok else (runs[-1] if runs else None),
      {m: (torch.get((*key, m)) or [None])[-1] for m in modes},
    )
    if ok:
      c = throughput.config_for(key[0], key[1], key[2], key[3], 1.0, "bfloat16")
      sides = throughput.backbone_passes(key[0], c)
      if all((key[1], s, key[3]) in plain for s in sides):
        row["passes_ms"] = sum(statistics.median(plain[(key[1], s, key[3])]) for s in sides)
        row["overhead"] = statistics.median([j["train_ms"] for j in ok]) / row["passes_ms"]
    row["overhead_target"] = throughput.OVERHEAD_TARGETS[key[0]]
    rows.append(row)
  return rows


def main(argv=None) -> int:
  p = argparse.ArgumentParser(
    prog="python -m benchmarks.compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  throughput.run_arguments(p)
  p.add_argument(
    "--modes",
    nargs="+",
    default=["eager", "compile", "graphs"],
    choices=MODES,
    help="PyTorch modes (default: eager, compile, graphs = CUDA graphs; also autotune = max-autotune; "
    "with --cpu: eager only)",
  )
  p.add_argument(
    "--repeats",
    type=int,
    default=3,
    help="measurements of every row in every framework and mode, interleaved (default 3)",
  )
  p.add_argument(
    "--collect",
    nargs="+",
    metavar="JSONL",
    help="measure nothing: join the JAX results (benchmarks.throughput --json, first file) with the "
    "PyTorch ones (benchmarks.torch_reference.run --json, the other files)",
  )
  p.add_argument("--passes", metavar="JSONL", help="with --collect: the plain backbone steps (throughput --passes)")
  args = p.parse_args(argv)
  if args.collect:
    jax_rows, torch_rows = throughput.collected(p, args.collect[:1]), throughput.collected(p, args.collect[1:])
    modes = [m for m in MODES if any(t.get("mode") == m for t in torch_rows)] or args.modes
    rows = joined(jax_rows, torch_rows, modes, throughput.collected(p, [args.passes]) if args.passes else [])
    if args.json:
      with open(args.json, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    print(table(rows, modes))
    return 0
  if args.repeats < 1:
    p.error(f"--repeats must be at least 1, got {args.repeats}")
  runs = throughput.selected_runs(p, args)
  import torch

  if not args.cpu and not torch.cuda.is_available():  # PyTorch would fail on every row, JAX run at full size
    p.error("PyTorch sees no CUDA GPU here: run on a GPU machine, or pass --cpu for the toy sizes on the CPU")
  width, device = 1.0, "cuda"
  if args.cpu:
    width, device, args.modes = 1 / 16, "cpu", ["eager"]

  jax_rows, torch_rows = [], []
  with tempfile.TemporaryDirectory() as cache:
    for repeat in range(args.repeats):
      for scheme, backbone, res, batch in runs:
        print(f"# repeat {repeat + 1}/{args.repeats}: {scheme}/{backbone}/{res}/{batch}", file=sys.stderr)
        for m in args.modes:
          t = torch_run(scheme, backbone, res, batch, m, args.steps, args.warmup, width, device)
          torch_rows += [t] if t else []
        j = jax_run(scheme, backbone, res, batch, args.steps, args.warmup, args.cpu, cache)
        jax_rows.append(j or {"scheme": scheme, "backbone": backbone, "res": res, "batch": batch, "error": "failed"})
  rows = joined(jax_rows, torch_rows, args.modes)
  if args.json:
    with open(args.json, "a") as f:
      f.writelines(json.dumps(r) + "\n" for r in rows)
  print(table(rows, args.modes))
  return 0


def _cell(r: dict, c: str) -> str:
  value = r.get(c)
  if value is None:
    return "-"
  if c == "ratio":
    low, high = r.get("ratio_range") or (value, value)
    text = f"{value:.2f} ({low:.2f}-{high:.2f})" if r.get("jax_repeats", 1) > 1 else f"{value:.2f}"
    return text + (" vs eager" if r.get("vs_eager_only") else "")
  if c in ("overhead", "overhead_target"):
    return f"{value:.2f}"
  spread = r.get(f"{c}_range")
  if isinstance(value, float) and spread and spread[0] != spread[1]:
    return f"{value:.1f} ({spread[0]:.1f}-{spread[1]:.1f})"
  return f"{value:.1f}" if isinstance(value, float) else str(value)


def table(rows, modes) -> str:
  """Markdown: each side's median images/s (and its range over the repeats), the fastest PyTorch mode, the ratio."""
  cols = ["scheme", "backbone", "res", "batch", "jax_img_s"] + [f"torch_{m}_img_s" for m in modes]
  cols += ["torch_best_mode", "ratio"]
  if any("overhead" in r for r in rows):
    cols += ["overhead", "overhead_target"]
  names = {"torch_best_mode": "fastest PyTorch", "ratio": "JAX / fastest"}
  lines = [
    "| " + " | ".join(names.get(c, c.replace("_img_s", " img/s")) for c in cols) + " |",
    "|" + "---|" * len(cols),
  ]
  lines += ["| " + " | ".join(_cell(r, c) for c in cols) + " |" for r in rows]
  return "\n".join(lines)


if __name__ == "__main__":
  sys.exit(main())
