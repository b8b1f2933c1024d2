"""The visualize command and evaluate --localization on a short synthetic run of each scheme: panels and index
written where asked, PNGs that open at the expected size, metrics for every map kind."""

import importlib
import json
import os
import shutil

import pytest
from PIL import Image

from data_pipelines import pipeline
from data_pipelines.sources.base import Source
from fgattn_jax import cli, evaluate, visualize
from fgattn_jax.training import loop

RES = 32


def short_run(scheme, workdir, preset=None):
  """One step of the scheme's bare config (or a preset of it), at 32 px with a 1/16-width VGG-11-BN."""
  c = importlib.import_module(f"configs.{scheme}").get_config(preset)
  c.model.width, c.model.dtype = 1 / 16, "float32"
  c.data.image_size, c.data.resize_size = RES, 36
  c.data.synthetic.num_train, c.data.synthetic.num_test = 16, 6
  c.data.batch_size, c.data.eval_batch_size = 8, 4
  if scheme == "racnn":
    c.racnn.update(num_scales=3, scale_input=24)
  if scheme == "macnn":
    c.macnn.part_input = 16
  # One step of the first phase: a checkpoint of the full model (every scheme builds all its parts up front), and
  # one train-step compilation instead of one per phase.
  first = c.phase_order[0]
  c.phases[first].epochs, c.phases[first].steps, c.phases[first].cycle = 0, 1, False
  c.phases, c.phase_order = {first: c.phases[first]}, (first,)
  c.eval.every_epochs = 0.0
  c.log.tensorboard = False
  loop.run(c, str(workdir), progress=False)
  return workdir


_RUNS = {}


def trained(scheme, tmp_path_factory):
  """One short run per scheme for the whole module (the tests only read it)."""
  if scheme not in _RUNS:
    _RUNS[scheme] = short_run(scheme, tmp_path_factory.mktemp(scheme))
  return _RUNS[scheme]


@pytest.fixture(params=["baseline", "abn", "macnn", "racnn"])
def run(request, tmp_path_factory):
  return request.param, trained(request.param, tmp_path_factory)


# Tiles in a panel: input, the scheme's own (ABN: the map; MA-CNN: the part maps and one crop per part; RA-CNN: the
# boxes and the zoomed input of scales 2 and 3), CAM (pooled-linear heads), Grad-CAM and guided Grad-CAM for the
# predicted and the true class.
TILES = {"baseline": 1 + 0 + 2 + 4, "abn": 1 + 1 + 2 + 4, "macnn": 1 + 1 + 4 + 2 + 4, "racnn": 1 + 1 + 2 + 2 + 4}


def test_visualize_draws_your_own_images_with_the_predicted_class_only(tmp_path_factory, tmp_path, capsys):
  workdir = trained("baseline", tmp_path_factory)
  source = pipeline.open_source(json_config(workdir), "test")
  mine = tmp_path / "mine"
  mine.mkdir()
  for i in range(2):
    Image.fromarray(source.load_image(source[i]["image"])).save(mine / f"my_bird_{i}.png")
  out = tmp_path / "panels"
  assert visualize.main(["--workdir", str(workdir), str(mine), "--out", str(out)]) == 0
  assert "2 panels of 'files'" in capsys.readouterr().out
  assert sorted(os.listdir(out)) == ["files_000000.png", "files_000001.png", "index.html"]
  index = (out / "index.html").read_text()
  assert "my_bird_0.png: predicted " in index and "my_bird_1.png: predicted " in index and "true" not in index
  ((width, _),) = {Image.open(out / p).size for p in ("files_000000.png", "files_000001.png")}
  tile = 160  # input, CAM, Grad-CAM and guided Grad-CAM of the predicted class: 4 tiles (no true class)
  assert 4 * tile <= width < 4 * (tile + 40)
  with pytest.raises(SystemExit):
    visualize.main(["--workdir", str(workdir), str(mine), "--split", "train"])
  assert "either --split or your own image PATHs" in capsys.readouterr().err


def json_config(workdir):
  import ml_collections

  return ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))


def test_visualize_writes_a_panel_per_image_and_the_index(run, tmp_path, capsys):
  scheme, workdir = run
  out = tmp_path / "nested" / "panels"
  assert (
    visualize.main(["--workdir", str(workdir), "--num-images", "5", "--out", str(out), "--checkpoint", "latest"]) == 0
  )
  assert "5 panels" in capsys.readouterr().out
  pngs = sorted(p for p in os.listdir(out) if p.endswith(".png"))
  assert len(pngs) == 5  # over two batches of 4
  assert sorted(os.listdir(out)) == sorted(pngs + ["index.html"])  # nothing else, nowhere else
  index = (out / "index.html").read_text()
  assert all(p in index for p in pngs)
  sizes = {Image.open(out / p).size for p in pngs}
  assert len(sizes) == 1  # the same layout for every image of the run
  ((width, _),) = sizes
  tile = 160  # 32-pixel images are enlarged to 160 (overlays.panel's minimum tile side)
  per_row = min(TILES[scheme], 6)
  assert width >= per_row * tile and width < per_row * (tile + 40)
  assert not (workdir / "visualize").exists()


