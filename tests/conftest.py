import os

import pytest

# The suite runs on the CPU (CI has no accelerator); keep XLA from grabbing every core's worth of threads
# for a single small op and keep results deterministic.
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def pytest_collection_modifyitems(items):
  """The learning tests (minutes each) first, so that with several workers none of them starts last and runs alone
  at the end."""
  items.sort(key=lambda item: not item.path.name.endswith("_learning.py"))


@pytest.fixture
def x64():
  """float64 in JAX for the test (finite-difference gradient checks), restored afterwards."""
  import jax
  previous = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", previous)
