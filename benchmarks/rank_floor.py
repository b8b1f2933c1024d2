"""How low RA-CNN's ranking loss between scales 1 and 2 can go while the classifiers stay fixed (what an `apn` phase
can reach): the APN's boxes against every box of a grid, per image and shared, on a trained run's training images.

    python -m benchmarks.rank_floor --workdir workdirs/racnn [--images 200] [--checkpoint latest]

A flat ranking loss in the apn phases is a bug unless the boxes already sit near this floor (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import sys


def floor(workdir: str, images: int = 200, checkpoint: str = "latest") -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np

  import fgattn_jax
  from data_pipelines import pipeline
  from fgattn_jax.ops import racnn as racnn_ops
  from fgattn_jax.ops.images import normalize

  run = fgattn_jax.load_run(workdir, checkpoint)
  model, cfg = run.model, run.config
  if cfg.scheme != "racnn":
    raise SystemExit(f"{workdir} is a {cfg.scheme} run, not RA-CNN")
  batches = [b for b in pipeline.sample(cfg, cfg.data.train_split, images)]
  x = normalize(jnp.asarray(np.concatenate([b["image"][b["mask"]] for b in batches])), jnp.float32)
  y = jnp.asarray(np.concatenate([b["label"][b["mask"]] for b in batches]))

  def true_class(logits):
    return jax.nn.softmax(logits, -1)[jnp.arange(len(y)), y]

  out = model(x)
  p1, p2 = true_class(out["scale_logits"][0]), true_class(out["scale_logits"][1])
  side = x.shape[1]
  net = model.nets[1]

  @jax.jit
  def hinge_for(box):
    zoom = racnn_ops.attention_crop(x, jnp.broadcast_to(box, (len(y), 4)), (model.scale_input,) * 2, model.k)
    return jnp.maximum(0.0, p1 - true_class(net.head(net.features(zoom)[0])[1]) + cfg.racnn.margin)

  per_image, shared = jnp.full(len(y), jnp.inf), float("inf")
  lo = cfg.racnn.min_half_fraction
  for half in np.linspace(lo, cfg.racnn.max_half_fraction, 4) * side:
    for cx in np.linspace(half, side - half, 5):
      for cy in np.linspace(half, side - half, 5):
        hinge = hinge_for(jnp.array([cx - half, cy - half, cx + half, cy + half], jnp.float32))
        per_image, shared = jnp.minimum(per_image, hinge), min(shared, float(hinge.mean()))
  half_sides = np.asarray(out["txyl"][0][:, 2]) / side
  return {
    "images": len(y),
    "p1": float(p1.mean()),
    "p2_apn": float(p2.mean()),
    "hinge_apn": float(jnp.maximum(0.0, p1 - p2 + cfg.racnn.margin).mean()),
    "hinge_best_shared_box": shared,
    "hinge_best_box_per_image": float(per_image.mean()),
    "apn_half_side": [float(v) for v in np.percentile(half_sides, [5, 50, 95])],
  }


def main(argv=None) -> int:
  p = argparse.ArgumentParser(
    prog="python -m benchmarks.rank_floor", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--workdir", required=True, help="a trained RA-CNN run")
  p.add_argument("--images", type=int, default=200, help="training images, spread over the classes (default 200)")
  p.add_argument("--checkpoint", default="latest", help="'latest', 'best' or a step")
  args = p.parse_args(argv)
  r = floor(args.workdir, args.images, args.checkpoint)
  print(f"{r['images']} training images; scale 1's p_t {r['p1']:.3f}, scale 2's with the APN's boxes {r['p2_apn']:.3f}")
  print(
    f"ranking loss (scales 1 -> 2): the APN's boxes {r['hinge_apn']:.3f}; the best single box of the grid "
    f"{r['hinge_best_shared_box']:.3f}; the best box per image {r['hinge_best_box_per_image']:.3f}"
  )
  print("the APN's half side / image side (5th, 50th, 95th percentile):", [round(v, 3) for v in r["apn_half_side"]])
  return 0


if __name__ == "__main__":
  sys.exit(main())
