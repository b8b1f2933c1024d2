"""A run as a list of phases, in config.phase_order. Consecutive phases with cycle=True repeat config.cycles times
(alternating training: e.g. MA-CNN's grouping phase and classification phase); the rest run once where they stand."""

from __future__ import annotations

import dataclasses

import numpy as np

from fgattn_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Phase:
  name: str  # unique in the plan: the config's name, plus '#k' for the k-th cycle
  key: str  # the config's name (config.phases[key])
  trains: str
  losses: dict
  optim: object
  schedule: object
  steps: int
  plateau_patience: int
  plateau_min_delta: float


def plan(config, steps_per_epoch: int, loss_names, groups) -> list[Phase]:
  """Expands config.phases into the run's phases, checking every name they use."""
  out, cycle = [], []

  def flush():
    for k in range(config.cycles):
      out.extend(dataclasses.replace(p, name=f"{p.name}#{k + 1}") if config.cycles > 1 else p for p in cycle)
    cycle.clear()

  names = list(config.phase_order)
  if sorted(names) != sorted(config.phases.keys()):
    raise ConfigError(f"phase_order={tuple(names)} must name each of the phases {tuple(config.phases.keys())} once")
  for key in names:
    p = config.phases[key]
    steps = p.steps or int(round(p.epochs * steps_per_epoch))
    if p.trains not in groups:
      raise ConfigError(f"phases.{key}.trains={p.trains!r}: the scheme's parameter groups are {', '.join(groups)}")
    unknown = set(p.losses.keys()) - set(loss_names)
    if unknown:
      raise ConfigError(
        f"phases.{key}.losses names {', '.join(sorted(unknown))}; the scheme's losses are {', '.join(loss_names)}"
      )
    phase = Phase(
      key, key, p.trains, dict(p.losses), p.optim, p.schedule, steps, p.plateau.patience, p.plateau.min_delta
    )
    if not p.cycle:
      flush()
    if steps > 0:
      (cycle if p.cycle else out).append(phase)
  flush()
  if not out:
    raise ConfigError("Every phase has length 0: set phases.<name>.epochs or .steps")
  return out


class Plateau:
  """Ends a phase when the mean loss of the last `patience` logging windows improved by less than min_delta
  (relative) on the best before them."""

  def __init__(self, patience: int, min_delta: float, history: list | None = None):
    self.patience, self.min_delta = patience, min_delta
    self.history = [] if history is None else history  # the window losses so far (appended to in place)

  def stalled(self, loss: float) -> bool:
    self.history.append(loss)
    if self.patience <= 0 or len(self.history) <= self.patience:
      return False
    best_before = min(self.history[: -self.patience])
    recent = float(np.mean(self.history[-self.patience :]))
    # Relative to the best's size, whatever its sign: MA-CNN's grouping loss (Dis + 2 Div, Div below zero where the
    # other maps stay under the margin) can be negative, and best * (1 - min_delta) would then ask for a rise.
    return recent > best_before - self.min_delta * abs(best_before)
