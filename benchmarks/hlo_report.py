"""Where a training step's time can go on a GPU, read off the program XLA compiles for it, on any machine.

    python -m benchmarks.hlo_report --scheme baseline --backbone vgg19 --res 448 --batch 32
    python -m benchmarks.hlo_report --scheme racnn --backbone resnet50 --batch 16 --target h100 --dump racnn.hlo
    python -m benchmarks.hlo_report --hlo module.txt   # an optimised HLO dumped elsewhere (XLA_FLAGS=--xla_dump_to)

The step (the same one benchmarks.throughput times) is compiled for an H100 or H200 without one: XLA's GPU compiler
runs on the CPU against the card's description in benchmarks/gpu_targets/ (JAX's compile-only devices). That needs
JAX's CUDA plugin installed, not a GPU or a driver: `pip install "jax[cuda13]==$(python -c 'import jax;
print(jax.__version__)')"` (about 4 GB). What it cannot do without the card is autotune: convolution algorithms and
GEMM tilings are left to run-time heuristics, so the program's structure (its kernels, fusions, layouts, memory) is
the real one and its kernels' speed is not measured.

Each kernel of the program's entry computation is costed on a roofline: the bytes it reads and writes (its operands
and results) at the card's memory bandwidth, or its convolution / matrix-product FLOPs at the measured bf16 peak,
whichever takes longer. The sum is a lower bound on the step's device time; the table says which kinds of kernels
hold it, and the list of the largest memory-bound kernels names the JAX operations they come from: what to fuse away.
A compiled step's report also counts its launches from the host per step, read off the thunk sequence XLA dumps:
kernels and library calls launched one by one, and CUDA graphs replaying many as one (--graphs whole: the step as
a single graph).
"""

from __future__ import annotations

import argparse
import collections
import glob
import math
import os
import re
import sys
import tempfile

TARGETS = os.path.join(os.path.dirname(__file__), "gpu_targets")
# Bytes per second of HBM (the cards' specification) and the bf16 matrix-product FLOP/s measured on an H100
# (benchmarks/RESULTS.md; the H200 has the same chip).
CARDS = {"h100": (3.35e12, 798e12), "h200": (4.8e12, 798e12)}
SIZES = {
  "pred": 1,
  "s8": 1,
  "u8": 1,
  "s16": 2,
  "u16": 2,
  "f16": 2,
  "bf16": 2,
  "s32": 4,
  "u32": 4,
  "f32": 4,
  "s64": 8,
  "u64": 8,
  "f64": 8,
  "c64": 8,
  "c128": 16,
}
ARRAY = re.compile(r"\b(" + "|".join(SIZES) + r")\[([0-9,]*)\]")
INSTRUCTION = re.compile(r"\s*(?:ROOT )?%(\S+) = (.*)")
FREE = {
  "parameter",
  "get-tuple-element",
  "tuple",
  "bitcast",
  "constant",
  "after-all",
  "opt-barrier",
  "partition-id",
  "replica-id",
}  # no kernel of their own


def arrays(shape: str) -> list[tuple[str, list[int]]]:
  """The (element type, dims) of every array in an HLO shape, tuples flattened."""
  return [(t, [int(d) for d in dims.split(",") if d]) for t, dims in ARRAY.findall(shape)]


def nbytes(shape: str) -> int:
  return sum(SIZES[t] * math.prod(d) for t, d in arrays(shape))


def _split_shape(rest: str) -> tuple[str, str]:
  """'shape opcode(...)...' -> (shape, 'opcode(...)...'); a tuple shape is parenthesised."""
  if not rest.startswith("("):
    shape, _, tail = rest.partition(" ")
    return shape, tail
  depth = 0
  for i, ch in enumerate(rest):
    depth += (ch == "(") - (ch == ")")
    if depth == 0:
      return rest[: i + 1], rest[i + 1 :].lstrip()
  return rest, ""


