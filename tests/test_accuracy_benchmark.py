"""benchmarks/accuracy.py: its hit and chance scores on planted maps and boxes, its verdict on made-up runs, and the
whole benchmark at a toy size (a few training steps per scheme) on the CPU."""

import json
import math

import numpy as np
import pytest

from benchmarks import accuracy

NAN2 = [np.nan, np.nan]


def test_a_map_peaked_on_a_part_hits_and_chance_is_the_discs_share_of_the_image():
  maps = np.zeros((2, 5, 5, 2), np.float32)
  maps[0, 2, 2, 0] = 1.0  # the cell centred (10, 10): on part 0
  maps[0, 0, 4, 1] = 1.0  # (18, 2): far from both parts
  maps[1, 2, 2, 0] = 1.0  # on part 0 again; the second map flat: it points nowhere, a miss
  parts = np.array([[[10, 10], [3, 17]], [[10.5, 9.5], NAN2]], np.float32)
  s = accuracy.score_maps(maps, parts, (20, 20), radius=2.0)
  assert s["peaks"] == 4 and s["hits"] == 2 and s["images"] == 2 and s["distinct"] == 2
  # Pixel centres (k + 0.5) within 2 pixels of (10, 10), a pixel corner: 12 of 400, 3 per quadrant; two parts far
  # apart: 24. Of (10.5, 9.5), a pixel centre: itself, 4 at 1, 4 at sqrt(2), 4 at 2: 13. Each map counts its image's.
  np.testing.assert_allclose(s["chance"], 2 * (24 + 13) / 400)
  r = accuracy.finish_kind(s, label="x", own=True, primary=True)
  assert r["hit"] == 0.5 and r["chance"] == pytest.approx(37 / 800) and r["ratio"] == pytest.approx(0.5 * 800 / 37)
  # Near the continuous answer, pi r^2 over the area, for a larger radius
  one = np.array([[[50, 50], NAN2]], np.float32)
  s = accuracy.score_maps(np.ones((1, 4, 4, 1), np.float32), one, (100, 100), radius=10.0)
  assert s["hits"] == 0 and s["chance"] == pytest.approx(math.pi * 100 / 10000, rel=0.02)
  # Inside the object's box: the box (8, 8)-(12, 12) holds 16 pixel centres, the 12 within 2 of (10, 10) among them;
  # the second image's box is the whole image (13 of 400).
  boxes = np.array([[8, 8, 12, 12], [0, 0, 20, 20]], np.float32)
  s = accuracy.score_maps(maps, parts, (20, 20), radius=2.0, boxes=boxes)
  np.testing.assert_allclose(s["chance_box"], 2 * (12 / 16 + 13 / 400))
  assert accuracy.finish_kind(s, label="x")["chance_in_box"] == pytest.approx((12 / 16 + 13 / 400) / 2)
  # Images without any part are left out
  s = accuracy.score_maps(maps, np.full((2, 2, 2), np.nan, np.float32), (20, 20), radius=2.0)
  assert s["peaks"] == 0 and s["images"] == 0


def test_box_containment_and_a_random_box_of_the_same_size():
  parts = np.array([[[5, 5], [15, 15]], [[2, 10], [10, 10]], [[5, 10], NAN2]], np.float32)
  boxes = np.array(
    [
      [0, 0, 20, 20],  # the whole image: holds everything, and so does any box of its size
      [5, 0, 15, 20],  # half the width, full height: at x = 2 a random placement holds it 1 time in 5
      [0, 0, 10, 20],
    ],
    np.float32,
  )  # x = 5: the middle of the free range; 1 in 2
  s = accuracy.score_boxes(boxes[:1], parts[:1], (20, 20))
  assert s == {"hits": 2.0, "parts": 2, "chance": 2.0, "all": 1, "images": 1}
  s = accuracy.score_boxes(boxes[1:], parts[1:], (20, 20))
  assert s["hits"] == 2 and s["parts"] == 3 and s["all"] == 1 and s["images"] == 2
  np.testing.assert_allclose(s["chance"], 0.2 + 1.0 + 0.5)  # x = 10 lies in every half-width box
  r = accuracy.finish_kind(s, label="x", own=True, primary=True)
  assert r["hit"] == pytest.approx(2 / 3) and r["chance"] == pytest.approx(1.7 / 3) and r["all_parts"] == 0.5


