"""Evaluate a trained run:

    python -m fgattn_jax.evaluate --workdir DIR [--split test] [--checkpoint best|latest|STEP]
                                  [--config.KEY=VALUE ...]   (e.g. --config.data.root=/moved/data)

Reports top-1, top-5, mean class accuracy and expected calibration error for every output of the scheme,
and saves per-class accuracy and the confusion matrix (CSV, NPY, PNG) in DIR/eval/. Every example of the
split counts exactly once (the last batch is padded and masked).
"""

from __future__ import annotations

import json
import os
import sys

from fgattn_jax import cli


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  p = cli.parser("python -m fgattn_jax.evaluate", __doc__, argv)
  p.epilog = None
  p.add_argument("--workdir", required=True, help="a training run's workdir (holds config.json and checkpoints/)")
  p.add_argument("--split", help="data split to evaluate (default: the run's data.eval_split)")
  p.add_argument("--checkpoint", default="best", help="'best' (by evaluation top-1), 'latest' or a step number")
  p.add_argument("--out", help="where to write the results (default: WORKDIR/eval)")
  args, pairs = cli.parse(p, argv)
  cli.setup_logging()

  import jax
  import ml_collections
  from flax import nnx

  from data_pipelines import pipeline as data
  from fgattn_jax import config as config_lib
  from fgattn_jax import evaluation
  from fgattn_jax.models.registry import compute_dtype
  from fgattn_jax.schemes import get_scheme
  from fgattn_jax.training import checkpoint as ckpt_lib
  from fgattn_jax.training import loop, steps
  from fgattn_jax.training import mesh as mesh_lib

  path = os.path.join(args.workdir, "config.json")
  if not os.path.exists(path):
    p.error(f"{path} not found: --workdir must be the folder a training run wrote")
  with open(path) as f:
    cfg = ml_collections.ConfigDict(json.load(f))
  cfg.lock()
  for key, text in pairs:
    try:
      config_lib.override(cfg, key, text)
    except config_lib.ConfigError as e:
      p.error(str(e))
  split = args.split or cfg.data.eval_split

  scheme = get_scheme(cfg.scheme)
  model = scheme.build(cfg)
  try:
    step = ckpt_lib.load_model_weights(args.workdir, model, args.checkpoint)
    pipe = data.build(cfg, split, jax.process_index(), jax.process_count(), training=False)
  except cli.user_errors() as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  mesh = mesh_lib.make_mesh(cfg.mesh.data)
  eval_step = steps.make_eval_step(scheme, nnx.graphdef(model), compute_dtype(cfg.model.dtype), mesh)
  state = mesh_lib.replicate(nnx.state(model), mesh)
  results = loop.evaluate(scheme, eval_step, state, pipe, mesh)

  if jax.process_index() == 0:
    out = args.out or os.path.join(args.workdir, "eval")
    print(f"{args.workdir}, checkpoint step {step}, split {split!r}:")
    for name, r in results.items():
      files = evaluation.save(r, out, prefix=f"{split}_step{step}_{name}")
      print(f"  {name:<10} {evaluation.summary_line(r)}")
    print(f"per-class accuracy and confusion matrices: {out} (e.g. {os.path.basename(files['confusion_png'])})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
