"""Reporting for the training loop: metrics to JSON lines and TensorBoard, curves as a PNG, a progress bar and
the end-of-run summary.

    workdir/metrics.jsonl    one JSON object a line: {"step", "split", "phase", "time", **metrics}
    workdir/tensorboard/     TensorBoard event files, tags "{split}/{name}"
    workdir/curves.png       plot_curves()
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
import time

import tqdm

METRICS_FILE = "metrics.jsonl"
_RESERVED = ("step", "split", "phase", "time")
# Event file names carry the time only to the second and are opened with "wb": keep two writers apart.
_event_files = itertools.count()


class MetricWriter:
  """Appends metrics as JSON lines to workdir/metrics.jsonl and, if tensorboard=True, as TensorBoard scalars in
  workdir/tensorboard/ (event files readable by TensorBoard; no TensorFlow needed). Only process 0 should write:
  the caller passes enabled=False on the others, and then nothing is written (no file, no folder)."""

  def __init__(self, workdir, *, tensorboard: bool = True, enabled: bool = True):
    self.workdir = os.fspath(workdir)
    self.enabled = enabled
    self._file = self._events = None
    if not enabled:
      return
    os.makedirs(self.workdir, exist_ok=True)
    path = os.path.join(self.workdir, METRICS_FILE)
    _drop_partial_last_line(path)
    self._file = open(path, "a", encoding="utf-8")
    if tensorboard:
      # Imported here: tensorboardX imports torch whenever torch is installed, which costs seconds.
      from tensorboardX.event_file_writer import EventsWriter

      tb_dir = os.path.join(self.workdir, "tensorboard")
      os.makedirs(tb_dir, exist_ok=True)
      # EventsWriter writes synchronously; tensorboardX's SummaryWriter queues events to a thread that its
      # flush() does not drain, so a crash could lose scalars already "written".
      self._events = EventsWriter(os.path.join(tb_dir, "events"), f".{os.getpid()}.{next(_event_files)}")

  def write(self, step: int, metrics: dict[str, float], *, split: str = "train", phase: str | None = None) -> None:
    if not self.enabled:
      return
    if self._file is None:
      raise RuntimeError("MetricWriter.write after close()")
    clash = [k for k in metrics if k in _RESERVED]
    if clash:
      raise ValueError(f"metric names {clash} clash with the record's own fields {_RESERVED}")
    now = time.time()
    values = {name: float(value) for name, value in metrics.items()}
    record = {"step": int(step), "split": split, "phase": phase, "time": round(now, 3)}
    record.update({k: v if math.isfinite(v) else None for k, v in values.items()})
    # allow_nan=False: NaN/Infinity are not JSON, and the line above must have replaced them all.
    self._file.write(json.dumps(record, allow_nan=False) + "\n")
    self._file.flush()
    if self._events is not None:
      from tensorboardX.proto.event_pb2 import Event
      from tensorboardX.proto.summary_pb2 import Summary

      summary = Summary(value=[Summary.Value(tag=f"{split}/{k}", simple_value=v) for k, v in values.items()])
      self._events.write_event(Event(wall_time=now, step=int(step), summary=summary))
      self._events.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None
    if self._events is not None:
      self._events.close()
      self._events = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def _drop_partial_last_line(path):
  """A crash in the middle of a write leaves a line without its newline; appending after it would glue the
  next record onto it, so cut it off before a resumed run appends."""
  if not os.path.exists(path):
    return
  with open(path, "rb+") as f:
    data = f.read()
    if data and not data.endswith(b"\n"):
      f.truncate(data.rfind(b"\n") + 1)


def read_metrics(workdir) -> list[dict]:
  """The records of workdir/metrics.jsonl in file order (null values come back as None). A truncated last line,
  as a crash leaves it, is skipped; a bad line elsewhere is an error."""
  path = os.path.join(os.fspath(workdir), METRICS_FILE)
  with open(path, encoding="utf-8") as f:
    lines = f.read().split("\n")
  records = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      if i == len(lines) - 1:
        break
      raise ValueError(f"{path}:{i + 1}: not a JSON line: {line[:80]!r}") from None
  return records


def _series(records, split, name):
  """(steps, values) of one metric, sorted by step. A resumed run rewrites steps logged after the last checkpoint:
  the later record of a step wins, so the curve does not double back."""
  by_step = {r["step"]: r[name] for r in records if r["split"] == split and r.get(name) is not None}
  steps = sorted(by_step)
  return steps, [by_step[s] for s in steps]


def _phase_spans(records):
  """(phase, start, end) for each run of consecutive train records of one phase; the boundary between two runs is
  put halfway between their records, since the switch happened somewhere in between."""
  marks = sorted({r["step"]: r["phase"] for r in records if r["split"] == "train"}.items())
  runs = [(phase, [s for s, _ in group]) for phase, group in itertools.groupby(marks, key=lambda m: m[1])]
  spans = []
  for i, (phase, steps) in enumerate(runs):
    start = steps[0] if i == 0 else (runs[i - 1][1][-1] + steps[0]) / 2
    end = steps[-1] if i == len(runs) - 1 else (steps[-1] + runs[i + 1][1][0]) / 2
    if phase is not None:
      spans.append((phase, start, end))
  return spans


def plot_curves(workdir, out_path=None) -> str:
  """A PNG (default workdir/curves.png) of the curves in workdir/metrics.jsonl against the step: loss (train "loss"
  and "loss/*", "loss" of the other splits), accuracy (train "accuracy", "top1" of the other splits) and learning
  rate (train "lr"), with the phases shaded. Panels without data are left out. Returns the path."""
  # Imported here, and pyplot not at all: the Agg canvas draws without touching the caller's backend or state.
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  from matplotlib.patches import Patch

  workdir = os.fspath(workdir)
  out_path = os.fspath(out_path) if out_path is not None else os.path.join(workdir, "curves.png")
  records = [r for r in read_metrics(workdir) if "step" in r and "split" in r]
  others = sorted({r["split"] for r in records} - {"train"})
  train_keys = sorted({k for r in records if r["split"] == "train" for k in r})
  panels = [
    (
      "loss",
      [("train", "loss")] + [("train", k) for k in train_keys if k.startswith("loss/")] + [(s, "loss") for s in others],
    ),
    ("accuracy", [("train", "accuracy")] + [(s, "top1") for s in others]),
    ("learning rate", [("train", "lr")]),
  ]
  panels = [(title, [(s, k, *_series(records, s, k)) for s, k in keys]) for title, keys in panels]
  panels = [(title, [c for c in curves if c[2]]) for title, curves in panels]
  panels = [(title, curves) for title, curves in panels if curves]

  fig = Figure(figsize=(10, 1 + 2.8 * max(len(panels), 1)), dpi=100, layout="constrained")
  FigureCanvasAgg(fig)
  if not panels:
    fig.text(0.5, 0.5, f"no curves in {os.path.join(workdir, METRICS_FILE)}", ha="center", va="center")
    fig.savefig(out_path)
    return out_path

  axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
  spans = _phase_spans(records)
  phases = list(dict.fromkeys(p for p, _, _ in spans))
  colors = {p: f"C{i % 10}" for i, p in enumerate(phases)}
  for ax, (title, curves) in zip(axes, panels):
    for split, key, steps, values in curves:
      # Evaluations are few points: markers make a single one visible.
      ax.plot(steps, values, label=f"{split} {key}", marker="o" if split != "train" else None, markersize=3)
    for phase, start, end in spans:
      ax.axvspan(start, end, color=colors[phase], alpha=0.12, linewidth=0)
    ax.set_ylabel(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
  axes[-1].set_xlabel("step")
  if spans:
    # Name the wide spans in place; the legend names every phase, however narrow its spans.
    lo, hi = axes[0].get_xlim()
    for phase, start, end in spans:
      if end - start > 0.06 * (hi - lo):
        axes[0].text(
          (start + end) / 2,
          1.0,
          phase,
          transform=axes[0].get_xaxis_transform(),
          ha="center",
          va="bottom",
          fontsize="small",
          color=colors[phase],
          clip_on=False,
        )
    fig.legend(
      handles=[Patch(color=colors[p], alpha=0.3, label=p) for p in phases],
      loc="outside lower center",
      ncols=min(len(phases), 6),
      title="phase",
      fontsize="small",
    )
  fig.savefig(out_path)
  return out_path


class Progress:
  """A progress bar (tqdm) over a known number of steps showing phase, the shown values, images/s and ETA.
  Disabled (no output) when enabled=False, or when stderr is not a terminal and quiet=True; otherwise, when stderr
  is not a terminal (CI logs), it prints a plain line every `every` updates (and at the end) instead of redrawing."""

  def __init__(self, total_steps: int, *, initial: int = 0, enabled: bool = True, every: int = 50, quiet: bool = False):
    self.total, self.every = total_steps, max(1, every)
    self._stream = sys.stderr
    terminal = self._stream.isatty()
    self.enabled = enabled and (terminal or not quiet)
    self._bar = None
    if self.enabled and terminal:
      self._bar = tqdm.tqdm(total=total_steps, initial=initial, unit="step", dynamic_ncols=True, file=self._stream)
    self._step, self._time = initial, None
    self._sec_per_step = None
    self._updates = 0
    self._pending = None  # the plain line of the last update, if it was not printed

  def update(self, step: int, *, phase: str, images_per_step: int, **shown: float) -> None:
    if not self.enabled:
      return
    now = time.perf_counter()
    # The first interval holds compilation and the input pipeline's warm-up: time from the first update on.
    if self._time is not None and step > self._step:
      dt = (now - self._time) / (step - self._step)
      self._sec_per_step = dt if self._sec_per_step is None else 0.9 * self._sec_per_step + 0.1 * dt
    done, self._step, self._time = step - self._step, step, now
    self._updates += 1
    ips = f"{images_per_step / self._sec_per_step:,.1f}" if self._sec_per_step else "?"
    values = " | ".join(f"{k} {float(v):.4g}" for k, v in shown.items())
    if self._bar is not None:
      self._bar.set_postfix_str(" | ".join(x for x in (f"phase {phase}", values, f"{ips} img/s") if x), refresh=False)
      self._bar.update(done)
      return
    eta = tqdm.tqdm.format_interval(self._sec_per_step * (self.total - step)) if self._sec_per_step else "?"
    width = len(str(self.total))
    fields = [
      f"step {step:>{width}}/{self.total} ({100 * step / max(self.total, 1):.0f}%)",
      f"phase {phase}",
      values,
      f"{ips} img/s",
      f"ETA {eta}",
    ]
    self._pending = " | ".join(x for x in fields if x)
    if self._updates % self.every == 0 or step >= self.total:
      self._print_pending()

  def _print_pending(self):
    if self._pending is not None:
      print(self._pending, file=self._stream, flush=True)
      self._pending = None

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None
    # A log that stops between two plain lines would hide where the run ended.
    self._print_pending()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def summary(lines: dict[str, str]) -> str:
  """A boxed block of `key  value` lines with the keys aligned, for the end of a run. ASCII, so that any log
  shows it; long values are not wrapped, so that paths and commands stay whole for copying."""
  width = max((len(k) for k in lines), default=0)
  rows = []
  for key, value in lines.items():
    for i, part in enumerate(str(value).splitlines() or [""]):
      rows.append(f"{key if i == 0 else '':<{width}}  {part}")
  inner = max((len(r) for r in rows), default=0)
  rule = "+" + "-" * (inner + 2) + "+"
  return "\n".join([rule, *(f"| {r:<{inner}} |" for r in rows), rule])
