"""The standard table as a bar chart: JAX beside PyTorch (eager and each torch.compile mode) for every configuration.

    python -m benchmarks.chart --json benchmarks/results.jsonl --out benchmarks/throughput.png

Reads the lines `python -m benchmarks.compare --json FILE` appends (the last line of each configuration wins).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def load(path: str) -> list[dict]:
  rows = {}
  with open(path) as f:
    for line in f:
      if line.strip():
        r = json.loads(line)
        rows[(r["scheme"], r["backbone"], r["res"], r["batch"])] = r
  return list(rows.values())


def draw(rows: list[dict], out: str) -> str:
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  series = [
    ("jax_img_s", "JAX (ours)", "#1f77b4"),
    ("torch_eager_img_s", "PyTorch eager", "#ff7f0e"),
    ("torch_compile_img_s", "torch.compile", "#2ca02c"),
    ("torch_graphs_img_s", "torch.compile, CUDA graphs", "#9467bd"),
    ("torch_autotune_img_s", "torch.compile, max-autotune", "#8c564b"),
  ]
  series = [s for s in series if any(r.get(s[0]) is not None for r in rows)]
  # A row PyTorch ran eager only is compared with eager only: the label says so.
  labels = [
    f"{r['scheme']}\n{r['backbone']} {r['res']}\nbatch {r['batch']}"
    + ("\n(PyTorch eager only)" if r.get("vs_eager_only") else "")
    for r in rows
  ]
  x = np.arange(len(rows))
  width = 0.8 / len(series)
  fig = Figure(figsize=(max(6.0, 1.3 * len(rows)), 4.5), dpi=120)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  for i, (key, name, colour) in enumerate(series):
    values = [r.get(key) or 0.0 for r in rows]
    ranges = [r.get(f"{key}_range") for r in rows]  # the spread over repeats, where there were several
    err = (
      np.array(
        [
          [v - rg[0] if rg else 0.0 for v, rg in zip(values, ranges)],
          [rg[1] - v if rg else 0.0 for v, rg in zip(values, ranges)],
        ]
      )
      if any(ranges)
      else None
    )
    ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name, color=colour, yerr=err, capsize=2)
  ax.set_xticks(x, labels, fontsize=7)
  ax.set_ylabel("training images/s")
  ax.set_title(f"training throughput, {rows[0]['device'] if rows else ''}")
  ax.legend()
  fig.tight_layout()
  fig.savefig(out)
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(
    prog="python -m benchmarks.chart", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--json", required=True, help="the file benchmarks.compare --json wrote")
  p.add_argument("--out", default="benchmarks/throughput.png")
  args = p.parse_args(argv)
  try:
    rows = load(args.json)
  except (OSError, ValueError, KeyError) as e:
    p.error(
      f"--json {args.json}: {type(e).__name__}: {e}: give the file benchmarks.compare --json wrote (e.g. "
      "benchmarks/results/2026-11-30-h200/results.jsonl)"
    )
  if not rows:
    p.error(f"{args.json} holds no results")
  print(draw(rows, args.out))
  return 0


if __name__ == "__main__":
  sys.exit(main())
