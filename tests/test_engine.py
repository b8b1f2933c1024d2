"""The training engine on the baseline: determinism, resume, NaN stop, evaluation, optimiser details."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from engine_config import tiny
from flax import nnx

from fgattn_jax import cli, trained_run
from fgattn_jax.training import checkpoint as ckpt_lib
from fgattn_jax.training import loop, optim, phases, steps, writers


def train_losses(workdir):
  return {r["step"]: r["loss"] for r in writers.read_metrics(workdir) if r["split"] == "train"}


def test_same_seed_same_losses(tmp_path):
  loop.run(tiny(), str(tmp_path / "a"), progress=False)
  loop.run(tiny(), str(tmp_path / "b"), progress=False)
  a, b = train_losses(tmp_path / "a"), train_losses(tmp_path / "b")
  assert len(a) == 6 and a == b


class StopAfter:
  """Stands in for the signal handler: asks to stop before step `after` + 1."""

  after = 0

  def __init__(self):
    self.calls = 0

  @property
  def requested(self):
    self.calls += 1
    return "SIGTERM" if self.calls > self.after else None

  def agreed(self):  # (one process: what it was asked)
    return self.requested

  def restore(self):
    pass


def two_phases():
  c = tiny(warmup=3, main=4)  # head only, then everything
  c.phases.warmup.trains = "head"
  return c


@pytest.fixture(scope="module")
def straight_two_phases(tmp_path_factory):
  """The uninterrupted run the interrupted ones are compared with (trained once for the module)."""
  workdir = tmp_path_factory.mktemp("straight")
  loop.run(two_phases(), str(workdir), progress=False)
  return train_losses(workdir)


@pytest.mark.parametrize("after", [2, 3, 5], ids=["mid-first-phase", "phase-boundary", "mid-second-phase"])
def test_interrupted_and_resumed_run_matches_the_uninterrupted_one(tmp_path, monkeypatch, after, straight_two_phases):
  StopAfter.after = after
  with monkeypatch.context() as m:
    m.setattr(loop, "_Stop", StopAfter)
    with pytest.raises(loop.Interrupted):
      loop.run(two_phases(), str(tmp_path / "resumed"), progress=False)
  assert max(train_losses(tmp_path / "resumed")) == after
  if after == 3:  # stopped as the second phase began: the first phase's end stays saved with its evaluation
    saved = ckpt_lib.Checkpoints(str(tmp_path / "resumed"), 3)
    assert list(saved.manager.all_steps()) == [3] and "top1" in (saved.manager.metrics(3) or {})
    saved.close()
  loop.run(two_phases(), str(tmp_path / "resumed"), progress=False)

  a, b = straight_two_phases, train_losses(tmp_path / "resumed")
  assert sorted(a) == sorted(b) == list(range(1, 8))
  np.testing.assert_allclose([b[s] for s in sorted(b)], [a[s] for s in sorted(a)], rtol=1e-6)


def test_a_run_from_imagenet_weights_resumes_without_the_weight_file(tmp_path, monkeypatch):
  """The checkpoint holds every weight, and which layers were new (learning 10x faster) travels with it: a run
  resumes where the torchvision file is gone, named or not, exactly as it would have with it."""
  import torch
  from torch_reference import TorchResNet, randomize_

  weights = tmp_path / "resnet18.pth"
  torch.save(randomize_(TorchResNet("resnet18", 1000, width=1 / 16)).state_dict(), weights)  # fc: 1000 classes

  def cfg(pretrained=str(weights)):
    c = tiny(main=6)
    c.model.pretrained, c.model.require_pretrained = pretrained, True
    c.checkpoint.every_steps = 2
    return c

  loop.run(cfg(), str(tmp_path / "straight"), progress=False)
  StopAfter.after = 3
  for name in ("named", "not named"):
    with monkeypatch.context() as m:
      m.setattr(loop, "_Stop", StopAfter)
      with pytest.raises(loop.Interrupted):
        loop.run(cfg(), str(tmp_path / name), progress=False)
  weights.unlink()
  loop.run(cfg(), str(tmp_path / "named"), progress=False)  # the same command, the file gone
  loop.run(cfg(None), str(tmp_path / "not named"), progress=False)  # the preset's requirement: met by the run
  straight = train_losses(tmp_path / "straight")
  for name in ("named", "not named"):
    resumed = train_losses(tmp_path / name)
    assert sorted(resumed) == sorted(straight) == list(range(1, 7))
    np.testing.assert_allclose(
      [resumed[k] for k in sorted(resumed)], [straight[k] for k in sorted(straight)], rtol=1e-6
    )
  with pytest.raises(loop.ConfigError, match="pass the torchvision file"):  # a new run still needs the file
    loop.run(cfg(None), str(tmp_path / "new"), progress=False)


def test_a_resume_finds_its_phase_by_name_when_an_earlier_phase_is_cut_to_nothing(tmp_path, monkeypatch):
  # Phases of length 0 drop out of the plan: a position that counted phases by index resumed in the wrong one
  # (or, as here, found every phase done).
  def cfg(b_steps=3):
    c = tiny(a=3, b=3, c=3)
    c.phases.b.steps = b_steps
    return c

  loop.run(cfg(), str(tmp_path / "straight"), progress=False)
  StopAfter.after = 7  # inside phase c
  with monkeypatch.context() as m:
    m.setattr(loop, "_Stop", StopAfter)
    with pytest.raises(loop.Interrupted):
      loop.run(cfg(), str(tmp_path / "resumed"), progress=False)
  loop.run(cfg(b_steps=0), str(tmp_path / "resumed"), progress=False)  # b is done; its length no longer matters
  straight, resumed = train_losses(tmp_path / "straight"), train_losses(tmp_path / "resumed")
  assert sorted(resumed) == sorted(straight) == list(range(1, 10))
  np.testing.assert_allclose([resumed[k] for k in (8, 9)], [straight[k] for k in (8, 9)], rtol=1e-6)
  # A checkpoint saved inside b, which is then cut: refused, naming it.
  cut = phases.plan(cfg(b_steps=0), 8, ("ce",), {"all": nnx.Param})
  with pytest.raises(loop.ConfigError, match="saved in phase b, which this config no longer runs"):
    loop.resumed_phase({"phase": 1, "phase_name": "b"}, cut)


def test_a_resumed_phase_keeps_its_plateau_history(tmp_path, monkeypatch):
  """With min_delta = 1 the rule stalls as soon as it has patience + 1 windows: at step 4 of the phase. A run
  interrupted after step 2 and resumed must stop there too, not 4 windows after the resume."""

  def cfg():
    c = tiny(main=8)
    c.phases.main.plateau.update(patience=3, min_delta=1.0)
    return c

  loop.run(cfg(), str(tmp_path / "straight"), progress=False)
  StopAfter.after = 2
  with monkeypatch.context() as m:
    m.setattr(loop, "_Stop", StopAfter)
    with pytest.raises(loop.Interrupted):
      loop.run(cfg(), str(tmp_path / "resumed"), progress=False)
  loop.run(cfg(), str(tmp_path / "resumed"), progress=False)
  assert sorted(train_losses(tmp_path / "straight")) == sorted(train_losses(tmp_path / "resumed")) == [1, 2, 3, 4]


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
  c = tiny(good=4, bad=4)
  c.phases.bad.losses.ce = float("nan")  # the injected fault: every loss of the second phase is NaN
  with pytest.raises(loop.NonFiniteLoss, match="NaN or infinite in phase bad.*last good checkpoint, step 4, is intact"):
    loop.run(c, str(tmp_path), progress=False)
  from fgattn_jax.schemes import get_scheme

  model = get_scheme("baseline").build(tiny())
  assert ckpt_lib.load_model_weights(str(tmp_path), model, "latest") == 4
  params = jax.tree.leaves(nnx.state(model, nnx.Param))
  assert all(np.isfinite(np.asarray(p)).all() for p in params)


def poison_after(monkeypatch, call: int):
  """The engine's training step, with every floating array of the state made NaN by its `call`-th update: a run
  whose loss is finite up to that step and whose weights diverged in that step's update."""
  original = steps.make_train_step

  def making(*args, **kwargs):
    step, calls = original(*args, **kwargs), []

    def poisoned(leaves, batch, structure):
      leaves, metrics = step(leaves, batch, structure)
      calls.append(1)
      if len(calls) == call:
        leaves = [x * jnp.nan if jnp.issubdtype(x.dtype, jnp.floating) else x for x in leaves]
      return leaves, metrics

    return poisoned

  monkeypatch.setattr(steps, "make_train_step", making)