def parse(text: str) -> dict[str, list[dict]]:
  """Computation name -> its instructions (name, shape, op, operands, line); the entry computation under 'ENTRY'."""
  comps, current = {}, None
  for line in text.splitlines():
    head = re.match(r"(ENTRY )?%(\S+) .*\{\s*$", line)
    if head and not line.startswith(" "):
      current = comps.setdefault("ENTRY" if head.group(1) else head.group(2), [])
      continue
    m = INSTRUCTION.match(line)
    if m is None or current is None:
      continue
    shape, tail = _split_shape(m.group(2))
    op = re.match(r"([\w\-]+)\((.*?)\)(?:,|$)", tail)
    current.append(
      {
        "name": m.group(1),
        "shape": shape,
        "op": op.group(1) if op else tail.split("(")[0],
        "operands": re.findall(r"%([\w.\-]+)", op.group(2)) if op else [],
        "line": line,
      }
    )
  return comps


def _field(line: str, pattern: str) -> str | None:
  m = re.search(pattern, line)
  return m.group(1) if m else None


def conv_flops(inst: dict, shapes: dict) -> int:
  """2 x (the forward convolution's output positions) x (the kernel's size) for a cuDNN convolution call, forward or
  backward: all three do the forward's multiply-adds. dim_labels are the forward's (input_kernel->output)."""
  target = _field(inst["line"], r'custom_call_target="([^"]*)"')
  out_labels = _field(inst["line"], r"dim_labels=\w+->(\w+)") or ""
  operand = [arrays(shapes[o])[0][1] for o in inst["operands"] if o in shapes]
  result = arrays(inst["shape"])[0][1]
  if "BackwardFilter" in target:
    kernel, out = result, operand[1]
  elif "BackwardInput" in target:
    kernel, out = operand[1], operand[0]
  else:
    kernel, out = operand[1], result
  positions = math.prod(d for d, c in zip(out, out_labels) if c != "f")
  # A strided convolution's input gradient written as a forward convolution over the zero-dilated gradient: only
  # one tap in prod(lhs_dilate) meets a real sample (as benchmarks/flops.py counts it).
  dilation = math.prod(int(d) for d in (_field(inst["line"], r"lhs_dilate=([0-9x]+)") or "1").split("x"))
  return 2 * positions * math.prod(kernel) // dilation


def dot_flops(line: str, shapes: dict, shape: str) -> int:
  """2 x output elements x contracted size of a dot instruction or a cuBLAS call (its dot dimension numbers)."""
  contracting = _field(line, r"lhs_contracting_dims=\{([0-9,]*)\}") or _field(
    line, r'"lhs_contracting_dimensions":\[([^\]]*)\]'
  )
  operands = re.findall(r"%([\w.\-]+)", line.split("(", 1)[1]) if "(" in line else []
  if contracting is None or not operands or operands[0] not in shapes:
    return 0
  lhs = arrays(shapes[operands[0]])[0][1]
  dims = [int(d.strip('" ')) for d in contracting.split(",") if d.strip('" ')]
  return 2 * math.prod(arrays(shape)[0][1]) * math.prod(lhs[d] for d in dims)


def kernels(comps: dict) -> list[dict]:
  """The entry computation's kernels: kind, bytes read and written, FLOPs, and the JAX operation behind each. (The
  bodies of loops and calls are not expanded: the training steps have none.)"""
  entry = comps["ENTRY"]
  shapes = {i["name"]: i["shape"] for i in entry}
  out = []
  for inst in entry:
    if inst["op"] in FREE:
      continue
    line = inst["line"]
    target = _field(line, r'custom_call_target="([^"]*)"')
    kind = _field(line, r"kind=(k\w+)")
    flops = 0
    if target and "conv" in target.lower():
      flops, category = conv_flops(inst, shapes), target.replace("__cudnn$", "cudnn ")
    elif target and ("gemm" in target or "matmul" in target):
      flops, category = dot_flops(line, shapes, inst["shape"]), "cublas gemm"
    elif target:
      category = f"custom-call {target}"
    elif inst["op"] == "fusion":
      called = comps.get(_field(line, r"calls=%([\w.\-]+)") or "", [])
      inner = {i["name"]: i["shape"] for i in called}
      flops = sum(dot_flops(i["line"], inner, i["shape"]) for i in called if i["op"] == "dot")
      category = "fusion with a dot (triton)" if flops else f"fusion {kind or ''}".strip()
      if any(i["op"] == "scatter" for i in called):
        category = "fusion with a scatter"
    else:
      category = inst["op"]
    moved = nbytes(inst["shape"]) + sum(nbytes(shapes.get(o, "")) for o in inst["operands"])
    source = _field(line, r'op_name="([^"]*)"') or ""
    out.append(
      {
        "name": inst["name"],
        "category": category,
        "bytes": moved,
        "flops": flops,
        "shape": inst["shape"],
        "source": re.sub(r"^jit\(\w+\)/", "", source),
      }
    )
  return out


