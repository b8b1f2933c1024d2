"""fgattn-jax: fine-grained recognition with learned attention (MA-CNN, RA-CNN, ABN) in JAX and Flax."""

__version__ = "0.1.0"


def load_run(workdir, checkpoint="latest"):
  """A trained run for predictions, attention and Grad-CAM in Python: fgattn_jax.api.load_run (imported on first
  use, so that importing the package stays light)."""
  from fgattn_jax.api import load_run as load

  return load(workdir, checkpoint)
