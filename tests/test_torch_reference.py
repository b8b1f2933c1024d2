"""The PyTorch side of the throughput comparison: the same stages as ours, the same crop geometry, losses that train
every part that should learn."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from benchmarks.torch_reference import backbones, run, schemes
from fgattn_jax.models import build_backbone
from fgattn_jax.ops import crops, racnn


@pytest.mark.parametrize("name", ["vgg11_bn", "resnet18", "resnet50"])
def test_stages_have_our_shapes(name):
  ours = build_backbone(name, 7, width=1 / 16, rngs=nnx.Rngs(0), **({"head": "gap"} if "vgg" in name else {}))
  theirs = backbones.backbone(name, 7, width=1 / 16)
  _, feats = ours(jnp.zeros((1, 64, 48, 3)))
  x = torch.zeros(1, 3, 64, 48)
  for i, stage_name in enumerate(ours.stage_names):
    x = theirs.stages[i](x)
    assert tuple(x.shape) == (1, feats[stage_name].shape[3], *feats[stage_name].shape[1:3]), stage_name
  assert theirs.fc.in_features == ours.head.fc.in_features


def test_crop_and_mask_match_ours():
  rng = np.random.default_rng(0)
  images = rng.normal(size=(2, 20, 24, 3)).astype(np.float32)
  boxes = np.array([[2.3, 1.7, 15.1, 13.9], [-3.0, 4.0, 20.0, 27.0]], np.float32)
  want = np.asarray(crops.crop_resize(images, boxes, (9, 9)))
  got = schemes.crop_resize(torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(boxes), 9)
  np.testing.assert_allclose(got.permute(0, 2, 3, 1).numpy(), want, atol=1e-5)
  np.testing.assert_allclose(
    schemes.box_mask(torch.from_numpy(boxes), (20, 24), 10.0)[:, 0].numpy(),
    np.asarray(racnn.box_mask(boxes, (20, 24), 10.0)),
    atol=1e-6,
  )


def test_many_crops_in_one_call_equal_one_call_each():
  rng = np.random.default_rng(1)
  images = torch.from_numpy(rng.normal(size=(2, 3, 20, 24)).astype(np.float32))
  boxes = torch.from_numpy(
    np.array(
      [
        [[2.3, 1.7, 15.1, 13.9], [0, 0, 24, 20], [5, 6, 9, 10]],
        [[-3.0, 4.0, 20.0, 27.0], [1, 2, 3, 4], [10, 0, 24, 14]],
      ],
      np.float32,
    )
  )
  many = schemes.crop_resize_many(images, boxes, 9)
  assert many.shape == (3, 2, 3, 9, 9)
  for i in range(3):
    np.testing.assert_allclose(many[i].numpy(), schemes.crop_resize(images, boxes[:, i], 9).numpy(), atol=1e-6)


def test_pytorch_at_its_best():
  """Each compiled mode asks torch.compile for its mode (CUDA graphs: 'reduce-overhead'); SGD is fused on CUDA."""
  assert run.MODES == {"eager": None, "compile": "default", "graphs": "reduce-overhead", "autotune": "max-autotune"}
  assert run.sgd_options("cuda") == {"fused": True}
  r = run.measure("baseline", "vgg11_bn", 32, 2, steps=2, warmup=1, device="cpu", width=1 / 16)
  assert (r["steps"], r["warmup"], r["optimizer"], r["compile_s"]) == (2, 1, "sgd foreach", None)


LEARNS = {
  "baseline": ["net.stages.0"],
  "abn": ["net.stages.0", "att_conv", "att_map", "att_stage"],
  "macnn": ["net.stages.0", "grouping.0", "part_nets.3.stages.0", "object_net.stages.0", "joint"],
  "racnn": ["nets.0.stages.0", "nets.2.stages.0", "apns.0", "apns.1", "fused"],
}


@pytest.mark.parametrize(
  "scheme,name", [("baseline", "resnet18"), ("abn", "resnet18"), ("macnn", "vgg11_bn"), ("racnn", "vgg11_bn")]
)
def test_loss_is_finite_and_reaches_every_part(scheme, name):
  torch.manual_seed(0)
  model = schemes.build(scheme, name, 5, 64, width=1 / 16)
  loss = model(torch.randn(2, 3, 64, 64), torch.tensor([1, 3]))
  assert torch.isfinite(loss)
  loss.backward()
  for prefix in LEARNS[scheme]:
    grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix)]
    assert grads and all(g is not None for g in grads), prefix
    assert any(float(g.abs().sum()) > 0 for g in grads), prefix


def test_measure_times_training_and_inference():
  r = run.measure("racnn", "vgg11_bn", 32, 2, steps=2, warmup=1, device="cpu", width=1 / 16)
  assert r["images_per_s"] > 0 and r["step_ms_median"] > 0 and r["peak_mem_bytes"] is None
  assert run.measure_eval("abn", "resnet18", 32, 2, steps=2, warmup=1, device="cpu", width=1 / 16)["train"] is False