def report(text: str, card: str = "h100", top: int = 15) -> str:
  """The roofline table of an optimised HLO module's text, and its largest memory-bound kernels."""
  bandwidth, peak = CARDS[card]
  ks = kernels(parse(text))
  by = collections.defaultdict(lambda: [0, 0, 0, 0.0])
  for k in ks:
    k["s"] = max(k["bytes"] / bandwidth, k["flops"] / peak)
    row = by[k["category"]]
    row[0], row[1], row[2], row[3] = row[0] + 1, row[1] + k["bytes"], row[2] + k["flops"], row[3] + k["s"]
  total = sum(k["s"] for k in ks)
  lines = [
    f"roofline of {len(ks)} kernels on an {card.upper()} ({bandwidth / 1e12:.2f} TB/s, "
    f"{peak / 1e12:.0f} TFLOP/s bf16): {1e3 * total:.2f} ms",
    "",
    "| kernels | count | GB moved | TFLOP | ms at roofline | share |",
    "|---|---|---|---|---|---|",
  ]
  for name, (n, b, f, s) in sorted(by.items(), key=lambda kv: -kv[1][3]):
    lines.append(f"| {name} | {n} | {b / 1e9:.2f} | {f / 1e12:.2f} | {1e3 * s:.2f} | {s / (total or 1):.0%} |")
  memory_bound = sorted((k for k in ks if k["bytes"] / bandwidth > k["flops"] / peak), key=lambda k: -k["bytes"])
  if top:
    lines += [
      "",
      f"largest memory-bound kernels (of {len(memory_bound)}):",
      "",
      "| MB | ms | kernel | result | JAX operation |",
      "|---|---|---|---|---|",
    ]
    lines += [
      f"| {k['bytes'] / 1e6:.0f} | {1e3 * k['s']:.3f} | {k['category']} | {k['shape'][:60]} | {k['source'][-80:]} |"
      for k in memory_bound[:top]
    ]
  return "\n".join(lines)


def launches(thunk_sequence: str) -> tuple[int, int, int]:
  """(launches, CUDA graphs among them, kernels and library calls in all) of a step, from the thunk sequence XLA
  dumps after its thunk passes: a top-level thunk is one launch from the host (a kernel, a cuDNN or cuBLAS call, a
  copy, or a command buffer: a CUDA graph of the indented thunks under it, replayed as one)."""
  top = re.findall(r"^\d+: (k\w+)", thunk_sequence, re.M)
  inside = re.findall(r"^\s+\d+: (k\w+)", thunk_sequence, re.M)
  graphs = top.count("kCommandBuffer")
  return len(top), graphs, len(top) - graphs + len(inside)


