"""The train and evaluate commands as a user meets them: --help, bad settings, SIGTERM and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from fgattn_jax import cli, evaluate, train, trained_run
from fgattn_jax.config import load_config
from fgattn_jax.training import loop, writers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_help_explains_the_flags_and_lists_presets(capsys, monkeypatch):
  monkeypatch.chdir(ROOT)
  with pytest.raises(SystemExit) as e:
    train.main(["--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  assert "--workdir" in out and "resumes" in out
  assert "configs/baseline.py:" in out and ":cub" in out and "CUB-200-2011 at 448" in out


def test_help_outside_the_repository_lists_its_presets(capsys, monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)  # no ./configs here: the repository's, beside the package
  with pytest.raises(SystemExit) as e:
    train.main(["--help"])
  assert e.value.code == 0
  assert f"{os.path.join(ROOT, 'configs', 'baseline.py')}:" in capsys.readouterr().out


@pytest.mark.parametrize(
  "argv, message",
  [
    (
      ["--config.phases.main.optim.lrr=1"],
      "Unknown config key 'phases.main.optim.lrr'. Did you mean phases.main.optim.lr",
    ),
    (["--config.data.batch_size=many"], "holds an int"),
    (["--config", "configs/baseline.py:birds"], "no preset 'birds'"),
    (["--config", "configs/baseline.py:birds"], "Presets: (bare name), detail, cub, aircraft"),
    (["--config.data.image_size"], "--config.data.image_size needs a value: --config.data.image_size=VALUE"),
    (["--config.data.batch_size=0"], "data.batch_size=0: must be 1 or more"),
    (["--config.data.num_workers", "-1"], "data.num_workers=-1: must be 0"),
    (
      ["--config.phases.main.schedule.kind=step", "--config.phases.main.schedule.boundaries=abc"],
      "phases.main.schedule.boundaries=('abc',): must be epochs (numbers)",
    ),
    (["--num-processes", "2"], "missing: --coordinator, --process-id"),
    (
      ["--coordinator", "localhost:23456", "--num-processes", "2", "--process-id", "5"],
      "--process-id 5: must be 0 to 1 with --num-processes 2",
    ),
    (
      ["--coordinator", "localhost", "--num-processes", "2", "--process-id", "1"],
      "--coordinator localhost: give process 0's address and a free port",
    ),
  ],
)
def test_bad_settings_are_refused_with_the_fix(capsys, monkeypatch, argv, message):
  monkeypatch.chdir(ROOT)
  if "--config" not in argv:
    argv = ["--config", "configs/baseline.py", *argv]
  with pytest.raises(SystemExit) as e:
    train.main([*argv, "--workdir", "/nonexistent/never-written"])
  assert e.value.code == 2
  assert message in capsys.readouterr().err
  assert not os.path.exists("/nonexistent/never-written")


TINY = [
  "--config.data.image_size=32",
  "--config.data.resize_size=36",
  "--config.data.synthetic.num_train=32",
  "--config.data.synthetic.num_test=16",
  "--config.data.batch_size=16",
  "--config.data.eval_batch_size=16",
  "--no-progress",
]


@pytest.mark.parametrize(
  "setting, message",
  [
    ("--config.model.backbone=vgg99", "error: Unknown backbone 'vgg99'. Did you mean vgg19"),
    ("--config.scheme=foo", "error: Unknown scheme 'foo'; available: baseline, abn"),
    ("--config.model.dtype=float8", "error: Unknown compute dtype 'float8'; use 'auto' or one of float32"),
  ],
)
def test_unknown_names_are_one_line_errors(capsys, monkeypatch, tmp_path, setting, message):
  monkeypatch.chdir(ROOT)
  assert train.main(["--config", "configs/baseline.py", *TINY, setting, "--workdir", str(tmp_path)]) == 2
  err = capsys.readouterr().err
  assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
  "config, setting, message",
  [
    ("macnn", "--config.macnn.part_maps=foo", "macnn cannot be built from this config: macnn.part_maps must be"),
    ("macnn", "--config.macnn.num_parts=0", "macnn.num_parts and .part_input must be 1 or more"),
    ("racnn", "--config.racnn.num_scales=1", "racnn.num_scales: RA-CNN needs at least two scales, got 1"),
    ("racnn", "--config.racnn.scale1_input=-3", ".scale1_input 0 (the data's image_size) or more"),
    ("abn", "--config.abn.map_kernel=2", "abn.map_kernel must be 1 (the paper) or 3"),
    ("baseline", "--config.model.head=fc", "model.head of a VGG must be 'classifier'"),
  ],
)
def test_a_value_the_model_cannot_be_built_with_is_a_one_line_error(
  capsys, monkeypatch, tmp_path, config, setting, message
):
  monkeypatch.chdir(ROOT)
  small = ["--config.model.backbone=vgg11_bn", "--config.model.width=0.0625"]
  assert (
    train.main(["--config", f"configs/{config}.py", *TINY, *small, setting, "--workdir", str(tmp_path / "run")]) == 2
  )
  err = capsys.readouterr().err
  assert message in err and "Traceback" not in err
  assert not (tmp_path / "run").exists()  # nothing written for a run that never started


def test_a_second_ctrl_c_leaves_at_once_without_a_traceback(capsys, monkeypatch, tmp_path):
  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt  # what the engine's handler raises on a second SIGINT (e.g. while compiling)

  monkeypatch.setattr(loop, "run", interrupted)
  monkeypatch.chdir(ROOT)
  assert train.main(["--config", "configs/baseline.py", *TINY, "--workdir", str(tmp_path)]) == 130
  err = capsys.readouterr().err
  assert "interrupted without saving: rerunning resumes from the last checkpoint" in err and "Traceback" not in err


def test_a_full_or_read_only_disk_is_one_line_and_other_errors_stay_tracebacks(capsys, monkeypatch, tmp_path):
  import errno

  monkeypatch.chdir(ROOT)
  argv = ["--config", "configs/baseline.py", *TINY, "--workdir", str(tmp_path)]
  for error, says in [
    (OSError(errno.EROFS, "Read-only file system"), "Read-only file system"),
    (ValueError("RESOURCE_EXHAUSTED: ...: No space left on device"), "no space left on its disk"),
  ]:
    monkeypatch.setattr(loop, "run", lambda *a, e=error, **k: (_ for _ in ()).throw(e))
    assert train.main(argv) == 1
    err = capsys.readouterr().err
    assert f"cannot write in {tmp_path}: {says}" in err and "resumes from the last complete checkpoint" in err
  monkeypatch.setattr(loop, "run", lambda *a, **k: (_ for _ in ()).throw(ValueError("a bug")))
  with pytest.raises(ValueError, match="a bug"):
    train.main(argv)


@pytest.fixture
def run_dir(tmp_path):
  """A trained run's workdir as far as its config goes (config.json, no checkpoint)."""
  (tmp_path / "config.json").write_text(load_config(os.path.join(ROOT, "configs", "baseline.py")).to_json())
  return tmp_path


