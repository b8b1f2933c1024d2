"""A training (or evaluation) step compiled for a Google TPU chip without one: that it compiles, its memory, its
FLOPs and bytes moved, the bound they put on its time, and the largest batch that fits the chip.

    python -m benchmarks.tpu_report --scheme racnn --backbone vgg19 --batch 16 --chip v5p
    python -m benchmarks.tpu_report --all --chip v6e --json tpu.jsonl       # the standard table's steps
    python -m benchmarks.tpu_report --largest-batch --all --chip v5e

XLA's TPU compiler (from libtpu) runs on this machine's CPU against a one-chip topology, JAX's compile-only devices:
the program is the one the chip would run (its layouts, fusions, memory), only not executed. It needs libtpu, not
a TPU: `pip install "jax[tpu]==$(python -c 'import jax; print(jax.__version__)')"`, best in an environment of its
own. On a TPU VM the training commands and benchmarks.throughput run as they are; this says beforehand what they
will compile to. The FLOPs and bytes are XLA's cost analysis of the compiled program (on a TPU it counts the
convolutions, which XLA compiles itself there); the bound is the longer of the FLOPs at the chip's bf16 peak and
the bytes at its HBM bandwidth (Google's published figures): no step is faster.

The formulations are the ones training picks on a TPU (--pool/--crop auto: XLA's pooling and the crops' matrix
products, pooling.formulation and crops.formulation), unless named.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# One chip per kind: libtpu's topology name, HBM bytes, bf16 FLOP/s, HBM bytes/s (Google's published figures).
CHIPS = {
  "v5e": ("v5e:1x1", 16e9, 197e12, 819e9),
  "v5p": ("v5p:1x1x1", 95e9, 459e12, 2765e9),
  "v6e": ("v6e:1x1", 32e9, 918e12, 1640e9),
}


def compile_for_tpu(
  scheme: str, backbone: str, res: int, batch: int, chip: str, evaluation: bool = False, phase: str | None = None
):
  """The benchmark's step compiled for one `chip` without one (as hlo_report.compile_for_gpu), with the formulations
  a TPU picks where they are "auto": (optimised HLO text, compiled program)."""
  import jax
  import numpy as np
  from jax.experimental import topologies

  from benchmarks import throughput
  from fgattn_jax.ops import crops, pooling

  # A second process loading libtpu at once is refused (its lock file) unless told; the host name quiets a log line.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  try:
    # libtpu's default host is 2x2x1 chips; one chip needs the host's bounds given (as a list: a string is refused).
    topology = topologies.get_topology_desc(
      platform="tpu", topology_name=CHIPS[chip][0], chips_per_host_bounds=[1, 1, 1]
    )
  except (NotImplementedError, RuntimeError) as e:
    raise SystemExit(
      f"libtpu's compile-only TPU devices could not be opened ({type(e).__name__}: {str(e)[:200]}). "
      f'Compiling for a TPU without one needs libtpu, no TPU: pip install "jax[tpu]=={jax.__version__}"'
    )
  mesh = jax.sharding.Mesh(np.array(topology.devices[:1]), ("data",))  # one chip (v4's two cores: one of them)
  c = throughput.config_for(scheme, backbone, res, batch, 1.0, "bfloat16")
  # "auto" asks the backend the steps are traced on: this machine's, not the chip's.
  chosen = pooling.POOLING, crops.RESAMPLE
  pooling.POOLING, crops.RESAMPLE = pooling.formulation("tpu"), crops.formulation("tpu")
  try:
    (train, train_args), (evaluate, eval_args) = throughput.setup_steps(
      scheme, c, abstract=True, mesh=mesh, phase=phase
    )
    fn, args = (evaluate, eval_args) if evaluation else (train, train_args)
    compiled = fn.lower(*args).compile()
  finally:
    pooling.POOLING, crops.RESAMPLE = chosen
  return compiled.as_text(), compiled


def measure(
  scheme: str, backbone: str, res: int, batch: int, chip: str, evaluation: bool = False, phase: str | None = None
) -> dict:
  """One compiled step's row: compile seconds, memory, cost, and the bound on its time."""
  from benchmarks import throughput
  from fgattn_jax.models import macnn as macnn_model
  from fgattn_jax.ops import crops, pooling

  start = time.perf_counter()
  _, compiled = compile_for_tpu(scheme, backbone, res, batch, chip, evaluation, phase)
  compile_s = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = (cost[0] if cost else {}) if isinstance(cost, (list, tuple)) else (cost or {})
  _, hbm, peak, bandwidth = CHIPS[chip]
  flops, moved = cost.get("flops", 0.0), cost.get("bytes accessed", 0.0)
  bound = max(flops / peak, moved / bandwidth)
  memory = throughput.program_memory(compiled)
  return {
    "scheme": scheme,
    "backbone": backbone,
    "res": res,
    "batch": batch,
    "chip": chip,
    "step": "eval" if evaluation else f"train {phase}" if phase else "train",
    "pool": pooling.formulation("tpu"),
    "crop": crops.formulation("tpu"),
    "streams": macnn_model.STREAMS,
    "compile_s": compile_s,
    "mem_gib": memory / 2**30,
    "hbm_share": memory / hbm,
    "tflop": flops / 1e12,
    "gb_moved": moved / 1e9,
    "bound_ms": 1e3 * bound,
    "bound_img_s": batch / bound if bound else None,
  }