def compile_for_gpu(
  scheme: str,
  backbone: str,
  res: int,
  batch: int,
  card: str,
  evaluation: bool = False,
  phase: str | None = None,
  thunks: list | None = None,
):
  """The benchmark's step (phase: of that phase of the scheme's schedule) compiled for `card` without one:
  (optimised HLO text, compiled program). thunks: a list to append the step's thunk sequence (text) to."""
  # The plugin checks its CUDA libraries' versions against the driver's when it loads; without a card there is no
  # driver to ask, and compiling needs none.
  os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")
  try:
    import jax
    import numpy as np
    from jax.experimental import topologies

    with open(os.path.join(TARGETS, f"{card}.txtpb")) as f:
      topology = topologies.get_topology_desc(
        platform="cuda", topology_name=card, topology="1x1x1", target_config=f.read()
      )
  except (NotImplementedError, RuntimeError) as e:
    import jax

    raise SystemExit(
      f"compiling for a GPU without one needs JAX's CUDA plugin ({type(e).__name__}: {e}). Install it, no GPU or "
      f'driver needed: pip install "jax[cuda13]=={jax.__version__}"; or pass --hlo FILE with a dumped module.'
    )
  from benchmarks import throughput

  mesh = jax.sharding.Mesh(np.array(topology.devices), ("data",))  # the engine's steps, on that device
  c = throughput.config_for(scheme, backbone, res, batch, 1.0, "bfloat16")
  (train, train_args), (evaluate, eval_args) = throughput.setup_steps(scheme, c, abstract=True, mesh=mesh, phase=phase)
  fn, args = (evaluate, eval_args) if evaluation else (train, train_args)
  lowered = fn.lower(*args)
  with tempfile.TemporaryDirectory() as dump:  # the thunk sequence is only in XLA's dump
    options = {"xla_dump_to": dump} if thunks is not None else {}
    try:
      compiled = lowered.compile(compiler_options=options or None)
    except jax.errors.JaxRuntimeError as e:
      if "tile sizes" not in str(e):
        raise
      # Without the card XLA cannot autotune, and its Triton GEMM emitter finds no tiling for some small products
      # (RA-CNN's adaptive pooling); they go to cuBLAS instead, as autotuning may also decide on the card.
      print("# note: Triton GEMMs off (no tiling found without autotuning)", file=sys.stderr)
      compiled = lowered.compile(compiler_options={**options, "xla_gpu_enable_triton_gemm": False})
    if thunks is not None:
      for path in glob.glob(os.path.join(dump, "*thunk_sequence_after_thunk_passes.txt")):
        with open(path) as f:
          thunks.append(f.read())
  return compiled.as_text(), compiled


