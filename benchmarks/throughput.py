"""Training and evaluation throughput of a scheme: the engine's own jitted steps, synthetic batches on the device.

    python -m benchmarks.throughput --scheme racnn --backbone vgg19 --res 448 --batch 16
    python -m benchmarks.throughput --all                  # the standard table (issue #9): needs a GPU or TPU
    python -m benchmarks.throughput --all --cpu            # the same table at toy sizes: a smoke test (CI)

One training step = the scheme's forward with every one of its losses (weight 1), the backward pass and an SGD
momentum update of every parameter: the end-to-end step, the most work a phase can do. After --warmup steps, each
of --steps steps is timed to completion (block_until_ready) and the median taken. Reported: images/s, TFLOP/s
achieved (matrix products and convolutions counted from the step's program: benchmarks/flops.py), the share of the
bf16 matrix-product peak (--peak-tflops, default: the measured 798 on an H100, see ../shared/device/README.md),
peak device memory (where the device reports it), compile time, and the same for evaluation (forward only).
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import statistics
import sys
import time

# (scheme, backbone, res, batch): the standard table; batches are the papers' (ABN 256 over 4 GPUs -> 64 here).
STANDARD = [(s, b, 448, batch) for b in ("vgg19", "resnet50") for s, batch in
            (("baseline", 32), ("abn", 32), ("macnn", 16), ("racnn", 16))]
CPU = [(s, b, 64, 4) for b in ("vgg11_bn", "resnet18") for s in ("baseline", "abn", "macnn", "racnn")]
PEAKS = {"H100": 798.0, "H200": 798.0}  # bf16 matrix product TFLOP/s measured on the card (shared/device/README.md)


def config_for(scheme: str, backbone: str, res: int, batch: int, width: float, dtype: str):
  """The scheme's real-data preset ('cub': the papers' layer sizes) on synthetic batches of the given size."""
  c = importlib.import_module(f"configs.{scheme}").get_config("cub")
  c.model.backbone, c.model.width, c.model.dtype, c.model.require_pretrained = backbone, width, dtype, False
  if not backbone.startswith("vgg"):
    c.model.head = "gap"
  c.data.update(source="synthetic", name="synthetic", num_classes=200, image_size=res, resize_size=res,
                batch_size=batch)
  if scheme == "racnn":
    c.racnn.scale_input = max(8, res // 2)  # the released model: 448 -> crops seen at 224
  if scheme == "macnn":
    c.macnn.part_input = max(8, res // 2)
  if scheme == "abn" and backbone.startswith("vgg"):
    c.abn.branch = ""
  return c


def _timed(fn, state, batch, steps: int, warmup: int):
  import jax
  times = []
  for i in range(warmup + steps):
    start = time.perf_counter()
    out = fn(state, batch)
    jax.block_until_ready(out)
    if i >= warmup:
      times.append(time.perf_counter() - start)
    state = out[0] if isinstance(out, tuple) else state
  return statistics.median(times)


def measure(scheme_name: str, backbone: str, res: int, batch: int, *, steps: int = 50, warmup: int = 5,
            width: float = 1.0, dtype: str = "bfloat16", peak_tflops: float | None = None) -> dict:
  import jax
  import numpy as np
  import optax
  from flax import nnx

  from benchmarks import flops
  from fgattn_jax.models.registry import compute_dtype
  from fgattn_jax.schemes import get_scheme
  from fgattn_jax.training import mesh as mesh_lib
  from fgattn_jax.training import steps as steps_lib

  c = config_for(scheme_name, backbone, res, batch, width, dtype)
  scheme = get_scheme(scheme_name)
  model = scheme.build(c)
  model.train()
  mesh = mesh_lib.make_mesh(-1)
  wrt = scheme.groups(model)["all"]
  optimizer = nnx.Optimizer(model, optax.sgd(0.01, momentum=0.9), wrt=wrt)
  graphdef, state = nnx.split((model, optimizer))
  state = mesh_lib.replicate(state, mesh)
  rng = np.random.default_rng(0)
  host = {"image": rng.integers(0, 256, (batch, res, res, 3), dtype=np.uint8),
          "label": rng.integers(0, c.data.num_classes, batch).astype(np.int32), "mask": np.ones(batch, bool)}
  data = jax.device_put(host, mesh_lib.batch_sharding(mesh))
  losses = {k: 1.0 for k in scheme.loss_names if k not in ("group_init", "apn_init")}
  cdtype = compute_dtype(dtype)
  train = steps_lib.make_train_step(scheme, graphdef, wrt, losses, lambda step: 0.01, cdtype, mesh)
  model_graphdef, model_state = nnx.graphdef(model), nnx.state(model)
  evaluate = steps_lib.make_eval_step(scheme, model_graphdef, cdtype, mesh)

  start = time.perf_counter()
  train_compiled = train.lower(state, data).compile()
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  eval_compiled = evaluate.lower(model_state, data).compile()
  eval_compile_s = time.perf_counter() - start
  train_flops = flops.count(train, state, data)
  eval_flops = flops.count(evaluate, model_state, data)

  # Evaluation first: the training step donates the state's buffers, which the model's state shares.
  eval_s = _timed(lambda s, d: (s, eval_compiled(s, d)), model_state, data, steps, warmup)
  train_s = _timed(train_compiled, state, data, steps, warmup)
  device = jax.devices()[0]
  stats = (device.memory_stats() if hasattr(device, "memory_stats") else None) or {}  # None on the CPU
  peak = peak_tflops if peak_tflops is not None else next(
      (v for k, v in PEAKS.items() if k in device.device_kind), None)
  result = {"scheme": scheme_name, "backbone": backbone, "res": res, "batch": batch, "width": width, "dtype": dtype,
            "device": device.device_kind, "train_ms": 1e3 * train_s, "train_img_s": batch / train_s,
            "train_tflops": train_flops / train_s / 1e12, "train_gflop_per_image": train_flops / batch / 1e9,
            "compile_s": compile_s, "eval_ms": 1e3 * eval_s, "eval_img_s": batch / eval_s,
            "eval_tflops": eval_flops / eval_s / 1e12, "eval_compile_s": eval_compile_s,
            "peak_mem_gib": stats["peak_bytes_in_use"] / 2 ** 30 if "peak_bytes_in_use" in stats else None}
  result["peak_fraction"] = result["train_tflops"] / peak if peak else None
  return result


COLUMNS = [("scheme", "{}"), ("backbone", "{}"), ("res", "{}"), ("batch", "{}"), ("train_img_s", "{:.1f}"),
           ("train_ms", "{:.1f}"), ("train_tflops", "{:.2f}"), ("peak_fraction", "{:.1%}"),
           ("train_gflop_per_image", "{:.1f}"), ("peak_mem_gib", "{:.1f}"), ("compile_s", "{:.1f}"),
           ("eval_img_s", "{:.1f}")]


def table(rows) -> str:
  """Results as a Markdown table ('-' where a value is not known, e.g. memory on the CPU)."""
  head = "| " + " | ".join(name for name, _ in COLUMNS) + " |"
  lines = [head, "|" + "---|" * len(COLUMNS)]
  for r in rows:
    lines.append("| " + " | ".join("-" if r.get(k) is None else f.format(r[k]) for k, f in COLUMNS) + " |")
  return "\n".join(lines)


def run_arguments(p: argparse.ArgumentParser) -> None:
  """The flags that choose what to measure, shared with benchmarks.compare."""
  p.add_argument("--scheme", choices=("baseline", "abn", "macnn", "racnn"))
  p.add_argument("--backbone", default="vgg19")
  p.add_argument("--res", type=int, default=448)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--all", action="store_true", help="the standard table (with --cpu: its toy version)")
  p.add_argument("--cpu", action="store_true",
                 help="toy sizes on the CPU (width 1/16, at most 64 px and batch 4, float32, 3 steps): a smoke test")
  p.add_argument("--steps", type=int, default=50)
  p.add_argument("--warmup", type=int, default=5)
  p.add_argument("--json", help="append the results (one object per line) to this file")


def selected_runs(p: argparse.ArgumentParser, args) -> list[tuple[str, str, int, int]]:
  """(scheme, backbone, res, batch) to measure; with --cpu, JAX on the CPU and the step counts capped."""
  if not args.all and not args.scheme:
    p.error("name a --scheme (and --backbone, --res, --batch), or ask for --all")
  runs = (CPU if args.cpu else STANDARD) if args.all else [(args.scheme, args.backbone, args.res, args.batch)]
  if args.cpu:
    import os
    os.environ["JAX_PLATFORMS"] = "cpu"
    args.steps, args.warmup = min(args.steps, 3), min(args.warmup, 1)
    runs = [(s, b, min(r, 64), min(n, 4)) for s, b, r, n in runs]
  return runs


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  run_arguments(p)
  p.add_argument("--width", type=float, default=1.0)
  p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
  p.add_argument("--peak-tflops", type=float, help="the device's bf16 matrix-product peak (default: known cards)")
  args = p.parse_args(argv)
  runs = selected_runs(p, args)
  if args.cpu:
    args.width, args.dtype = 1 / 16, "float32"

  import jax
  print(f"# {platform.node()}: {jax.devices()[0].device_kind} x{jax.device_count()}, jax {jax.__version__}, "
        f"python {platform.python_version()}; {args.dtype}, median of {args.steps} steps after {args.warmup}",
        file=sys.stderr)
  rows = []
  for scheme, backbone, res, batch in runs:
    r = measure(scheme, backbone, res, batch, steps=args.steps, warmup=args.warmup, width=args.width,
                dtype=args.dtype, peak_tflops=args.peak_tflops)
    rows.append(r)
    print(json.dumps(r), file=sys.stderr)
    if args.json:
      with open(args.json, "a") as f:
        f.write(json.dumps(r) + "\n")
  print(table(rows))
  return 0


if __name__ == "__main__":
  sys.exit(main())