def _in_a_process(args, scheme, backbone, res, batch) -> dict:
  """One row of --all compiled by a process of its own: libtpu can crash a compilation (a stack overflow in its
  back end, v6e's ResNet-50 training step with libtpu 0.0.42), which then ends that row, not the table."""
  import subprocess
  import tempfile

  with tempfile.NamedTemporaryFile(suffix=".jsonl") as out:
    done = subprocess.run(
      [
        sys.executable,
        "-m",
        "benchmarks.tpu_report",
        "--chip",
        args.chip,
        "--pool",
        args.pool,
        "--crop",
        args.crop,
        "--streams",
        args.streams,
        *(["--eval"] if args.eval else []),
        "--scheme",
        scheme,
        "--backbone",
        backbone,
        "--res",
        str(res),
        "--batch",
        str(batch),
        "--json",
        out.name,
      ],
      capture_output=True,
      text=True,
    )
    lines = open(out.name).read().splitlines()
  if lines:
    return json.loads(lines[-1])
  why = (
    f"the compiling process died of signal {-done.returncode}"
    if done.returncode < 0
    else f"the compiling process ended with status {done.returncode}"
  )
  tail = [line for line in done.stderr.splitlines() if line.strip()][-3:]
  return {"scheme": scheme, "backbone": backbone, "res": res, "batch": batch, "error": f"{why}: {' | '.join(tail)}"}


COLUMNS = [
  ("scheme", "{}"),
  ("backbone", "{}"),
  ("res", "{}"),
  ("batch", "{}"),
  ("chip", "{}"),
  ("step", "{}"),
  ("pool", "{}"),
  ("crop", "{}"),
  ("streams", "{}"),
  ("compile_s", "{:.0f}"),
  ("mem_gib", "{:.2f}"),
  ("hbm_share", "{:.0%}"),
  ("tflop", "{:.2f}"),
  ("gb_moved", "{:.1f}"),
  ("bound_ms", "{:.1f}"),
  ("bound_img_s", "{:.0f}"),
]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(
    prog="python -m benchmarks.tpu_report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  from benchmarks import hlo_report, throughput

  hlo_report.step_arguments(p)
  p.add_argument("--chip", default="v5p", choices=sorted(CHIPS), help="the TPU to compile for (default v5p)")
  p.add_argument("--all", action="store_true", help="every row of the standard table (benchmarks.throughput)")
  p.add_argument(
    "--largest-batch",
    action="store_true",
    help="instead, the largest batch (a multiple of 8) whose training step needs at most 70%% of the "
    "chip's memory (as benchmarks.hlo_report --largest-batch)",
  )
  p.add_argument("--json", help="append the rows (one JSON object per line) to this file")
  throughput.add_formulation_args(p)
  args = p.parse_args(argv)
  if args.graphs != "fusions":
    p.error("--graphs chooses XLA's CUDA graphs: a GPU's, with no meaning on a TPU")
  if not args.all and not args.scheme:
    p.error("name a --scheme (and --backbone, --res, --batch), or ask for --all")
  if args.phase and (args.all or args.eval or args.largest_batch):
    p.error("--phase goes with one --scheme's training step")
  if args.res < 1 or args.batch < 1:
    p.error(f"--res and --batch must be at least 1, got {args.res} and {args.batch}")
  throughput.use_formulations(args)
  runs = throughput.STANDARD if args.all else [(args.scheme, args.backbone, args.res, args.batch)]
  if args.largest_batch:
    print(f"| scheme | backbone | res | the table's batch | largest batch ({args.chip}) |\n|---|---|---|---|---|")
    for scheme, backbone, res, batch in runs:
      found = hlo_report.largest_batch(
        scheme,
        backbone,
        res,
        args.chip,
        compile_step=compile_for_tpu,
        memory_bytes=int(CHIPS[args.chip][1]),
        log=lambda m: print(m, file=sys.stderr, flush=True),
      )
      print(f"| {scheme} | {backbone} | {res} | {batch if args.all else '-'} | {found} |", flush=True)
    return 0
  rows = []
  for scheme, backbone, res, batch in runs:
    if len(runs) > 1:
      r = _in_a_process(args, scheme, backbone, res, batch)
    else:
      try:
        r = measure(scheme, backbone, res, batch, args.chip, args.eval, args.phase)
      except Exception as e:  # noqa: BLE001 - a step that does not compile for the chip is this report's finding
        r = {"scheme": scheme, "backbone": backbone, "res": res, "batch": batch, "error": f"{type(e).__name__}: {e}"}
    rows.append(r)
    print(json.dumps(r), file=sys.stderr, flush=True)
    if args.json:
      with open(args.json, "a") as f:
        f.write(json.dumps(r) + "\n")
  print(throughput.table(rows, COLUMNS))
  return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # compile-only devices: nothing looks for a chip to run on
  sys.exit(main())