def largest_batch(
  scheme: str,
  backbone: str,
  res: int,
  card: str,
  *,
  multiple: int = 8,
  share: float = 0.7,
  log=print,
  compile_step=None,
  memory_bytes: int | None = None,
) -> int:
  """The largest batch (a multiple of `multiple`) whose compiled training step needs at most `share` of the card's
  memory without XLA recomputing activations to fit. JAX's allocator takes 75% of the card by default
  (XLA_PYTHON_CLIENT_MEM_FRACTION) and XLA rematerialises a program past about that, slower per image; the margin
  under it is for cuDNN's workspaces, which autotuning on the card chooses, and fragmentation. A step's memory grows
  linearly with the batch: two compilations give the line, a third checks its crossing (stepping down while it does
  not fit), so the line, not the last batch that compiles, decides. compile_step and memory_bytes: another target's
  compiler (as compile_for_gpu, -> (text, compiled)) and memory (benchmarks.tpu_report: a TPU chip)."""
  from benchmarks import throughput

  compile_step = compile_step or compile_for_gpu
  if memory_bytes is None:
    with open(os.path.join(TARGETS, f"{card}.txtpb")) as f:
      memory_bytes = int(re.search(r"device_memory_size: (\d+)", f.read()).group(1))
  limit = share * memory_bytes
  seen = {}

  def memory(batch: int) -> int:
    if batch not in seen:
      seen[batch] = throughput.program_memory(compile_step(scheme, backbone, res, batch, card)[1])
      log(f"#   {scheme} {backbone} batch {batch}: {seen[batch] / 2**30:.1f} GiB of {limit / 2**30:.1f}")
    return seen[batch]

  small, large = 2 * multiple, 4 * multiple
  per_image = (memory(large) - memory(small)) / (large - small)
  batch = max(multiple, int((limit - memory(small)) / per_image + small) // multiple * multiple)
  while batch > multiple and memory(batch) > limit:
    batch -= multiple
  return batch if memory(batch) <= limit else 0


def step_arguments(p: argparse.ArgumentParser) -> None:
  """The flags that name the step to compile (also benchmarks.tpu_report's)."""
  p.add_argument("--scheme", choices=("baseline", "abn", "macnn", "racnn"))
  p.add_argument("--backbone", default="vgg19")
  p.add_argument("--res", type=int, default=448)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--eval", action="store_true", help="the evaluation step instead of the training step")
  p.add_argument(
    "--phase",
    help="the training step of this phase of the scheme's schedule (benchmarks.throughput "
    "--phase) instead of the end-to-end step",
  )


def main(argv=None) -> int:
  p = argparse.ArgumentParser(
    prog="python -m benchmarks.hlo_report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  step_arguments(p)
  p.add_argument("--target", default="h100", choices=sorted(CARDS), help="the card to compile for and cost on")
  p.add_argument("--top", type=int, default=15, help="list this many of the largest memory-bound kernels")
  p.add_argument("--dump", help="also write the optimised HLO to this file")
  p.add_argument("--hlo", help="compile nothing: report on this optimised HLO module (text)")
  p.add_argument(
    "--largest-batch",
    action="store_true",
    help="instead of the report, find the largest batch (a multiple of 8) whose training step needs at "
    "most 70%% of the card's memory (JAX's pool is 75%%); with --all, every row of the standard table",
  )
  p.add_argument("--all", action="store_true", help="with --largest-batch: every row of the standard table")
  from benchmarks import throughput

  throughput.add_formulation_args(p)
  args = p.parse_args(argv)
  if args.phase and (args.largest_batch or args.eval or args.hlo or not args.scheme):
    p.error("--phase goes with a --scheme's training step, not with --largest-batch, --eval or --hlo")
  if args.largest_batch:
    throughput.use_formulations(args)
    runs = throughput.STANDARD if args.all else [(args.scheme, args.backbone, args.res, args.batch)]
    if runs[0][0] is None:
      p.error("--largest-batch needs a --scheme (and --backbone, --res) or --all")
    print(
      f"| scheme | backbone | res | the table's batch | largest batch ({args.target.upper()}) |\n|---|---|---|---|---|"
    )
    for scheme, backbone, res, batch in runs:
      found = largest_batch(scheme, backbone, res, args.target, log=lambda m: print(m, file=sys.stderr, flush=True))
      print(f"| {scheme} | {backbone} | {res} | {batch if args.all else '-'} | {found} |", flush=True)
    return 0
  if args.hlo:
    with open(args.hlo) as f:
      text = f.read()
  elif args.scheme:
    throughput.use_formulations(args)
    thunks = []
    text, compiled = compile_for_gpu(
      args.scheme, args.backbone, args.res, args.batch, args.target, args.eval, args.phase, thunks=thunks
    )
    gib = throughput.program_memory(compiled) / 2**30
    step = "eval" if args.eval else f"train, phase {args.phase}" if args.phase else "train"
    print(
      f"# {args.scheme} {args.backbone} {args.res} batch {args.batch} ({step}, graphs {args.graphs}), "
      f"compiled for an {args.target.upper()} (no autotuning): program memory {gib:.2f} GiB"
    )
    for sequence in thunks:  # one per module XLA compiled for the step
      n, graphs, work = launches(sequence)
      print(
        f"# launches from the host per step: {n}, {graphs} of them CUDA graphs ({work} kernels, library calls "
        f"and copies in all)"
      )
  else:
    p.error("name a --scheme (and --backbone, --res, --batch), or pass --hlo FILE")
  if args.dump:
    with open(args.dump, "w") as f:
      f.write(text)
  print(report(text, args.target, args.top))
  return 0


if __name__ == "__main__":
  sys.exit(main())
