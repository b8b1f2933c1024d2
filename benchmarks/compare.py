"""One configuration in both frameworks, side by side: our JAX training step against the same scheme in PyTorch
(benchmarks/torch_reference: eager with bf16 autocast and channels_last, and torch.compile).

    python -m benchmarks.compare --scheme racnn --backbone vgg19 --res 448 --batch 16
    python -m benchmarks.compare --all [--json benchmarks/results.jsonl]    # the standard table (GPU)
    python -m benchmarks.compare --all --cpu                                # toy sizes, a smoke test
    python -m benchmarks.compare --collect jax.jsonl torch.jsonl --passes passes.jsonl   # rows measured apart

--collect joins results that were measured separately (benchmarks/gpu_session.sh: each framework's whole table in
one process, under a deadline) into the same rows, and adds the machinery's cost: the scheme's JAX step over the
plain backbone steps at the inputs its backbones see (benchmarks.throughput --passes).

PyTorch runs first, each mode in its own process, so that neither framework holds device memory the other
needs; then JAX in this process. ratio = JAX images/s over the faster PyTorch mode (target: 1.25 or more).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from benchmarks import throughput


def torch_run(scheme, backbone, res, batch, mode, steps, warmup, width, device) -> dict | None:
  cmd = [sys.executable, "-m", "benchmarks.torch_reference.run", "--scheme", scheme, "--backbone", backbone,
         "--res", str(res), "--batch", str(batch), "--mode", mode, "--steps", str(steps), "--warmup", str(warmup),
         "--width", str(width), "--device", device]
  done = subprocess.run(cmd, capture_output=True, text=True)
  if done.returncode != 0:  # e.g. out of memory at this batch, or torch.compile missing a compiler: say so, go on
    print(f"# PyTorch {mode} failed for {scheme}/{backbone}/{res}/{batch}: {done.stderr.strip()[-400:]}",
          file=sys.stderr)
    return None
  return json.loads(done.stdout.strip().splitlines()[-1])


def _key(r: dict) -> tuple:
  return r["scheme"], r["backbone"], r["res"], r["batch"]


def joined(jax_rows: list[dict], torch_rows: list[dict], modes, pass_rows: list[dict] = ()) -> list[dict]:
  """One row per configuration (the last result of each): the PyTorch modes' images/s beside it, the ratio to
  the faster one, and the step's time over its backbone passes' (where every pass was timed)."""
  torch = {(*_key(t), t["mode"]): t for t in torch_rows if "error" not in t}
  plain = {_key(r)[1:]: r["train_ms"] for r in [*pass_rows, *jax_rows]
           if r["scheme"] == "baseline" and "error" not in r}
  configs = {_key(r): r for r in jax_rows}
  for key in [k[:4] for k in torch]:  # a configuration only PyTorch ran (JAX failed or was cut short): shown too
    configs.setdefault(key, dict(zip(("scheme", "backbone", "res", "batch"), key)))
  rows = []
  for j in configs.values():
    ts = {m: torch.get((*_key(j), m)) for m in modes}
    best = max((t["images_per_s"] for t in ts.values() if t), default=None)
    jax_img_s = j.get("train_img_s")
    row = {"scheme": j["scheme"], "backbone": j["backbone"], "res": j["res"], "batch": j["batch"],
           "device": j.get("device"), "jax_img_s": jax_img_s, "jax_peak_fraction": j.get("peak_fraction"),
           **{f"torch_{m}_img_s": (t or {}).get("images_per_s") for m, t in ts.items()},
           "ratio": jax_img_s / best if best and jax_img_s else None, "jax": j, "torch": ts}
    if jax_img_s:
      c = throughput.config_for(j["scheme"], j["backbone"], j["res"], j["batch"], 1.0, "bfloat16")
      sides = throughput.backbone_passes(j["scheme"], c)
      if all((j["backbone"], s, j["batch"]) in plain for s in sides):
        row["passes_ms"] = sum(plain[(j["backbone"], s, j["batch"])] for s in sides)
        row["overhead"] = j["train_ms"] / row["passes_ms"]
    row["overhead_target"] = throughput.OVERHEAD_TARGETS[j["scheme"]]
    rows.append(row)
  return rows


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  throughput.run_arguments(p)
  p.add_argument("--modes", nargs="+", default=["eager", "compile"], choices=("eager", "compile"),
                 help="PyTorch modes (with --cpu: eager only)")
  p.add_argument("--collect", nargs="+", metavar="JSONL",
                 help="measure nothing: join the JAX results (benchmarks.throughput --json, first file) with the "
                      "PyTorch ones (benchmarks.torch_reference.run --json, the other files)")
  p.add_argument("--passes", metavar="JSONL", help="with --collect: the plain backbone steps (throughput --passes)")
  args = p.parse_args(argv)
  if args.collect:
    jax_rows, torch_rows = throughput.collected(p, args.collect[:1]), throughput.collected(p, args.collect[1:])
    rows = joined(jax_rows, torch_rows, args.modes, throughput.collected(p, [args.passes]) if args.passes else [])
    if args.json:
      with open(args.json, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    print(table(rows, args.modes))
    return 0
  runs = throughput.selected_runs(p, args)
  import torch
  if not args.cpu and not torch.cuda.is_available():  # PyTorch would fail on every row, JAX run at full size
    p.error("PyTorch sees no CUDA GPU here: run on a GPU machine, or pass --cpu for the toy sizes on the CPU")
  width, dtype, device = 1.0, "bfloat16", "cuda"
  if args.cpu:
    width, dtype, device, args.modes = 1 / 16, "float32", "cpu", ["eager"]

  rows = []
  for scheme, backbone, res, batch in runs:
    torch = [torch_run(scheme, backbone, res, batch, m, args.steps, args.warmup, width, device) for m in args.modes]
    jax_result = throughput.measure(scheme, backbone, res, batch, steps=args.steps, warmup=args.warmup, width=width,
                                    dtype=dtype)
    row, = joined([jax_result], [t for t in torch if t], args.modes)
    rows.append(row)
    if args.json:
      with open(args.json, "a") as f:
        f.write(json.dumps(row) + "\n")
  print(table(rows, args.modes))
  return 0


def table(rows, modes) -> str:
  cols = ["scheme", "backbone", "res", "batch", "jax_img_s"] + [f"torch_{m}_img_s" for m in modes] + ["ratio"]
  if any("overhead" in r for r in rows):
    cols += ["overhead", "overhead_target"]
  lines = ["| " + " | ".join(c.replace("_img_s", " img/s") for c in cols) + " |", "|" + "---|" * len(cols)]
  for r in rows:
    cells = ["-" if r.get(c) is None else (f"{r[c]:.2f}" if c in ("ratio", "overhead", "overhead_target") else
                                          f"{r[c]:.1f}" if isinstance(r[c], float) else str(r[c])) for c in cols]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


if __name__ == "__main__":
  sys.exit(main())
