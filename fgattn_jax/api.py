"""A trained run in Python, for notebooks and scripts (the commands read runs the same way):

    import fgattn_jax

    run = fgattn_jax.load_run("workdirs/cub_vgg19")   # checkpoint="latest" (default), "best" or a step
    run.class_names                                   # in label order
    probs = run.predict(["bird.jpg", array])          # (N, K) class probabilities; paths or uint8 H x W x 3 arrays
    run.top(probs[0], k=3)                            # [(class name, probability), ...], best first
    att = run.attention(images)                       # the scheme's own: 'maps', 'part_maps', 'boxes', 'crops'
    cams = run.gradcam(images)                        # (N, h, w) Grad-CAM of the predicted class
    x = run.transform(images)                         # uint8 (N, S, S, 3): what the network sees

Images are resized and centre-cropped as the run's evaluation does (data.resize_size, data.image_size), at any size;
the run's evaluation-time rotation (data.augment.eval_rotation), a test of robustness, is not applied. Runs that
classify one label (not ABN's multi-task runs) are served.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path

import numpy as np

from fgattn_jax.errors import ConfigError


@dataclasses.dataclass
class Run:
  workdir: str
  config: object  # the run's ml_collections.ConfigDict, as trained
  scheme: object  # fgattn_jax.schemes.Scheme
  model: object  # the NNX module with the checkpoint's weights, in evaluation mode
  step: int  # the checkpoint's training step
  class_names: list[str]

  def transform(self, images) -> np.ndarray:
    """Paths or uint8 (H, W, 3) arrays -> uint8 (N, image_size, image_size, 3), the evaluation transform."""
    from data_pipelines import transforms
    from data_pipelines.sources.base import decode_image

    d = self.config.data
    aug = transforms.Augment(resize=d.resize_size, size=d.image_size)
    out = []
    for image in images:
      if isinstance(image, (str, Path)):
        with open(image, "rb") as f:
          image = f.read()
      pixels = decode_image(np.asarray(image) if not isinstance(image, bytes) else image)
      out.append(transforms.evaluate(pixels, np.full(4, np.nan, np.float32), np.zeros((0, 2), np.float32), aug)[0])
    return np.stack(out)

  def _batch(self, images) -> dict:
    x = self.transform(images)
    return {"image": x, "label": np.zeros(len(x), np.int32), "mask": np.ones(len(x), bool)}

  def explain(self, images, layer: str | None = None, guided: bool = True) -> dict:
    """Everything fgattn_jax.explain computes for the images (probabilities, the scheme's attention, Grad-CAM and,
    with guided, guided Grad-CAM of the predicted class at `layer`, default the explained backbone's last stage), as
    NumPy."""
    import jax

    from fgattn_jax import explain
    from fgattn_jax.models.registry import compute_dtype

    layer = layer or explain.default_layer(self.scheme, self.model)
    dtype = compute_dtype(self.config.model.dtype)
    batch = self._batch(images)
    out = explain.explain(self.scheme, self.model, batch, layer=layer, dtype=dtype, cam=False, guided=guided)
    return jax.tree.map(np.asarray, out)

  def predict(self, images) -> np.ndarray:
    """(N, K) probabilities of the run's classes."""
    return np.asarray(self._probabilities(self.model, self._batch(images)))

  @functools.cached_property
  def _probabilities(self):
    """The jitted forward pass to probabilities (compiled once per batch shape)."""
    import jax
    from flax import nnx

    from fgattn_jax.models.registry import compute_dtype
    from fgattn_jax.ops.images import normalize

    dtype = compute_dtype(self.config.model.dtype)

    def probabilities(model, batch):
      _, outputs = self.scheme.forward(model, normalize(batch["image"], dtype), batch, train=False)
      return jax.nn.softmax(outputs[self.scheme.main_output].astype("float32"), axis=-1)

    return nnx.jit(probabilities)

  @functools.cached_property
  def _attention(self):
    """The jitted forward pass to the scheme's attention (no gradients: Grad-CAM is explain's)."""
    from flax import nnx

    from fgattn_jax.models.registry import compute_dtype
    from fgattn_jax.ops.images import normalize

    dtype = compute_dtype(self.config.model.dtype)
    return nnx.jit(lambda model, image: self.scheme.attention(model, normalize(image, dtype)))

  def attention(self, images) -> dict:
    """The scheme's own attention (Scheme.attention): e.g. ABN's 'maps', MA-CNN's 'part_maps' and 'boxes', RA-CNN's
    'boxes' and 'crops', as NumPy arrays."""
    import jax

    return jax.tree.map(np.asarray, self._attention(self.model, self.transform(images)))

  def gradcam(self, images, layer: str | None = None) -> np.ndarray:
    """(N, h, w) Grad-CAM of each image's predicted class at `layer` (default: the explained backbone's last stage)."""
    return self.explain(images, layer, guided=False)["gradcam_pred"]

  def top(self, probs, k: int = 5) -> list[tuple[str, float]]:
    """One image's k most probable classes: [(name, probability), ...], best first."""
    best = np.argsort(-np.asarray(probs), kind="stable")[:k]
    return [(self.class_names[i], float(probs[i])) for i in best]


def load_run(workdir: str, checkpoint: str | int = "latest") -> Run:
  """A trained run: its config, model with the checkpoint's weights ('latest': the trained model; 'best': the
  highest evaluation top-1 of any phase; or a step), and class names."""
  from fgattn_jax import config as config_lib
  from fgattn_jax.schemes import get_scheme
  from fgattn_jax.trained_run import read_config
  from fgattn_jax.training import checkpoint as ckpt_lib
  from fgattn_jax.training import loop

  workdir = os.fspath(workdir)
  cfg = read_config(workdir)
  config_lib.validate(cfg)
  scheme = get_scheme(cfg.scheme)
  model = scheme.build(cfg)
  if scheme.main_output != "logits":
    raise ConfigError(
      f"the run in {workdir} predicts attributes (multi-task {cfg.scheme}): load_run serves runs with one "
      "classifier; score the tasks with python -m fgattn_jax.evaluate"
    )
  step = ckpt_lib.load_model_weights(workdir, model, checkpoint)
  model.eval()
  names_path = os.path.join(workdir, loop.CLASS_NAMES)
  if os.path.exists(names_path):
    with open(names_path) as f:
      names = [str(n) for n in json.load(f)]
  else:  # a run trained before workdirs kept them
    names = [str(k) for k in range(cfg.data.num_classes)]
  return Run(workdir=workdir, config=cfg, scheme=scheme, model=model, step=step, class_names=names)
