"""Where a training step's device time goes: the engine's jitted step traced with JAX's profiler, its kernels
summed by XLA operation and by kind.

    python -m benchmarks.profile --scheme baseline --backbone vgg19 --res 448 --batch 32
    python -m benchmarks.profile --scheme racnn --backbone resnet50 --batch 16 --hlo racnn.hlo --trace /tmp/trace
    python -m benchmarks.profile --cpu --scheme macnn --backbone vgg11_bn     # toy sizes on the CPU (a smoke test)

After --warmup steps, --steps steps run under jax.profiler.trace (with a Perfetto JSON trace, read here; no
TensorBoard needed). Printed: the wall time per step, the device's busy time per step (kernels summed; they can
overlap on several streams), the time per kind of kernel (convolution, matrix product, scatter, reduction,
elementwise fusion, copy) and the --top operations. --hlo writes the optimised program's text, to see what XLA
made of the step (which convolutions went to cuDNN, what fused with what).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

from benchmarks import throughput

# The first pattern that matches an operation's name (kernel name and XLA op name together) gives its kind. XLA's
# kernels are named after their fusions; PyTorch's (benchmarks.torch_reference.profile) after ATen's kernels, cuDNN's
# or Inductor's (triton_poi: pointwise, triton_red/per: reductions), some of which have kinds of their own.
KINDS = [
  ("scatter (select-and-scatter, scatter)", r"scatter"),
  ("batch norm (PyTorch's kernels)", r"batch_norm|::bn_"),
  ("convolution", r"conv|cudnn|fprop|dgrad|wgrad"),
  ("matrix product", r"gemm|cublas|dot|matmul|aten::(add|b)?mm"),
  ("pooling (PyTorch's kernels)", r"pool"),
  ("reduction", r"reduce|reduction|triton_red|triton_per"),
  ("elementwise fusion", r"fusion|loop_|input_|elementwise|triton_poi"),
  ("copy, transpose", r"copy|transpose|memcpy|memset|nchwtonhwc|nhwctonchw"),
]


def kind(name: str) -> str:
  low = name.lower()
  return next((k for k, pattern in KINDS if re.search(pattern, low)), "other")


def device_events(trace: dict) -> list[dict]:
  """The trace's device-side operations: the events of the accelerator's processes ('/device:GPU:0', ...), or,
  on a CPU, those of XLA's own executor threads (no Python frames)."""
  events = trace["traceEvents"]
  processes = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
  threads = {
    (e["pid"], e["tid"]): e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "thread_name"
  }
  devices = {pid for pid, name in processes.items() if name.startswith("/device:")}
  complete = [e for e in events if e.get("ph") == "X" and "dur" in e]
  if devices:
    return [e for e in complete if e["pid"] in devices]
  # The CPU runtime's executor events enclose the operations they run: left out, not to count their time twice.
  return [
    e
    for e in complete
    if threads.get((e["pid"], e.get("tid")), "").startswith("tf_XLA")
    and not e["name"].startswith(("$", "ThunkExecutor"))
  ]


def summarise(events: list[dict], steps: int, top: int) -> tuple[str, dict]:
  """Tables of device time per step by kind and by operation (the XLA op where the trace names it, else the
  kernel), and the totals."""
  by_op, names, counts = collections.Counter(), {}, collections.Counter()
  for e in events:
    args = e.get("args", {})
    op = args.get("hlo_op") or args.get("long_name") or e["name"]
    by_op[op] += e["dur"] / 1e3 / steps  # microseconds -> ms per step
    names.setdefault(op, e["name"])
    counts[op] += 1
  busy = sum(by_op.values())
  by_kind = collections.Counter()
  for op, ms in by_op.items():
    by_kind[kind(f"{names[op]} {op}")] += ms
  lines = ["| kind | ms/step | share |", "|---|---|---|"]
  lines += [f"| {k} | {ms:.2f} | {ms / busy:.1%} |" for k, ms in by_kind.most_common()]
  lines += ["", "| operation | kernel | launches/step | ms/step | share |", "|---|---|---|---|---|"]
  lines += [
    f"| {op[:60]} | {names[op][:60]} | {counts[op] / steps:g} | {ms:.3f} | {ms / busy:.1%} |"
    for op, ms in by_op.most_common(top)
  ]
  return "\n".join(lines), {"busy_ms": busy, "by_kind": dict(by_kind), "operations": len(by_op)}


def profile(
  scheme: str,
  backbone: str,
  res: int,
  batch: int,
  *,
  steps: int = 5,
  warmup: int = 3,
  top: int = 25,
  width: float = 1.0,
  dtype: str = "bfloat16",
  hlo: str | None = None,
  trace_dir: str | None = None,
):
  import jax

  c = throughput.config_for(scheme, backbone, res, batch, width, dtype)
  (train, (state, data, structure)), _ = throughput.setup_steps(scheme, c)
  compiled = train.lower(state, data, structure).compile()
  if hlo:
    with open(hlo, "w") as f:
      f.write(compiled.as_text())
  for _ in range(warmup):
    state = compiled(state, data)[0]
  jax.block_until_ready(state)
  trace_dir = trace_dir or tempfile.mkdtemp(prefix="fgattn_profile_")
  start = time.perf_counter()
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    for _ in range(steps):
      state = compiled(state, data)[0]
    jax.block_until_ready(state)
  wall_ms = (time.perf_counter() - start) * 1e3 / steps  # includes the tracer's own cost
  path = max(glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True), key=os.path.getmtime)
  with gzip.open(path) as f:
    events = device_events(json.load(f))
  text, totals = summarise(events, steps, top)
  head = (
    f"{scheme} {backbone} {res} px, batch {batch}, {jax.devices()[0].device_kind}: {wall_ms:.2f} ms/step wall "
    f"(under the tracer), device busy {totals['busy_ms']:.2f} ms/step over {totals['operations']} operations; "
    f"trace: {path}"
  )
  return head + "\n\n" + text, totals


def profile_arguments(p: argparse.ArgumentParser) -> None:
  """The step to profile and how long: this module's flags, and benchmarks.torch_reference.profile's."""
  p.add_argument("--scheme", required=True, choices=("baseline", "abn", "macnn", "racnn"))
  p.add_argument("--backbone", default="vgg19")
  p.add_argument("--res", type=int, default=448)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--top", type=int, default=25, help="operations listed")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(
    prog="python -m benchmarks.profile", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  profile_arguments(p)
  throughput.add_formulation_args(p)
  p.add_argument("--hlo", help="write the optimised program's text here")
  p.add_argument("--trace", help="keep the trace in this folder (default: a temporary one)")
  p.add_argument("--cpu", action="store_true", help="toy sizes on the CPU (width 1/16, 32 px, batch 2, float32)")
  args = p.parse_args(argv)
  width, dtype = 1.0, "bfloat16"
  if args.cpu:
    os.environ["JAX_PLATFORMS"] = "cpu"
    width, dtype, args.res, args.batch, args.steps, args.warmup = 1 / 16, "float32", 32, 2, 2, 1
  throughput.use_formulations(args)
  text, _ = profile(
    args.scheme,
    args.backbone,
    args.res,
    args.batch,
    steps=args.steps,
    warmup=args.warmup,
    top=args.top,
    width=width,
    dtype=dtype,
    hlo=args.hlo,
    trace_dir=args.trace,
  )
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
