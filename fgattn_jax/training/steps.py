"""The jitted train and evaluation steps, pure functions of (state, batch).

The model and its optimiser are split once into a static graph definition and a state pytree; each step
merges them, runs the scheme, and returns the new state (its buffers donated). Images arrive as uint8 and
are normalised here, on the device, into the model's compute dtype; losses are float32.

The state crosses the jit boundary as the flat list of its arrays, with its tree structure as a static argument:
step(jax.tree.leaves(state), batch, jax.tree.structure(state)). An nnx State is a Python object per variable,
flattened and rebuilt in Python on every call: the H200 timings imply a fixed ~25 microseconds per array each step
(11.5 ms for a ResNet-50 and its optimiser, 431 arrays: more than the GPU's own time at batch 16), and on the CPU
the host's share of an MA-CNN ResNet-50 step (2634 arrays) fell from 42 to 18 ms with the flat list
(benchmarks/RESULTS.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from fgattn_jax.ops import losses as L
from fgattn_jax.ops.images import normalize
from fgattn_jax.training import mesh as mesh_lib

# XLA options the steps are compiled with: none (XLA's defaults) unless a benchmark sets some to weigh a compiler
# choice on one machine (benchmarks.throughput --graphs). Read when a step is made.
COMPILER_OPTIONS: dict[str, str] = {}


def make_train_step(scheme, graphdef, wrt, loss_weights: dict, lr_schedule, dtype, mesh):
  """(state leaves, batch, state structure) -> (new state leaves, metrics); the leaves' buffers are donated."""

  # The losses the phase weights (a zero weight is as good as absent): the scheme runs only what they need.
  weighted = {k: w for k, w in loss_weights.items() if w} or dict(loss_weights)
  wanted = frozenset(weighted)

  def step(leaves, batch, structure):
    model, optimizer = nnx.merge(graphdef, jax.tree.unflatten(structure, leaves))

    def loss_fn(model):
      losses, outputs = scheme.forward(model, normalize(batch["image"], dtype), batch, train=True, wanted=wanted)
      total = sum(w * losses[k] for k, w in weighted.items())
      return total, (losses, outputs)

    (total, (losses, outputs)), grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, wrt), has_aux=True)(model)
    lr = lr_schedule(optimizer.step.get_value())
    optimizer.update(model, grads)
    metrics = {
      "loss": total,
      **{f"loss/{k}": v for k, v in losses.items()},
      "lr": lr,
      "nonfinite": (~jnp.isfinite(total)).astype(jnp.float32),
    }
    # Training accuracy: of the main output, or where the phase does not compute it, of the first one it does
    # (MA-CNN's object stream before its part streams train); none where the phase computes no logits.
    main = scheme.main_output if scheme.main_output in outputs else next(iter(outputs), None)
    if main is not None:
      metrics["accuracy"] = L.accuracy(outputs[main], scheme.labels_for(main, batch), batch["mask"])
    return jax.tree.leaves(nnx.state((model, optimizer))), metrics

  repl, data = mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh)
  return jax.jit(
    step,
    in_shardings=(repl, data),
    out_shardings=(repl, repl),
    donate_argnums=0,
    static_argnums=2,
    compiler_options=dict(COMPILER_OPTIONS) or None,
  )


def make_eval_step(scheme, model_graphdef, dtype, mesh):
  """(model state leaves, batch, their structure) -> {output name: float32 logits}, in evaluation mode (running
  statistics, no dropout)."""

  def step(leaves, batch, structure):
    model = nnx.merge(model_graphdef, jax.tree.unflatten(structure, leaves))
    model.eval()
    _, outputs = scheme.forward(model, normalize(batch["image"], dtype), batch, train=False)
    return {k: v.astype(jnp.float32) for k, v in outputs.items()}

  repl, data = mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh)
  return jax.jit(
    step,
    in_shardings=(repl, data),
    out_shardings=data,
    static_argnums=2,
    compiler_options=dict(COMPILER_OPTIONS) or None,
  )