@pytest.mark.parametrize(
  "argv, message",
  [
    (
      ["--config.scheme=abn"],
      (
        "--config.scheme cannot change in a trained run: its checkpoint holds the model built "
        "with it (the run in {run} was trained with scheme='baseline')"
      ),
    ),
    (["--config.model.backbone=resnet18"], "(the run in {run} was trained with model.backbone='vgg11_bn')"),
    (["--config.data.num_classes=5"], "--config.data.num_classes cannot change in a trained run"),
    (["--config.data.eval_batch_size=0"], "data.eval_batch_size=0: must be 1 or more"),
    (["--checkpoint", "foo"], "argument --checkpoint: 'foo' is not best, latest or a step number"),
    (
      ["--layer", "conv5_2", "--num-images", "3"],
      "--num-images, --layer: options of --localization, which is not given",
    ),
  ],
)
def test_evaluate_refuses_what_the_run_cannot_do(capsys, run_dir, argv, message):
  with pytest.raises(SystemExit) as e:
    evaluate.main(["--workdir", str(run_dir), *argv])
  assert e.value.code == 2
  assert message.format(run=run_dir) in capsys.readouterr().err


@pytest.mark.parametrize("text", ["{", "[1]"])
def test_evaluate_refuses_a_broken_run_config(capsys, tmp_path, text):
  (tmp_path / "config.json").write_text(text)
  with pytest.raises(SystemExit) as e:
    evaluate.main(["--workdir", str(tmp_path)])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert f"{tmp_path / 'config.json'} is not a" in err and "run config" in err and "Traceback" not in err


