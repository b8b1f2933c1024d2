"""python -m fgattn_jax.predict: new image files through a trained run give the run's own evaluation outputs."""

import csv
import json

import jax
import numpy as np
import pytest
from engine_config import tiny
from flax import nnx
from PIL import Image

from data_pipelines import pipeline as data
from fgattn_jax import predict
from fgattn_jax.schemes import get_scheme
from fgattn_jax.training import checkpoint, loop, steps
from fgattn_jax.training import mesh as mesh_lib


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  loop.run(tiny(main=3), str(workdir), progress=False)
  return workdir


def test_predictions_on_files_equal_the_runs_evaluation_outputs(run_dir, tmp_path, capsys):
  c = tiny(main=3)
  test = data.build(c, "test", training=False)
  folder = tmp_path / "mine"
  (folder / "sub").mkdir(parents=True)
  paths = []
  for i in range(5):  # the test split's first images, as lossless files (two in a subfolder)
    paths.append(folder / ("sub" if i >= 3 else "") / f"bird{i}.png")
    Image.fromarray(test.source.load_image(test.source[i]["image"])).save(paths[-1])
  (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a whole jpeg")
  (folder / "notes.txt").write_text("not an image, not read")

  assert predict.main(["--workdir", str(run_dir), str(folder), "--top", "3", "--out", str(tmp_path / "p.csv")]) == 0
  out = capsys.readouterr().out

  # The reference: the same images through the training engine's own evaluation step.
  model = get_scheme("baseline").build(c)
  checkpoint.load_model_weights(str(run_dir), model, "latest")
  mesh = mesh_lib.make_mesh()
  leaves, structure = jax.tree.flatten(mesh_lib.replicate(nnx.state(model), mesh))
  step = steps.make_eval_step(get_scheme("baseline"), nnx.graphdef(model), jax.numpy.float32, mesh)
  batch = next(iter(test))
  probs = np.asarray(jax.nn.softmax(step(leaves, mesh_lib.to_device(batch, mesh), structure)["logits"]))[:5]

  names = json.loads((run_dir / "class_names.json").read_text())
  assert names == test.source.class_names and len(names) == 10
  rows = list(csv.DictReader(open(tmp_path / "p.csv")))
  # broken.jpg is skipped and named; notes.txt is not an image file; the order: the folder's files sorted.
  order = [paths[i] for i in (0, 1, 2, 3, 4)]
  assert [r["path"] for r in rows] == [str(p) for p in order for _ in range(3)]
  for i, p in enumerate(order):
    mine = [r for r in rows if r["path"] == str(p)]
    best = np.argsort(-probs[i], kind="stable")[:3]
    assert [int(r["class"]) for r in mine] == best.tolist() and [r["rank"] for r in mine] == ["1", "2", "3"]
    np.testing.assert_allclose([float(r["probability"]) for r in mine], probs[i, best], rtol=1e-5, atol=1e-6)
    assert [r["name"] for r in mine] == [names[k] for k in best]
    assert f"{p}: {names[best[0]]} ({best[0]}) {100 * probs[i, best[0]]:.1f}%" in out
  assert "1 file(s) could not be read and were skipped: " + str(folder / "broken.jpg") in out
  assert "class names: " + str(run_dir / "class_names.json") in out


def test_without_the_workdirs_class_names_they_come_from_the_data_set_or_are_numbered(run_dir, tmp_path, capsys):
  c = tiny(main=3)
  source = data.open_source(c, "test")
  image = tmp_path / "one.png"
  Image.fromarray(source.load_image(source[0]["image"])).save(image)
  older = tmp_path / "older_run"  # a run trained before workdirs kept their class names
  older.mkdir()
  for name in ("config.json", "checkpoints"):
    (older / name).symlink_to(run_dir / name)
  assert predict.main(["--workdir", str(older), str(image), "--top", "1"]) == 0
  assert "class names: the data set (synthetic)" in capsys.readouterr().out
  assert (
    predict.main(
      [
        "--workdir",
        str(older),
        str(image),
        "--config.data.source=folder",
        "--config.data.name=cub",
        f"--config.data.root={tmp_path / 'gone'}",
      ]
    )
    == 0
  )
  out = capsys.readouterr().out
  assert "class names: none: " in out and "CUB-200-2011 not found" in out
  assert f"{image}: " in out and "%" in out and "(" not in out.split(f"{image}: ")[1]  # numbers, no names


def test_bad_paths_and_flags_are_refused_with_the_reason(run_dir, tmp_path, capsys):
  assert predict.main(["--workdir", str(run_dir), str(tmp_path / "nowhere.jpg")]) == 2
  assert "nowhere.jpg: no such file or folder" in capsys.readouterr().err
  (tmp_path / "empty").mkdir()
  assert predict.main(["--workdir", str(run_dir), str(tmp_path / "empty")]) == 2
  assert "no image files (.jpg" in capsys.readouterr().err
  (tmp_path / "bad.png").write_bytes(b"garbage")
  assert predict.main(["--workdir", str(run_dir), str(tmp_path / "bad.png")]) == 2
  assert "could be decoded" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    predict.main(["--workdir", str(run_dir), str(tmp_path / "bad.png"), "--top", "0"])
  assert "--top must be at least 1" in capsys.readouterr().err


def test_a_multi_task_run_is_refused_before_its_checkpoint_is_read(tmp_path, capsys):
  # A multi-task ABN run (attribute tasks, no single classifier) in a workdir without checkpoints: refused for what
  # it is, not for the checkpoint it would have read first.
  from configs import abn

  c = abn.get_config("synthetic_parts")
  c.model.width, c.model.backbone = 1 / 16, "vgg11_bn"
  assert c.abn.task_classes
  (tmp_path / "config.json").write_text(c.to_json())
  (tmp_path / "bird.png").write_bytes(b"")
  with pytest.raises(SystemExit):
    predict.main(["--workdir", str(tmp_path), str(tmp_path / "bird.png")])
  err = capsys.readouterr().err
  assert "predicts attributes (multi-task abn)" in err and "No checkpoint" not in err
