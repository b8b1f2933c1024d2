"""The engine over several devices and several processes, each in a fresh interpreter (device counts and
jax.distributed are fixed at start-up)."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from engine_worker import fingerprint

pytestmark = pytest.mark.slow  # several processes, each a fresh interpreter: `python -m pytest -m slow`

WORKER = os.path.join(os.path.dirname(__file__), "engine_worker.py")


def launch(workdir, *extra, devices=1, optimized=False, environment=(), **worker_env):
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    **{f"ENGINE_WORKER_{k.upper()}": str(v) for k, v in worker_env.items()},
    **dict(environment),
  )
  # Without the suite's compilation cache (conftest.py): with it, one process could skip a compile the other
  # did, and the laggard reach the first collective more than gloo's 30 s after its peer (seen in CI).
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  if optimized:  # XLA's full optimisation, which conftest.py turns off for the suite
    env.pop("JAX_DISABLE_MOST_OPTIMIZATIONS", None)
  return subprocess.Popen(
    [sys.executable, WORKER, str(workdir), *map(str, extra)],
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def result(proc, timeout=300):
  try:
    out, err = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()  # not left behind, holding its peer
    raise
  assert proc.returncode == 0, err[-3000:]
  return json.loads(out.strip().splitlines()[-1])


def test_four_devices_match_one(tmp_path):
  # Compiled with full optimisation, as training is (on an AMD EPYC, without it the fourth step's losses differed
  # by 2e-4 instead of 1e-5).
  one, four = launch(tmp_path / "one", optimized=True), launch(tmp_path / "four", devices=4, optimized=True)
  one, four = result(one), result(four)
  assert (one["devices"], four["devices"]) == (1, 4)
  # Same global batch of 8 (2 per device) and BatchNorm over the whole batch: the same training, up to the
  # order of floating-point sums, 1e-6 at the first step, which training amplifies by a machine-dependent factor
  # (by the fourth step 1e-5 on an AMD EPYC, 2.2e-4 on an Intel Xeon). BatchNorm per device, or a batch not split
  # as intended, changes the first step's forward pass itself: far more than 1e-5.
  assert one["losses"].keys() == four["losses"].keys() and len(one["losses"]) == 4
  losses_four = [four["losses"][k] for k in sorted(four["losses"])]
  losses_one = [one["losses"][k] for k in sorted(one["losses"])]
  np.testing.assert_allclose(losses_four[0], losses_one[0], rtol=1e-5)
  np.testing.assert_allclose(losses_four, losses_one, rtol=1e-3)
  # The evaluation NLL of this barely trained model (~6.5) amplifies those differences through large logits.
  np.testing.assert_allclose(four["nll"], one["nll"], rtol=1e-2)
  assert four["count"] == one["count"] == 30
  # The 4 devices' checkpoint read here, on 1 device (evaluate, visualize, init_from on another machine): the
  # same weights as saved, and as the 1-device run's up to the rounding above. (orbax put each array back on the
  # devices that saved it: 4 that this process does not have.)
  read_here = fingerprint(str(tmp_path / "four"))
  assert read_here == four["fingerprint"]
  np.testing.assert_allclose(read_here, fingerprint(str(tmp_path / "one")), rtol=1e-5)


def free_port(candidates=(0,)):
  """The first of `candidates` free to bind (0: any port the system picks)."""
  for port in candidates:
    with socket.socket() as s:
      try:
        s.bind(("0.0.0.0", int(port)))
      except OSError:
        continue
      return s.getsockname()[1]


def pair(workdir, slurm=False, **worker_env):
  """Two processes of one device each: started by hand (--coordinator ...), or as SLURM's srun starts them, with
  nothing but its variables to find each other by."""
  if slurm:  # jax.distributed's coordinator port is SLURM_JOB_ID mod 4096 above 61439: a job id for a free one
    job = free_port(np.random.default_rng().permutation(np.arange(61440, 65536))) - 61440
    procs = [
      launch(
        workdir,
        **worker_env,
        environment={
          "SLURM_JOB_ID": str(job),
          "SLURM_STEP_NODELIST": "localhost",
          "SLURM_NTASKS": "2",
          "SLURM_PROCID": str(i),
          "SLURM_LOCALID": "0",
        },
      )
      for i in range(2)
    ]
  else:
    port = free_port()
    procs = [launch(workdir, f"127.0.0.1:{port}", 2, i, **worker_env) for i in range(2)]
  try:
    return [result(p) for p in procs]
  finally:
    for p in procs:
      p.kill()


def test_two_processes_stop_together_resume_and_agree(tmp_path):
  # Only process 0 is sent a SIGTERM (a scheduler's signals arrive skewed): both stop at the same step and save.
  # (Process 0 used to stop alone: it waited in the checkpoint's barrier, process 1 in the next step's collective,
  # for ever.)
  first, second = pair(tmp_path, steps=10, sigterm_at=2)
  assert first["interrupted"] == "SIGTERM" and second["interrupted"] == "SIGTERM (to another process)"
  saved = first["saved"]
  assert saved == second["saved"] and 2 <= saved < 10
  assert all((tmp_path / "data_state" / f"process_{i}" / f"{saved}.json").exists() for i in range(2))
  # Started again (by SLURM this time: the same cluster, found from srun's variables), they resume and finish
  # together.
  first, second = pair(tmp_path, slurm=True, steps=10)
  assert first["devices"] == second["devices"] == 2
  assert sorted(map(int, first["losses"])) == list(range(1, 11)) and all(
    np.isfinite(v) for v in first["losses"].values()
  )
  # Both processes evaluated every test example once, and saw the same model.
  assert first["count"] == second["count"] == 30
  assert first["nll"] == second["nll"] and first["top1"] == second["top1"]
  # The two processes' checkpoint read by one process with one device: the weights they saved.
  assert fingerprint(str(tmp_path)) == first["fingerprint"] == second["fingerprint"]


def test_the_attention_schemes_gradients_on_two_devices_equal_one_devices():
  # Their crops, zooms and part losses over a batch split in two (tests/sharded_gradients.py: in evaluation mode,
  # where the two must agree to rounding; in training mode BatchNorm's batch sums legitimately part them).
  proc = subprocess.run(
    [sys.executable, os.path.join(os.path.dirname(__file__), "sharded_gradients.py"), "macnn", "racnn"],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads(proc.stdout.strip().splitlines()[-1])
  for scheme, r in results.items():
    assert r["devices"] == 2
    np.testing.assert_allclose(r["loss"][1], r["loss"][0], rtol=1e-6, err_msg=scheme)
    assert r["error"] < 1e-5, (scheme, r["error"])  # measured: 5.8e-7 and 5.9e-7
