"""MA-CNN learns the synthetic task through its alternating schedule: the channel-grouping loss falls, each
part map settles on one ground-truth part, and the joint classifier is at least as good as the object stream."""

import jax
import numpy as np
from flax import nnx

from configs import macnn as macnn_config
from data_pipelines import pipeline as data
from fgattn_jax.ops.images import normalize
from fgattn_jax.schemes import get_scheme
from fgattn_jax.training import checkpoint, loop, writers

RES = 64


def nearest_parts(points, parts):
  """(B, N, 2) points, (B, P, 2) ground-truth parts -> (B, N) index of the nearest part of each point."""
  return np.argmin(((parts[:, None] - points[:, :, None]) ** 2).sum(-1), axis=-1)


def part_statistics(nearest):
  """(S, N) nearest part of each map's peak -> (distinct parts per image, per-map consistency): how often each
  map lands on the part it lands on most."""
  distinct = np.mean([len(set(row)) for row in nearest])
  consistency = [np.bincount(nearest[:, i]).max() / len(nearest) for i in range(nearest.shape[1])]
  return float(distinct), np.array(consistency)


def test_macnn_alternating_schedule_learns_parts(tmp_path):
  c = macnn_config.get_config()  # quarter-width VGG-11-BN; conv3_2 part maps; 4 parts with part streams
  c.data.image_size, c.data.resize_size = RES, 72  # a 16x16 part map, 16-pixel crops seen at 32
  c.data.synthetic.num_train, c.data.synthetic.num_test = 1200, 300
  for name, epochs in dict(object=4, init=1, grouping=1, classify=1, parts=2).items():
    c.phases[name].epochs = epochs
  c.eval.every_epochs = 0.0
  c.log.tensorboard = False
  results = loop.run(c, str(tmp_path), progress=False)
  joint, obj = results["logits"]["top1"], results["object"]["top1"]

  cng = [(r["phase"], r["loss/cng"]) for r in writers.read_metrics(tmp_path) if r.get("split") == "train"]
  grouping = [v for phase, v in cng if phase.startswith("grouping")]
  before, after = np.mean(grouping[:2]), np.mean(grouping[-2:])

  model = get_scheme("macnn").build(c)
  checkpoint.load_model_weights(str(tmp_path), model, "latest")
  model.eval()
  maps_of = nnx.jit(lambda m, x: m.attend(x)[1])
  rng = np.random.default_rng(0)
  found, random = [], []
  for batch in data.build(c, "test", training=False):
    maps = np.asarray(maps_of(model, normalize(jax.numpy.asarray(batch["image"]), jax.numpy.float32)))
    b, h, w, n = maps.shape
    flat = maps.reshape(b, h * w, n).argmax(axis=1)
    peaks = np.stack([(flat % w + 0.5) * RES / w, (flat // w + 0.5) * RES / h], axis=-1)
    real = batch["mask"]
    found.append(nearest_parts(peaks, batch["parts"])[real])
    random.append(nearest_parts(rng.uniform(0, RES, peaks.shape), batch["parts"])[real])
  (distinct, consistency), (distinct_r, consistency_r) = (part_statistics(np.concatenate(x)) for x in (found, random))
  print(f"joint top-1 {joint:.3f}, object stream {obj:.3f}; L_cng in the grouping phases {before:.2f} -> {after:.2f}; "
        f"per-map consistency {np.round(consistency, 2)} vs {np.round(consistency_r, 2)} for random points; "
        f"distinct parts per image {distinct:.2f} vs {distinct_r:.2f}")
  # Measured on the 2-core CI machine: joint 1.000, object stream 0.897; L_cng 55.6 -> 34.0; per-map
  # consistency 0.51-0.55 where random points give at most 0.32. Not asserted, because it does not hold yet
  # (issue #6): the maps do not spread over different parts (1.10 distinct parts per image, random 2.52).
  assert after < 0.8 * before
  assert np.all(consistency > consistency_r.max() + 0.15)
  assert joint > 0.3 and joint >= obj - 0.01  # chance: 0.10
