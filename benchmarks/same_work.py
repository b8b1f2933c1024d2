"""Both sides of the throughput comparison do the same work: for each row, our model's and the PyTorch reference's
(benchmarks/torch_reference) parameter count and matrix-product and convolution FLOPs per image of one training
step, counted without running anything (any machine, full sizes):

    python -m benchmarks.same_work --all             # the standard table (about 2 minutes on 2 CPU cores)
    python -m benchmarks.same_work --scheme macnn --backbone resnet50 --res 448 --batch 16

Ours from the step's program (benchmarks/flops.py), PyTorch's with torch.utils.flop_counter on meta tensors (shapes
only: nothing is allocated). Exit status 1 where a row differs: parameters unequal, or FLOPs apart by more than
TOLERANCE (the counters differ in a few tiny products, e.g. how a pooled gradient is written).
"""

from __future__ import annotations

import argparse
import sys

from benchmarks import throughput

TOLERANCE = 1e-3  # relative difference of FLOPs per image


def torch_side(scheme: str, backbone: str, res: int, batch: int, num_classes: int = 200) -> tuple[int, float]:
  """(parameters, training-step FLOPs per image) of the PyTorch reference: forward, loss, backward."""
  import torch
  from torch.utils.flop_counter import FlopCounterMode

  from benchmarks.torch_reference.schemes import build

  with torch.device("meta"):
    model = build(scheme, backbone, num_classes, res)
    x, y = torch.randn(batch, 3, res, res), torch.randint(0, num_classes, (batch,))
  counter = FlopCounterMode(display=False)
  with counter:
    model(x, y).backward()
  return sum(p.numel() for p in model.parameters()), counter.get_total_flops() / batch


def jax_side(scheme: str, backbone: str, res: int, batch: int) -> tuple[int, float]:
  """(parameters, training-step FLOPs per image) of ours, the end-to-end step benchmarks.throughput times."""
  import jax
  import numpy as np
  from flax import nnx

  from benchmarks import flops
  from fgattn_jax.schemes import get_scheme

  c = throughput.config_for(scheme, backbone, res, batch, 1.0, "bfloat16")
  model = nnx.eval_shape(lambda: get_scheme(scheme).build(c))
  params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  (train, args), _ = throughput.setup_steps(scheme, c, abstract=True)
  return params, flops.count(train, *args, static_argnums=(2,)) / batch


def compare(scheme: str, backbone: str, res: int, batch: int) -> dict:
  jax_params, jax_flops = jax_side(scheme, backbone, res, batch)
  torch_params, torch_flops = torch_side(scheme, backbone, res, batch)
  same = jax_params == torch_params and abs(jax_flops / torch_flops - 1) <= TOLERANCE
  return {
    "scheme": scheme,
    "backbone": backbone,
    "res": res,
    "batch": batch,
    "jax_params": jax_params,
    "torch_params": torch_params,
    "jax_gflop_per_image": jax_flops / 1e9,
    "torch_gflop_per_image": torch_flops / 1e9,
    "same": same,
  }


def table(rows: list[dict]) -> str:
  cols = [
    "scheme",
    "backbone",
    "res",
    "batch",
    "jax_params",
    "torch_params",
    "jax_gflop_per_image",
    "torch_gflop_per_image",
    "same",
  ]
  lines = [
    "| " + " | ".join(c.replace("_gflop_per_image", " GFLOP/image") for c in cols) + " |",
    "|" + "---|" * len(cols),
  ]
  for r in rows:
    lines.append("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(
    prog="python -m benchmarks.same_work", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--all", action="store_true", help="every row of the standard table")
  p.add_argument("--scheme", choices=("baseline", "abn", "macnn", "racnn"))
  p.add_argument("--backbone", default="vgg19")
  p.add_argument("--res", type=int, default=448)
  p.add_argument("--batch", type=int, default=16)
  args = p.parse_args(argv)
  if not args.all and not args.scheme:
    p.error("name a --scheme (and --backbone, --res, --batch), or ask for --all")
  runs = throughput.STANDARD if args.all else [(args.scheme, args.backbone, args.res, args.batch)]
  rows = []
  for run in runs:
    rows.append(compare(*run))
    print(table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
  print(table(rows))
  return 0 if all(r["same"] for r in rows) else 1


if __name__ == "__main__":
  sys.exit(main())
