"""One configuration in both frameworks, side by side: our JAX training step against the same scheme in PyTorch
(benchmarks/torch_reference: eager with bf16 autocast and channels_last, and torch.compile).

    python -m benchmarks.compare --scheme racnn --backbone vgg19 --res 448 --batch 16
    python -m benchmarks.compare --all [--json benchmarks/results.jsonl]    # the standard table (GPU)
    python -m benchmarks.compare --all --cpu                                # toy sizes, a smoke test

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


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  throughput.run_arguments(p)
  p.add_argument("--modes", nargs="+", default=["eager", "compile"], choices=("eager", "compile"),
                 help="PyTorch modes (with --cpu: eager only)")
  args = p.parse_args(argv)
  runs = throughput.selected_runs(p, args)
  width, dtype, device = 1.0, "bfloat16", "cuda"
  if args.cpu:
    width, dtype, device, args.modes = 1 / 16, "float32", "cpu", ["eager"]

  rows = []
  for scheme, backbone, res, batch in runs:
    torch = {m: torch_run(scheme, backbone, res, batch, m, args.steps, args.warmup, width, device) for m in args.modes}
    jax_result = throughput.measure(scheme, backbone, res, batch, steps=args.steps, warmup=args.warmup, width=width,
                                    dtype=dtype)
    best = max((t["images_per_s"] for t in torch.values() if t), default=None)
    row = {"scheme": scheme, "backbone": backbone, "res": res, "batch": batch, "device": jax_result["device"],
           "jax_img_s": jax_result["train_img_s"], "jax_peak_fraction": jax_result["peak_fraction"],
           **{f"torch_{m}_img_s": (t or {}).get("images_per_s") for m, t in torch.items()},
           "ratio": jax_result["train_img_s"] / best if best else None, "jax": jax_result, "torch": torch}
    rows.append(row)
    if args.json:
      with open(args.json, "a") as f:
        f.write(json.dumps(row) + "\n")
  print(table(rows, args.modes))
  return 0


def table(rows, modes) -> str:
  cols = ["scheme", "backbone", "res", "batch", "jax_img_s"] + [f"torch_{m}_img_s" for m in modes] + ["ratio"]
  lines = ["| " + " | ".join(c.replace("_img_s", " img/s") for c in cols) + " |", "|" + "---|" * len(cols)]
  for r in rows:
    cells = ["-" if r.get(c) is None else (f"{r[c]:.2f}" if c == "ratio" else
                                          f"{r[c]:.1f}" if isinstance(r[c], float) else str(r[c])) for c in cols]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


if __name__ == "__main__":
  sys.exit(main())