def test_random_box_chance_matches_sampling():
  from fgattn_jax import localize

  rng = np.random.default_rng(0)
  parts = rng.uniform(0, [48, 32], (3, 5, 2))
  boxes = np.array([[3, 4, 23, 14], [0, 0, 48, 10], [10, 5, 60, 25]], np.float64)  # the last wider than the image
  exact = localize.random_box_holds(boxes, parts, (32, 48))
  w, h = np.minimum(boxes[:, 2] - boxes[:, 0], 48), boxes[:, 3] - boxes[:, 1]
  x0, y0 = rng.uniform(0, 48 - w, (20000, 3)), rng.uniform(0, 32 - h, (20000, 3))
  inside = [localize.parts_inside(np.stack([x0[i], y0[i], x0[i] + w, y0[i] + h], axis=1), parts) for i in range(20000)]
  np.testing.assert_allclose(exact, np.mean(inside, axis=0), atol=0.015)


def run(scheme, seed, top1, wall=60.0, **attention):
  heads = {
    "baseline": ["logits"],
    "abn": ["logits", "attention_branch"],
    "macnn": ["logits", "object", "part0"],
    "racnn": ["logits", "scale1", "scale2", "average"],
  }[scheme]
  rec = {
    "scheme": scheme,
    "seed": seed,
    "wall_s": wall,
    "main": "logits",
    "heads": {h: {"top1": t} for h, t in zip(heads, top1)},
    "setup": None,
    "attention": {},
  }
  for kind, (hit, chance) in attention.items():
    rec["attention"][kind] = {
      "label": kind,
      "own": scheme != "baseline",
      "hit": hit,
      "chance": chance,
      "ratio": hit / chance,
      "primary": kind in ("map", "box2", "part_maps"),
    }
  return rec


def test_verdict_from_made_up_runs():
  runs = [
    run("baseline", 0, [0.50], cam=(0.2, 0.1)),
    run("baseline", 1, [0.60]),
    run("abn", 0, [0.75, 0.5], map=(0.3, 0.1)),
    run("abn", 1, [0.85, 0.5], map=(0.5, 0.1)),  # +0.25 > 0.10
    run("macnn", 0, [0.62, 0.70, 0.3], part_maps=(0.15, 0.1)),
    run("macnn", 1, [0.64, 0.4, 0.3]),  # +0.08 < 0.1
    run("racnn", 0, [0.9, 0.4, 0.6, 0.8], box2=(0.8, 0.5), box3=(0.6, 0.2)),
    {"scheme": "racnn", "seed": 1, "error": "ValueError: boom"},
  ]
  report = accuracy.build_report(runs, {"preset_label": "test", "seeds": [0, 1], "part_radius": 0.1})
  s = report["summary"]
  assert s["abn"]["heads"]["logits"] == pytest.approx(
    {"n": 2, "mean": 0.8, "min": 0.75, "max": 0.85, "range": 0.1, "std": math.sqrt(0.005)}
  )
  assert s["racnn"]["failed"] == {"1": "ValueError: boom"} and s["racnn"]["seeds"] == [0]
  assert list(s["racnn"]["heads"]) == ["logits", "scale1", "scale2", "average"]
  v = {(x["target"], x["scheme"]): x for x in report["verdict"]}
  assert v["a", "abn"]["met"] and v["a", "abn"]["spread"] == pytest.approx(0.1)
  assert not v["a", "macnn"]["met"]  # 0.63 vs 0.55: +0.08, but the spread is 0.1 (the baseline's)
  assert v["a", "racnn"]["met"]  # one seed: 0.9 - 0.55 > the baseline's 0.1
  assert v["b", "racnn"]["met"] and v["c", "macnn"]["met"]  # scale 2 0.6 vs scale 1 0.4; joint 0.63 vs object 0.55
  assert v["d", "abn"]["met"] and v["d", "abn"]["ratio"] == pytest.approx(4.0)
  assert not v["d", "macnn"]["met"] and not v["d", "racnn"]["met"]  # 1.5 and the scale-2 box's 1.6 (not box3's 3)
  assert ("d", "baseline") not in v  # the baseline's CAM is a reference, no target
  text = accuracy.table(report)
  assert "failed: racnn seed 1: ValueError: boom" in text and "(d) each scheme's own attention" in text
  assert text.count("not met") == 3