def test_visualize_default_folder_layer_choice_and_amplify(tmp_path_factory, capsys, monkeypatch):
  workdir = trained("baseline", tmp_path_factory)
  assert (
    visualize.main(
      [
        "--workdir",
        str(workdir),
        "--num-images",
        "2",
        "--layer",
        "conv3_2",
        "--amplify",
        "conv4_2:0",
        "--checkpoint",
        "latest",
      ]
    )
    == 0
  )
  out = workdir / "visualize" / "test_step1"
  assert len(list(out.glob("*.png"))) == 2 and (out / "index.html").exists()
  shutil.rmtree(out.parent)  # the other tests check that nothing else is written into the run
  with pytest.raises(SystemExit):
    visualize.main(["--workdir", str(workdir), "--layer", "conv9_9"])
  assert "'conv9_9' does not run in this model; its stages: conv1_1" in capsys.readouterr().err
  # A channel the layer lacks: JAX would clamp the index and amplify another channel.
  for channel in ("9999", "-1"):
    with pytest.raises(SystemExit):
      visualize.main(["--workdir", str(workdir), "--amplify", f"conv4_2:{channel}"])
    assert f"conv4_2 has 32 channels (0..31); there is no channel {channel}" in capsys.readouterr().err
  # Refused before any work, each with the reason: a channel with 'class', no steps, an --out under a file.
  (workdir.parent / "a_file").write_text("")
  for argv, message in [
    (["--amplify", "class:3"], "a channel goes with a stage"),
    (["--amplify", "class", "--amplify-steps", "0"], "--amplify-steps must be at least 1"),
    (["--out", str(workdir.parent / "a_file" / "panels")], "a_file is a file, not a folder"),
  ]:
    with pytest.raises(SystemExit):
      visualize.main(["--workdir", str(workdir), *argv])
    assert message in capsys.readouterr().err
  # A run on a read-only disk (as root, a mode does not stop a write: the check is os.access's): refused before
  # any work, the --out to give named. (The panels used to be computed, then lost to a PermissionError.)
  monkeypatch.setattr(cli.os, "access", lambda path, mode: not str(path).startswith(str(workdir)))
  for command in (visualize, evaluate):
    with pytest.raises(SystemExit):
      command.main(["--workdir", str(workdir)])
    err = capsys.readouterr().err
    assert f"the default output folder {workdir}" in err and "(give --out DIR)" in err and "is not writable" in err
  monkeypatch.undo()
  assert visualize.main(["--workdir", str(workdir), "--num-images", "1", "--layer", "conv3_2#1"]) == 0  # = conv3_2
  assert "Grad-CAM at conv3_2)" in capsys.readouterr().out
  shutil.rmtree(workdir / "visualize")


def test_a_multi_task_runs_panels_number_the_tasks_classes_and_name_the_task(tmp_path, capsys):
  workdir = short_run("abn", tmp_path / "run", preset="synthetic_parts")
  out = tmp_path / "p"
  assert visualize.main(["--workdir", str(workdir), "--num-images", "2", "--out", str(out)]) == 0
  captions = [line for line in (out / "index.html").read_text().splitlines() if "predicted" in line]
  # Task 0's classes are a part's patterns, not the data set's bird classes: numbered, under the task's name.
  assert len(captions) == 2 and all("task0: predicted " in c for c in captions), captions
  names = json.loads((workdir / "class_names.json").read_text())
  assert not any(name in c for c in captions for name in names)


def test_a_zoomed_streams_grad_cam_is_drawn_on_its_own_input_and_not_scored(
  tmp_path_factory, tmp_path, capsys, monkeypatch
):
  workdir = trained("racnn", tmp_path_factory)
  drawn = []
  panel = visualize.overlays.panel
  monkeypatch.setattr(visualize.overlays, "panel", lambda tiles, **kw: drawn.append(tiles) or panel(tiles, **kw))
  assert (
    visualize.main(
      ["--workdir", str(workdir), "--num-images", "1", "--layer", "conv5_2#3", "--out", str(tmp_path / "p")]
    )
    == 0
  )
  (tiles,) = drawn
  gradcams = {caption: tile.shape for caption, tile in tiles if "Grad-CAM" in caption}
  # Scale 3's stage sees the 24-pixel zoom, not the 32-pixel image: its map is drawn on that input; no guided
  # Grad-CAM (the image's gradient times a map of another frame).
  assert gradcams == {
    "scale 3 input: Grad-CAM, predicted class": (24, 24, 3),
    "scale 3 input: Grad-CAM, true class": (24, 24, 3),
  }
  assert any(caption.startswith("CAM (scale1 head)") for caption, _ in tiles)  # CAM reads scale 1's own head
  # The localisation metrics score maps in the image's frame: refused up front, before the evaluation runs.
  for layer, message in [
    (
      "conv5_2#2",
      "'conv5_2#2' sees a crop, not the image: the metrics score maps in the image; stages on the image: conv1_1,",
    ),
    ("bogus", "layer 'bogus' does not run in this model"),
  ]:
    with pytest.raises(SystemExit):
      evaluate.main(["--workdir", str(workdir), "--localization", "--layer", layer, "--out", str(tmp_path / "e")])
    assert message in capsys.readouterr().err
  assert not (tmp_path / "e").exists()


