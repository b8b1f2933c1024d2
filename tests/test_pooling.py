"""Max pooling (ops/pooling.py): PyTorch's values and gradients, ties included, without a scatter in the program."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from fgattn_jax.ops import pooling


def torch_pool(x, g, kernel, stride, padding):
  xt = torch.tensor(x).permute(0, 3, 1, 2).requires_grad_()
  yt = torch.nn.functional.max_pool2d(xt, kernel, stride, padding)
  yt.backward(torch.tensor(g).permute(0, 3, 1, 2))
  return yt.detach().permute(0, 2, 3, 1).numpy(), xt.grad.permute(0, 2, 3, 1).numpy()


# VGG's 2x2 / 2 and ResNet's 3x3 / 2 padded by 1 (overlapping windows), on even and odd sides (odd: the last row or
# column is in no window, or only in a padded one).
@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 2, 1)])
@pytest.mark.parametrize("hw", [(8, 8), (7, 10)])
def test_max_pool_matches_pytorch_values_and_gradients_with_ties(kernel, stride, padding, hw):
  rng = np.random.default_rng(0)
  x = np.maximum(rng.normal(size=(2, *hw, 3)), 0).astype(np.float32)  # ReLU output: windows of tied zeros
  x[0, 2:4, 2:4, 1] = 0.5  # a window of four equal positive values
  y, vjp = jax.vjp(lambda x: pooling.max_pool(x, kernel, stride, padding), jnp.asarray(x))
  g = rng.normal(size=y.shape).astype(np.float32)
  (dx,) = vjp(jnp.asarray(g))
  ref_y, ref_dx = torch_pool(x, g, kernel, stride, padding)
  np.testing.assert_array_equal(np.asarray(y), ref_y)
  # Each window's gradient goes to its first maximum, as PyTorch's; overlapping windows add theirs in another
  # order (float32 rounding).
  np.testing.assert_allclose(np.asarray(dx), ref_dx, rtol=0, atol=1e-6)
  assert np.count_nonzero(np.asarray(dx)) == np.count_nonzero(ref_dx)


def test_max_pool_keeps_bf16_and_equals_xla_pooling():
  x = jax.random.normal(jax.random.key(1), (2, 12, 12, 4), jnp.bfloat16)
  f = jax.jit(jax.value_and_grad(lambda x: (pooling.max_pool(x, 3, 2, 1).astype(jnp.float32) ** 2).sum()))
  value, grad = f(x)
  assert grad.dtype == jnp.bfloat16 and pooling.max_pool(x, 2, 2).dtype == jnp.bfloat16
  try:
    pooling.POOLING = "reduce_window"
    ref_value, ref_grad = jax.jit(
      jax.value_and_grad(lambda x: (pooling.max_pool(x, 3, 2, 1).astype(jnp.float32) ** 2).sum())
    )(x)
  finally:
    pooling.POOLING = "auto"
  assert value == ref_value
  np.testing.assert_allclose(np.asarray(grad, np.float32), np.asarray(ref_grad, np.float32), rtol=1e-2)


def test_max_pool_gradient_has_no_select_and_scatter():
  # The reason for the custom gradient: XLA's pooling differentiates into a select-and-scatter (atomic updates on a
  # GPU). Ours must be free of it; XLA's own pooling shows what the check looks for.
  x = jnp.ones((2, 16, 16, 8), jnp.bfloat16)

  def program():
    return jax.jit(jax.grad(lambda x: pooling.max_pool(x, 2, 2).astype(jnp.float32).sum())).lower(x).as_text()

  assert "select_and_scatter" not in program()
  try:
    pooling.POOLING = "reduce_window"
    assert "select_and_scatter" in program()
  finally:
    pooling.POOLING = "auto"


def parameters_after_two_steps(form: str) -> list[np.ndarray]:
  from benchmarks import throughput

  c = throughput.config_for("baseline", "vgg11_bn", 96, 8, 1 / 4, "float32")  # where the equality test failed
  try:
    pooling.POOLING = form
    (train, (leaves, data, structure)), _ = throughput.setup_steps("baseline", c)
    for _ in range(2):
      leaves, _ = train(leaves, data, structure)
    return [np.asarray(x) for x in leaves if jnp.issubdtype(x.dtype, jnp.floating)]
  finally:
    pooling.POOLING = "auto"


def test_training_steps_with_batch_norm_equal_those_with_xla_pooling(tmp_path):
  # A whole training step (BatchNorm in training mode, ReLU, pooling; the step's fusions as XLA makes them): the
  # same parameters after two steps, to the bit, as with XLA's own pooling. A gradient that found each window's
  # winner by comparing the input with the output failed this: XLA recomputed the normalised input inside the
  # backward fusion with other rounding, and windows lost their gradient.
  # In a process of its own with XLA's default CPU code generation, the one users run: the suite's (conftest.py)
  # fuses the two programs' arithmetic differently, and BatchNorm grows those roundings to 2e-3 of the update.
  import subprocess
  import sys

  code = (
    "import sys, numpy as np, test_pooling as t\n"
    "np.savez(sys.argv[1], *t.parameters_after_two_steps('reduce_window'), *t.parameters_after_two_steps('slices'))"
  )
  env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "").replace("--xla_cpu_use_fusion_emitters=false", ""))
  env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(__file__), os.getcwd(), env.get("PYTHONPATH", "")])
  out = tmp_path / "after.npz"
  done = subprocess.run([sys.executable, "-c", code, str(out)], env=env, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-3000:]
  arrays = list(np.load(out).values())
  half = len(arrays) // 2
  assert half > 0
  for a, b in zip(arrays[:half], arrays[half:]):
    np.testing.assert_array_equal(a, b)


def test_auto_picks_each_backends_formulations_and_a_setting_wins(monkeypatch):
  # On a TPU XLA's pooling and the crops' matrix products (the compiled programs there: RESULTS.md); elsewhere the
  # scatter-free pooling and the gathers. A formulation set by name (the benchmarks' --pool, --crop) is kept.
  from fgattn_jax.ops import crops

  assert (pooling.POOLING, crops.RESAMPLE) == ("auto", "auto")
  assert (pooling.formulation(), crops.formulation()) == ("slices", "gather")
  monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
  assert (pooling.formulation(), crops.formulation()) == ("reduce_window", "matmul")
  x = jnp.ones((1, 4, 4, 1))
  assert "select_and_scatter" in jax.jit(jax.grad(lambda x: pooling.max_pool(x, 2, 2).sum())).lower(x).as_text()
  monkeypatch.setattr(pooling, "POOLING", "slices")
  monkeypatch.setattr(crops, "RESAMPLE", "gather")
  assert (pooling.formulation(), crops.formulation()) == ("slices", "gather")
