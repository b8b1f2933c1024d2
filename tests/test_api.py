"""fgattn_jax.load_run: README's Python block runs as written against a trained run, and its answers are the
commands' (the same probabilities as the engine's evaluation step), and a run it cannot serve is refused."""

import re
from pathlib import Path

import numpy as np
import pytest
from engine_config import tiny
from PIL import Image

import fgattn_jax
from fgattn_jax.errors import ConfigError
from fgattn_jax.training import loop

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  path = tmp_path_factory.mktemp("api") / "run"
  loop.run(tiny(main=3), str(path), progress=False)
  return path


def readme_block() -> str:
  text = README.read_text()
  return re.search(r"## Python API\n.*?```python\n(.*?)```", text, re.S).group(1)


def test_the_readme_example_runs(workdir, tmp_path, capsys):
  bird = tmp_path / "bird.jpg"
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(bird)
  code = readme_block().replace('"workdirs/macnn"', repr(str(workdir))).replace('"bird.jpg"', repr(str(bird)))
  scope = {}
  exec(compile(code, "README.md (Python API)", "exec"), scope)
  probs, cams, seen = scope["probs"], scope["cams"], scope["seen"]
  assert probs.shape == (2, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
  assert cams.shape[0] == 2 and cams.ndim == 3 and np.isfinite(cams).all()
  assert seen.shape == (2, 32, 32, 3) and seen.dtype == np.uint8
  top = eval(capsys.readouterr().out)  # noqa: S307 - the example printed run.top(...)
  assert len(top) == 3 and [p for _, p in top] == sorted([p for _, p in top], reverse=True)
  assert top[0][1] == pytest.approx(probs[0].max(), rel=1e-6)


def test_predictions_are_the_evaluation_steps(workdir):
  """The same probabilities as the engine's evaluation step on the same transformed images."""
  import jax
  from flax import nnx

  from fgattn_jax.models.registry import compute_dtype
  from fgattn_jax.training import mesh as mesh_lib
  from fgattn_jax.training import steps

  run = fgattn_jax.load_run(workdir)
  images = [np.random.default_rng(i).integers(0, 256, (40 + i, 36, 3), dtype=np.uint8) for i in range(3)]
  mesh = mesh_lib.make_mesh(1)
  eval_step = steps.make_eval_step(run.scheme, nnx.graphdef(run.model), compute_dtype("float32"), mesh)
  state = mesh_lib.replicate(nnx.state(run.model), mesh)
  leaves, structure = jax.tree.flatten(state)
  batch = {"image": run.transform(images), "label": np.zeros(3, np.int32), "mask": np.ones(3, bool)}
  logits = np.asarray(eval_step(leaves, mesh_lib.to_device(batch, mesh), structure)["logits"])
  expected = np.exp(logits - logits.max(1, keepdims=True))
  np.testing.assert_allclose(run.predict(images), expected / expected.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)
  assert run.step == 3 and run.class_names == [str(n) for n in run.class_names] and len(run.class_names) == 10


def test_a_missing_run_or_a_multi_task_run_is_refused(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json not found"):
    fgattn_jax.load_run(tmp_path)
  from configs import abn as abn_config

  c = tiny(main=1)
  c.scheme, c.abn = "abn", abn_config.get_config("synthetic_parts").abn
  c.model.backbone, c.model.head, c.abn.branch = "vgg11_bn", "gap", "conv4_2"
  c.phases.main.losses = {"att": 1.0, "per": 1.0}
  (tmp_path / "config.json").write_text(c.to_json())
  with pytest.raises(ConfigError, match="predicts attributes"):
    fgattn_jax.load_run(tmp_path)
