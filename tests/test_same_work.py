"""The throughput table compares like with like: on each row the PyTorch reference has our parameter count and our
FLOPs per image (benchmarks/same_work.py), counted at full size without running.

The two rows with ResNet-50 part streams or scales (MA-CNN's six backbones, RA-CNN's three) are left to
`python -m benchmarks.same_work --all`: building those models takes about a minute here, even as shapes only. Their
parts are checked here all the same: the ResNet-50 backbone in the baseline and ABN rows, the MA-CNN and RA-CNN
machinery in the VGG-19 rows."""

import pytest

from benchmarks import same_work, throughput

EXPENSIVE = {("macnn", "resnet50"), ("racnn", "resnet50")}


@pytest.mark.parametrize(
  "row", [r for r in throughput.STANDARD if r[:2] not in EXPENSIVE], ids=lambda r: "-".join(map(str, r[:2]))
)
def test_both_sides_do_the_same_work(row):
  r = same_work.compare(*row)
  assert r["jax_params"] == r["torch_params"]
  assert r["jax_gflop_per_image"] == pytest.approx(r["torch_gflop_per_image"], rel=same_work.TOLERANCE)
  assert r["same"]


def test_a_different_network_is_caught(monkeypatch):
  """The check can fail: a PyTorch MA-CNN with one part stream fewer has fewer parameters and FLOPs."""
  from benchmarks.torch_reference import schemes

  build = schemes.build
  monkeypatch.setattr(
    schemes,
    "build",
    lambda scheme, *a, **k: (
      schemes.MACNN(a[0], a[1], k.get("width", 1.0), num_parts=3, part_input=a[2] // 2)
      if scheme == "macnn"
      else build(scheme, *a, **k)
    ),
  )
  r = same_work.compare("macnn", "vgg11", 128, 2)
  assert r["torch_params"] < r["jax_params"] and r["torch_gflop_per_image"] < r["jax_gflop_per_image"]
  assert not r["same"]
