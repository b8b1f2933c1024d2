"""Where a network looks: CAM, Grad-CAM, gradients through the ReLUs by three rules, guided Grad-CAM, and feature
amplification, for any backbone, any scheme and any named stage.

Every function takes `fn`, images (B, H, W, C) -> logits (B, K) (a scheme's classifier, the model closed over),
and is pure and traceable: jit it with the model (nnx.jit) around it. A layer is a backbone stage name, as in the
models' intermediates dicts ('conv5_4', 'layer4'); where several backbones run in one forward pass (MA-CNN's
streams, RA-CNN's scales) 'conv5_4#2' names the second stage of that name in the order the forward pass runs
them. `layer_names` lists them.

    CAM             (Zhou et al. 2016) sum_c w[c, k] A_c at the stage before a global-average-pool + linear head
    Grad-CAM        (Selvaraju et al. 2017) relu(sum_c alpha_c A_c), alpha_c = mean over the grid of d y_k / d A_c
    input gradients d y_k / d x through the ReLUs by the rule: 'plain' (backpropagation), 'deconvnet' (a ReLU on
                    the backward signal), 'guided' (both: Springenberg et al. 2015)
    guided Grad-CAM the guided input gradient times Grad-CAM upsampled to the input
For a GAP + linear head, alpha_c = w[c, k] / (h w): Grad-CAM is relu(CAM) / (h w) (tests/test_saliency.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fgattn_jax.ops import hooks


def parse_layer(spec: str) -> tuple[str, int]:
  """'conv5_4' -> ('conv5_4', 1); 'conv5_4#2' -> ('conv5_4', 2): the stage and which of its occurrences."""
  name, _, which = spec.partition("#")
  if which and (not which.isdigit() or int(which) < 1):
    raise ValueError(f"layer {spec!r}: after '#' comes the occurrence, 1 or more (e.g. {name}#2)")
  return name, int(which or 1)


def layer_names(fn, images) -> list[str]:
  """The stages fn's forward pass runs, in order, as `layer` arguments name them (shapes only: nothing runs)."""
  seen = []

  def record(name, x):
    seen.append(name)
    return x

  def run(x):
    with hooks.tapping(record):
      return fn(x)

  jax.eval_shape(run, images)
  counts, names = {}, []
  for name in seen:
    counts[name] = counts.get(name, 0) + 1
    names.append(name if counts[name] == 1 else f"{name}#{counts[name]}")
  return names


def layer_shape(fn, images, layer: str) -> tuple[int, ...]:
  """The shape of `layer`'s activation for these images (shapes only: nothing runs)."""
  return jax.eval_shape(lambda x: tapped(fn, x, layer)[1], images).shape


def tapped(fn, images, layer: str, delta=None):
  """fn(images) and the output of `layer` on the way -> (fn's output, activation); delta, if given, is added to
  the activation before the network continues (zero delta: the gradient with respect to it is the gradient with
  respect to the activation)."""
  name, which = parse_layer(layer)
  found = []

  def hook(n, x):
    if n != name:
      return x
    found.append(None)
    if len(found) != which:
      return x
    if delta is not None:
      x = x + delta.astype(x.dtype)
    found[-1] = x
    return x

  with hooks.tapping(hook):
    out = fn(images)
  if len(found) < which:
    raise ValueError(
      f"layer {layer!r} does not run in this forward pass; its stages: {', '.join(layer_names(fn, images))}"
    )
  return out, found[which - 1]


def check_channel(layer: str, channel: int, channels: int) -> None:
  """A channel of a layer with `channels` channels, or a ValueError that gives the valid range (indexing a traced
  array out of range does not fail: JAX clamps it, and another channel would be amplified)."""
  if not 0 <= channel < channels:
    raise ValueError(f"{layer} has {channels} channels (0..{channels - 1}); there is no channel {channel}")


def class_score(logits, classes):
  """The sum over the batch of each image's logit of its class: one scalar whose gradient is every image's own."""
  return jnp.sum(jnp.take_along_axis(logits.astype(jnp.float32), classes[:, None], axis=1))


def grad_cam(fn, images, classes, layer: str):
  """(B, h, w) float32 Grad-CAM of `classes` (B,) at `layer` (unnormalised: relu of the weighted channel sum)."""
  _, act = jax.eval_shape(lambda x: tapped(fn, x, layer), images)
  zero = jnp.zeros(act.shape, jnp.float32)

  def score(delta):
    logits, a = tapped(fn, images, layer, delta)
    return class_score(logits, classes), a

  grads, a = jax.grad(score, has_aux=True)(zero)
  # Multi-task ABN runs its later stages on every task's copy of the batch: the first copy is the first task's.
  b = images.shape[0]
  alpha = jnp.mean(grads[:b], axis=(1, 2))  # (B, C)
  return jax.nn.relu(jnp.einsum("bhwc,bc->bhw", a[:b].astype(jnp.float32), alpha))


def cam(features, kernel, classes):
  """(B, h, w, C) features before a global-average-pool + linear head with kernel (C, K) -> (B, h, w) CAM of
  `classes` (B,): sum_c kernel[c, k] A_c, signed (the bias, the same everywhere, is left out)."""
  w = jnp.take(kernel.astype(jnp.float32), classes, axis=1)  # (C, B)
  return jnp.einsum("bhwc,cb->bhw", features.astype(jnp.float32), w)


def input_gradient(fn, images, classes, rule: str = "plain"):
  """(B, H, W, C) float32 d logit[class] / d image, through the backbones' ReLUs by `rule`."""
  with hooks.relu_rule(rule):
    return jax.grad(lambda x: class_score(fn(x), classes))(images.astype(jnp.float32))


def upsample(maps, hw):
  """(B, h, w) maps -> (B, H, W) bilinear (half-pixel centres, as the overlays draw them)."""
  return jax.image.resize(maps.astype(jnp.float32), (maps.shape[0], *hw), "bilinear")


def guided_grad_cam(fn, images, classes, layer: str):
  """(B, H, W, C) guided backpropagation times Grad-CAM upsampled to the input: fine detail, class-specific."""
  gc = upsample(grad_cam(fn, images, classes, layer), images.shape[1:3])
  return input_gradient(fn, images, classes, "guided") * gc[..., None]


def amplify(
  fn,
  images,
  *,
  layer: str | None = None,
  channel: int | None = None,
  classes=None,
  steps: int = 20,
  step_size: float = 0.05,
  low=None,
  high=None,
):
  """Feature amplification (DeepDream): gradient ascent on the input for `steps` steps, each of step_size times
  the gradient over its mean magnitude (so the step does not depend on the objective's scale). The objective is
  the mean of `layer`'s activation (one channel, or all), or with `classes` (B,) those classes' logits. low/high:
  the normalised values of black and white; the image is kept between them."""
  if (layer is None) == (classes is None):
    raise ValueError("amplify needs either a layer (optionally a channel) or classes, not both")

  def objective(x):
    if classes is not None:
      return class_score(fn(x), classes)
    _, a = tapped(fn, x, layer)
    if channel is not None:
      check_channel(layer, channel, a.shape[-1])
      a = a[..., channel]
    a = a[: x.shape[0]].astype(jnp.float32)
    return jnp.sum(jnp.mean(a.reshape(a.shape[0], -1), axis=1))

  def step(_, x):
    g = jax.grad(objective)(x)
    x = x + step_size * g / (jnp.mean(jnp.abs(g), axis=(1, 2, 3), keepdims=True) + 1e-8)
    return x if low is None else jnp.clip(x, low, high)

  return jax.lax.fori_loop(0, steps, step, images.astype(jnp.float32))
