"""Where a PyTorch scheme's training step spends the device's time, in the same tables as benchmarks.profile
prints for ours: kernels summed by kind (convolution, matrix product, reduction, elementwise, ...) and by name.

    python -m benchmarks.torch_reference.profile --scheme baseline --backbone vgg19 --res 448 --batch 32
    python -m benchmarks.torch_reference.profile --scheme baseline --backbone vgg19 --batch 32 --mode compile
    python -m benchmarks.torch_reference.profile --cpu --scheme macnn --backbone vgg11_bn   # toy sizes, a smoke test

Run beside `python -m benchmarks.profile` with the same arguments, it says which kind of work one framework does
faster: both call cuDNN for the convolutions, so their convolution rows compare the algorithms each picked
(XLA's autotuning against cudnn.benchmark), and the rest compares what each does around them. The step is
run.py's (bf16 autocast, channels_last, cudnn.benchmark on CUDA); --steps steps after --warmup (for 'compile'
the warm-up includes the compilation) under torch.profiler. On CUDA the kernels' durations are summed; on a CPU,
each operator's own time (its children's left out).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch

from benchmarks.profile import profile_arguments, summarise
from benchmarks.torch_reference.run import MODES, _sync, setup

DEVICE_EVENTS = ("kernel", "gpu_memcpy", "gpu_memset")  # the categories of a CUDA trace's device-side events


def device_events(prof, device: str) -> list[dict]:
  """The profiled steps' device work as events {name, dur (us)} that benchmarks.profile.summarise reads."""
  if device == "cuda":
    with tempfile.TemporaryDirectory() as d:
      path = os.path.join(d, "trace.json")
      prof.export_chrome_trace(path)
      with open(path) as f:
        events = json.load(f)["traceEvents"]
    return [
      {"name": e["name"], "dur": e["dur"]} for e in events if e.get("ph") == "X" and e.get("cat") in DEVICE_EVENTS
    ]
  return [
    {"name": a.key, "dur": a.self_cpu_time_total / a.count}
    for a in prof.key_averages()
    if a.self_cpu_time_total > 0
    for _ in range(a.count)
  ]  # one event a call, as in a trace


def profile(
  scheme: str,
  backbone: str,
  res: int,
  batch: int,
  *,
  mode: str = "eager",
  steps: int = 5,
  warmup: int = 3,
  top: int = 25,
  device: str = "cuda",
  width: float = 1.0,
) -> tuple[str, dict]:
  step = setup(scheme, backbone, res, batch, mode=mode, device=device, width=width)
  for _ in range(warmup):
    step()
  _sync(device)
  activities = [torch.profiler.ProfilerActivity.CPU]
  if device == "cuda":
    activities.append(torch.profiler.ProfilerActivity.CUDA)
  start = time.perf_counter()
  with torch.profiler.profile(activities=activities) as prof:
    for _ in range(steps):
      step()
    _sync(device)
  wall_ms = (time.perf_counter() - start) * 1e3 / steps  # includes the profiler's own cost
  text, totals = summarise(device_events(prof, device), steps, top)
  name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
  head = (
    f"PyTorch {mode} {scheme} {backbone} {res} px, batch {batch}, {name}: {wall_ms:.2f} ms/step wall (under the "
    f"profiler), device busy {totals['busy_ms']:.2f} ms/step over {totals['operations']} "
    f"{'kernels' if device == 'cuda' else 'operators'}"
  )
  return head + "\n\n" + text, totals


def main(argv=None) -> int:
  p = argparse.ArgumentParser(
    prog="python -m benchmarks.torch_reference.profile",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  profile_arguments(p)
  p.add_argument("--mode", default="eager", choices=tuple(MODES))
  p.add_argument("--cpu", action="store_true", help="toy sizes on the CPU (width 1/16, 32 px, batch 2, float32)")
  args = p.parse_args(argv)
  device, width = ("cuda", 1.0) if torch.cuda.is_available() else ("cpu", 1.0)
  if args.cpu:
    device, width, args.res, args.batch, args.steps, args.warmup = "cpu", 1 / 16, 32, 2, 2, 1
  elif device == "cpu":
    p.error("no CUDA device: profiling the full size on a CPU says nothing about a GPU; pass --cpu for the toy run")
  text, _ = profile(
    args.scheme,
    args.backbone,
    args.res,
    args.batch,
    mode=args.mode,
    steps=args.steps,
    warmup=args.warmup,
    top=args.top,
    device=device,
    width=width,
  )
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
