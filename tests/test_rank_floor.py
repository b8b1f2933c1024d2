"""benchmarks/rank_floor.py on a tiny trained RA-CNN run: the APN's ranking loss beside the grid's floor, and the
floor's order (the best box per image can only be at or below the best box shared by all images)."""

import pytest
from engine_config import tiny

from benchmarks import rank_floor
from configs import racnn as racnn_config
from fgattn_jax.training import loop

pytestmark = pytest.mark.slow  # trains a run first


def test_the_floor_of_a_trained_run(tmp_path, capsys):
  c = tiny(main=2)
  c.scheme = "racnn"
  c.racnn = racnn_config.get_config().racnn
  c.racnn.update(scale_input=16, apn_hidden=8, apn_grid=2)
  c.phases.main.losses = {"cls": 1.0, "rank": 1.0, "fused": 1.0}
  loop.run(c, str(tmp_path), progress=False)
  r = rank_floor.floor(str(tmp_path), images=8)
  assert r["images"] == 8 and 0 <= r["p1"] <= 1 and 0 <= r["p2_apn"] <= 1
  assert 0 <= r["hinge_best_box_per_image"] <= r["hinge_best_shared_box"]
  assert r["hinge_apn"] >= 0 and len(r["apn_half_side"]) == 3
  assert rank_floor.main(["--workdir", str(tmp_path), "--images", "8"]) == 0
  assert "the best box per image" in capsys.readouterr().out