def test_a_checkpoint_of_diverged_weights_is_removed_and_the_run_resumes_from_the_last_good(tmp_path, monkeypatch):
  # Saved every 2 steps, logged every 3. The update of step 4 diverges: saved with step 4 (its loss was finite),
  # found by step 5's loss, and removed.
  c = tiny(main=6)
  c.log.every_steps, c.checkpoint.every_steps = 3, 2
  poison_after(monkeypatch, 4)
  with pytest.raises(
    loop.NonFiniteLoss,
    match=r"NaN or infinite in phase main at step 5, the first from the saved "
    r"weights.*step 2, is intact.*removed the checkpoint at step 4",
  ):
    loop.run(c, str(tmp_path), progress=False)
  assert ckpt_lib.Checkpoints(str(tmp_path), 3).latest_step() == 2
  # The same command resumes from step 2; now the update of step 6 (the resumed step's 4th) diverges: found by the
  # phase's closing evaluation, before it is saved.
  with pytest.raises(
    loop.NonFiniteLoss,
    match=r"outputs became NaN or infinite in phase main by step 6 \(its "
    r"evaluation\).*step 4, is intact",
  ):
    loop.run(c, str(tmp_path), progress=False)
  assert ckpt_lib.Checkpoints(str(tmp_path), 3).latest_step() == 4


