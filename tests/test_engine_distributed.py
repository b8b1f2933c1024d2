"""The engine over several devices and several processes, each in a fresh interpreter (device counts and
jax.distributed are fixed at start-up)."""

import json
import os
import socket
import subprocess
import sys

import numpy as np

WORKER = os.path.join(os.path.dirname(__file__), "engine_worker.py")


def launch(workdir, *extra, devices=1, optimized=False):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  # Without the suite's compilation cache (conftest.py): with it, one process could skip a compile the other
  # did, and the laggard reach the first collective more than gloo's 30 s after its peer (seen in CI).
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  if optimized:  # XLA's full optimisation, which conftest.py turns off for the suite
    env.pop("JAX_DISABLE_MOST_OPTIMIZATIONS", None)
  return subprocess.Popen([sys.executable, WORKER, str(workdir), *map(str, extra)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result(proc, timeout=300):
  out, err = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, err[-3000:]
  return json.loads(out.strip().splitlines()[-1])


def test_four_devices_match_one(tmp_path):
  # Compiled with full optimisation: the tolerance below is that of its rounding (without it the fourth step's
  # losses differ by 2e-4 instead of 1e-5).
  one, four = launch(tmp_path / "one", optimized=True), launch(tmp_path / "four", devices=4, optimized=True)
  one, four = result(one), result(four)
  assert (one["devices"], four["devices"]) == (1, 4)
  # Same global batch of 8 (2 per device) and BatchNorm over the whole batch: the same training, up to the
  # order of floating-point sums (1e-7 at the first step, growing to ~1e-5 by the fourth). BatchNorm per
  # device, or a batch not split as intended, would be off by far more.
  assert one["losses"].keys() == four["losses"].keys() and len(one["losses"]) == 4
  np.testing.assert_allclose([four["losses"][k] for k in sorted(four["losses"])],
                             [one["losses"][k] for k in sorted(one["losses"])], rtol=1e-4)
  # The evaluation NLL of this barely trained model (~6.5) amplifies those differences through large logits.
  np.testing.assert_allclose(four["nll"], one["nll"], rtol=1e-2)
  assert four["count"] == one["count"] == 30


def test_two_processes_train_together_and_agree(tmp_path):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  procs = [launch(tmp_path, f"127.0.0.1:{port}", 2, i) for i in range(2)]
  first, second = (result(p) for p in procs)
  assert first["devices"] == second["devices"] == 2
  assert len(first["losses"]) == 4 and all(np.isfinite(v) for v in first["losses"].values())
  # Both processes evaluated every test example once, and saw the same model.
  assert first["count"] == second["count"] == 30
  assert first["nll"] == second["nll"] and first["top1"] == second["top1"]


def test_the_attention_schemes_gradients_on_two_devices_equal_one_devices():
  # Their crops, zooms and part losses over a batch split in two (tests/sharded_gradients.py: in evaluation mode,
  # where the two must agree to rounding; in training mode BatchNorm's batch sums legitimately part them).
  proc = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "sharded_gradients.py"), "macnn",
                         "racnn"], capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads(proc.stdout.strip().splitlines()[-1])
  for scheme, r in results.items():
    assert r["devices"] == 2
    np.testing.assert_allclose(r["loss"][1], r["loss"][0], rtol=1e-6, err_msg=scheme)
    assert r["error"] < 1e-5, (scheme, r["error"])  # measured: 5.8e-7 and 5.9e-7