def test_evaluate_localization_scores_every_map_kind(run, tmp_path, capsys):
  scheme, workdir = run
  assert (
    evaluate.main(
      [
        "--workdir",
        str(workdir),
        "--checkpoint",
        "latest",
        "--out",
        str(tmp_path),
        "--localization",
        "--deletion-steps",
        "4",
      ]
    )
    == 0
  )
  assert "pointing" in capsys.readouterr().out
  (path,) = tmp_path.glob("*_localization.json")
  maps = json.loads(path.read_text())["maps"]
  kinds = {
    "baseline": {"cam", "gradcam"},
    "abn": {"attention", "cam", "gradcam"},
    "macnn": {"attention", "cam", "gradcam"},
    "racnn": {"attention", "cam", "gradcam"},
  }[scheme]
  assert set(maps) == kinds
  for kind, m in maps.items():
    assert m["count"] == 6
    assert 0 <= m["pointing"] <= 1 and 0 < m["chance"] < 1
    assert 0 <= m["deletion"] <= 1 and 0 <= m["insertion"] <= 1
  if scheme == "macnn":
    assert 0 <= maps["attention"]["part_hit"] <= 1 and 0 <= maps["attention"]["distinct_parts"] <= 4


class WithoutParts(Source):
  """A source as Aircraft, Cars and Dogs are: boxes, no part points (the pipeline's batches have no 'parts')."""

  def __init__(self, inner):
    self.inner, self.name = inner, "boxes only"
    self.num_classes, self.class_names = inner.num_classes, inner.class_names

  def __len__(self):
    return len(self.inner)

  @property
  def labels(self):
    return self.inner.labels

  def _example(self, index):
    return {k: v for k, v in self.inner._example(index).items() if k != "parts"}


def test_visualize_and_localization_on_a_data_set_without_part_points(tmp_path_factory, tmp_path, monkeypatch):
  workdir = trained("macnn", tmp_path_factory)  # the scheme with part maps, scored against part points if any
  opened = pipeline.open_source
  monkeypatch.setattr(pipeline, "open_source", lambda config, split: WithoutParts(opened(config, split)))
  assert (
    visualize.main(
      ["--workdir", str(workdir), "--num-images", "2", "--out", str(tmp_path / "panels"), "--checkpoint", "latest"]
    )
    == 0
  )
  assert len(list((tmp_path / "panels").glob("*.png"))) == 2
  assert (
    evaluate.main(
      [
        "--workdir",
        str(workdir),
        "--checkpoint",
        "latest",
        "--out",
        str(tmp_path),
        "--localization",
        "--deletion-steps",
        "2",
        "--num-images",
        "2",
      ]
    )
    == 0
  )
  (path,) = tmp_path.glob("*_localization.json")
  attention = json.loads(path.read_text())["maps"]["attention"]
  assert attention["count"] == 2 and 0 <= attention["pointing"] <= 1 and "part_hit" not in attention


def test_a_grad_cam_that_is_zero_everywhere_is_said_to_be():
  import numpy as np

  batch = {"image": np.full((1, 8, 8, 3), 128, np.uint8), "box": np.full((1, 4), np.nan, np.float32)}
  maps = {
    "attention": {},
    "probs": np.array([[0.7, 0.3]]),
    "classes": {"pred": [0], "true": [1]},
    "gradcam_pred": np.zeros((1, 2, 2)),
    "guided_pred": np.zeros((1, 8, 8, 3)),
    "gradcam_true": np.array([[[0.0, 1.0], [0.5, 0.0]]]),
    "guided_true": np.ones((1, 8, 8, 3)),
  }
  tiles, footer = visualize.panel_tiles(batch, maps, None, 0, "conv5_4", ["a", "b"])
  assert [caption for caption, _ in tiles] == [
    "input, ground truth",
    "[all zero] Grad-CAM (conv5_4), predicted class",
    "[all zero] guided Grad-CAM, predicted class",
    "Grad-CAM (conv5_4), true class",
    "guided Grad-CAM, true class",
  ]
  assert footer[0] == "predicted a (0), true b (1)"
