"""Input images on the device: uint8 pixels -> normalised floats in the compute dtype."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# ImageNet statistics in pixel units (torchvision's weights expect them). NumPy, not jnp: creating a jax
# array at import would start the backend before jax.distributed.initialize() may run.
MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


def normalize(images, dtype):
  return ((images.astype(jnp.float32) - MEAN) / STD).astype(dtype)


def resize_square(images, side: int):
  """(B, H, W, C) -> (B, side, side, C), bilinear with antialiasing (a reduction averages, as PIL's does), in the
  images' dtype: the coarse view of an image whose zooms or crops sample it at full resolution."""
  b, _, _, c = images.shape
  return jax.image.resize(images, (b, side, side, c), "linear", antialias=True).astype(images.dtype)
