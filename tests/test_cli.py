"""The train and evaluate commands as a user meets them: --help, bad settings, SIGTERM and resume."""

import os
import signal
import subprocess
import sys
import time

import pytest

from fgattn_jax import train
from fgattn_jax.training import writers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_help_explains_the_flags_and_lists_presets(capsys, monkeypatch):
  monkeypatch.chdir(ROOT)
  with pytest.raises(SystemExit) as e:
    train.main(["--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  assert "--workdir" in out and "resumes" in out
  assert "configs/baseline.py:" in out and ":cub" in out and "CUB-200-2011 at 448" in out


@pytest.mark.parametrize("argv, message", [
    (["--config.phases.main.optim.lrr=1"], "Unknown config key 'phases.main.optim.lrr'. Did you mean phases.main.optim.lr"),
    (["--config.data.batch_size=many"], "holds a int"),
    (["--config", "configs/baseline.py:birds"], "no preset 'birds'"),
])
def test_bad_settings_are_refused_with_the_fix(capsys, monkeypatch, argv, message):
  monkeypatch.chdir(ROOT)
  if "--config" not in argv:
    argv = ["--config", "configs/baseline.py", *argv]
  with pytest.raises(SystemExit) as e:
    train.main([*argv, "--workdir", "/nonexistent/never-written"])
  assert e.value.code == 2
  assert message in capsys.readouterr().err
  assert not os.path.exists("/nonexistent/never-written")


def test_missing_weights_and_data_are_one_line_errors(capsys, monkeypatch, tmp_path):
  monkeypatch.chdir(ROOT)
  assert train.main(["--config", "configs/baseline.py:cub", "--workdir", str(tmp_path)]) == 2
  assert "--config.model.pretrained=/path/to/vgg19.pth" in capsys.readouterr().err
  assert train.main(["--config", "configs/baseline.py:cub", "--workdir", str(tmp_path),
                     "--config.model.require_pretrained=false"]) == 2
  assert "--config.data.root" in capsys.readouterr().err


def test_sigterm_saves_and_the_same_command_resumes(tmp_path):
  cmd = [sys.executable, "-m", "fgattn_jax.train", "--config", "configs/baseline.py", "--workdir", str(tmp_path),
         "--no-progress", "--config.data.synthetic.num_train=256", "--config.data.synthetic.num_test=50",
         "--config.phases.main.epochs=3", "--config.log.every_steps=1", "--config.log.tensorboard=false"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if os.path.exists(tmp_path / "metrics.jsonl") and len(writers.read_metrics(tmp_path)) >= 3:
      proc.send_signal(signal.SIGTERM)
      break
    time.sleep(0.2)
  out, err = proc.communicate(timeout=240)
  assert proc.returncode == 143, err[-2000:]
  assert "SIGTERM received: saved a checkpoint" in err
  stopped = max(r["step"] for r in writers.read_metrics(tmp_path))
  assert stopped < 24

  done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert f"resuming {tmp_path} from step {stopped}" in done.stderr
  steps = [r["step"] for r in writers.read_metrics(tmp_path) if r["split"] == "train"]
  assert sorted(steps) == list(range(1, 25))  # 3 epochs of 8 steps, each logged once
  assert "top-1" in done.stdout and (tmp_path / "curves.png").exists()
