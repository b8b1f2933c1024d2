"""Config files, presets and command-line overrides."""

import textwrap

import pytest

from configs import common
from fgattn_jax.config import ConfigError, config_from_args, load_config, override, presets, split_overrides

CONFIG = """
from configs import common

PRESETS = {"": "synthetic", "cub": "CUB-200-2011 at 448", "cifar100": "CIFAR-100"}

def get_config(arg=None):
  c = common.get_config()
  if arg:
    common.use_dataset(c, arg)
  return c
"""


@pytest.fixture
def config_file(tmp_path):
  # A config of its own folder structure: <root>/configs/x.py importing configs.common from <root>.
  # Here <root> is a temp dir, so `configs` must still resolve to the project's package.
  path = tmp_path / "scheme.py"
  path.write_text(textwrap.dedent(CONFIG))
  return str(path)


def test_bare_name_and_presets(config_file):
  assert load_config(config_file).data.source == "synthetic"
  cub = load_config(config_file + ":cub")
  assert (cub.data.num_classes, cub.data.image_size, cub.data.resize_size) == (200, 448, 512)
  assert presets(config_file) == {"": "synthetic", "cub": "CUB-200-2011 at 448", "cifar100": "CIFAR-100"}


def test_unknown_preset_names_the_nearest(config_file):
  with pytest.raises(ConfigError, match="no preset 'cubb'.*Did you mean 'cub'"):
    load_config(config_file + ":cubb")
  with pytest.raises(ConfigError, match=r"Presets: \(bare name\), cub, cifar100\.$"):
    load_config(config_file + ":birds")


def test_missing_file_and_non_config():
  with pytest.raises(ConfigError, match="not found"):
    load_config("configs/nope.py")
  with pytest.raises(ConfigError, match="no get_config"):
    load_config("configs/__init__.py")


def test_overrides_are_parsed_by_type(config_file):
  pairs, rest = split_overrides(
    [
      "--config.phases.main.optim.lr=0.1",
      "--workdir",
      "/tmp/w",
      "--config.data.batch_size",
      "8",
      "--config.model.frozen_bn=true",
      "--config.phases.main.schedule.boundaries=150,225",
      "--config.model.pretrained=/w/r50.pth",
      "--config.model.backbone=resnet50",
      "--config.phases.main.optim.weight_decay=1",
      "--config.phase_order=main",
    ]
  )
  assert rest == ["--workdir", "/tmp/w"]
  cfg = config_from_args(config_file, pairs)
  optim = cfg.phases.main.optim
  assert optim.lr == 0.1 and cfg.data.batch_size == 8 and cfg.model.frozen_bn is True
  assert cfg.phases.main.schedule.boundaries == (150, 225) and cfg.phase_order == ("main",)
  assert cfg.model.pretrained == "/w/r50.pth" and cfg.model.backbone == "resnet50"
  assert isinstance(optim.weight_decay, float) and optim.weight_decay == 1.0


def test_unknown_key_names_the_nearest(config_file):
  cfg = load_config(config_file)
  with pytest.raises(ConfigError, match=r"Unknown config key 'phases.main.optim.lrr'.*phases.main.optim.lr"):
    override(cfg, "phases.main.optim.lrr", "0.1")
  with pytest.raises(ConfigError, match=r"Unknown config key 'lr'.*phases.main.optim.lr"):
    override(cfg, "lr", "0.1")
  with pytest.raises(ConfigError, match=r"Unknown config key 'data.batchsize'.*data.batch_size"):
    override(cfg, "data.batchsize", "4")


def test_wrong_types_are_refused(config_file):
  cfg = load_config(config_file)
  with pytest.raises(ConfigError, match="data.batch_size holds an int"):
    override(cfg, "data.batch_size", "eight")
  with pytest.raises(ConfigError, match="data.batch_size"):
    override(cfg, "data.batch_size", "8.5")
  with pytest.raises(ConfigError, match="true or false"):
    override(cfg, "model.frozen_bn", "maybe")
  with pytest.raises(ConfigError, match="is a section"):
    override(cfg, "phases.main.optim", "sgd")
  with pytest.raises(ConfigError, match="needs a value"):
    split_overrides(["--config.optim.lr"])
  with pytest.raises(ConfigError, match="holds a float"):
    override(cfg, "phases.main.optim.lr", "fast")


