"""The benchmark scripts at toy sizes on the CPU, so that they never rot; the FLOP counter against hand counts."""

import json

import jax
import jax.numpy as jnp
import pytest
from PIL import Image

from benchmarks import chart, compare, flops, throughput


def conv(x, w):
  return jax.lax.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      feature_group_count=x.shape[-1] // w.shape[2])


def test_flops_of_convolutions_their_gradients_and_products():
  x, w = jax.ShapeDtypeStruct((2, 16, 16, 4), jnp.float32), jax.ShapeDtypeStruct((3, 3, 4, 8), jnp.float32)
  forward = 2 * (2 * 8 * 8 * 8) * (3 * 3 * 4)  # outputs x kernel slice
  assert flops.count(conv, x, w) == forward
  grouped = jax.ShapeDtypeStruct((3, 3, 2, 8), jnp.float32)  # two groups: half the slice
  assert flops.count(conv, x, grouped) == forward // 2
  # Forward, then the input gradient and the weight gradient: as much work as the forward each (the input
  # gradient of this stride-2 convolution not counting the multiplications by the zeros between its samples).
  assert flops.count(jax.grad(lambda x, w: conv(x, w).sum(), argnums=(0, 1)), x, w) == 3 * forward
  a, b = jax.ShapeDtypeStruct((3, 4, 5), jnp.float32), jax.ShapeDtypeStruct((5, 6), jnp.float32)
  nested = jax.jit(lambda a, b: jax.checkpoint(lambda a: a @ b)(a))
  assert flops.count(nested, a, b) == 2 * 3 * 4 * 5 * 6
  scanned = lambda a, b: jax.lax.scan(lambda c, _: (c @ b[:, :5], None), a, length=7)[0]  # noqa: E731
  assert flops.count(scanned, a, b) == 7 * 2 * 3 * 4 * 5 * 5


@pytest.mark.parametrize("scheme,backbone", [("baseline", "resnet18"), ("abn", "vgg11_bn"), ("macnn", "vgg11_bn"),
                                             ("racnn", "vgg11_bn")])
def test_throughput_measures_every_scheme(scheme, backbone):
  r = throughput.measure(scheme, backbone, 32, 2, steps=2, warmup=1, width=1 / 16, dtype="float32")
  assert r["train_img_s"] > 0 and r["eval_img_s"] > 0 and r["compile_s"] > 0
  assert r["train_tflops"] > 0 and r["eval_tflops"] > 0
  assert r["peak_fraction"] is None and r["peak_mem_gib"] is None  # the CPU reports neither
  assert "| " + scheme + " | " + backbone in throughput.table([r])
  if scheme == "baseline":  # a training step: the forward, the input gradients (none for the image: the first
    # convolution, a large share of this tiny ResNet's work, has none) and the weight gradients
    forward = r["eval_tflops"] * r["eval_ms"] * 1e9 / 2
    assert 2.2 < r["train_gflop_per_image"] * 1e9 / forward < 3.0


def test_compare_runs_both_frameworks_and_the_chart_draws_them(tmp_path, capsys):
  results = tmp_path / "results.jsonl"
  assert compare.main(["--cpu", "--scheme", "baseline", "--backbone", "vgg11_bn", "--res", "32", "--batch", "2",
                       "--json", str(results)]) == 0
  out = capsys.readouterr().out
  assert "| baseline | vgg11_bn | 32 | 2 |" in out
  (row,) = [json.loads(line) for line in results.read_text().splitlines()]
  assert row["jax_img_s"] > 0 and row["torch_eager_img_s"] > 0 and row["ratio"] > 0
  png = tmp_path / "chart.png"
  assert chart.main(["--json", str(results), "--out", str(png)]) == 0
  assert Image.open(png).size[0] >= 600