def test_a_workdir_resumes_only_under_settings_that_fit_its_checkpoints(tmp_path, caplog):
  loop.run(tiny(main=2), str(tmp_path), progress=False)
  saved = (tmp_path / "config.json").read_text()
  wider = tiny(main=2)
  wider.model.width = 1 / 8
  with pytest.raises(
    loop.ConfigError,
    match=r"holds checkpoints of another run \(model.width: 0.0625 there, "
    r"0.125 now\).*new --workdir",
  ):
    loop.run(wider, str(tmp_path), progress=False)
  assert (tmp_path / "config.json").read_text() == saved  # refused before anything was written
  # A run saved when a preset's whole-number length was an int: the same length, not a change.
  (tmp_path / "config.json").write_text(saved.replace('"epochs": 0.0', '"epochs": 0'))
  assert '"epochs": 0,' in (tmp_path / "config.json").read_text()
  slower = tiny(main=2)
  slower.phases.main.optim.lr = 0.01  # what the divergence message advises: allowed, and said
  loop.run(slower, str(tmp_path), progress=False)
  assert "changed settings: phases.main.optim.lr 0.05 -> 0.01" in caplog.text and "epochs" not in caplog.text
  broken = tiny(main=2)
  broken.model.backbone = "vgg99"
  with pytest.raises(ValueError, match="vgg99"):
    loop.run(broken, str(tmp_path / "new"), progress=False)
  assert not (tmp_path / "new").exists()  # a config that builds no model makes no run, not even its folders
  unplanned = tiny(main=2)
  unplanned.phases.main.trains = "heads"
  with pytest.raises(loop.ConfigError, match=r"phases.main.trains='heads': the scheme's parameter groups are"):
    loop.run(unplanned, str(tmp_path / "new"), progress=False)
  assert not (tmp_path / "new").exists()  # nor one refused by its phase plan


def test_evaluation_counts_every_example_once(tmp_path):
  c = tiny(main=2)  # 30 test examples in batches of 8: the last batch is padded
  results = loop.run(c, str(tmp_path), progress=False)
  assert results["logits"]["count"] == 30
  assert results["logits"]["confusion"].sum() == 30


