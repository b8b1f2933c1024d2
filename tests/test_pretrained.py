"""Exact torchvision weight import: parity with PyTorch reference modules, strictness, file formats."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from safetensors.numpy import save_file
from torch_reference import TorchResNet, TorchVGG, randomize_

from fgattn_jax.models import build_backbone
from fgattn_jax.models.pretrained import WeightImportError, load_torchvision, read_state_dict

# name -> (width, reference factory); the ResNets at full width, the VGGs at a quarter (their FC-4096 head
# at full width is 120M parameters, which only slows the test down: the key mapping does not depend on it).
MODELS = {
  "vgg16_bn": (0.25, lambda: TorchVGG("vgg16", 10, bn=True, width=0.25)),
  "vgg19": (0.25, lambda: TorchVGG("vgg19", 10, width=0.25)),
  "resnet18": (1.0, lambda: TorchResNet("resnet18", 10)),
  "resnet50": (1.0, lambda: TorchResNet("resnet50", 10)),
}


def state_dict_arrays(ref):
  return {k: v.numpy() for k, v in ref.state_dict().items()}


def rel_err(ours, ref):
  ref = ref.numpy()
  ref = ref.transpose(0, 2, 3, 1) if ref.ndim == 4 else ref  # NCHW -> NHWC
  return float(np.max(np.abs(np.asarray(ours) - ref)) / np.max(np.abs(ref)))


def weights(model):
  return [np.asarray(v) for v in jax.tree.leaves(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat)))]


def run_both(ref, ours, hw, seed=0):
  x = np.random.RandomState(seed).randn(2, 3, *hw).astype(np.float32)
  with torch.no_grad():
    t_logits, t_feats = ref(torch.from_numpy(x))
  ours.eval()
  j_logits, j_feats = ours(jnp.asarray(x.transpose(0, 2, 3, 1)))
  return (j_logits, j_feats), (t_logits, t_feats)


@pytest.fixture(scope="module", params=list(MODELS))
def converted(request):
  width, factory = MODELS[request.param]
  ref = randomize_(factory(), seed=len(request.param))
  ours = (
    build_backbone(request.param, 10, width=width, head="classifier", rngs=1)
    if "vgg" in request.param
    else build_backbone(request.param, 10, width=width, rngs=1)
  )
  report = load_torchvision(ours, state_dict_arrays(ref))
  return ref, ours, report


@pytest.mark.parametrize("hw", [(64, 64), (64, 96)], ids=["square", "non-square"])
def test_logits_and_every_stage_match_pytorch(converted, hw):
  ref, ours, report = converted
  assert not [k for k, why in report.dropped.items() if "bookkeeping" not in why]
  (j_logits, j_feats), (t_logits, t_feats) = run_both(ref, ours, hw)
  assert set(j_feats) == set(t_feats)
  assert rel_err(j_logits, t_logits) < 1e-4
  for name in t_feats:
    assert j_feats[name].shape == tuple(
      t_feats[name].permute(0, 2, 3, 1).shape if t_feats[name].ndim == 4 else t_feats[name].shape
    )
    assert rel_err(j_feats[name], t_feats[name]) < 1e-4, name


def test_another_class_count_imports_the_backbone_only():
  ref = randomize_(TorchResNet("resnet18", 1000, width=0.25))
  ours = build_backbone("resnet18", 10, width=0.25, rngs=3)
  fresh_fc = np.asarray(ours.head.fc.kernel.get_value())
  report = load_torchvision(ours, state_dict_arrays(ref))
  assert set(k for k, why in report.dropped.items() if "backbone-only" in why) == {"fc.weight", "fc.bias"}
  assert "backbone-only" in report.summary()
  np.testing.assert_array_equal(np.asarray(ours.head.fc.kernel.get_value()), fresh_fc)
  (_, j_feats), (_, t_feats) = run_both(ref, ours, (64, 64))
  assert rel_err(j_feats["pre_logits"], t_feats["pre_logits"]) < 1e-4


def test_vgg_gap_head_takes_the_convolutions_and_drops_the_fc_classifier():
  ref = randomize_(TorchVGG("vgg16", 1000, bn=True, width=0.25))
  ours = build_backbone("vgg16_bn", 10, width=0.25, head="gap", rngs=0)
  report = load_torchvision(ours, state_dict_arrays(ref))
  assert {k for k, why in report.dropped.items() if "gap" in why} == {
    f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")
  }
  (_, j_feats), (_, t_feats) = run_both(ref, ours, (64, 80))
  assert rel_err(j_feats["conv5_3"], t_feats["conv5_3"]) < 1e-4


def test_pth_and_safetensors_files_load_the_same(tmp_path):
  ref = randomize_(TorchResNet("resnet18", 10, width=0.25))
  sd = ref.state_dict()
  # A DataParallel training checkpoint: wrapped and prefixed.
  torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 3}, tmp_path / "ckpt.pth")
  save_file(state_dict_arrays(ref), str(tmp_path / "w.safetensors"))
  a, b = (build_backbone("resnet18", 10, width=0.25, rngs=s) for s in (0, 1))
  load_torchvision(a, tmp_path / "ckpt.pth")
  load_torchvision(b, str(tmp_path / "w.safetensors"))
  for x, y in zip(weights(a), weights(b)):
    np.testing.assert_array_equal(x, y)
  (j_logits, _), (t_logits, _) = run_both(ref, a, (32, 32))
  assert rel_err(j_logits, t_logits) < 1e-4


def test_files_are_read_by_their_contents_from_any_name(tmp_path, monkeypatch):
  ref = randomize_(TorchResNet("resnet18", 10, width=0.25))
  torch.save(ref.state_dict(), tmp_path / "torch.safetensors")  # each format under the other's name
  save_file(state_dict_arrays(ref), str(tmp_path / "safe.pth"))
  torch.save({"state_dict": {"model." + k: v for k, v in ref.state_dict().items()}}, tmp_path / "lightning.ckpt")
  monkeypatch.setenv("HOME", str(tmp_path))
  expected = state_dict_arrays(ref)
  for name in ("torch.safetensors", "safe.pth", "lightning.ckpt", "~/safe.pth"):
    sd = read_state_dict(name if name.startswith("~") else tmp_path / name)
    assert sd.keys() == expected.keys(), name
    for k in sd:
      np.testing.assert_array_equal(sd[k], expected[k])


def test_missing_and_unexpected_keys_are_listed():
  sd = state_dict_arrays(randomize_(TorchResNet("resnet18", 10, width=0.25)))
  del sd["layer2.1.bn2.running_var"]
  sd["layer5.0.conv1.weight"] = np.zeros((1, 1, 1, 1), np.float32)
  model = build_backbone("resnet18", 10, width=0.25)
  before = weights(model)
  with pytest.raises(WeightImportError) as e:
    load_torchvision(model, sd)
  assert "missing from the file (1): layer2.1.bn2.running_var" in str(e.value)
  assert "unexpected in the file (1): layer5.0.conv1.weight" in str(e.value)
  # Nothing was half-loaded.
  for x, y in zip(before, weights(model)):
    np.testing.assert_array_equal(x, y)


def test_wrong_architecture_is_a_shape_error():
  sd = state_dict_arrays(randomize_(TorchResNet("resnet18", 10, width=0.25)))
  with pytest.raises(WeightImportError, match="shapes that differ.*conv1.weight.*width"):
    load_torchvision(build_backbone("resnet18", 10, width=0.5), sd)
  with pytest.raises(WeightImportError, match="missing from the file.*conv3"):
    load_torchvision(build_backbone("resnet50", 10, width=0.25), sd)


@pytest.mark.parametrize("file_bn", [True, False])
def test_a_file_for_another_architecture_is_named_with_the_backbone_to_set(file_bn):
  # torchvision numbers VGG's layers in one sequence: in a vgg*_bn file a BatchNorm's vector sits where a VGG
  # without BN has a convolution (features.1), which once ended in a raw numpy transpose error.
  sd = state_dict_arrays(randomize_(TorchVGG("vgg16" if file_bn else "vgg11", 10, bn=file_bn, width=0.25)))
  model = build_backbone("vgg19" if file_bn else "vgg16_bn", 10, width=0.25)
  with pytest.raises(WeightImportError) as e:
    load_torchvision(model, sd)
  message = str(e.value)
  held, ours = ("vgg16_bn", "vgg19") if file_bn else ("vgg11", "vgg16_bn")
  assert (
    f"the file holds torchvision's {held} and the model is a {ours}: set model.backbone={held} to use this "
    f"file, or point model.pretrained at a {ours} file"
  ) in message
  assert len(message) < 1500  # the first keys of each kind, and how many more
  # Depth and block kind name a ResNet whatever its width.
  r18 = state_dict_arrays(randomize_(TorchResNet("resnet18", 10, width=0.25)))
  with pytest.raises(WeightImportError, match="holds torchvision's resnet18 and the model is a resnet50"):
    load_torchvision(build_backbone("resnet50", 10, width=0.25), r18)


def test_a_partial_vgg_file_with_batch_norm_is_still_named_as_such():
  # Where the layers match no torchvision VGG, batch normalisation alone is named.
  sd = state_dict_arrays(randomize_(TorchVGG("vgg16", 10, bn=True, width=0.25)))
  sd = {k: v for k, v in sd.items() if not k.startswith("features.0.")}
  with pytest.raises(WeightImportError) as e:
    load_torchvision(build_backbone("vgg16", 10, width=0.25), sd)
  assert "the file's network has batch normalisation" in str(e.value) and "(e.g. vgg19_bn)" in str(e.value)
  assert "holds torchvision's" not in str(e.value)


def test_training_checkpoints_and_state_dicts_in_memory_load_like_files(tmp_path):
  ref = randomize_(TorchResNet("resnet18", 10, width=0.25))
  sd = ref.state_dict()
  torch.save(sd, tmp_path / "plain.pth")
  expected = build_backbone("resnet18", 10, width=0.25, rngs=1)
  load_torchvision(expected, tmp_path / "plain.pth")
  # PyTorch's tutorial checkpoint, a 'net' key beside the training state, a wrapper in a wrapper.
  torch.save({"model_state_dict": sd, "optimizer_state_dict": {}, "epoch": 5}, tmp_path / "tutorial.pth")
  torch.save({"net": sd, "epoch": 5, "acc": 0.5}, tmp_path / "net.pth")
  torch.save({"model": {"state_dict": sd}}, tmp_path / "nested.pth")
  sources = [
    tmp_path / "tutorial.pth",
    tmp_path / "net.pth",
    tmp_path / "nested.pth",
    sd,
    {"module." + k: v for k, v in sd.items()},
    {"state_dict": sd, "epoch": 1},  # in memory
    {k: v.numpy() for k, v in sd.items()},
  ]
  for source in sources:
    model = build_backbone("resnet18", 10, width=0.25, rngs=2)
    load_torchvision(model, source)
    for x, y in zip(weights(model), weights(expected)):
      np.testing.assert_array_equal(x, y)
  # Two dicts of tensors, or none: the keys there are, and what to save.
  torch.save({"student": sd, "teacher": sd}, tmp_path / "two.pth")
  with pytest.raises(
    WeightImportError,
    match=r"keys 'student', 'teacher': several hold tensors .*"
    r"torch.save\(checkpoint\['student'\], PATH\)",
  ):
    read_state_dict(tmp_path / "two.pth")
  with pytest.raises(
    WeightImportError,
    match=r"state dict given to load_torchvision is not usable: it holds a "
    r"dict with the keys 'epoch': none of them holds",
  ):
    load_torchvision(build_backbone("resnet18", 10, width=0.25), {"epoch": 5})


def test_models_without_torchvision_counterpart_and_missing_files(tmp_path):
  with pytest.raises(WeightImportError, match="torchvision has no CIFAR ResNet"):
    load_torchvision(build_backbone("resnet20", 10), {})
  with pytest.raises(WeightImportError, match="no torchvision counterpart"):
    load_torchvision(build_backbone("wrn16_8", 10, width=0.1), {})
  with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
    read_state_dict(tmp_path / "resnet50.pth")


def test_unreadable_weight_files_are_one_line_errors(tmp_path):
  torch.save(TorchResNet("resnet18", 10, width=0.25).state_dict(), tmp_path / "full.pth")
  assert read_state_dict(tmp_path / "full.pth")  # whole, it reads
  data = (tmp_path / "full.pth").read_bytes()
  (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
  (tmp_path / "junk.pth").write_text("junk\n")
  (tmp_path / "junk.safetensors").write_text("junk\n")
  torch.save([1, 2], tmp_path / "list.pth")
  for name in ("truncated.pth", "junk.pth", "junk.safetensors", "list.pth"):
    path = tmp_path / name
    with pytest.raises(WeightImportError) as e:
      read_state_dict(path)
    message = str(e.value)
    assert f"{path} is not a readable torchvision .pth or .safetensors file (" in message, message
    assert "\n" not in message and "weights_only" not in message
  with pytest.raises(WeightImportError, match=r"junk.pth is not a .*\(KeyError: 174812789\)"):  # torch's own text
    read_state_dict(tmp_path / "junk.pth")  # what load_torchvision calls first with a path
  with pytest.raises(WeightImportError) as e:  # torch's first sentence only, not its advice after it
    read_state_dict(tmp_path / "truncated.pth")
  assert "failed finding central directory)" in str(e.value) and "If you" not in str(e.value)


def test_a_whole_pickled_model_is_named_as_such(tmp_path):
  torch.save(TorchResNet("resnet18", 10, width=0.25), tmp_path / "model.pth")  # torch.save(model), not its weights
  with pytest.raises(WeightImportError) as e:
    read_state_dict(tmp_path / "model.pth")
  message = str(e.value)
  assert "holds a pickled Python object (torch_reference.TorchResNet), not a state dict" in message
  assert "torch.save(model.state_dict(), PATH)" in message
  assert "safe_globals" not in message and "weights_only" not in message and "\n" not in message
