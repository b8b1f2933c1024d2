import os
import tempfile

import pytest

# The suite runs on the CPU (CI has no accelerator); keep XLA from grabbing every core's worth of threads
# for a single small op and keep results deterministic.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Many tests compile the same programs (the engine's tiny run, a scheme's step at the same sizes): XLA's persistent
# cache, shared by the xdist workers, compiles each once (what each setting below saves: benchmarks/RESULTS.md,
# "The test suite").
# Entries are keyed by the program, the flags and the jax version, so a stale one is never used.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "fgattn_jax_tests_xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")
# Most tests compile far more than they run: XLA's cheap compilation (LLVM at -O0, no expensive passes) takes a
# quarter off them. The learning tests run hundreds of steps and take the optimised compilation back with the
# `optimized` fixture. Subprocesses inherit the setting.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")


def pytest_configure(config):
  # XLA's CPU code generation for fusions (its MLIR "fusion emitters", the default) takes about twice as long to
  # compile a small program as its earlier LLVM IR emitters: one elementwise operation 47 -> 26 ms, a random normal
  # draw 154 -> 95 ms. The default tier compiles thousands of small programs (each operation of an eager call is
  # one): from a fresh clone it took 8:42 with XLA's default, 5:47 with the older emitters (benchmarks/RESULTS.md,
  # "The test suite"). Both compute the same functions with other roundings, so the learning tests (`-m slow`) keep
  # XLA's default, the code generation users run, under which their numbers were recorded: with the older emitters
  # MA-CNN's hit 1.29 distinct parts per image against its bar of 1.3 (1.50 with the default). Set before JAX starts
  # (the tests import it, and conftest does not).
  flag, flags = "--xla_cpu_use_fusion_emitters=false", os.environ.get("XLA_FLAGS", "")
  if config.getoption("markexpr", "").strip() == "not slow" and flag not in flags:  # (xdist's workers inherit it)
    os.environ["XLA_FLAGS"] = f"{flags} {flag}".strip()


# With a pytest-xdist worker per core, each worker's XLA splitting its matrix products and convolutions over every
# core only makes the workers contend: one thread each. (A worker left alone at the end runs single-threaded.)
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")) >= len(os.sched_getaffinity(0)):
  os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), "--xla_cpu_multi_thread_eigen=false"]).strip()


# The files that take a minute or more, longest first (measured on the 2-core CI machine), run first: under
# pytest-xdist's --dist loadfile with --no-loadscope-reorder (pyproject.toml) the longest start side by side on the
# two workers and the short files fill in behind them; with xdist's default reordering (files with the most tests
# first) the single-test learning files ran last and left one worker idle at the end.
LONG_FILES = (
  "test_racnn_learning.py",
  "test_macnn_learning.py",
  "test_macnn_e2e_learning.py",
  "test_engine.py",
  "test_visualize.py",
  "test_cli.py",
  "test_macnn.py",
  "test_racnn.py",
  "test_engine_distributed.py",
  "test_abn.py",
  "test_abn_learning.py",
  "test_learning.py",
  "test_backbones.py",
  "test_benchmarks.py",
  "test_abn_recipes.py",
  "test_landmarks_recipe.py",
  "test_same_work.py",
)


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(LONG_FILES)}
  items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))


@pytest.fixture
def optimized():
  """XLA's full optimisation for the test (the learning tests: hundreds of steps), restored afterwards. Programs
  compiled either way are kept apart: the flag is part of the compilation cache's key."""
  import jax

  previous = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", False)
  jax.clear_caches()
  yield
  jax.config.update("jax_disable_most_optimizations", previous)
  jax.clear_caches()


@pytest.fixture
def x64():
  """float64 in JAX for the test (finite-difference gradient checks), restored afterwards."""
  import jax

  previous = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", previous)


@pytest.fixture(params=["gather", "matmul"])
def resample(request):
  """Runs the test with each of the crops' two formulations (ops.crops.RESAMPLE), then restores the default.

  The switch is read at trace time: jitted functions traced under the other one are dropped from the caches."""
  import jax

  from fgattn_jax.ops import crops

  default = crops.RESAMPLE
  jax.clear_caches()
  crops.RESAMPLE = request.param
  yield request.param
  crops.RESAMPLE = default
  jax.clear_caches()
