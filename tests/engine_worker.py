"""Runs the tiny baseline of engine_config in a fresh process (for the multi-device and multi-process tests)
and prints one JSON line: process, device count, final evaluation NLL and top-1, train losses by step, the saved
weights' fingerprint; when stopped by a signal, what stopped it and the step saved instead of the evaluation.

    python tests/engine_worker.py WORKDIR [COORDINATOR NUM_PROCESSES PROCESS_ID]   (or SLURM's variables)

Environment: ENGINE_WORKER_STEPS (default 4) steps; ENGINE_WORKER_SIGTERM_AT=K: process 0 alone sends itself a
SIGTERM once it has logged step K (the other processes get none, as when a scheduler's signals arrive skewed).
"""

import json
import os
import signal
import sys
import threading
import time

sys.path[:0] = [os.path.dirname(__file__), os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]

from engine_config import tiny  # noqa: E402

from fgattn_jax.training import checkpoint, loop, mesh, writers  # noqa: E402


def fingerprint(workdir):
  """Sum of |parameter| over the run's latest checkpoint, read on this process's topology."""
  import numpy as np
  from flax import nnx

  from fgattn_jax.schemes import get_scheme

  model = get_scheme("baseline").build(tiny(main=1))
  checkpoint.load_model_weights(workdir, model)
  return float(
    sum(np.abs(np.asarray(v.get_value(), np.float64)).sum() for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)))
  )


def signal_at(workdir, step):
  path = os.path.join(workdir, "metrics.jsonl")
  while not (
    os.path.exists(path) and any(r["split"] == "train" and r["step"] >= step for r in writers.read_metrics(workdir))
  ):
    time.sleep(0.02)
  os.kill(os.getpid(), signal.SIGTERM)


def main():
  workdir = sys.argv[1]
  # (Without the arguments, as `python -m fgattn_jax.train` does: a cluster found from SLURM's variables.)
  coordinator, processes, index = (sys.argv[2], int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 2 else [None] * 3
  mesh.initialize_distributed(coordinator, processes, index)
  import jax

  config = tiny(main=int(os.environ.get("ENGINE_WORKER_STEPS", 4)))
  # A gentle rate: at 0.05 this tiny run's loss jumps at the fourth step, which amplifies the (legitimate)
  # differences in the order of floating-point sums between 1 and 4 devices beyond what the test can bound.
  config.phases.main.optim.lr = 0.01
  sigterm_at = int(os.environ.get("ENGINE_WORKER_SIGTERM_AT", 0))
  if sigterm_at and jax.process_index() == 0:
    threading.Thread(target=signal_at, args=(workdir, sigterm_at), daemon=True).start()
  out = {"process": jax.process_index(), "devices": jax.device_count()}
  try:
    results = loop.run(config, workdir, progress=False)["logits"]
    out.update(nll=results["nll"], top1=results["top1"], count=results["count"])
  except loop.Interrupted as e:
    ckpts = checkpoint.Checkpoints(workdir, keep=1)
    out.update(interrupted=str(e), saved=ckpts.latest_step())
    ckpts.close()
  out["losses"] = (
    {r["step"]: r["loss"] for r in writers.read_metrics(workdir) if r["split"] == "train"}
    if jax.process_index() == 0
    else {}
  )
  out["fingerprint"] = fingerprint(workdir)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
