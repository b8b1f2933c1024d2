"""Runs the tiny baseline of engine_config in a fresh process (for the multi-device and multi-process tests)
and prints one JSON line: process, device count, final evaluation NLL and top-1, train losses by step.

    python tests/engine_worker.py WORKDIR [COORDINATOR NUM_PROCESSES PROCESS_ID]
"""

import json
import os
import sys

sys.path[:0] = [os.path.dirname(__file__), os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]

from engine_config import tiny  # noqa: E402
from fgattn_jax.training import loop, mesh, writers  # noqa: E402


def main():
  workdir = sys.argv[1]
  if len(sys.argv) > 2:
    mesh.initialize_distributed(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
  import jax
  config = tiny(main=4)
  # A gentle rate: at 0.05 this tiny run's loss jumps at the fourth step, which amplifies the (legitimate)
  # differences in the order of floating-point sums between 1 and 4 devices beyond what the test can bound.
  config.phases.main.optim.lr = 0.01
  results = loop.run(config, workdir, progress=False)["logits"]
  losses = {r["step"]: r["loss"] for r in writers.read_metrics(workdir) if r["split"] == "train"} \
      if jax.process_index() == 0 else {}
  print(json.dumps({"process": jax.process_index(), "devices": jax.device_count(), "nll": results["nll"],
                    "top1": results["top1"], "count": results["count"], "losses": losses}))


if __name__ == "__main__":
  main()
