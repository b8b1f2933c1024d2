"""Metric writers, curves, progress lines and the run summary."""

import glob
import io
import json
import math
import os
import struct

import numpy as np
import pytest
from PIL import Image
from tensorboardX.proto.event_pb2 import Event
from tensorboardX.record_writer import masked_crc32c

from fgattn_jax.training.writers import MetricWriter, Progress, plot_curves, read_metrics, summary


def read_events(path):
  """The Events of a TFRecord event file, checking each record's CRCs (TensorBoard's own reader needs TF)."""
  events = []
  with open(path, "rb") as f:
    data = f.read()
  pos = 0
  while pos < len(data):
    header = data[pos : pos + 8]
    (length,) = struct.unpack("<Q", header)
    assert struct.unpack("<I", data[pos + 8 : pos + 12])[0] == masked_crc32c(header)
    body = data[pos + 12 : pos + 12 + length]
    assert struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])[0] == masked_crc32c(body)
    events.append(Event.FromString(body))
    pos += 16 + length
  return events


def test_json_lines_round_trip(tmp_path):
  with MetricWriter(tmp_path, tensorboard=False) as w:
    w.write(10, {"loss": np.float32(1.5), "accuracy": 0.25, "lr": np.float64(0.1)}, phase="cls")
    w.write(20, {"loss": float("nan"), "grad_norm": np.inf, "count": np.int32(3)})
    w.write(20, {"top1": 0.5}, split="eval")
  text = (tmp_path / "metrics.jsonl").read_text()
  assert "NaN" not in text and "Infinity" not in text
  for line in text.splitlines():
    json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
  a, b, c = read_metrics(tmp_path)
  assert a["step"] == 10 and a["split"] == "train" and a["phase"] == "cls"
  assert a["loss"] == 1.5 and a["accuracy"] == 0.25 and a["lr"] == pytest.approx(0.1)
  assert abs(a["time"] - b["time"]) < 60 and a["time"] > 1.6e9
  assert b["loss"] is None and b["grad_norm"] is None and b["count"] == 3.0 and b["phase"] is None
  assert c == {"step": 20, "split": "eval", "phase": None, "time": c["time"], "top1": 0.5}


def test_reserved_names_are_refused(tmp_path):
  with MetricWriter(tmp_path, tensorboard=False) as w, pytest.raises(ValueError, match="step"):
    w.write(1, {"step": 2.0})


def test_truncated_last_line_is_tolerated_and_repaired(tmp_path):
  with MetricWriter(tmp_path, tensorboard=False) as w:
    w.write(1, {"loss": 2.0})
    w.write(2, {"loss": 1.0})
  path = tmp_path / "metrics.jsonl"
  path.write_text(path.read_text()[:-9])  # a crash in the middle of the second line
  assert [r["step"] for r in read_metrics(tmp_path)] == [1]
  # A resumed run appends after the cut-off line, not onto it.
  with MetricWriter(tmp_path, tensorboard=False) as w:
    w.write(2, {"loss": 0.5})
  assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path)] == [(1, 2.0), (2, 0.5)]


def test_bad_line_in_the_middle_is_an_error(tmp_path):
  (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"ste\n{"step": 2}\n')
  with pytest.raises(ValueError, match=":2:"):
    read_metrics(tmp_path)


def test_disabled_writes_nothing(tmp_path):
  workdir = tmp_path / "w"
  with MetricWriter(workdir, enabled=False) as w:
    w.write(1, {"loss": 1.0})
  assert not workdir.exists()


def test_tensorboard_events_hold_the_scalars(tmp_path):
  with MetricWriter(tmp_path) as w:
    w.write(5, {"loss": 2.0, "lr": np.float32(0.01)}, phase="a")
    w.write(7, {"top1": 0.75, "loss": float("nan")}, split="eval")
    # Readable before close: a crash loses nothing already written.
    (path,) = glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
    assert len(read_events(path)) == 3
  events = read_events(path)
  assert events[0].file_version == "brain.Event:2"
  scalars = {(e.step, v.tag): v.simple_value for e in events[1:] for v in e.summary.value}
  assert scalars[(5, "train/loss")] == 2.0 and scalars[(5, "train/lr")] == pytest.approx(0.01)
  assert scalars[(7, "eval/top1")] == 0.75 and math.isnan(scalars[(7, "eval/loss")])


def test_two_writers_keep_apart(tmp_path):
  for step in (1, 2):
    with MetricWriter(tmp_path) as w:
      w.write(step, {"loss": 1.0})
  assert len(glob.glob(str(tmp_path / "tensorboard" / "events.*"))) == 2
  assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]


