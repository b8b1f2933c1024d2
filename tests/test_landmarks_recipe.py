"""The landmark recipe is one command: `configs/baseline.py:landmarks` and `configs/abn.py:landmarks` train from the
command line on a generated Google Landmarks v2 tree (train.csv, train/a/b/c/<id>.jpg) with a torchvision VGG-16
file, keep its features frozen, evaluate on the stratified val split, and `evaluate --split test` scores the test
split; everything at a tiny width and 64 pixels."""

import json

import jax
import numpy as np
import pytest
import torch
from data_trees import write_landmarks
from torch_reference import TorchVGG, randomize_

from configs import abn as abn_config
from configs import baseline as baseline_config
from fgattn_jax import evaluate, train
from fgattn_jax.schemes import get_scheme
from fgattn_jax.training import checkpoint

# Six landmarks, the two smallest beyond top_classes=4; 20 images each split 70/15/15: 14 / 3 / 3.
COUNTS = {11: 20, 23: 20, 37: 20, 42: 20, 50: 6, 64: 5}
TINY = [
  "--config.model.width=0.0625",
  "--config.model.dtype=float32",
  "--config.data.image_size=64",
  "--config.data.resize_size=72",
  "--config.data.top_classes=4",
  "--config.data.batch_size=8",
  "--config.data.eval_batch_size=8",
  "--config.phases.main.steps=4",
  "--config.phases.main.schedule.warmup_epochs=0",
  "--config.log.every_steps=1",
  "--config.log.tensorboard=false",
  "--no-progress",
]


@pytest.fixture(scope="module")
def landmarks(tmp_path_factory):
  root = tmp_path_factory.mktemp("gldv2")
  write_landmarks(root, COUNTS)
  weights = root / "vgg16.pth"
  torch.save(randomize_(TorchVGG("vgg16", 1000, width=1 / 16)).state_dict(), weights)
  return root, weights


def test_presets_are_the_recipe():
  for config in (baseline_config.get_config("landmarks"), abn_config.get_config("landmarks")):
    d = config.data
    assert (d.source, d.name, d.top_classes, d.num_classes, d.eval_split) == ("folder", "landmarks", 100, 100, "val")
    assert (d.split.val_fraction, d.split.test_fraction, d.balanced) == (0.15, 0.15, True)
    assert (d.augment.rotation, d.augment.eval_rotation, d.augment.brightness, d.augment.flip) == (45, 45, 0.25, True)
    assert (d.image_size, d.resize_size) == (224, 256)
    m = config.model
    assert (m.backbone, m.head, m.freeze_features, m.require_pretrained) == ("vgg16", "classifier", True, True)
  abn = abn_config.get_config("landmarks")
  assert abn.abn.branch == "pool5" and dict(abn.phases.main.losses) == {"att": 0.25, "per": 1.0}


@pytest.mark.parametrize("config", ["baseline", "abn"])
def test_the_recipe_runs_from_the_command_line(landmarks, tmp_path, config):
  root, weights = landmarks
  workdir = tmp_path / config
  assert (
    train.main(
      [
        f"--config=configs/{config}.py:landmarks",
        f"--workdir={workdir}",
        f"--config.data.root={root}",
        f"--config.model.pretrained={weights}",
        *TINY,
      ]
    )
    == 0
  )
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["data"]["num_classes"] == 4  # follows top_classes
  names = json.loads((workdir / "class_names.json").read_text())
  assert len(names) == 4 and not any(str(k) in n for n in names for k in (50, 64))  # the two smallest left out
  evals = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [e["step"] for e in evals if e["split"] == "eval"][-1] == 4  # on the val split (data.eval_split)

  # The features are the file's, frozen: every conv kernel as loaded; the classifier trained.
  from fgattn_jax import config as config_lib

  cfg = config_lib.config_from_args(
    f"configs/{config}.py:landmarks", [("data.top_classes", "4"), ("model.width", "0.0625")]
  )
  model = get_scheme(config).build(cfg)
  checkpoint.load_model_weights(str(workdir), model)
  backbone = model.backbone if config == "abn" else model
  reference = torch.load(weights)
  convs = [(prefix, module) for prefix, module, _ in backbone.torchvision_modules() if prefix.startswith("features.")]
  assert len(convs) == 13
  for prefix, conv in convs:  # torch (out, in, kh, kw) -> layers.conv (out, kh, kw, in)
    np.testing.assert_allclose(
      np.asarray(conv.kernel), reference[f"{prefix}.weight"].numpy().transpose(0, 2, 3, 1), atol=1e-6
    )
  fc2 = reference["classifier.3.weight"].numpy().T
  assert not np.allclose(np.asarray(backbone.head.fc2.kernel), fc2, atol=1e-6)  # the dropout classifier trains
  if config == "abn":
    out = model(jax.numpy.zeros((2, 64, 64, 3)))
    assert out["attention"].shape == (2, 2, 2, 1)  # pool5's map: 64 / 32

  # The held-out test split, with the recipe's rotated evaluation images: 3 images of each of the 4 classes.
  out = tmp_path / f"{config}_test"
  assert evaluate.main([f"--workdir={workdir}", "--split=test", f"--out={out}"]) == 0
  metrics = json.loads(next(out.glob("*metrics.json")).read_text())
  assert metrics["count"] == 12 and [c["count"] for c in metrics["per_class_accuracy"]] == [3] * 4
