"""The code keeps its shape: ruff's lint and format (pyproject.toml's [tool.ruff]) pass, and every import follows the
layering ARCHITECTURE.md describes, ops <- models <- schemes <- training <- commands, data_pipelines beside them
and below the commands."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# What each layer may import of the project's own packages (besides itself). fgattn_jax.errors sits below all.
ALLOWED = {
  "data_pipelines": set(),
  "errors": set(),
  "config": {"errors"},
  "evaluation": {"errors"},
  "ops": {"errors"},
  "models": {"ops", "errors"},
  "schemes": {"models", "ops", "errors"},
  "training": {"schemes", "models", "ops", "errors", "config", "evaluation", "data_pipelines"},
}


def layer(module: str) -> str | None:
  """The layer of a project module ('commands' for the command modules at the package's top), or None."""
  parts = module.split(".")
  if parts[0] in ("data_pipelines", "configs", "benchmarks"):
    return parts[0]
  if parts[0] != "fgattn_jax" or len(parts) == 1:
    return None
  if parts[1] in ("ops", "models", "schemes", "training", "errors", "config", "evaluation"):
    return parts[1]
  return "commands"


def imports(path: Path):
  """Every absolute import in a file, function-local ones included: (line, module)."""
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      yield from ((node.lineno, a.name) for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      # `from fgattn_jax import config` imports the module fgattn_jax.config
      yield from ((node.lineno, f"{node.module}.{a.name}") for a in node.names)


def upward_imports(files) -> list[str]:
  """files: (module name, path) pairs -> 'path:line: ...' for every import its layer may not make."""
  found = []
  for module, path in files:
    own = layer(module)
    if own not in ALLOWED:
      continue  # the commands (and configs, benchmarks) may import anything below them
    for line, name in imports(path):
      target = layer(name)
      if target and target != own and target not in ALLOWED[own]:
        found.append(f"{module}:{line}: {own} imports {name} ({target})")
  return found


def test_no_upward_import():
  files = sorted([*REPO.glob("fgattn_jax/**/*.py"), *REPO.glob("data_pipelines/**/*.py")])
  modules = [".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__") for p in files]
  assert upward_imports(zip(modules, files)) == []


def test_an_upward_import_is_caught(tmp_path):
  # An ops module importing a model inside a function, a data module importing the training loop, a scheme importing
  # a command: all named.
  probes = {
    "fgattn_jax.ops.probe": "def f():\n  from fgattn_jax.models import layers\n  return layers\n",
    "data_pipelines.probe": "from fgattn_jax.training import loop\n",
    "fgattn_jax.schemes.probe": "import os\n\nfrom fgattn_jax import cli\n",
  }
  files = []
  for module, text in probes.items():
    (tmp_path / module).write_text(text)
    files.append((module, tmp_path / module))
  assert upward_imports(files) == [
    "fgattn_jax.ops.probe:2: ops imports fgattn_jax.models.layers (models)",
    "data_pipelines.probe:1: data_pipelines imports fgattn_jax.training.loop (training)",
    "fgattn_jax.schemes.probe:3: schemes imports fgattn_jax.cli (commands)",
  ]


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff(command):
  done = subprocess.run([sys.executable, "-m", "ruff", *command], cwd=REPO, capture_output=True, text=True)
  assert done.returncode == 0, (
    f"ruff {' '.join(command)}: fix with `ruff check --fix . && ruff format .`\n" + (done.stdout + done.stderr)[-3000:]
  )
