"""One PyTorch scheme's training (and evaluation) step time, as benchmarks/throughput.py measures ours:

    python -m benchmarks.torch_reference.run --scheme racnn --backbone vgg19 --res 448 --batch 16 [--mode graphs]

    python -m benchmarks.torch_reference.run --all --mode eager --json torch.jsonl   # the standard table

PyTorch as a user tuning it would run it. Modes (MODES): 'eager'; 'compile', torch.compile's default; 'graphs',
torch.compile(mode='reduce-overhead'), whose compiled forward and backward replay as CUDA graphs (XLA replays its
fused kernels as CUDA graphs by default, so this is the like-for-like mode on launch-bound steps); 'autotune',
mode='max-autotune' (CUDA graphs and Triton's autotuned matrix products). SGD momentum 0.9, fused (one kernel for
all parameters) on CUDA, foreach on the CPU; on CUDA bf16 autocast, channels_last (model and inputs) and cuDNN's
autotuner (cudnn.benchmark). Random images and labels made once on the device; each step timed to completion
(torch.cuda.synchronize) after --warmup steps (for the compiled modes the warm-up includes the compilation:
reported as compile_s); the median. Prints one JSON line, with the steps and warm-up it used.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time

import torch

from benchmarks.throughput import CPU, LARGEST_BATCH, standard  # no JAX import: the table's sizes only
from benchmarks.torch_reference.schemes import build

# --mode -> torch.compile's mode (None: eager, no compilation).
MODES = {"eager": None, "compile": "default", "graphs": "reduce-overhead", "autotune": "max-autotune"}


def _sync(device):
  if device == "cuda":
    torch.cuda.synchronize()


def setup(scheme, backbone, res, batch, *, mode="eager", device="cuda", width=1.0, num_classes=200, train=True):
  """The scheme's step as a function of nothing (random images and labels made once on the device)."""
  torch.manual_seed(0)
  model = build(scheme, backbone, num_classes, res, width).to(device)
  x = torch.randn(batch, 3, res, res, device=device)
  y = torch.randint(0, num_classes, (batch,), device=device)
  if device == "cuda":
    torch.backends.cudnn.benchmark = True
    model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    torch.cuda.reset_peak_memory_stats()
  autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else contextlib.nullcontext()
  optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, **sgd_options(device))
  forward = model if MODES[mode] is None else torch.compile(model, mode=MODES[mode])
  model.train(train)
  # CUDA graphs keep their outputs in a static pool: a new step must say so, or the next replay overwrites them.
  mark = (
    getattr(torch.compiler, "cudagraph_mark_step_begin", None)
    if device == "cuda" and mode in ("graphs", "autotune")
    else None
  )

  def step():
    if mark is not None:
      mark()
    if not train:
      with torch.no_grad(), autocast:
        return forward(x, y)
    optimizer.zero_grad(set_to_none=True)
    with autocast:
      loss = forward(x, y)
    loss.backward()
    optimizer.step()
    return loss

  return step


def sgd_options(device: str) -> dict:
  """The fastest SGD update PyTorch has on the device: fused (one kernel for every parameter) on CUDA."""
  return {"fused": True} if device == "cuda" else {"foreach": True}


def measure(
  scheme,
  backbone,
  res,
  batch,
  *,
  steps=50,
  warmup=5,
  mode="eager",
  device="cuda",
  width=1.0,
  num_classes=200,
  train=True,
) -> dict:
  step = setup(
    scheme, backbone, res, batch, mode=mode, device=device, width=width, num_classes=num_classes, train=train
  )
  start = time.perf_counter()
  for _ in range(warmup):
    step()
  _sync(device)
  warm_s = time.perf_counter() - start
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    step()
    _sync(device)
    times.append(time.perf_counter() - start)
  median = statistics.median(times)
  return {
    "scheme": scheme,
    "backbone": backbone,
    "res": res,
    "batch": batch,
    "mode": mode,
    "device": device,
    "train": train,
    "step_ms_median": 1e3 * median,
    "images_per_s": batch / median,
    "peak_mem_bytes": torch.cuda.max_memory_allocated() if device == "cuda" else None,
    "compile_s": warm_s if MODES[mode] else None,
    "steps": steps,
    "warmup": warmup,
    "optimizer": "sgd " + next(iter(sgd_options(device))),
    "torch": torch.__version__,
  }


def measure_eval(*args, **kwargs) -> dict:
  """Inference: forward only, no gradients, evaluation mode."""
  return measure(*args, train=False, **kwargs)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(
    prog="python -m benchmarks.torch_reference.run",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("--scheme", choices=("baseline", "abn", "macnn", "racnn"))
  p.add_argument("--all", action="store_true", help="the standard table (benchmarks/throughput.py's), one process")
  p.add_argument(
    "--largest",
    choices=sorted(LARGEST_BATCH),
    help="with --all: at the largest batches that fit JAX's step on this card (throughput.LARGEST_BATCH)",
  )
  p.add_argument("--json", help="append the results (one object per line) to this file")
  p.add_argument("--cpu", action="store_true", help="with --all: its toy version on the CPU (a smoke test)")
  p.add_argument("--backbone", default="vgg19")
  p.add_argument("--res", type=int, default=448)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument(
    "--mode",
    default="eager",
    choices=tuple(MODES),
    help="eager, or torch.compile: 'compile' (default mode), 'graphs' (reduce-overhead: CUDA graphs), "
    "'autotune' (max-autotune)",
  )
  p.add_argument("--steps", type=int, help="timed steps (default 50; --cpu: 3)")
  p.add_argument("--warmup", type=int, default=5)
  p.add_argument("--width", type=float, default=1.0)
  p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
  p.add_argument("--eval", action="store_true", help="inference instead of training steps")
  args = p.parse_args(argv)
  if not args.all and not args.scheme:
    p.error("name a --scheme (and --backbone, --res, --batch), or ask for --all")
  runs = standard(args.largest) if args.all else [(args.scheme, args.backbone, args.res, args.batch)]
  if args.cpu:
    runs = CPU if args.all else runs
    runs = [(s, b, min(r, 64), min(n, 4)) for s, b, r, n in runs]
    args.device, args.width, args.warmup = "cpu", 1 / 16, min(args.warmup, 1)
  if args.steps is None:
    args.steps = 3 if args.cpu else 50
  failed = False
  for scheme, backbone, res, batch in runs:
    try:
      r = measure(
        scheme,
        backbone,
        res,
        batch,
        steps=args.steps,
        warmup=args.warmup,
        mode=args.mode,
        device=args.device,
        width=args.width,
        train=not args.eval,
      )
    except Exception as e:  # e.g. out of memory, or torch.compile lacking a compiler: say so, measure the rest
      if not args.all:
        raise
      failed = True
      r = {
        "scheme": scheme,
        "backbone": backbone,
        "res": res,
        "batch": batch,
        "mode": args.mode,
        "error": f"{type(e).__name__}: {str(e)[:300]}",
      }
    if args.device == "cuda":
      torch.cuda.empty_cache()
    print(json.dumps(r), flush=True)
    if args.json:
      with open(args.json, "a") as f:
        f.write(json.dumps(r) + "\n")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