@pytest.mark.slow  # trains every scheme (at a toy size)
def test_the_benchmark_at_a_toy_size(tmp_path, capsys):
  # Bare presets, one seed, one training step per phase (RA-CNN one cycle): about 40 s on 2 cores. ABN fails on a
  # bad override (only its config has the key): reported, and the others still run.
  args = [
    "--preset",
    "",
    "--schemes",
    "baseline",
    "abn",
    "racnn",
    "--seeds",
    "0",
    "--epochs-scale",
    "0.01",
    "--num-train",
    "32",
    "--num-test",
    "16",
    "--workdir",
    str(tmp_path),
    "--config.cycles=1",
    "--config.data.eval_batch_size=16",
    "--config.abn.branch=nowhere",
  ]
  assert accuracy.main(args) == 1  # a failed scheme
  out = capsys.readouterr().out
  for scheme in ("baseline", "abn", "racnn"):
    assert f"| {scheme} |" in out
  assert "failed: abn seed 0: ConfigError" in out and "(b) RA-CNN's scale 2" in out
  report = json.loads((tmp_path / "accuracy.json").read_text())
  runs = {r["scheme"]: r for r in report["runs"]}
  assert runs["abn"]["error"].startswith("ConfigError") and report["summary"]["abn"]["heads"] == {}
  assert set(runs["baseline"]["heads"]) == {"logits"}
  assert set(runs["racnn"]["heads"]) == {"logits", "scale1", "scale2", "scale3", "average"}
  for scheme in ("baseline", "racnn"):
    r = runs[scheme]
    assert r["wall_s"] > 0 and r["setup"]["steps"] >= 1 and r["setup"]["num_train"] == 32
    assert all(0 <= h["top1"] <= 1 and h["count"] == 16 for h in r["heads"].values())
    for a in r["attention"].values():
      assert 0 <= a["hit"] <= 1 and 0 < a["chance"] < 1 and a["count"] > 0
      assert a["ratio"] == pytest.approx(a["hit"] / a["chance"])
  assert set(runs["baseline"]["attention"]) == {"cam"} and not runs["baseline"]["attention"]["cam"]["own"]
  assert set(runs["racnn"]["attention"]) == {"box2", "box3"} and runs["racnn"]["attention"]["box2"]["primary"]
  assert {(v["target"], v["scheme"]) for v in report["verdict"]} == {
    ("a", "abn"),
    ("a", "racnn"),
    ("b", "racnn"),
    ("d", "abn"),
    ("d", "racnn"),
  }

  # The same command again reuses the finished runs (the failed one is tried again); --table-only reprints.
  assert accuracy.main(args) == 1
  again = json.loads((tmp_path / "accuracy.json").read_text())
  assert [r.get("reused", False) for r in again["runs"]] == [True, False, True]
  assert again["runs"][0]["heads"] == report["runs"][0]["heads"]
  capsys.readouterr()
  assert accuracy.main(["--table-only", str(tmp_path / "accuracy.json")]) == 0
  assert "| racnn | logits (fused) |" in capsys.readouterr().out