def test_a_flag_is_not_a_value():
  with pytest.raises(ConfigError, match=r"^--config.data.image_size needs a value: --config.data.image_size=VALUE$"):
    split_overrides(["--config.data.image_size", "--workdir", "/tmp/w"])
  assert split_overrides(["--config.seed", "-1", "--workdir", "/tmp/w"]) == ([("seed", "-1")], ["--workdir", "/tmp/w"])


@pytest.mark.parametrize(
  "overrides, message",
  [
    (["data.batch_size=0"], "data.batch_size=0: must be 1 or more"),
    (["data.eval_batch_size=-4"], "data.eval_batch_size=-4: must be 1 or more"),
    (["data.image_size=0"], "data.image_size=0: must be 1 or more"),
    (["data.resize_size=64"], "data.resize_size=64: must be at least data.image_size=96"),
    (["data.augment.pad=-1"], "data.augment.pad=-1: must be 0 or more"),
    (["data.num_workers=-1"], "data.num_workers=-1: must be 0 (decode in threads of the main process) or more"),
    (["phases.main.schedule.kind=steps"], "phases.main.schedule.kind='steps': use 'cosine', 'step' or 'constant'"),
    (
      ["phases.main.schedule.kind=step", "phases.main.schedule.boundaries=abc"],
      (
        "phases.main.schedule.boundaries=('abc',): must be epochs (numbers), e.g. "
        "--config.phases.main.schedule.boundaries=150,225"
      ),
    ),
  ],
)
def test_values_that_cannot_work_are_refused_up_front(config_file, overrides, message):
  pairs, _ = split_overrides([f"--config.{o}" for o in overrides])
  with pytest.raises(ConfigError) as e:
    config_from_args(config_file, pairs)
  assert str(e.value).startswith(message)


def test_configs_are_locked(config_file):
  cfg = load_config(config_file)
  with pytest.raises(AttributeError):
    cfg.phases.main.optim.learning_rate = 0.1


def test_common_datasets():
  c = common.use_dataset(common.get_config(), "cifar100")
  assert (c.data.source, c.data.name, c.data.num_classes, c.data.image_size) == ("tfds", "cifar100", 100, 32)
  assert c.data.augment.pad == 4 and common.use_dataset(common.get_config(), "cub").data.augment.pad == 0
  with pytest.raises(ValueError, match="Unknown data set"):
    common.use_dataset(c, "imagenet22k")
  # FGVC-Aircraft trains on train + val (6667 images), as its protocol and the papers do; the others on train.
  splits = {
    name: (
      common.use_dataset(common.get_config(), name).data.train_split,
      common.use_dataset(common.get_config(), name).data.eval_split,
    )
    for name in common.DATASETS
  }
  assert splits["aircraft"] == ("trainval", "test") and splits["cub"] == splits["cars"] == ("train", "test")


@pytest.mark.parametrize("scheme", ["baseline", "abn", "macnn", "racnn"])
def test_every_presets_phase_lengths_and_loss_weights_take_fractions(scheme):
  # A preset writes `epochs=8` or a weight of 1: the fields are floats all the same, so an override may be 0.5.
  path = f"configs/{scheme}.py"
  for preset in presets(path):
    cfg = load_config(f"{path}:{preset}" if preset else path)
    for name, phase in cfg.phases.items():
      override(cfg, f"phases.{name}.epochs", "0.5")
      assert cfg.phases[name].epochs == 0.5, (preset, name)
      for loss in phase.losses:
        override(cfg, f"phases.{name}.losses.{loss}", "0.25")