def record(monkeypatch, name):
  """Replaces steps.<name> with a wrapper that keeps every jitted step it makes, in the returned list."""
  made, original = [], getattr(steps, name)

  def making(*args, **kwargs):
    made.append(original(*args, **kwargs))
    return made[-1]

  monkeypatch.setattr(steps, name, making)
  return made


def test_no_recompilation_across_epochs(tmp_path, monkeypatch):
  made = record(monkeypatch, "make_train_step")
  c = tiny(main=24)  # three epochs of 8 steps
  loop.run(c, str(tmp_path), progress=False)
  assert len(made) == 1 and made[0]._cache_size() == 1


def test_a_cycle_reuses_its_compiled_steps_and_evaluation_compiles_once(tmp_path, monkeypatch):
  train, evaluation = record(monkeypatch, "make_train_step"), record(monkeypatch, "make_eval_step")
  c = tiny(warm=2, a=2, b=2)
  c.phases.a.cycle = c.phases.b.cycle = True
  c.cycles = 3
  c.phases.b.losses = {"ce": 0.5}
  loop.run(c, str(tmp_path), progress=False)  # warm, a#1, b#1, a#2, b#2, a#3, b#3: seven phases, each evaluated
  assert len(train) == 3 and all(f._cache_size() == 1 for f in train)  # one per phase key
  assert len(evaluation) == 1 and evaluation[0]._cache_size() == 1
  assert [r["phase"] for r in writers.read_metrics(tmp_path) if r["split"] == "eval"] == [
    "warm",
    "a#1",
    "b#1",
    "a#2",
    "b#2",
    "a#3",
    "b#3",
  ]


def test_evaluation_more_often_than_every_step_means_every_step(tmp_path):
  c = tiny(main=3)
  c.eval.every_epochs = 0.01  # 8 steps an epoch: 0.08 of a step, which once rounded to 0 (never)
  loop.run(c, str(tmp_path), progress=False)
  assert sorted(r["step"] for r in writers.read_metrics(tmp_path) if r["split"] == "eval") == [1, 2, 3]


def test_evaluate_command_writes_results(tmp_path, capsys, monkeypatch):
  from fgattn_jax import evaluate

  loop.run(tiny(first=2, second=2), str(tmp_path), progress=False)
  # By default the trained model (what the run's summary reported), not the best evaluation of any phase: that
  # may predate the last phase (here, say, the first phase's end).
  monkeypatch.setattr(ckpt_lib.Checkpoints, "best_step", lambda self: 2)
  assert evaluate.main(["--workdir", str(tmp_path)]) == 0
  out = capsys.readouterr().out
  assert "top-1" in out and "(n=30)" in out
  saved = json.loads((tmp_path / "eval" / "test_step4_logits_metrics.json").read_text())
  assert saved["count"] == 30
  assert (tmp_path / "eval" / "test_step4_logits_confusion.png").exists()
  assert evaluate.main(["--workdir", str(tmp_path), "--checkpoint", "best"]) == 0
  assert (tmp_path / "eval" / "test_step2_logits_metrics.json").exists()


def test_phase_plan_cycles_and_checks_names():
  c = tiny(init=2, grouping=3, classify=4)
  c.phases.grouping.cycle = c.phases.classify.cycle = True
  c.cycles = 2
  plan = phases.plan(c, 8, ("ce",), {"all": nnx.Param})
  assert [(p.name, p.steps) for p in plan] == [
    ("init", 2),
    ("grouping#1", 3),
    ("classify#1", 4),
    ("grouping#2", 3),
    ("classify#2", 4),
  ]
  c.phases.init.trains = "parts"
  with pytest.raises(ValueError, match="trains='parts'.*groups are all"):
    phases.plan(c, 8, ("ce",), {"all": nnx.Param})
  c.phases.init.trains = "all"
  c.phases.init.losses.rank = 1.0
  with pytest.raises(ValueError, match="losses names rank"):
    phases.plan(c, 8, ("ce",), {"all": nnx.Param})


