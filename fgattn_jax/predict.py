"""Classify new images with a trained run:

    python -m fgattn_jax.predict --workdir DIR PATH [PATH ...] [--top 5] [--checkpoint latest|best|STEP]
                                 [--out predictions.csv] [--config.KEY=VALUE ...]

PATH: image files, or folders searched recursively (.jpg .jpeg .png .bmp .webp .tif .tiff .gif). Each image goes
through the run's evaluation transform (resize, centre crop) and its main classifier (MA-CNN: the joint one;
RA-CNN: the fused one), and one line per image gives the `--top` classes with their softmax probabilities. The
class names come from the run (its class_names.json), so the data set need not be on this machine. A file that
cannot be read is skipped and named. --out also writes the predictions as CSV (path, rank, class, name,
probability).
"""

from __future__ import annotations

import csv
import os
import sys

from fgattn_jax import cli, trained_run


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  p = cli.parser("python -m fgattn_jax.predict", __doc__, argv)
  p.epilog = None
  p.add_argument("--workdir", required=True, help="a training run's workdir (holds config.json and checkpoints/)")
  p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders of them")
  p.add_argument("--top", type=int, default=5, help="classes listed per image (default 5)")
  cli.add_checkpoint_arg(p)
  p.add_argument("--out", help="also write the predictions to this CSV file")
  args, pairs = cli.parse(p, argv)
  cli.check_out(p, args.out, folder=False)
  if args.top < 1:
    p.error(f"--top must be at least 1, got {args.top}")
  cli.setup_logging()

  import jax
  import numpy as np

  from fgattn_jax.training import mesh as mesh_lib

  def refuse(cfg, scheme):
    if scheme.main_output != "logits":
      return (
        f"the run in {args.workdir} predicts attributes (multi-task {cfg.scheme}): predict covers runs with one "
        "classifier; score the tasks with python -m fgattn_jax.evaluate"
      )

  run = trained_run.load_run(p, args, pairs, images=args.paths, refuse=refuse)
  if run is None:
    return 2
  cfg, scheme, step, pipe, names = run.cfg, run.scheme, run.step, run.pipe, run.names
  top = min(args.top, cfg.data.num_classes)

  mesh, predict_step, state = trained_run.eval_program(run)
  leaves, structure = jax.tree.flatten(state)
  rows = []  # (path, [(class, probability), ...] best first)
  for batch in pipe:
    logits = mesh_lib.to_host(predict_step(leaves, mesh_lib.to_device(batch, mesh), structure)[scheme.main_output])
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    for i in np.flatnonzero(batch["mask"]):
      best = np.argsort(-probs[i], kind="stable")[:top]
      rows.append((pipe.source.describe(int(batch["index"][i])), [(int(k), float(probs[i, k])) for k in best]))

  label = (lambda k: f"{names[k]} ({k})") if names else str
  print(f"{args.workdir}, checkpoint step {step}, {scheme.name}'s {scheme.main_output}; class names: {run.named_by}")
  for path, best in rows:
    print(f"{path}: " + ", ".join(f"{label(k)} {100 * q:.1f}%" for k, q in best))
  if pipe.skipped:
    print(
      f"{len(pipe.skipped)} file(s) could not be read and were skipped: {', '.join(pipe.skipped[:10])}"
      + (" ..." if len(pipe.skipped) > 10 else "")
    )
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", newline="") as f:
      w = csv.writer(f)
      w.writerow(["path", "rank", "class", "name", "probability"])
      for path, best in rows:
        w.writerows([path, r + 1, k, names[k] if names else "", f"{q:.6f}"] for r, (k, q) in enumerate(best))
    print(f"{len(rows)} predictions written to {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
