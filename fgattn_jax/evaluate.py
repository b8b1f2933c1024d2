"""Evaluate a trained run:

    python -m fgattn_jax.evaluate --workdir DIR [--split test] [--checkpoint latest|best|STEP]
                                  [--config.KEY=VALUE ...]   (e.g. --config.data.root=/moved/data)

Reports top-1, top-5, mean class accuracy and expected calibration error for every output of the scheme,
and saves per-class accuracy and the confusion matrix (CSV, NPY, PNG) in DIR/eval/. Every example of the
split counts exactly once (the last batch is padded and masked).

    python -m fgattn_jax.evaluate --workdir DIR --localization [--num-images N] [--layer NAME[#K]]
                                  [--deletion-steps 16] [--part-radius PIXELS]

also scores where each map kind points (the scheme's attention, CAM, Grad-CAM, for the true class) on the images
with a ground-truth box (synthetic, CUB): the pointing game against its chance level, the deletion and insertion
areas under the curve, and for MA-CNN's part maps the ground-truth parts they hit (fgattn_jax/localize.py).
"""

from __future__ import annotations

import os
import sys

from fgattn_jax import cli, trained_run


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  p = cli.parser("python -m fgattn_jax.evaluate", __doc__, argv)
  p.epilog = None
  p.add_argument("--workdir", required=True, help="a training run's workdir (holds config.json and checkpoints/)")
  p.add_argument("--split", help="data split to evaluate (default: the run's data.eval_split)")
  cli.add_checkpoint_arg(p)
  p.add_argument("--out", help="where to write the results (default: WORKDIR/eval)")
  p.add_argument("--localization", action="store_true", help="also score the maps' localisation (see above)")
  p.add_argument("--num-images", type=int, help="--localization on the first N images only (default: all)")
  p.add_argument("--layer", help="the stage Grad-CAM reads (default: the explained backbone's last)")
  p.add_argument("--deletion-steps", type=int, default=16, help="points on the deletion and insertion curves")
  p.add_argument(
    "--part-radius",
    type=float,
    help="a part map's peak hits a part within this many pixels (default: a tenth of the side)",
  )
  args, pairs = cli.parse(p, argv)
  if args.num_images is not None and args.num_images < 1:
    p.error(f"--num-images must be at least 1, got {args.num_images}")
  cli.check_out(p, args.out, default=os.path.join(args.workdir, "eval"))
  given = [
    f
    for f, v in (("--num-images", args.num_images), ("--layer", args.layer), ("--part-radius", args.part_radius))
    if v is not None
  ]
  if given and not args.localization:
    p.error(f"{', '.join(given)}: options of --localization, which is not given")
  if args.part_radius is not None and args.part_radius <= 0:
    p.error(f"--part-radius must be positive, got {args.part_radius}")
  if args.deletion_steps < 1:
    p.error(f"--deletion-steps must be at least 1, got {args.deletion_steps}")
  cli.setup_logging()

  import jax

  from fgattn_jax import evaluation
  from fgattn_jax.training import loop

  run = trained_run.load_run(p, args, pairs, jax.process_index(), jax.process_count())
  if run is None:
    return 2
  cfg, split, scheme, model, step, pipe = run.cfg, run.split, run.scheme, run.model, run.step, run.pipe
  if args.localization:  # its layer checked before anything runs
    from fgattn_jax import explain
    from fgattn_jax.ops import saliency

    stages = saliency.layer_names(*explain.probe(scheme, model, pipe))
    layer = explain.check_layer(
      p, scheme, model, stages, args.layer or explain.default_layer(scheme, model), image_frame=True
    )[0]
  mesh, eval_step, state = trained_run.eval_program(run)
  try:
    results = loop.evaluate(scheme, eval_step, state, pipe, mesh)
  except evaluation.NonFiniteLogits:
    print(
      f"error: the checkpoint at step {step} in {args.workdir} gives NaN or infinite outputs: its weights "
      "diverged. Evaluate an earlier one with --checkpoint STEP.",
      file=sys.stderr,
    )
    return 2

  if jax.process_index() == 0:
    out = args.out or os.path.join(args.workdir, "eval")
    print(f"{args.workdir}, checkpoint step {step}, split {split!r}:")
    for name, r in results.items():
      files = evaluation.save(r, out, prefix=f"{split}_step{step}_{name}")
      print(f"  {name:<{max(map(len, results))}} {evaluation.summary_line(r)}")
    print(f"per-class accuracy and confusion matrices: {out} (e.g. {os.path.basename(files['confusion_png'])})")
  if args.localization:
    return _localization(args, scheme, model, cfg, pipe, split, step, layer)
  return 0


def _localization(args, scheme, model, cfg, pipe, split, step, layer) -> int:
  import json

  import jax
  import tqdm

  from fgattn_jax import localize
  from fgattn_jax.models.registry import compute_dtype

  model.eval()
  total = min(len(pipe.source), args.num_images or len(pipe.source))
  with tqdm.tqdm(
    total=total, unit="image", desc="localisation", dynamic_ncols=True, disable=jax.process_index() != 0
  ) as bar:
    results = localize.evaluate(
      scheme,
      model,
      pipe,
      layer=layer,
      dtype=compute_dtype(cfg.model.dtype),
      steps=args.deletion_steps,
      part_radius=args.part_radius,
      max_images=args.num_images,
      progress=lambda seen: bar.update(seen - bar.n),
    )
  if not results:
    print(
      f"error: no image of {split!r} has a ground-truth box: localisation needs boxes (synthetic, CUB, "
      "Aircraft, Cars, Dogs)",
      file=sys.stderr,
    )
    return 2
  if jax.process_index() == 0:
    out = args.out or os.path.join(args.workdir, "eval")
    path = os.path.join(out, f"{split}_step{step}_localization.json")
    os.makedirs(out, exist_ok=True)
    with open(path, "w") as f:
      json.dump({"layer": layer, "deletion_steps": args.deletion_steps, "maps": results}, f, indent=2)
    print(f"localisation (true class; Grad-CAM at {layer}):")
    print(localize.table(results))
    print(f"saved {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