def test_plateau_rule():
  p = phases.Plateau(patience=2, min_delta=0.01)
  assert not any(p.stalled(x) for x in (3.0, 2.0, 1.5, 1.2))
  assert p.stalled(1.199) is False  # the window (1.2, 1.199) still beats the best before it (1.5)
  assert p.stalled(1.2) is True  # now (1.199, 1.2) is within 1% of 1.2
  # A negative loss (MA-CNN's grouping loss can be) stalls the same way: a flat one ends the phase, a falling one not.
  flat = phases.Plateau(patience=2, min_delta=0.01)
  assert [flat.stalled(-1.0) for _ in range(4)] == [False, False, True, True]
  falling = phases.Plateau(patience=2, min_delta=0.01)
  assert not any(falling.stalled(x) for x in (-1.0, -1.5, -2.0, -2.5, -3.0))
  assert falling.stalled(-3.0) is False  # (-3.0, -3.0) beats the best before it (-2.5)
  assert falling.stalled(-3.01) is True  # (-3.0, -3.01) gains under 1% on -3.0


class Tiny(nnx.Module):
  def __init__(self):
    self.pretrained = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    self.new = nnx.Linear(2, 2, rngs=nnx.Rngs(1))


def first_update(tx, model, wrt=nnx.Param):
  opt = nnx.Optimizer(model, tx, wrt=wrt)
  grads = jax.tree.map(jnp.ones_like, nnx.state(model, wrt))
  before = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))
  opt.update(model, grads)
  return jax.tree.map(lambda a, b: np.asarray(b - a), before, nnx.state(model, nnx.Param)), opt


def test_new_layers_learn_faster_and_decay_skips_biases():
  c = tiny().phases.main
  c.optim.update(momentum=0.0, weight_decay=0.5, lr=0.1)
  c.schedule.kind = "constant"
  new = frozenset({("new", "kernel"), ("new", "bias")})
  tx, _ = optim.make_optimizer(c.optim, c.schedule, 10, 5, new)
  model = Tiny()
  kernel = np.asarray(model.pretrained.kernel.get_value())
  delta, _ = first_update(tx, model)
  np.testing.assert_allclose(delta["pretrained"]["bias"], -0.1)  # gradient only: no decay on biases
  np.testing.assert_allclose(delta["new"]["bias"], -1.0)  # x10
  np.testing.assert_allclose(delta["pretrained"]["kernel"], -0.1 * (1 + 0.5 * kernel), rtol=1e-5)
  # Relative to the pretrained layers trained beside them: a phase of new layers only runs them at its own rate,
  # with an optimiser state of the same structure (a run resumes across the change of phase).
  only_new, _ = optim.make_optimizer(c.optim, c.schedule, 10, 5, new, trains_pretrained=False)
  delta_new, _ = first_update(only_new, Tiny(), nnx.All(nnx.Param, nnx.PathContains("new")))
  np.testing.assert_allclose(delta_new["new"]["bias"], -0.1)
  assert not np.any(delta_new["pretrained"]["kernel"])
  assert jax.tree.structure(only_new.init(nnx.state(Tiny(), nnx.Param))) == jax.tree.structure(
    tx.init(nnx.state(Tiny(), nnx.Param))
  )


def test_a_phase_that_trains_only_new_layers_is_not_multiplied(tmp_path, monkeypatch):
  """The engine tells the optimiser which phases train pretrained parameters: a head-only warm-up from ImageNet
  weights ran its head at 10x the rate its preset gave it (0.1 for configs/baseline.py's 0.01); MA-CNN's grouping
  layers and RA-CNN's APNs, tuned without weights, ran 10x faster as soon as weights were loaded."""
  import torch
  from torch_reference import TorchResNet, randomize_

  weights = tmp_path / "resnet18.pth"
  torch.save(randomize_(TorchResNet("resnet18", 1000, width=1 / 16)).state_dict(), weights)  # fc: 1000 classes
  c = tiny(warmup=1, main=1)
  c.phases.warmup.trains = "head"
  c.model.pretrained = str(weights)
  calls, make = [], optim.make_optimizer
  monkeypatch.setattr(optim, "make_optimizer", lambda *a, **k: calls.append((a[4], a[5])) or make(*a, **k))
  loop.run(c, str(tmp_path / "run"), progress=False)
  (new_warmup, pretrained_warmup), (new_main, pretrained_main) = calls
  assert new_warmup == new_main and any("head" in p for p in new_main)  # the head is new (10 classes, not 1000)
  assert not pretrained_warmup and pretrained_main


