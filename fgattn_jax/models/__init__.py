"""Backbones and attention schemes as Flax NNX modules."""

from fgattn_jax.models.backbone import Backbone
from fgattn_jax.models.registry import BACKBONES, build_backbone

__all__ = ["Backbone", "BACKBONES", "build_backbone"]
