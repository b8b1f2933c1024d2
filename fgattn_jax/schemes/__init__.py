"""Training schemes: each declares its model, its losses, its parameter groups and its evaluation heads;
the engine in fgattn_jax.training runs any of them."""

from fgattn_jax.errors import ConfigError
from fgattn_jax.schemes.abn import ABNScheme
from fgattn_jax.schemes.base import Scheme
from fgattn_jax.schemes.baseline import Baseline
from fgattn_jax.schemes.macnn import MACNNScheme
from fgattn_jax.schemes.racnn import RACNNScheme

SCHEMES = {"baseline": Baseline, "abn": ABNScheme, "macnn": MACNNScheme, "racnn": RACNNScheme}


def get_scheme(name: str) -> Scheme:
  if name not in SCHEMES:
    raise ConfigError(f"Unknown scheme {name!r}; available: {', '.join(SCHEMES)}")
  return SCHEMES[name]()


__all__ = ["Scheme", "SCHEMES", "get_scheme"]