def test_frozen_groups_get_no_optimizer_state():
  c = tiny().phases.main
  tx, _ = optim.make_optimizer(c.optim, c.schedule, 10, 5)
  model = Tiny()
  head_only = nnx.All(nnx.Param, nnx.PathContains("new"))
  delta, opt = first_update(tx, model, head_only)
  assert not np.any(delta["pretrained"]["kernel"]) and np.all(delta["new"]["kernel"])
  momentum_leaves = [x for x in jax.tree.leaves(nnx.state(opt)) if getattr(x, "ndim", 0) > 0]
  assert sum(x.size for x in momentum_leaves) == 2 * 2 + 2  # the new layer's kernel and bias only


def test_learning_rate_schedules():
  o = tiny().phases.main.optim
  s = tiny().phases.main.schedule
  s.update(kind="step", boundaries=(2, 4), decay=0.1, warmup_epochs=1.0)
  lr = optim.learning_rate(o, s, 60, 10)
  assert lr(0) == 0 and lr(5) == pytest.approx(0.025) and lr(15) == pytest.approx(0.05)
  assert lr(25) == pytest.approx(0.005) and lr(45) == pytest.approx(0.0005)
  s.update(kind="cosine", warmup_epochs=0.0, boundaries=())
  lr = optim.learning_rate(o, s, 60, 10)
  assert lr(0) == pytest.approx(0.05) and lr(30) == pytest.approx(0.025) and lr(60) == pytest.approx(0)


def test_running_a_finished_run_again_only_evaluates(tmp_path, caplog):
  first = loop.run(tiny(main=2), str(tmp_path), progress=False)["logits"]
  again = loop.run(tiny(main=2), str(tmp_path), progress=False)["logits"]
  assert again["count"] == 30 and again["nll"] == pytest.approx(first["nll"], rel=1e-6)
  assert max(train_losses(tmp_path)) == 2  # no further training steps
  assert "does not extend it" not in caplog.text
  # A longer phase does not extend a finished run (its schedule has run its course), and the run says so.
  loop.run(tiny(main=4), str(tmp_path), progress=False)
  assert max(train_losses(tmp_path)) == 2
  assert (
    "had finished all its phases: the new length (phases.main.steps) does not extend it; to train longer, start "
    f"a new --workdir (--config.init_from={tmp_path} starts"
  ) in caplog.text


def test_checkpoints_keep_the_latest_and_the_best(tmp_path):
  ckpts = ckpt_lib.Checkpoints(str(tmp_path), keep=2)
  state = {"w": jnp.zeros(3)}
  for step, top1 in [(1, 0.5), (2, 0.9), (3, None), (4, 0.3), (5, None), (6, None)]:
    ckpts.save(step, state, {"step": step}, None, None if top1 is None else {"top1": top1})
  ckpts.wait()
  assert ckpts.manager.all_steps() == [2, 5, 6] and ckpts.best_step() == 2
  ckpts.close()


def test_a_checkpoint_of_other_shapes_is_refused_with_the_reason(tmp_path):
  # E.g. a kernel saved (kh, kw, in, out), before convolution kernels were stored (out, kh, kw, in).
  ckpts = ckpt_lib.Checkpoints(str(tmp_path), keep=2)
  ckpts.save(1, {"w": jnp.zeros((3, 3, 2, 4))}, {"step": 1}, None)
  ckpts.wait()
  # One of the errors the commands print as one line (e.g. evaluate with an override that changes the model).
  with pytest.raises(cli.user_errors(), match=r"does not fit this model.*\(out, kh, kw, in\).*new workdir"):
    ckpts.restore(1, {"w": jnp.zeros((4, 3, 3, 2))})
  state, position, _ = ckpts.restore(1, {"w": jnp.ones((3, 3, 2, 4))})  # the same shapes restore
  assert position == {"step": 1} and not np.any(state["w"])
  ckpts.close()