def write_run(workdir, phases, steps=60, every=5, keys=("loss", "loss/cls", "accuracy", "lr"), evals=True):
  with MetricWriter(workdir, tensorboard=False) as w:
    for step in range(every, steps + 1, every):
      all_values = {"loss": 2 / step, "loss/cls": 1 / step, "accuracy": step / steps, "lr": 0.1 * (1 - step / steps)}
      w.write(step, {k: all_values[k] for k in keys}, phase=phases[(step // 20) % len(phases)])
      if evals and step % 20 == 0:
        w.write(step, {"loss": 3 / step, "top1": step / steps / 2}, split="eval")


def check_png(path):
  with Image.open(path) as im:
    im.load()
    assert im.format == "PNG" and 600 <= im.width <= 2000 and 200 <= im.height <= 2000
    return im.size


def test_plot_curves_with_alternating_phases(tmp_path):
  write_run(tmp_path, ["classify", "group"])
  path = plot_curves(tmp_path)
  assert path == os.path.join(tmp_path, "curves.png")
  w, h = check_png(path)
  assert h > w / 2  # three panels


def test_plot_curves_with_missing_keys(tmp_path):
  write_run(tmp_path, [None], keys=("loss",), evals=False)
  out = tmp_path / "sub.png"
  assert plot_curves(tmp_path, out) == str(out)
  check_png(out)


def test_plot_curves_without_any_curve(tmp_path):
  with MetricWriter(tmp_path, tensorboard=False) as w:
    w.write(1, {"grad_norm": 1.0})
  check_png(plot_curves(tmp_path))


def test_plot_curves_after_a_resume_does_not_double_back(tmp_path):
  from fgattn_jax.training.writers import _phase_spans, _series

  records = [
    {"step": s, "split": "train", "phase": p, "loss": v}
    for s, p, v in [(1, "a", 3.0), (2, "a", 2.0), (3, "b", 1.0), (2, "a", 2.5), (3, "b", 1.5)]
  ]
  assert _series(records, "train", "loss") == ([1, 2, 3], [3.0, 2.5, 1.5])
  assert _phase_spans(records) == [("a", 1, 2.5), ("b", 2.5, 3)]


def test_progress_prints_plain_lines_when_not_a_terminal(capsys):
  p = Progress(100, initial=0, every=2)
  for step in range(10, 101, 10):
    p.update(step, phase="cls", images_per_step=32, loss=0.12345, accuracy=np.float32(0.5))
  p.close()
  lines = capsys.readouterr().err.splitlines()
  assert len(lines) == 5  # every second update; the last one is also the end
  assert "step  20/100" in lines[0] and "phase cls" in lines[0] and "loss 0.1235" in lines[0]
  assert "accuracy 0.5" in lines[0] and "img/s" in lines[0] and "ETA" in lines[0]
  assert "?" not in lines[1]  # known once two updates have been timed
  assert lines[-1].startswith("step 100/100 (100%)") and "ETA 00:00" in lines[-1]


def test_progress_prints_the_last_update_on_close(capsys):
  with Progress(1000, initial=500, every=50) as p:
    p.update(510, phase="a", images_per_step=8, loss=1.0)
  (line,) = capsys.readouterr().err.splitlines()
  assert line.startswith("step  510/1000 (51%)")


def test_progress_quiet_or_disabled_prints_nothing(capsys):
  for kw in ({"quiet": True}, {"enabled": False}):
    with Progress(10, every=1, **kw) as p:
      p.update(10, phase="a", images_per_step=8, loss=1.0)
  assert capsys.readouterr().err == ""


class Terminal(io.StringIO):
  def isatty(self):
    return True


def test_progress_bar_on_a_terminal(monkeypatch):
  term = Terminal()
  monkeypatch.setattr("sys.stderr", term)
  with Progress(4, every=100) as p:
    for step in range(1, 5):
      p.update(step, phase="group", images_per_step=16, loss=0.5)
  out = term.getvalue()
  assert "\r" in out and "4/4" in out and "phase group" in out and "loss 0.5" in out and "img/s" in out


def test_summary_aligns_keys():
  text = summary(
    {"final top-1": "83.2%", "checkpoints": "/w/ckpt", "evaluate": "python -m fgattn_jax.evaluate --workdir /w"}
  )
  lines = text.splitlines()
  assert len(lines) == 5 and lines[0] == lines[-1] and set(lines[0]) == {"+", "-"}
  assert len({len(line) for line in lines}) == 1
  body = lines[1:-1]
  assert [line.index(v) for line, v in zip(body, ["83.2%", "/w/ckpt", "python"])] == [15] * 3
  assert "| final top-1  83.2%" in body[0] and body[2].endswith("--workdir /w |")
