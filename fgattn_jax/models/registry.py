"""Every backbone built by name from one table."""

from __future__ import annotations

import contextlib
import difflib
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from fgattn_jax.errors import ConfigError
from fgattn_jax.models import resnet, vgg, wideresnet
from fgattn_jax.models.backbone import Backbone

BACKBONES = {}
for _name in vgg.DEPTHS:
  BACKBONES[_name] = functools.partial(vgg.VGG, _name, bn=False)
  BACKBONES[_name + "_bn"] = functools.partial(vgg.VGG, _name, bn=True)
for _name in (*resnet.IMAGENET_DEPTHS, *resnet.CIFAR_DEPTHS):
  BACKBONES[_name] = functools.partial(resnet.ResNet, _name)
for _name in wideresnet.CONFIGS:
  BACKBONES[_name] = functools.partial(wideresnet.WideResNet, _name)

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(name: str):
  """'auto' is bfloat16 on an accelerator and float32 on the CPU (where bfloat16 is emulated and slow)."""
  if name == "auto":
    return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
  if name not in DTYPES:
    raise ConfigError(f"Unknown compute dtype {name!r}; use 'auto' or one of {', '.join(DTYPES)}")
  return DTYPES[name]


def build_backbone(name: str, num_classes: int, *, dtype="float32", rngs: nnx.Rngs | int = 0, **kwargs) -> Backbone:
  """Builds backbone `name` (see BACKBONES) with `num_classes` outputs.

  dtype is the compute dtype ('auto', 'bfloat16', 'float32' or a jnp dtype; parameters stay float32).
  kwargs go to the family's constructor: width, frozen_bn, freeze_features for all; head
  ('classifier' | 'gap') and dropout for VGG; dropout for WRN.
  """
  if name not in BACKBONES:
    near = difflib.get_close_matches(name, BACKBONES, n=3)
    hint = f" Did you mean {', '.join(near)}?" if near else ""
    raise ConfigError(f"Unknown backbone {name!r}.{hint} Available: {', '.join(BACKBONES)}")
  dtype = compute_dtype(dtype) if isinstance(dtype, str) else dtype
  rngs = nnx.Rngs(rngs) if isinstance(rngs, int) else rngs
  with initializing():
    return BACKBONES[name](num_classes, dtype=dtype, rngs=rngs, **kwargs)


def initializing():
  """The context models are built in: JAX's random draws in threefry's single-device counter layout.

  The default layout (jax_threefry_partitionable, for draws sharded across devices) takes 2.5x the compile time per
  array shape, measured on a 2-core CPU: 0.8 s against 0.3 s each; building a 1/16-width ResNet-18 20 s against
  6 s (half of the tests' tiny training runs), a ResNet-50 13 s against 9 s. Initial values are drawn on one
  device, where that layout buys nothing; the values differ between the layouts, their distribution does not.
  Without the flag (a future JAX), the default."""
  flag = getattr(jax, "threefry_partitionable", None)
  return flag(False) if flag is not None else contextlib.nullcontext()