def test_a_checkpoint_holds_the_position_as_it_was_when_saved(tmp_path):
  # orbax writes in the background: a position dict changed right after the save (the loop's next step) was seen in
  # the checkpoint (a step-2 checkpoint holding step 3, in CI; here every time, before the copy).
  saved = ckpt_lib.Checkpoints(str(tmp_path), 3)
  position = {"step": 2, "phase_step": 2, "plateau": [1.0]}
  saved.save(2, {"w": jnp.ones(3)}, position, None)
  position["step"] += 1
  position["plateau"].append(0.5)
  saved.wait()
  assert saved.restore_position(2) == {"step": 2, "phase_step": 2, "plateau": [1.0]}
  saved.close()


def test_a_process_the_run_was_not_saved_with_takes_process_0s_input_position(tmp_path, caplog):
  # Resumed on more hosts than it was saved from, process 1 has no position of its own: it used to start its share
  # of the data from the beginning, out of step with process 0 for the rest of the run.
  for process, state in (
    (0, {"grain": {"next_index": 8}, "step": 8, "epoch_skipped": [3]}),
    (2, {"grain": {"next_index": 8}, "step": 8, "epoch_skipped": [5]}),
  ):
    (tmp_path / f"process_{process}").mkdir()
    (tmp_path / f"process_{process}" / "8.json").write_text(json.dumps(state))
  with caplog.at_level("WARNING"):
    got = ckpt_lib.read_data_state(str(tmp_path), 1, 8)
  assert got == {"grain": {"next_index": 8}, "step": 8, "epoch_skipped": []}  # its own unreadable images: none yet
  assert "no input position of process 1 saved at step 8" in caplog.text
  assert ckpt_lib.read_data_state(str(tmp_path), 2, 8)["epoch_skipped"] == [5]  # its own when it has one
  assert ckpt_lib.read_data_state(str(tmp_path), 0, 8)["epoch_skipped"] == [3]
  assert ckpt_lib.read_data_state(str(tmp_path), 1, 9) is None


def test_a_run_is_evaluated_on_the_devices_of_the_machine_at_hand(caplog):
  # A run trained with an explicit mesh.data=4 and evaluation batches of 6 (on 6 devices, say), evaluated where
  # there are 4 or 1: the command used to stop at a traceback (a mesh larger than the machine, a batch that does
  # not split over its devices).
  c = tiny()
  c.mesh.data, c.data.eval_batch_size = 6, 6
  with caplog.at_level("WARNING"):
    trained_run.fit_to_devices(c, 4)
  assert (c.mesh.data, c.data.eval_batch_size) == (-1, 8)
  assert "data.eval_batch_size=6 does not split over the 4 devices: evaluating in batches of 8" in caplog.text
  c.mesh.data, c.data.eval_batch_size = 2, 6
  trained_run.fit_to_devices(c, 4)  # a mesh the machine has, and a batch that splits over it: as they are
  assert (c.mesh.data, c.data.eval_batch_size) == (2, 6)
  trained_run.fit_to_devices(c, 1)
  assert (c.mesh.data, c.data.eval_batch_size) == (-1, 6)