@pytest.mark.parametrize(
  "edit, message",
  [
    (lambda c: c["data"].pop("eval_batch_size"), "(it lacks the key 'eval_batch_size')"),
    (lambda c: c["data"].update(eval_batch_size="lots"), "(TypeError: "),
    (lambda c: c.update(scheme="abn"), "(it lacks the key 'abn')"),
    (lambda c: c.update(scheme="bogus"), "(ConfigError: Unknown scheme 'bogus'"),
    (lambda c: c["model"].update(dtype="float8"), "(ConfigError: Unknown compute dtype 'float8'"),
  ],
  ids=["missing-key", "wrong-type", "other-scheme", "unknown-scheme", "unknown-dtype"],
)
def test_evaluate_refuses_a_run_config_edited_by_hand_in_one_line(capsys, run_dir, edit, message):
  cfg = json.loads((run_dir / "config.json").read_text())
  edit(cfg)
  (run_dir / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(SystemExit) as e:
    evaluate.main(["--workdir", str(run_dir)])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert f"{run_dir / 'config.json'} does not describe a run this version can build {message}" in err, err
  assert "restore the file the training run wrote" in err and "Traceback" not in err


def test_only_a_missing_config_key_is_called_one():
  import ml_collections

  c = ml_collections.ConfigDict({"data": {"root": ""}})
  c.lock()
  for missing in (lambda: c.data.eval_batch_size, lambda: c["abn"]):
    with pytest.raises((AttributeError, KeyError)) as e:
      missing()
    assert "(it lacks the key '" in trained_run.edited("config.json", e.value)
  # Any other AttributeError from building the model is shown as it is, not read as a key named 'NoneType'.
  other = trained_run.edited("config.json", AttributeError("'NoneType' object has no attribute 'shape'"))
  assert "(AttributeError: 'NoneType' object has no attribute 'shape')" in other and "lacks" not in other


def test_a_run_config_takes_the_settings_a_run_can_change(run_dir):
  p = cli.parser("test", "", [])
  cfg = trained_run.run_config(p, str(run_dir), [("data.root", "/moved/data"), ("model.dtype", "float32")])
  assert (cfg.data.root, cfg.model.dtype, cfg.scheme) == ("/moved/data", "float32", "baseline")
  assert cli.checkpoint_arg("best") == "best" and cli.checkpoint_arg("1200") == "1200"


def test_a_run_saved_before_keys_were_added_reads_with_the_values_it_was_trained_with(run_dir):
  """config.ADDED_KEYS: a run trained before a key existed opens with the value that reproduces its training."""
  from fgattn_jax.config import ADDED_KEYS

  cfg = json.loads((run_dir / "config.json").read_text())
  for key in ADDED_KEYS:
    *groups, name = key.split(".")
    node = cfg
    for g in groups:
      node = node[g]
    del node[name]
  (run_dir / "config.json").write_text(json.dumps(cfg))
  run = trained_run.run_config(cli.parser("test", "", []), str(run_dir), [])
  assert (run.model.block, run.model.dropout, run.data.augment.crop, run.data.top_classes) == ("", None, "resize", 0)
  assert (run.data.split.val_fraction, run.data.split.test_fraction, run.data.augment.eval_rotation) == (0.1, 0.1, 0)


@pytest.mark.parametrize(
  "scheme, key, stage", [("abn", "abn.branch", "conv4_2"), ("macnn", "macnn.feature_stage", "conv3_2")]
)
def test_a_vgg_stage_left_in_a_config_switched_to_resnet_names_its_key(
  capsys, monkeypatch, tmp_path, scheme, key, stage
):
  monkeypatch.chdir(ROOT)
  assert (
    train.main(["--config", f"configs/{scheme}.py", "--workdir", str(tmp_path), "--config.model.backbone=resnet18"])
    == 2
  )
  err = capsys.readouterr().err
  assert (
    f"error: {key} '{stage}' is not a stage of this backbone (stem, layer1, layer2, layer3, layer4): set "
    f"--config.{key} to one of them"
    in err
    and "Traceback" not in err
  )


def test_missing_weights_and_data_are_one_line_errors(capsys, monkeypatch, tmp_path):
  monkeypatch.chdir(ROOT)
  assert train.main(["--config", "configs/baseline.py:cub", "--workdir", str(tmp_path)]) == 2
  assert "--config.model.pretrained=/path/to/vgg19.pth" in capsys.readouterr().err
  assert (
    train.main(
      ["--config", "configs/baseline.py:cub", "--workdir", str(tmp_path), "--config.model.require_pretrained=false"]
    )
    == 2
  )
  assert "--config.data.root" in capsys.readouterr().err


def test_sigterm_saves_and_the_same_command_resumes(tmp_path):
  cmd = [
    sys.executable,
    "-m",
    "fgattn_jax.train",
    "--config",
    "configs/baseline.py",
    "--workdir",
    str(tmp_path),
    "--no-progress",
    "--config.data.synthetic.num_train=256",
    "--config.data.synthetic.num_test=50",
    "--config.phases.main.epochs=3",
    "--config.log.every_steps=1",
    "--config.log.tensorboard=false",
  ]
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
  assert "tensorboard --logdir" not in done.stdout  # log.tensorboard=false: no event files to point at
