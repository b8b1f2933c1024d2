"""ABN learns the synthetic task, and its attention map points at the bird."""

import jax
import numpy as np
import pytest
from flax import nnx

from configs import abn as abn_config
from data_pipelines import pipeline as data
from fgattn_jax.ops import localization
from fgattn_jax.ops.images import normalize
from fgattn_jax.schemes import get_scheme
from fgattn_jax.training import checkpoint, loop

pytestmark = pytest.mark.slow  # a learning test (training runs to a threshold): `python -m pytest -m slow`


def test_abn_beats_chance_and_points_inside_the_box(tmp_path, optimized):
  c = abn_config.get_config()  # quarter-width VGG-11-BN at 64 px, an 8x8 attention map
  c.data.synthetic.num_train, c.data.synthetic.num_test = 1000, 300
  c.phases.main.epochs = 6
  c.eval.every_epochs = 0.0
  c.log.tensorboard = False
  results = loop.run(c, str(tmp_path), progress=False)
  perception, attention = results["logits"]["top1"], results["attention_branch"]["top1"]

  model = get_scheme("abn").build(c)
  checkpoint.load_model_weights(str(tmp_path), model, "latest")
  model.eval()
  maps_of = nnx.jit(lambda m, x: m(x)["attention"][..., 0])
  hits, chance = [], []
  for batch in data.build(c, "test", training=False):
    images = normalize(jax.numpy.asarray(batch["image"]), jax.numpy.float32)
    real = batch["mask"]
    hits += list(np.asarray(localization.pointing_game(maps_of(model, images), batch["box"], (64, 64)))[real])
    chance += list(np.asarray(localization.box_area_fraction(batch["box"], (64, 64)))[real])
  pointing, random_point = float(np.mean(hits)), float(np.mean(chance))
  print(
    f"perception top-1 {perception:.3f}, attention branch {attention:.3f}, "
    f"pointing game {pointing:.3f} vs {random_point:.3f} for a uniformly random point"
  )
  # What it reached: benchmarks/RESULTS.md, "The learning tests".
  assert perception > 0.35  # chance: 0.10
  assert pointing > random_point + 0.25
