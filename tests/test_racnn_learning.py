"""RA-CNN learns to look closer on the synthetic task: after its alternating schedule the scale-2 box holds the
discriminative parts far more often than a random box of the same size, and scale 2 classifies better than
scale 1 (the 'closer' preset's regime: scale 1 sees a 128-pixel image at 96, too coarse for its 2-pixel stripes;
the zoom samples the 128-pixel image and is seen at 80, at least the image's own resolution)."""

import jax
import numpy as np
import pytest
from flax import nnx

from configs import racnn as racnn_config
from data_pipelines import pipeline as data
from fgattn_jax.localize import parts_inside
from fgattn_jax.ops.images import normalize
from fgattn_jax.schemes import get_scheme
from fgattn_jax.training import checkpoint, loop

pytestmark = pytest.mark.slow  # a learning test (training runs to a threshold): `python -m pytest -m slow`


def test_racnn_scale2_box_finds_the_parts_and_scale2_beats_scale1(tmp_path, optimized):
  c = racnn_config.get_config("closer")
  c.data.synthetic.num_train, c.data.synthetic.num_test = 800, 300
  # The preset's schedule, shortened to fit CI: scales 4 -> 2 epochs, classify 2 -> 1 (apn_init 2, apn 1, two
  # cycles): 8 epochs instead of 12, 282 s instead of 370 s on 2 cores beside the MA-CNN learning test (240 s since
  # the APN pretraining skips the last scale and each xdist worker runs one XLA thread).
  c.phases.scales.epochs, c.phases.classify.epochs = 2, 1
  c.eval.every_epochs = 0.0
  c.log.tensorboard = False
  results = loop.run(c, str(tmp_path), progress=False)
  s1, s2 = results["scale1"]["top1"], results["scale2"]["top1"]

  model = get_scheme("racnn").build(c)
  checkpoint.load_model_weights(str(tmp_path), model, "latest")
  model.eval()
  boxes_of = nnx.jit(lambda m, x: m(x)["boxes"][0])
  res, to_image = c.data.image_size, c.data.image_size / c.racnn.scale1_input  # boxes come in scale 1's pixels
  rng = np.random.default_rng(0)
  found, random = [], []
  for batch in data.build(c, "test", training=False):
    real = batch["mask"]
    boxes = np.asarray(boxes_of(model, normalize(jax.numpy.asarray(batch["image"]), jax.numpy.float32)))[real]
    boxes, parts = boxes * to_image, batch["parts"][real]
    side = boxes[:, 2] - boxes[:, 0]
    x0, y0 = rng.uniform(0, res - side), rng.uniform(0, res - side)
    found.append(parts_inside(boxes, parts))
    random.append(parts_inside(np.stack([x0, y0, x0 + side, y0 + side], axis=1), parts))
  found, random = np.concatenate(found), np.concatenate(random)
  share, share_r = found.mean(), random.mean()
  every, every_r = found.all(axis=1).mean(), random.all(axis=1).mean()
  print(
    f"scale 1 top-1 {s1:.3f}, scale 2 {s2:.3f}, fused {results['logits']['top1']:.3f}; parts in the scale-2 box "
    f"{share:.2f} vs {share_r:.2f} for a random box of the same size; all four parts {every:.2f} vs {every_r:.2f}"
  )
  # What it reached, and before the fixes: benchmarks/RESULTS.md, "The learning tests".
  assert every > every_r + 0.2
  assert share > share_r + 0.1
  assert s2 > s1 + 0.05
