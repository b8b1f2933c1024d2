"""Every map of a trained model for one batch, in one jitted call: the scheme's own attention, CAM, Grad-CAM and
guided Grad-CAM for the predicted and the true class. visualize draws them; evaluate --localization scores them."""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fgattn_jax.models.backbone import Backbone
from fgattn_jax.ops import saliency
from fgattn_jax.ops.images import MEAN, STD, normalize


def logits_fn(scheme, model, batch):
  """images -> the scheme's main logits (the batch gives what the scheme's forward reads besides the images)."""
  return lambda images: scheme.forward(model, images, batch, train=False)[1][scheme.main_output]


def explained_net(scheme, model) -> Backbone:
  """The backbone whose last stage CAM reads and Grad-CAM defaults to: the scheme's CAM network, else the first
  backbone of the model."""
  found = scheme.cam_net(model)
  if found is not None:
    return found[0]
  return model if isinstance(model, Backbone) else next(n for _, n in nnx.iter_graph(model) if isinstance(n, Backbone))


def default_layer(scheme, model) -> str:
  """Grad-CAM's stage when none is named: the last stage of the explained backbone (its first run: scale 1,
  MA-CNN's object stream)."""
  return explained_net(scheme, model).stage_names[-1]


def has_cam(scheme, model) -> bool:
  found = scheme.cam_net(model)
  return found is not None and getattr(found[0].head, "pooled_linear", False)


@functools.partial(nnx.jit, static_argnames=("scheme", "layer", "dtype", "cam", "guided"))
def explain(scheme, model, batch, *, layer: str, dtype, cam: bool, guided: bool = True):
  """A batch (uint8 images, labels) -> {'probs' (B, K), 'attention' (the scheme's dict), 'classes' {'pred', 'true'}
  (B,) each, and for c in pred, true:
  'gradcam_c' (B, h, w), with guided: 'guided_c' (B, H, W, C), with cam: 'cam_c' (B, h', w') (signed)}."""
  images = normalize(batch["image"], dtype)
  fn = logits_fn(scheme, model, batch)
  logits = fn(images)
  out = {"probs": jax.nn.softmax(logits, axis=-1), "attention": scheme.attention(model, images)}
  classes = {"pred": jnp.argmax(logits, axis=-1), "true": scheme.labels_for(scheme.main_output, batch)}
  out["classes"] = classes
  for name, k in classes.items():
    out[f"gradcam_{name}"] = saliency.grad_cam(fn, images, k, layer)
    if guided:
      out[f"guided_{name}"] = saliency.guided_grad_cam(fn, images, k, layer)
    if cam:
      net = explained_net(scheme, model)
      _, features = saliency.tapped(fn, images, net.stage_names[-1])
      out[f"cam_{name}"] = saliency.cam(features[: images.shape[0]], net.head.fc.kernel[...], k)
  return out


def pixel_range(dtype=jnp.float32):
  """The normalised values of black and white, per channel: what an optimised image must stay between."""
  return normalize(jnp.zeros((1, 1, 1, 3)), dtype)[0, 0, 0], normalize(jnp.full((1, 1, 1, 3), 255.0), dtype)[0, 0, 0]


@functools.partial(nnx.jit, static_argnames=("scheme", "layer", "channel", "use_class", "steps", "dtype"))
def amplified(scheme, model, batch, *, layer, channel, use_class, steps, step_size, dtype):
  """Feature amplification of the batch's images (normalised float32), for a layer (and channel) or each image's
  predicted class."""
  images = normalize(batch["image"], dtype)
  fn = logits_fn(scheme, model, batch)
  low, high = pixel_range()
  if use_class:
    return saliency.amplify(
      fn, images, classes=jnp.argmax(fn(images), axis=-1), steps=steps, step_size=step_size, low=low, high=high
    )
  return saliency.amplify(
    fn, images, layer=layer, channel=channel, steps=steps, step_size=step_size, low=low, high=high
  )


def to_uint8(normalised) -> np.ndarray:
  """Normalised images (what the model saw: crops, zooms, amplified inputs) -> uint8 RGB for display."""
  return np.clip(np.round(np.asarray(normalised, np.float32) * STD + MEAN), 0, 255).astype(np.uint8)


def probe(scheme, model, pipe):
  """(images -> the run's main logits, a zero image of the pipeline's shape): for reading the stages' names and
  shapes (saliency.layer_names, layer_shape) without running anything."""
  import numpy as np
  from flax import nnx

  from fgattn_jax import explain

  model = nnx.clone(model)
  model.eval()  # (in training mode BatchNorm would update its statistics inside the trace)
  batch = {k: v[:1] for k, v in next(iter(pipe)).items()}
  return explain.logits_fn(scheme, model, batch), np.zeros(batch["image"].shape, np.float32)


def check_layer(
  p: argparse.ArgumentParser,
  scheme,
  model,
  stages: list[str],
  layer: str,
  *,
  drawn: bool = True,
  image_frame: bool = False,
):
  """--layer, checked against the stages the model runs (saliency.layer_names): -> (its name as they have it:
  conv5_4#1 is conv5_4, what it sees: 'image' or the index of the scheme's attention crop, scheme.layer_input).
  A stage the model does not run, with `drawn` one whose input is drawn nowhere, and with image_frame one not in
  the image's frame (the localisation metrics) are argparse errors naming the stages."""
  from fgattn_jax.ops import saliency

  try:
    name, occurrence = saliency.parse_layer(layer)
  except ValueError as e:
    p.error(str(e))
  layer = name if occurrence == 1 else layer
  if layer not in stages:
    p.error(f"layer {layer!r} does not run in this model; its stages: {', '.join(stages)}")
  frame = scheme.layer_input(occurrence, model)
  if (drawn and frame is None) or (image_frame and frame != "image"):
    on_image = [s for s in stages if scheme.layer_input(saliency.parse_layer(s)[1], model) == "image"]
    what = "an input that is not drawn (the object crop)" if frame is None else "a crop, not the image"
    p.error(
      f"layer {layer!r} sees {what}{': the metrics score maps in the image' if image_frame else ''}; "
      f"stages on the image: {', '.join(on_image)}"
    )
  return layer, frame
