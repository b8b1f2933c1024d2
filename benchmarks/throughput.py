"""Training and evaluation throughput of a scheme: the engine's own jitted steps, synthetic batches on the device.

    python -m benchmarks.throughput --scheme racnn --backbone vgg19 --res 448 --batch 16
    python -m benchmarks.throughput --all                  # the standard table: needs a GPU or TPU
    python -m benchmarks.throughput --all --cpu            # the same table at toy sizes: a smoke test (CI)

One training step = the scheme's forward with every one of its losses (weight 1), the backward pass and an SGD
momentum update of every parameter: the end-to-end step, the most work a phase can do (--phase NAME: the step of
one phase of the scheme's schedule instead, which runs only what its losses need). After --warmup steps, each
of --steps steps is timed to completion (block_until_ready) and the median taken. Reported: images/s, TFLOP/s
achieved (matrix products and convolutions counted from the step's program: benchmarks/flops.py), the share of the
bf16 matrix-product peak (--peak-tflops, default: 798, measured on an H100 by a bf16 matrix-product loop, which the
H200 shares; benchmarks/RESULTS.md),
the device memory the compiled step needs (arguments, outputs, temporaries), compile time, and the same for
evaluation (forward only).
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import statistics
import sys
import time

# (scheme, backbone, res, batch): the standard table, cheapest programs first (a run cut short by a deadline keeps
# the most rows); the papers' per-GPU batch sizes.
STANDARD = [
  (s, b, 448, batch)
  for s, batch in (("baseline", 32), ("abn", 32), ("racnn", 16), ("macnn", 16))
  for b in ("vgg19", "resnet50")
]
CPU = [(s, b, 64, 4) for b in ("vgg11_bn", "resnet18") for s in ("baseline", "abn", "macnn", "racnn")]
# The largest batch (a multiple of 8) whose training step needs at most 70% of the card's memory (under JAX's 75%
# pool), per row of the standard table: `python -m benchmarks.hlo_report --largest-batch --all --target CARD`
# (compiled for the card on a CPU; benchmarks/RESULTS.md).
LARGEST_BATCH = {
  "h100": {
    ("baseline", "vgg19"): 424,
    ("baseline", "resnet50"): 360,
    ("abn", "vgg19"): 416,
    ("abn", "resnet50"): 288,
    ("racnn", "vgg19"): 264,
    ("racnn", "resnet50"): 224,
    ("macnn", "vgg19"): 184,
    ("macnn", "resnet50"): 152,
  },
  "h200": {
    ("baseline", "vgg19"): 744,
    ("baseline", "resnet50"): 640,
    ("abn", "vgg19"): 744,
    ("abn", "resnet50"): 512,
    ("racnn", "vgg19"): 472,
    ("racnn", "resnet50"): 400,
    ("macnn", "vgg19"): 328,
    ("macnn", "resnet50"): 280,
  },
}
# bf16 matrix-product TFLOP/s measured on the card (a matrix-product loop on an H100; the H200 has the same chip)
PEAKS = {"H100": 798.0, "H200": 798.0}


def config_for(scheme: str, backbone: str, res: int, batch: int, width: float, dtype: str):
  """The scheme's real-data preset ('cub': the papers' layer sizes) on synthetic batches of the given size."""
  c = importlib.import_module(f"configs.{scheme}").get_config("cub")
  c.model.backbone, c.model.width, c.model.dtype, c.model.require_pretrained = backbone, width, dtype, False
  if not backbone.startswith("vgg"):
    c.model.head = "gap"
  c.data.update(
    source="synthetic", name="synthetic", num_classes=200, image_size=res, resize_size=res, batch_size=batch
  )
  if scheme == "racnn":
    c.racnn.scale_input = max(8, res // 2)  # the released model: 448 -> crops seen at 224
  if scheme == "macnn":
    c.macnn.part_input = max(8, res // 2)
  if scheme == "abn" and backbone.startswith("vgg"):
    c.abn.branch = ""
  return c


def backbone_passes(scheme: str, c) -> list[int]:
  """The input side of every backbone pass one image of the scheme makes: what its attention machinery is measured
  against (the issue's targets: MA-CNN's and ABN's step against their backbones', RA-CNN's against the sum of its
  scales'). MA-CNN: the object stream at the input, then each part stream and the object crop at part_input;
  RA-CNN: scale 1 at the input (or scale1_input), the zoomed scales at scale_input."""
  res = c.data.image_size
  if scheme == "macnn":
    m = c.macnn
    return [res] + [m.part_input] * (m.num_parts * bool(m.part_streams) + bool(m.object_crop))
  if scheme == "racnn":
    r = c.racnn
    return [r.scale1_input or res] + [r.scale_input] * (r.num_scales - 1)
  return [res]


def _over_passes(sides: list[int], cost) -> float:
  """The sum of cost(side) over the backbone passes, each distinct side computed once."""
  known = {s: cost(s) for s in set(sides)}
  return sum(known[s] for s in sides)


def phase_step(scheme, c, phase: str | None) -> tuple[dict, str]:
  """(loss weights, parameter group) of the step to time: the end-to-end step (phase None: every loss at weight 1
  but the pretraining regressions, every parameter), or the step of one phase of config c's schedule."""
  if phase is None:
    return {k: 1.0 for k in scheme.loss_names if k not in ("group_init", "apn_init")}, "all"
  if phase not in c.phases:
    raise ValueError(f"{c.scheme} has no phase {phase!r}; its phases: {', '.join(c.phase_order)}")
  return dict(c.phases[phase].losses), c.phases[phase].trains


def setup_steps(scheme_name: str, c, *, abstract: bool = False, mesh=None, phase: str | None = None):
  """The engine's jitted train and eval steps for config c, each with its arguments (the state's leaves, a synthetic
  batch on the device, the state's structure), or (abstract=True) only their shapes, enough to count FLOPs of
  full-size models in seconds: ((train, args), (evaluate, args)). mesh: the devices to compile for (default: every
  device of this process; benchmarks.hlo_report passes a compile-only GPU). phase: the training step of that phase
  of c's schedule (phase_step) instead of the end-to-end one."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from flax import nnx

  from fgattn_jax.models.registry import compute_dtype
  from fgattn_jax.schemes import get_scheme
  from fgattn_jax.training import mesh as mesh_lib
  from fgattn_jax.training import steps as steps_lib

  scheme = get_scheme(c.scheme)
  losses, trains = phase_step(scheme, c, phase)

  def build():
    model = scheme.build(c)
    model.train()
    wrt = scheme.groups(model)[trains]
    return model, nnx.Optimizer(model, optax.sgd(0.01, momentum=0.9), wrt=wrt)

  model, optimizer = nnx.eval_shape(build) if abstract else build()
  wrt = scheme.groups(model)[trains]
  mesh = mesh if mesh is not None else mesh_lib.make_mesh(-1)
  graphdef, state = nnx.split((model, optimizer))
  model_graphdef, model_state = nnx.graphdef(model), nnx.state(model)
  b, res = c.data.batch_size, c.data.image_size
  if abstract:
    data = {
      "image": jax.ShapeDtypeStruct((b, res, res, 3), jnp.uint8),
      "label": jax.ShapeDtypeStruct((b,), jnp.int32),
      "mask": jax.ShapeDtypeStruct((b,), jnp.bool_),
    }
  else:
    state = mesh_lib.replicate(state, mesh)
    rng = np.random.default_rng(0)
    host = {
      "image": rng.integers(0, 256, (b, res, res, 3), dtype=np.uint8),
      "label": rng.integers(0, c.data.num_classes, b).astype(np.int32),
      "mask": np.ones(b, bool),
    }
    data = jax.device_put(host, mesh_lib.batch_sharding(mesh))
  cdtype = compute_dtype(c.model.dtype)
  train = steps_lib.make_train_step(scheme, graphdef, wrt, losses, lambda step: 0.01, cdtype, mesh)
  evaluate = steps_lib.make_eval_step(scheme, model_graphdef, cdtype, mesh)
  leaves, structure = jax.tree.flatten(state)
  model_leaves, model_structure = jax.tree.flatten(model_state)
  return (train, (leaves, data, structure)), (evaluate, (model_leaves, data, model_structure))


def flop_profile(
  scheme_name: str,
  backbone: str,
  res: int,
  batch: int,
  *,
  width: float = 1.0,
  peak_tflops: float | None = PEAKS["H100"],
  phase: str | None = None,
) -> dict:
  """FLOPs per image of a training step at full size, counted from the program without running it (any machine):
  the scheme's, its backbone passes' (plain backbone steps at the same inputs, summed), their ratio (the
  arithmetic the attention machinery adds), and the images/s the step could reach at peak_tflops."""
  from benchmarks import flops

  def per_image(scheme, c, phase=None):  # -> (FLOPs per image, seconds spent tracing the step: part of compile_s)
    (train, args), _ = setup_steps(scheme, c, abstract=True, phase=phase)
    start = time.perf_counter()
    count = flops.count(train, *args, static_argnums=(2,))
    return count / batch, time.perf_counter() - start

  c = config_for(scheme_name, backbone, res, batch, width, "bfloat16")
  step, trace_s = per_image(scheme_name, c, phase)
  sides = backbone_passes(scheme_name, c)
  passes = _over_passes(
    sides, lambda s: per_image("baseline", config_for("baseline", backbone, s, batch, width, "bfloat16"))[0]
  )
  result = {
    "scheme": scheme_name,
    "phase": phase,
    "backbone": backbone,
    "res": res,
    "batch": batch,
    "width": width,
    "passes": sides,
    "train_gflop_per_image": step / 1e9,
    "passes_gflop_per_image": passes / 1e9,
    "flop_overhead": step / passes,
    "trace_s": trace_s,
    "overhead_target": OVERHEAD_TARGETS[scheme_name] if phase is None else None,
  }  # as in measure()
  result["ceiling_img_s"] = peak_tflops * 1e12 / step if peak_tflops else None
  return result


def program_memory(compiled) -> int:
  """Bytes of device memory a compiled program holds at once: its arguments, its outputs that do not reuse an
  argument's buffer (donation), and its temporaries. Per program, unlike the device's peak counter, which keeps the
  largest of everything a process ran (the first GPU table showed the first row's peak on every row)."""
  m = compiled.memory_analysis()
  return m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes


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


def dispatch(
  scheme_name: str,
  backbone: str,
  res: int,
  batch: int,
  *,
  steps: int = 30,
  warmup: int = 3,
  width: float = 1.0,
  dtype: str = "bfloat16",
  phase: str | None = None,
) -> dict:
  """The host's share of a training step, through the engine's own jitted call (not the AOT-compiled one measure
  uses): the median time until the call returns (flattening the state's leaves, checking and launching) and until
  the step is done. On an accelerator the first is what the host needs per step, hidden behind the device's work
  only while it is the shorter; on a CPU the call may run part of the step itself."""
  import jax

  c = config_for(scheme_name, backbone, res, batch, width, dtype)
  (train, (leaves, data, structure)), _ = setup_steps(scheme_name, c, phase=phase)
  for _ in range(warmup):
    leaves = train(leaves, data, structure)[0]
  jax.block_until_ready(leaves)
  returned, done = [], []
  for _ in range(steps):
    start = time.perf_counter()
    out = train(leaves, data, structure)
    returned.append(time.perf_counter() - start)
    jax.block_until_ready(out)
    done.append(time.perf_counter() - start)
    leaves = out[0]
  return {
    "scheme": scheme_name,
    "phase": phase,
    "backbone": backbone,
    "res": res,
    "batch": batch,
    "state_arrays": len(leaves),
    "call_ms": 1e3 * statistics.median(returned),
    "step_ms": 1e3 * statistics.median(done),
  }


def measure(
  scheme_name: str,
  backbone: str,
  res: int,
  batch: int,
  *,
  steps: int = 50,
  warmup: int = 5,
  width: float = 1.0,
  dtype: str = "bfloat16",
  peak_tflops: float | None = None,
  overhead: bool = False,
  evaluation: bool = True,
  phase: str | None = None,
) -> dict:
  """Times the scheme's training and evaluation steps (evaluation=False: training only). overhead=True also times a
  plain backbone step at each of the scheme's backbone inputs (backbone_passes) and reports the scheme's step over
  their sum. phase: the training step of that phase of the scheme's schedule instead of the end-to-end one."""
  import jax

  from benchmarks import flops
  from fgattn_jax.models import macnn as macnn_model
  from fgattn_jax.ops import crops, pooling
  from fgattn_jax.training import steps as steps_lib

  c = config_for(scheme_name, backbone, res, batch, width, dtype)
  (train, train_args), (evaluate, eval_args) = setup_steps(scheme_name, c, phase=phase)
  start = time.perf_counter()
  lowered = train.lower(*train_args)  # tracing the step (Python) and lowering it: the host's part of compiling
  trace_s = time.perf_counter() - start
  train_compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  train_flops = flops.count(train, *train_args, static_argnums=(2,))
  if evaluation:
    start = time.perf_counter()
    eval_compiled = evaluate.lower(*eval_args).compile()
    eval_compile_s = time.perf_counter() - start
    eval_flops = flops.count(evaluate, *eval_args, static_argnums=(2,))
    # Evaluation first: the training step donates the state's buffers, which the model's state shares.
    eval_s = _timed(lambda s, d: (s, eval_compiled(s, d)), *eval_args[:2], steps, warmup)
  train_s = _timed(train_compiled, *train_args[:2], steps, warmup)
  device = jax.devices()[0]
  peak = (
    peak_tflops if peak_tflops is not None else next((v for k, v in PEAKS.items() if k in device.device_kind), None)
  )
  result = {
    "scheme": scheme_name,
    "phase": phase,
    "backbone": backbone,
    "res": res,
    "batch": batch,
    "width": width,
    "dtype": dtype,
    "device": device.device_kind,
    "train_ms": 1e3 * train_s,
    "train_img_s": batch / train_s,
    "train_tflops": train_flops / train_s / 1e12,
    "train_gflop_per_image": train_flops / batch / 1e9,
    "trace_s": trace_s,
    "compile_s": compile_s,
    "steps": steps,
    "warmup": warmup,
    "train_mem_gib": program_memory(train_compiled) / 2**30,
    "pool": pooling.formulation(),
    "crop": crops.formulation(),
    "streams": macnn_model.STREAMS,
    "graphs": next((k for k, v in GRAPHS.items() if v == steps_lib.COMPILER_OPTIONS), "other"),
  }
  result["peak_fraction"] = result["train_tflops"] / peak if peak else None
  if evaluation:
    result.update(
      eval_ms=1e3 * eval_s,
      eval_img_s=batch / eval_s,
      eval_tflops=eval_flops / eval_s / 1e12,
      eval_compile_s=eval_compile_s,
    )
  # The targets are the end-to-end step's, shown beside a measured overhead only; a phase's step is weighed against
  # nothing.
  result["overhead"] = None
  result["overhead_target"] = OVERHEAD_TARGETS[scheme_name] if overhead and phase is None else None
  if overhead and scheme_name == "baseline":
    result["passes_ms"], result["overhead"] = result["train_ms"], 1.0
  elif overhead:
    result["passes_ms"] = _over_passes(
      backbone_passes(scheme_name, c),
      lambda s: measure(
        "baseline",
        backbone,
        s,
        batch,
        steps=steps,
        warmup=warmup,
        width=width,
        dtype=dtype,
        peak_tflops=peak,
        evaluation=False,
      )["train_ms"],
    )  # the passes' training steps only
    result["overhead"] = result["train_ms"] / result["passes_ms"]
  return result


COLUMNS = [
  ("scheme", "{}"),
  ("backbone", "{}"),
  ("res", "{}"),
  ("batch", "{}"),
  ("pool", "{}"),
  ("crop", "{}"),
  ("streams", "{}"),
  ("graphs", "{}"),
  ("train_img_s", "{:.1f}"),
  ("train_ms", "{:.1f}"),
  ("train_tflops", "{:.2f}"),
  ("peak_fraction", "{:.1%}"),
  ("train_gflop_per_image", "{:.1f}"),
  ("train_mem_gib", "{:.1f}"),
  ("trace_s", "{:.1f}"),
  ("compile_s", "{:.1f}"),
  ("eval_img_s", "{:.1f}"),
  ("overhead", "{:.2f}"),
  ("overhead_target", "{:.2f}"),
]
FLOP_COLUMNS = [
  ("scheme", "{}"),
  ("backbone", "{}"),
  ("res", "{}"),
  ("passes", "{}"),
  ("train_gflop_per_image", "{:.1f}"),
  ("passes_gflop_per_image", "{:.1f}"),
  ("flop_overhead", "{:.3f}"),
  ("overhead_target", "{:.2f}"),
  ("ceiling_img_s", "{:.0f}"),
  ("trace_s", "{:.1f}"),
]
DISPATCH_COLUMNS = [
  ("scheme", "{}"),
  ("backbone", "{}"),
  ("res", "{}"),
  ("batch", "{}"),
  ("state_arrays", "{}"),
  ("call_ms", "{:.2f}"),
  ("step_ms", "{:.2f}"),
]
# The issue's ceilings on a scheme's step over its backbone passes' (backbone_passes).
OVERHEAD_TARGETS = {"baseline": 1.0, "abn": 1.30, "macnn": 1.15, "racnn": 1.10}


# The CUDA-graph choices of --graphs, as compiler options of the engine's steps (training.steps.COMPILER_OPTIONS).
# XLA captures no convolution by default ("not all convolutions can be captured": openxla/xla#34572), so each of
# ResNet-50's 158 convolutions per training step (MA-CNN's six passes: 948) is launched alone and splits the rest
# into short graphs: 1982 launches for MA-CNN/ResNet-50's 5480 kernels at 448 (benchmarks.hlo_report counts them).
# 'whole' is XLA's default command types (jaxlib 0.10.2's, as a compile with
# XLA_FLAGS=--xla_gpu_enable_command_buffer=+CONVOLUTION lists them) plus CONVOLUTION: one launch per step.
GRAPHS = {
  "fusions": {},
  "whole": {
    "xla_gpu_enable_command_buffer": ",".join(
      ("FUSION", "CUBLAS", "CUBLASLT", "CUSTOM_CALL", "CUDNN", "CONDITIONAL", "DYNAMIC_SLICE_FUSION", "CONVOLUTION")
    )
  },
}


def add_formulation_args(p: argparse.ArgumentParser):
  """The switches between equivalent formulations of an op, to time them on one machine (also benchmarks.profile)."""
  p.add_argument(
    "--pool",
    default="auto",
    choices=("auto", "slices", "reduce_window"),
    help="max pooling with ops.pooling.max_pool's own gradient (slices) or as XLA's reduce_window (its "
    "gradient a select-and-scatter); auto (the default, as in training): reduce_window on a TPU, "
    "slices elsewhere (ops.pooling.formulation)",
  )
  p.add_argument(
    "--crop",
    default="auto",
    choices=("auto", "gather", "matmul"),
    help="the MA-CNN and RA-CNN crops as gathers (their image gradient a scatter-add) or as two "
    "interpolation-matrix products per box; auto (the default): matmul on a TPU, gather elsewhere "
    "(ops.crops.formulation)",
  )
  p.add_argument(
    "--streams",
    default="loop",
    choices=("loop", "vmap"),
    help="MA-CNN's crop streams (part streams and object crop) one backbone after another (loop, the "
    "default), or as one network over their stacked weights, each convolution a grouped one "
    "(models.macnn.STREAMS)",
  )
  p.add_argument(
    "--graphs",
    default="fusions",
    choices=tuple(GRAPHS),
    help="on a GPU, what XLA records into CUDA graphs (command buffers), launched as one: runs of "
    "fusions and library calls between convolutions (fusions: XLA's default; each cuDNN "
    "convolution is its own launch), or the convolutions too (whole: the step is one graph)",
  )


def use_formulations(args):
  """Sets the module switches the formulation flags name; read when the steps are made and traced, so before any is."""
  from fgattn_jax.models import macnn
  from fgattn_jax.ops import crops, pooling
  from fgattn_jax.training import steps

  pooling.POOLING, crops.RESAMPLE, macnn.STREAMS = args.pool, args.crop, args.streams
  steps.COMPILER_OPTIONS = dict(GRAPHS[args.graphs])


def read_json_lines(path: str) -> list[dict]:
  """The results a --json file holds, one object per line (what benchmarks.compare --collect joins)."""
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def collected(p: argparse.ArgumentParser, paths) -> list[dict]:
  """The rows of earlier --json files; a missing or unreadable one is an argparse error naming it."""
  try:
    return [r for path in paths for r in read_json_lines(path)]
  except (OSError, ValueError) as e:
    p.error(f"--collect: {e}: give the files that --json wrote (one JSON object per line)")


def _cell(fmt: str, value) -> str:
  """A value in its column's format, or with two significant digits where that format would print it as 0 (the
  toy sizes of --cpu: 0.006 GFLOP per image)."""
  text = fmt.format(value)
  if isinstance(value, float) and value and not any(c in "123456789" for c in text):
    return f"{100 * value:.2g}%" if text.endswith("%") else f"{value:.2g}"
  return text


def table(rows, columns=COLUMNS) -> str:
  """Results as a Markdown table ('-' where a value is not known, e.g. memory on the CPU); a phase column after the
  scheme when a row times one phase (--phase)."""
  if any(r.get("phase") for r in rows):
    columns = [*columns[:1], ("phase", "{}"), *columns[1:]]
  head = "| " + " | ".join(name for name, _ in columns) + " |"
  lines = [head, "|" + "---|" * len(columns)]
  for r in rows:
    lines.append("| " + " | ".join("-" if r.get(k) is None else _cell(f, r[k]) for k, f in columns) + " |")
  lines += [
    f"failed: {r['scheme']} {r['backbone']} {r['res']} batch {r['batch']}: {r['error']}" for r in rows if "error" in r
  ]
  return "\n".join(lines)


def run_arguments(p: argparse.ArgumentParser) -> None:
  """The flags that choose what to measure, shared with benchmarks.compare."""
  p.add_argument("--scheme", choices=("baseline", "abn", "macnn", "racnn"))
  p.add_argument("--backbone", default="vgg19", help="a registry backbone (default vgg19)")
  p.add_argument("--res", type=int, default=448, help="input side in pixels (default 448)")
  p.add_argument("--batch", type=int, default=16, help="global batch (default 16)")
  p.add_argument("--all", action="store_true", help="the standard table (with --cpu: its toy version)")
  p.add_argument(
    "--largest",
    choices=sorted(LARGEST_BATCH),
    help="with --all: the standard table at the largest batch that fits on this card (LARGEST_BATCH) "
    "instead of the papers' batches",
  )
  p.add_argument(
    "--cpu",
    action="store_true",
    help="toy sizes on the CPU (width 1/16, at most 64 px and batch 4, float32, 3 steps unless --steps): a smoke test",
  )
  p.add_argument(
    "--steps",
    type=int,
    help="timed steps; the median is reported (default 50; --cpu: 3, too few to "
    "rank the toy rows: the smoke test checks the code runs, not its speed)",
  )
  p.add_argument("--warmup", type=int, default=5, help="untimed steps after compiling (default 5)")
  p.add_argument("--json", help="append the results (one object per line) to this file")


def pass_runs(runs) -> list[tuple[str, str, int, int]]:
  """The plain backbone steps (baseline, backbone, side, batch) that the schemes in runs are weighed against
  (backbone_passes), each once: with --passes, measured on their own so that a deadline-bound GPU run can time
  the schemes first and the passes after (benchmarks.compare --collect computes the ratios)."""
  needed = []
  for scheme, backbone, res, batch in runs:
    c = config_for(scheme, backbone, res, batch, 1.0, "bfloat16")
    for side in backbone_passes(scheme, c):
      if ("baseline", backbone, side, batch) not in needed:
        needed.append(("baseline", backbone, side, batch))
  return needed


def standard(largest: str | None = None) -> list[tuple[str, str, int, int]]:
  """The standard table's rows, at the papers' batches or (largest: a card of LARGEST_BATCH) the largest that fit."""
  return STANDARD if largest is None else [(s, b, r, LARGEST_BATCH[largest][s, b]) for s, b, r, _ in STANDARD]


def selected_runs(p: argparse.ArgumentParser, args) -> list[tuple[str, str, int, int]]:
  """(scheme, backbone, res, batch) to measure; with --cpu, JAX on the CPU and the step counts capped."""
  if not args.all and not args.scheme:
    p.error("name a --scheme (and --backbone, --res, --batch), or ask for --all")
  if args.steps is None:  # 50 timed steps; a smoke test's 3 with --cpu, where an explicit --steps is still honoured
    args.steps = 3 if args.cpu else 50
  for flag in ("res", "batch", "steps"):
    if getattr(args, flag) < 1:
      p.error(f"--{flag} must be at least 1, got {getattr(args, flag)}")
  if args.warmup < 0:
    p.error(f"--warmup must be 0 or more, got {args.warmup}")
  from fgattn_jax.models import registry

  if args.scheme and args.backbone not in registry.BACKBONES:
    p.error(f"--backbone {args.backbone!r}: not a backbone; they are {', '.join(sorted(registry.BACKBONES))}")
  if args.largest and (args.cpu or not args.all):
    p.error("--largest goes with --all (the standard table), not with --cpu")
  if args.all:
    runs = CPU if args.cpu else standard(args.largest)
  else:
    runs = [(args.scheme, args.backbone, args.res, args.batch)]
  if getattr(args, "passes", False):
    runs = [r for r in pass_runs(runs) if r not in runs]  # a plain step already in the table is not timed twice
  if args.cpu:
    import os

    os.environ["JAX_PLATFORMS"] = "cpu"
    args.warmup = min(args.warmup, 1)
    runs = [(s, b, min(r, 64), min(n, 4)) for s, b, r, n in runs]
  return runs


def main(argv=None) -> int:
  p = argparse.ArgumentParser(
    prog="python -m benchmarks.throughput", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  run_arguments(p)
  p.add_argument(
    "--width", type=float, default=1.0, help="channel multiplier of the backbones (default 1; --cpu: 1/16)"
  )
  p.add_argument(
    "--dtype",
    default="bfloat16",
    choices=("bfloat16", "float32"),
    help="compute precision (default bfloat16; --cpu: float32)",
  )
  p.add_argument("--peak-tflops", type=float, help="the device's bf16 matrix-product peak (default: known cards)")
  p.add_argument(
    "--overhead",
    action="store_true",
    help="also time a plain backbone step at each input the scheme's backbones see, and report the "
    "scheme's step over their sum (targets: ABN 1.30, MA-CNN 1.15, RA-CNN 1.10)",
  )
  p.add_argument(
    "--passes",
    action="store_true",
    help="instead of the schemes, time only the plain backbone steps they are weighed against (at "
    "the inputs their backbones see, at their batch; training only), for "
    "benchmarks.compare --collect",
  )
  p.add_argument(
    "--dispatch",
    action="store_true",
    help="time the host's share of each step: until the engine's jitted call returns, and until done",
  )
  p.add_argument(
    "--phase",
    help="with --scheme: time the training step of this phase of the scheme's schedule "
    "(its losses, its parameter group; e.g. MA-CNN's object, init, grouping, classify, "
    "parts) instead of the end-to-end step",
  )
  p.add_argument(
    "--flops",
    action="store_true",
    help="count the full-size steps' FLOPs only (no compile, no run: any machine, about 3 s a row "
    "on 2 CPU cores) and "
    "their share beyond the backbone passes",
  )
  add_formulation_args(p)
  p.add_argument(
    "--collect", nargs="+", metavar="JSONL", help="measure nothing: print the table of earlier --json files"
  )
  args = p.parse_args(argv)
  if args.collect:
    rows = collected(p, args.collect)
    print(table(rows))
    return 0
  if args.flops and args.cpu:
    p.error("--flops counts the full-size models without running them: leave out --cpu")
  if args.phase and (args.all or args.passes or args.overhead or not args.scheme):
    p.error("--phase goes with one --scheme (its phases), not with --all, --passes or --overhead")
  runs = selected_runs(p, args)
  if args.phase:
    phases = config_for(args.scheme, args.backbone, args.res, args.batch, 1.0, "bfloat16").phase_order
    if args.phase not in phases:
      p.error(f"--phase {args.phase!r}: {args.scheme}'s phases are {', '.join(phases)}")
  if args.cpu:
    args.width, args.dtype = 1 / 16, "float32"
  if args.flops:
    rows = [
      flop_profile(s, b, r, n, width=args.width, peak_tflops=args.peak_tflops or PEAKS["H100"], phase=args.phase)
      for s, b, r, n in runs
    ]
    print(table(rows, FLOP_COLUMNS))
    return 0

  import jax

  use_formulations(args)
  if args.dispatch:
    rows = [
      dispatch(s, b, r, n, steps=args.steps, warmup=args.warmup, width=args.width, dtype=args.dtype, phase=args.phase)
      for s, b, r, n in runs
    ]
    print(table(rows, DISPATCH_COLUMNS))
    return 0
  print(
    f"# {platform.node()}: {jax.devices()[0].device_kind} x{jax.device_count()}, jax {jax.__version__}, "
    f"python {platform.python_version()}; {args.dtype}, median of {args.steps} steps after {args.warmup}",
    file=sys.stderr,
  )
  rows = []
  for scheme, backbone, res, batch in runs:
    try:
      r = measure(
        scheme,
        backbone,
        res,
        batch,
        steps=args.steps,
        warmup=args.warmup,
        width=args.width,
        dtype=args.dtype,
        peak_tflops=args.peak_tflops,
        overhead=args.overhead,
        evaluation=not (args.passes or args.phase),
        phase=args.phase,
      )  # a phase's evaluation is the scheme's
    except Exception as e:  # e.g. out of device memory at this batch: say so and measure the rest of the table
      r = {
        "scheme": scheme,
        "backbone": backbone,
        "res": res,
        "batch": batch,
        "error": f"{type(e).__name__}: {str(e)[:300]}",
      }
    rows.append(r)
    print(json.dumps(r), file=sys.stderr)
    if args.json:
      with open(args.json, "a") as f:
        f.write(json.dumps(r) + "\n")
  print(table(rows))
  return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
  sys.exit(main())