def test_a_stop_just_after_a_save_keeps_it_and_every_save_has_its_input_position_first(tmp_path, monkeypatch):
  # Stopped before step 3, step 2 being saved already: it used to be deleted and written again, and a SIGKILL
  # during the rewrite (a scheduler's, after its SIGTERM) left no checkpoint of it, with checkpoint.keep=1 none at all.
  # And the input position used to be written after orbax had the checkpoint, so a kill in between left a
  # checkpoint whose resume silently restarted the data.
  import orbax.checkpoint as ocp

  saved, positions_first = [], []
  original = ocp.CheckpointManager.save

  def save(self, step, *args, **kwargs):
    saved.append(step)
    positions_first.append((tmp_path / "data_state" / "process_0" / f"{step}.json").exists())
    return original(self, step, *args, **kwargs)

  c = tiny(main=6)
  c.checkpoint.every_steps = 2
  StopAfter.after = 2
  with monkeypatch.context() as m:
    m.setattr(loop, "_Stop", StopAfter)
    m.setattr(ocp.CheckpointManager, "save", save)
    with pytest.raises(loop.Interrupted):
      loop.run(c, str(tmp_path), progress=False)
  assert saved == [2] and positions_first == [True]


def test_a_damaged_checkpoint_names_the_step_to_fall_back_to(tmp_path, capsys, caplog):
  import shutil

  from fgattn_jax import evaluate

  c = tiny(main=4)
  c.checkpoint.every_steps = 2
  loop.run(c, str(tmp_path), progress=False)  # checkpoints at steps 2 and 4
  shutil.rmtree(tmp_path / "checkpoints" / "4" / "state")  # (a truncated file reads the same way)
  with pytest.raises(ckpt_lib.CheckpointDamaged, match=r"step 4 .* cannot be read .* to resume from step 2"):
    loop.run(c, str(tmp_path), progress=False)
  # evaluate says so in one line; it used to blame config.json.
  assert evaluate.main(["--workdir", str(tmp_path)]) == 2
  err = capsys.readouterr().err
  assert "checkpoint at step 4" in err and "config.json" not in err and len(err.strip().splitlines()) == 1
  # Moved aside, as the message says: the run resumes from step 2. A damaged position beside it is named too.
  shutil.move(tmp_path / "checkpoints" / "4", tmp_path / "step4")
  position = tmp_path / "data_state" / "process_0" / "2.json"
  position.write_text('{"grain": ')
  with pytest.raises(ckpt_lib.CheckpointDamaged, match="2.json is not the input position"):
    loop.run(c, str(tmp_path), progress=False)
  # Deleted: the run resumes with the data from its start, and says so. A damaged line in metrics.jsonl (a disk
  # error) costs the curves only, not the finished run.
  position.unlink()
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 5, "spl\n')
  with caplog.at_level("WARNING"):
    results = loop.run(c, str(tmp_path), progress=False)
  assert results["logits"]["count"] == 30
  assert "no input position was saved with the checkpoint at step 2" in caplog.text
  assert "no curves drawn" in caplog.text


def test_a_workdir_that_is_a_file_is_refused(tmp_path, capsys, monkeypatch):
  from fgattn_jax import train

  monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  (tmp_path / "run").write_text("")
  with pytest.raises(SystemExit) as e:
    train.main(["--config", "configs/baseline.py", "--workdir", str(tmp_path / "run")])
  assert e.value.code == 2 and "is a file: give a folder" in capsys.readouterr().err


def test_input_positions_of_checkpoints_gone_are_pruned_and_a_run_without_checkpoints_says_so(tmp_path, caplog):
  c = tiny(main=6)
  c.checkpoint.every_steps, c.checkpoint.keep = 1, 2
  folder = tmp_path / "data_state" / "process_0"
  folder.mkdir(parents=True)
  (folder / ".3.json.tmp").write_text("{")  # a write a kill cut short
  with caplog.at_level("WARNING"):
    loop.run(c, str(tmp_path / "fresh"), progress=False)
    assert "no checkpoint to resume" not in caplog.text
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "split": "train", "phase": "main", "loss": 2.0}\n')
    loop.run(c, str(tmp_path), progress=False)
  # One file per kept checkpoint (the latest 2, the best), not one per save.
  saved = ckpt_lib.Checkpoints(str(tmp_path), 2)
  assert sorted(int(p.stem) for p in folder.iterdir()) == sorted(saved.manager.all_steps())
  saved.close()
  assert "holds the metrics of an earlier run but no checkpoint to resume" in caplog.text
