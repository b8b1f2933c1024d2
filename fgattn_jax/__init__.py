"""fgattn-jax: fine-grained recognition with learned attention (MA-CNN, RA-CNN, ABN) in JAX and Flax."""

__version__ = "0.1.0"
