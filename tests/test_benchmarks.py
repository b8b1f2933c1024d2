"""The benchmark scripts at toy sizes on the CPU, so that they never rot; the FLOP counter against hand counts."""

import argparse
import json

import jax
import jax.numpy as jnp
import pytest
from PIL import Image

from benchmarks import chart, compare, flops, hlo_report, input_pipeline, profile, throughput, tpu_report


def conv(x, w):
  return jax.lax.conv_general_dilated(
    x, w, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[-1] // w.shape[2]
  )


def test_flops_of_convolutions_their_gradients_and_products():
  x, w = jax.ShapeDtypeStruct((2, 16, 16, 4), jnp.float32), jax.ShapeDtypeStruct((3, 3, 4, 8), jnp.float32)
  forward = 2 * (2 * 8 * 8 * 8) * (3 * 3 * 4)  # outputs x kernel slice
  assert flops.count(conv, x, w) == forward
  grouped = jax.ShapeDtypeStruct((3, 3, 2, 8), jnp.float32)  # two groups: half the slice
  assert flops.count(conv, x, grouped) == forward // 2
  # Forward, then the input gradient and the weight gradient: as much work as the forward each (the input
  # gradient of this stride-2 convolution not counting the multiplications by the zeros between its samples).
  assert flops.count(jax.grad(lambda x, w: conv(x, w).sum(), argnums=(0, 1)), x, w) == 3 * forward
  a, b = jax.ShapeDtypeStruct((3, 4, 5), jnp.float32), jax.ShapeDtypeStruct((5, 6), jnp.float32)
  nested = jax.jit(lambda a, b: jax.checkpoint(lambda a: a @ b)(a))
  assert flops.count(nested, a, b) == 2 * 3 * 4 * 5 * 6
  scanned = lambda a, b: jax.lax.scan(lambda c, _: (c @ b[:, :5], None), a, length=7)[0]  # noqa: E731
  assert flops.count(scanned, a, b) == 7 * 2 * 3 * 4 * 5 * 5


@pytest.mark.slow  # the benchmark's own runs, as compare's below: a whole scheme's steps compiled and timed each
@pytest.mark.parametrize(
  "scheme,backbone", [("baseline", "resnet18"), ("abn", "vgg11_bn"), ("macnn", "vgg11_bn"), ("racnn", "vgg11_bn")]
)
def test_throughput_measures_every_scheme(scheme, backbone):
  r = throughput.measure(
    scheme, backbone, 32, 2, steps=2, warmup=1, width=1 / 16, dtype="float32", overhead=scheme == "racnn"
  )
  assert r["train_img_s"] > 0 and r["eval_img_s"] > 0 and 0 < r["trace_s"] < r["compile_s"]
  assert r["train_tflops"] > 0 and r["eval_tflops"] > 0
  assert r["peak_fraction"] is None  # no known matrix-product peak for a CPU
  assert 0 < r["train_mem_gib"] < 1  # this tiny model's step: parameters, momenta, batch, activations
  assert "| " + scheme + " | " + backbone in throughput.table([r])
  if scheme == "racnn":  # timed against a plain step at 32 px and two at 16 px (its zoomed scales' input)
    assert r["passes_ms"] > 0 and r["overhead"] == pytest.approx(r["train_ms"] / r["passes_ms"])
    assert r["overhead_target"] == 1.10
  else:  # no overhead measured: no target beside it
    assert r["overhead"] is None and r["overhead_target"] is None
  if scheme == "baseline":  # a training step: the forward, the input gradients (none for the image: the first
    # convolution, a large share of this tiny ResNet's work, has none) and the weight gradients
    forward = r["eval_tflops"] * r["eval_ms"] * 1e9 / 2
    assert 2.2 < r["train_gflop_per_image"] * 1e9 / forward < 3.0


@pytest.mark.slow  # a process per framework and repeat
def test_compare_runs_both_frameworks_and_the_chart_draws_them(tmp_path, capsys):
  results = tmp_path / "results.jsonl"
  assert (
    compare.main(
      [
        "--cpu",
        "--scheme",
        "baseline",
        "--backbone",
        "vgg11_bn",
        "--res",
        "32",
        "--batch",
        "2",
        "--repeats",
        "2",
        "--json",
        str(results),
      ]
    )
    == 0
  )
  out = capsys.readouterr().out
  assert "| baseline | vgg11_bn | 32 | 2 |" in out and " vs eager |" in out  # the CPU has no compiled mode here
  (row,) = [json.loads(line) for line in results.read_text().splitlines()]
  assert row["jax_img_s"] > 0 and row["torch_eager_img_s"] > 0 and row["ratio"] > 0
  # Two measurements of each side, each in its own process, with the steps and warm-up they used.
  assert row["jax_repeats"] == row["torch_eager_repeats"] == 2 and row["torch_best_mode"] == "eager"
  assert row["jax_img_s_range"][0] <= row["jax_img_s"] <= row["jax_img_s_range"][1]
  assert row["jax_steps"] == row["torch_eager_steps"] == [[3, 1]]
  assert row["vs_eager_only"] and row["ratio_range"][0] <= row["ratio"] <= row["ratio_range"][1]
  png = tmp_path / "chart.png"
  assert chart.main(["--json", str(results), "--out", str(png)]) == 0
  assert Image.open(png).size[0] >= 600


def test_flop_profile_counts_the_backbone_passes_of_each_scheme():
  # Full-size configurations (counted without running): MA-CNN 'cub' = the object stream at the input, four part
  # streams and the object crop at half of it; RA-CNN three scales, the zoomed two at half.
  c = throughput.config_for("macnn", "vgg11", 64, 2, 1 / 16, "float32")
  assert throughput.backbone_passes("macnn", c) == [64] + [32] * 5
  c = throughput.config_for("racnn", "vgg11", 64, 2, 1 / 16, "float32")
  assert throughput.backbone_passes("racnn", c) == [64, 32, 32]
  # Full width (the shapes only: nothing is allocated); at 1/16 of the width the APNs' 1024-wide layers would
  # outweigh the tiny convolutions.
  r = throughput.flop_profile("racnn", "vgg11", 128, 2, peak_tflops=100.0)
  plain = throughput.flop_profile("baseline", "vgg11", 128, 2)
  half = throughput.flop_profile("baseline", "vgg11", 64, 2)
  assert plain["flop_overhead"] == 1.0 and plain["passes"] == [128]
  assert r["passes_gflop_per_image"] == pytest.approx(
    plain["train_gflop_per_image"] + 2 * half["train_gflop_per_image"]
  )
  # The APNs, the crops and the ranking loss add little arithmetic next to three VGG passes (their cost on a GPU is
  # memory traffic, which only timing shows: --overhead).
  assert 1.0 < r["flop_overhead"] < 1.05
  assert r["trace_s"] > 0
  assert r["ceiling_img_s"] == pytest.approx(100e12 / (r["train_gflop_per_image"] * 1e9))
  # ABN's attention branch on a ResNet is a stride-1 copy of the last stage (the paper's): at 4x that stage's cost.
  abn = throughput.flop_profile("abn", "resnet18", 64, 2, width=1 / 16)
  assert abn["flop_overhead"] > 1.3
  assert "| racnn | vgg11 | 128 | [128, 64, 64] |" in throughput.table([r], throughput.FLOP_COLUMNS)


def test_a_phase_step_counts_only_what_the_phase_runs(capsys):
  # MA-CNN's object phase (the object stream's cross-entropy, its convolutions trained): the backbone's step, the
  # part streams and the object crop not run; the end-to-end step runs all six passes.
  e2e = throughput.flop_profile("macnn", "vgg11", 128, 2)
  obj = throughput.flop_profile("macnn", "vgg11", 128, 2, phase="object")
  plain = throughput.flop_profile("baseline", "vgg11", 128, 2)
  assert obj["phase"] == "object" and e2e["phase"] is None
  assert obj["overhead_target"] is None and e2e["overhead_target"] == 1.15  # the targets are the end-to-end step's
  assert obj["train_gflop_per_image"] == pytest.approx(plain["train_gflop_per_image"], rel=0.01)
  assert e2e["train_gflop_per_image"] > 1.3 * obj["train_gflop_per_image"]
  assert "| macnn | object | vgg11 | 128 |" in throughput.table([obj, e2e], throughput.FLOP_COLUMNS)
  assert "phase" not in throughput.table([e2e], throughput.FLOP_COLUMNS)
  with pytest.raises(ValueError, match="no phase 'objects'; its phases: object, init, grouping, classify, parts"):
    throughput.flop_profile("macnn", "vgg11", 128, 2, phase="objects")
  for argv in (["--all", "--phase", "object"], ["--scheme", "macnn", "--phase", "object", "--overhead"]):
    with pytest.raises(SystemExit):
      throughput.main(argv)
    assert "--phase goes with one --scheme" in capsys.readouterr().err


@pytest.mark.parametrize(
  "main, argv, message",
  [
    ("throughput", ["--scheme", "macnn", "--res", "0"], "--res must be at least 1, got 0"),
    ("throughput", ["--scheme", "macnn", "--steps", "0"], "--steps must be at least 1, got 0"),
    ("throughput", ["--scheme", "macnn", "--backbone", "vgg99"], "--backbone 'vgg99': not a backbone; they are"),
    (
      "throughput",
      ["--scheme", "macnn", "--backbone", "vgg11", "--phase", "objects", "--cpu"],
      "--phase 'objects': macnn's phases are object, init, grouping, classify, parts",
    ),
    ("throughput", ["--collect", "/nowhere.jsonl"], "--collect: [Errno 2] No such file or directory"),
    ("compare", ["--collect", "README.md"], "--collect: Expecting value"),
    ("chart", ["--json", "/nowhere.jsonl"], "--json /nowhere.jsonl: FileNotFoundError"),
    ("chart", ["--json", "README.md"], "--json README.md: JSONDecodeError"),
    ("tpu_report", ["--all", "--graphs", "whole"], "--graphs chooses XLA's CUDA graphs: a GPU's"),
    ("tpu_report", ["--scheme", "abn", "--batch", "0"], "--res and --batch must be at least 1"),
    ("input_pipeline", ["--batch", "0"], "--batch must be at least 1, got 0"),
    ("input_pipeline", ["--images", "/"], "expected a class-per-folder tree"),
  ],
  ids=lambda x: x if isinstance(x, str) and " " not in x else None,
)
def test_the_benchmarks_refuse_bad_flags_before_measuring(capsys, main, argv, message):
  with pytest.raises(SystemExit):
    {
      "throughput": throughput,
      "compare": compare,
      "input_pipeline": input_pipeline,
      "chart": chart,
      "tpu_report": tpu_report,
    }[main].main(argv)
  assert message in capsys.readouterr().err


def test_the_cpu_smoke_test_takes_3_steps_unless_told_otherwise(monkeypatch):
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")  # (--cpu sets it for the process)
  p = argparse.ArgumentParser()
  throughput.run_arguments(p)
  for argv, steps in ([], 50), (["--cpu"], 3), (["--cpu", "--steps", "12"], 12), (["--steps", "7"], 7):
    args = p.parse_args(["--scheme", "abn", *argv])
    throughput.selected_runs(p, args)
    assert args.steps == steps, argv


def test_the_table_shows_the_toy_sizes_small_values_instead_of_zeros():
  row = {
    "scheme": "abn",
    "backbone": "vgg11_bn",
    "res": 64,
    "batch": 4,
    "train_gflop_per_image": 0.0061,
    "peak_fraction": 0.0004,
    "train_img_s": 412.26,
    "train_mem_gib": 0.0,
  }
  assert "| 412.3 |" in throughput.table([row]) and "| 0.0061 |" in throughput.table([row])
  assert "| 0.04% |" in throughput.table([row]) and "| 0.0 |" in throughput.table([row])  # a true zero stays


def test_input_pipeline_benchmark_runs(capsys):
  input_pipeline.main(["--num-images", "16", "--sizes", "32", "--workers", "0", "--batch", "4", "--steps", "1"])
  rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 32 |")]
  assert [r.split(" | ")[1] for r in rows] == ["paper", "all"]
  assert all(float(r.split(" | ")[2].split()[0]) > 0 for r in rows)


def test_profile_reads_a_gpu_trace_by_operation_and_kind():
  # The layout of a JAX GPU trace (Perfetto JSON): kernels on the device's streams, named by the XLA op they run;
  # host events beside them are not device time.
  meta = [
    {"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "/device:GPU:0"}},
    {"ph": "M", "pid": 2, "name": "process_name", "args": {"name": "/host:CPU"}},
  ]
  kernels = [
    ("sm90_xmma_fprop_implicit_gemm_bf16", "convolution.3", 3000),
    ("loop_add_fusion", "add_fusion.1", 500),
    ("select_and_scatter_kernel", "select-and-scatter.2", 1500),
    ("sm90_xmma_fprop_implicit_gemm_bf16", "convolution.3", 3000),
  ]
  events = meta + [{"ph": "X", "pid": 1, "tid": 7, "name": n, "dur": d, "args": {"hlo_op": op}} for n, op, d in kernels]
  events.append({"ph": "X", "pid": 2, "tid": 1, "name": "PjitFunction(step)", "dur": 99000})
  text, totals = profile.summarise(profile.device_events({"traceEvents": events}), steps=2, top=5)
  assert totals["busy_ms"] == 4.0 and totals["operations"] == 3  # (3 + 0.5 + 1.5 + 3) ms over two steps
  assert totals["by_kind"] == {
    "convolution": 3.0,
    "elementwise fusion": 0.25,
    "scatter (select-and-scatter, scatter)": 0.75,
  }
  assert text.index("convolution.3") < text.index("select-and-scatter.2") < text.index("add_fusion.1")


def test_profile_runs_a_step_under_the_tracer_on_the_cpu(capsys, tmp_path):
  hlo = tmp_path / "step.hlo"
  assert (
    profile.main(
      [
        "--cpu",
        "--scheme",
        "baseline",
        "--backbone",
        "vgg11_bn",
        "--top",
        "5",
        "--hlo",
        str(hlo),
        "--trace",
        str(tmp_path / "trace"),
      ]
    )
    == 0
  )
  out = capsys.readouterr().out
  assert "device busy" in out and "| convolution |" in out
  assert "convolution(" in hlo.read_text()  # the optimised program's text
  assert list((tmp_path / "trace").rglob("perfetto_trace.json.gz"))  # kept where --trace says


def test_torch_profile_reads_a_cuda_trace_by_kind(tmp_path):
  # What torch.profiler's Chrome trace holds on CUDA: host operators and runtime calls beside the kernels; only
  # the device's events count, sorted into the same kinds as XLA's kernels.
  from benchmarks.torch_reference import profile as torch_profile

  kernels = [
    ("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc", 2000),
    ("sm90_xmma_wgrad_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc", 3000),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::threshold_kernel_impl>", 400),
    ("triton_poi_fused_relu_threshold_backward_0", 300),
    ("triton_red_fused_sum_1", 200),
    ("void at::native::(anonymous namespace)::max_pool_backward_nhwc<c10::BFloat16>", 500),
    ("void at::native::batch_norm_collect_statistics_channels_last_kernel", 100),
    ("nchwToNhwcKernel", 50),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n", 100),
  ]
  trace = [{"ph": "X", "cat": "kernel", "name": n, "dur": d} for n, d in kernels]
  trace += [
    {"ph": "X", "cat": "cpu_op", "name": "aten::conv2d", "dur": 9000},
    {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "dur": 5},
    {"ph": "X", "cat": "gpu_memset", "name": "Memset (Device)", "dur": 50},
  ]

  class Profiler:
    def export_chrome_trace(self, path):
      with open(path, "w") as f:
        json.dump({"traceEvents": trace}, f)

  events = torch_profile.device_events(Profiler(), "cuda")
  assert len(events) == len(kernels) + 1  # the memset is device time; the operator and the launch are not
  _, totals = profile.summarise(events, steps=1, top=5)
  assert totals["by_kind"] == {
    "convolution": 5.0,
    "elementwise fusion": 0.7,
    "reduction": 0.2,
    "pooling (PyTorch's kernels)": 0.5,
    "batch norm (PyTorch's kernels)": 0.1,
    "copy, transpose": 0.1,
    "matrix product": 0.1,
  }


def test_torch_profile_runs_a_step_under_the_profiler_on_the_cpu(capsys):
  from benchmarks.torch_reference import profile as torch_profile

  assert torch_profile.main(["--cpu", "--scheme", "baseline", "--backbone", "vgg11_bn", "--top", "5"]) == 0
  out = capsys.readouterr().out
  assert "PyTorch eager baseline vgg11_bn 32 px" in out and "| convolution |" in out
  busy = float(out.split("device busy ")[1].split(" ms")[0])
  rows = [line.split(" | ") for line in out.split("| kind |")[1].split("\n\n")[0].splitlines()[2:]]
  assert busy > 0 and abs(sum(float(r[1]) for r in rows) - busy) < 0.02 * busy + 0.05  # the kinds add up


def test_collect_joins_separate_runs_into_ratios_and_overheads():
  # What gpu_session.sh measures apart: the schemes (JAX), PyTorch's modes, and the plain backbone passes.
  passes = throughput.pass_runs(throughput.STANDARD)
  assert [r for r in passes if r not in throughput.STANDARD] == [
    ("baseline", "vgg19", 448, 16),
    ("baseline", "vgg19", 224, 16),
    ("baseline", "resnet50", 448, 16),
    ("baseline", "resnet50", 224, 16),
  ]
  jax_rows = [
    {"scheme": "racnn", "backbone": "vgg19", "res": 448, "batch": 16, "train_ms": 33.0, "train_img_s": 485.0},
    {"scheme": "macnn", "backbone": "vgg19", "res": 448, "batch": 16, "error": "out of memory"},
  ]
  pass_rows = [
    {"scheme": "baseline", "backbone": "vgg19", "res": 448, "batch": 16, "train_ms": 20.0},
    {"scheme": "baseline", "backbone": "vgg19", "res": 224, "batch": 16, "train_ms": 5.0},
  ]
  torch_rows = [
    {"scheme": "racnn", "backbone": "vgg19", "res": 448, "batch": 16, "mode": m, "images_per_s": v}
    for m, v in (("eager", 250.0), ("compile", 388.0))
  ]
  torch_rows.append(
    {"scheme": "abn", "backbone": "vgg19", "res": 448, "batch": 32, "mode": "eager", "images_per_s": 9.0}
  )
  rows = {(r["scheme"], r["batch"]): r for r in compare.joined(jax_rows, torch_rows, ["eager", "compile"], pass_rows)}
  racnn = rows[("racnn", 16)]
  assert racnn["ratio"] == pytest.approx(485 / 388)  # against the faster PyTorch mode
  assert racnn["overhead"] == pytest.approx(33 / (20 + 2 * 5)) and racnn["overhead_target"] == 1.10
  assert rows[("macnn", 16)]["jax_img_s"] is None and rows[("macnn", 16)]["ratio"] is None  # failed: shown empty
  assert rows[("abn", 32)]["torch_eager_img_s"] == 9.0  # a configuration only PyTorch ran is kept
  table = compare.table(list(rows.values()), ["eager", "compile"])
  assert "| racnn | vgg19 | 448 | 16 | 485.0 | 250.0 | 388.0 | compile | 1.25 | 1.10 | 1.10 |" in table


def test_repeats_give_medians_ranges_and_the_fastest_mode_by_name():
  row = lambda **kw: {"scheme": "abn", "backbone": "resnet50", "res": 448, "batch": 32, **kw}  # noqa: E731
  jax_rows = [row(train_ms=1.0, train_img_s=v, steps=30, warmup=5) for v in (100.0, 120.0, 110.0)]
  torch_rows = [
    row(mode=m, images_per_s=v, steps=30, warmup=5)
    for m, values in (("eager", (60.0, 62.0, 61.0)), ("compile", (80.0, 70.0, 75.0)), ("graphs", (90.0, 95.0, 100.0)))
    for v in values
  ]
  (r,) = compare.joined(jax_rows, torch_rows, ["eager", "compile", "graphs"])
  assert (r["jax_img_s"], r["jax_img_s_range"], r["jax_repeats"]) == (110.0, [100.0, 120.0], 3)
  assert r["torch_best_mode"] == "graphs" and r["ratio"] == pytest.approx(110 / 95)
  assert r["ratio_range"] == pytest.approx([100 / 100, 120 / 90]) and not r["vs_eager_only"]
  assert "| 110.0 (100.0-120.0) |" in compare.table([r], ["eager", "compile", "graphs"])
  assert "| graphs | 1.16 (1.00-1.33) |" in compare.table([r], ["eager", "compile", "graphs"])
  # Without a compiled mode the ratio is against eager, and says so.
  (e,) = compare.joined(jax_rows, torch_rows[:3], ["eager", "compile"])
  assert e["vs_eager_only"] and e["torch_best_mode"] == "eager"
  assert "| eager | 1.80 (1.61-2.00) vs eager |" in compare.table([e], ["eager", "compile"])


def test_dispatch_times_the_hosts_share_of_the_engines_step():
  r = throughput.dispatch("baseline", "resnet18", 32, 2, steps=3, warmup=1, width=1 / 16, dtype="float32")
  # ResNet-18 and its SGD momenta: 62 parameters + 40 batch statistics + 62 momenta + the step counters.
  assert r["state_arrays"] > 150
  assert 0 < r["call_ms"] <= r["step_ms"]  # the call returns before (or as) the step is done
  assert "| baseline | resnet18 | 32 | 2 |" in throughput.table([r], throughput.DISPATCH_COLUMNS)


# A GPU program as XLA prints it (trimmed): a cuDNN convolution and its filter gradient, an elementwise fusion and a
# Triton GEMM fusion; what benchmarks.hlo_report reads on a machine without the card.
GPU_HLO = """HloModule jit_step, is_scheduled=true

%fused_add (param_0: f32[4,8], param_1: f32[4,8]) -> f32[4,8] {
  %param_0 = f32[4,8]{1,0} parameter(0)
  %param_1 = f32[4,8]{1,0} parameter(1)
  ROOT %add.1 = f32[4,8]{1,0} add(%param_0, %param_1), metadata={op_name="jit(step)/add"}
}

%gemm_fusion (p0: bf16[16,32], p1: bf16[32,8]) -> bf16[16,8] {
  %p0 = bf16[16,32]{1,0} parameter(0)
  %p1 = bf16[32,8]{1,0} parameter(1)
  ROOT %dot.1 = bf16[16,8]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

ENTRY %main.1 (x: bf16[2,8,8,4], w: bf16[16,3,3,4], a: f32[4,8], b: f32[4,8], m: bf16[16,32], n: bf16[32,8]) -> (bf16[2,8,8,16], bf16[16,3,3,4], f32[4,8], bf16[16,8]) {
  %x = bf16[2,8,8,4]{3,2,1,0} parameter(0)
  %w = bf16[16,3,3,4]{3,2,1,0} parameter(1)
  %a = f32[4,8]{1,0} parameter(2)
  %b = f32[4,8]{1,0} parameter(3)
  %m = bf16[16,32]{1,0} parameter(4)
  %n = bf16[32,8]{1,0} parameter(5)
  %conv = (bf16[2,8,8,16]{3,2,1,0}, u8[0]{0}) custom-call(%x, %w), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convForward", metadata={op_name="jit(step)/jvp()/conv_general_dilated"}
  %y = bf16[2,8,8,16]{3,2,1,0} get-tuple-element(%conv), index=0
  %dw = (bf16[16,3,3,4]{3,2,1,0}, u8[0]{0}) custom-call(%x, %y), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convBackwardFilter"
  %g = bf16[16,3,3,4]{3,2,1,0} get-tuple-element(%dw), index=0
  %sum = f32[4,8]{1,0} fusion(%a, %b), kind=kLoop, calls=%fused_add, metadata={op_name="jit(step)/add"}
  %mn = bf16[16,8]{1,0} fusion(%m, %n), kind=kCustom, calls=%gemm_fusion
  ROOT %out = (bf16[2,8,8,16]{3,2,1,0}, bf16[16,3,3,4]{3,2,1,0}, f32[4,8]{1,0}, bf16[16,8]{1,0}) tuple(%y, %g, %sum, %mn)
}
"""


def test_hlo_report_costs_each_kernel_of_a_gpu_program():
  ks = {k["name"]: k for k in hlo_report.kernels(hlo_report.parse(GPU_HLO))}
  assert set(ks) == {"conv", "dw", "sum", "mn"}  # parameters, tuples and their elements launch nothing
  conv = 2 * (2 * 8 * 8) * (16 * 3 * 3 * 4)  # output positions x kernel, for the forward and its filter gradient
  assert ks["conv"]["flops"] == ks["dw"]["flops"] == conv
  assert ks["conv"]["bytes"] == ks["dw"]["bytes"] == 2 * (2 * 8 * 8 * 4 + 16 * 3 * 3 * 4 + 2 * 8 * 8 * 16)
  assert (ks["sum"]["bytes"], ks["sum"]["flops"], ks["sum"]["source"]) == (3 * 4 * 8 * 4, 0, "add")
  assert ks["mn"]["flops"] == 2 * 16 * 8 * 32 and ks["mn"]["category"] == "fusion with a dot (triton)"
  text = hlo_report.report(GPU_HLO, "h100", top=5)
  assert "roofline of 4 kernels on an H100" in text and "| cudnn convForward | 1 |" in text
  assert "| fusion kLoop | 1 | 0.00 | 0.00 |" in text


def test_hlo_report_reads_a_compiled_module_and_says_what_deviceless_compiling_needs(tmp_path, capsys, monkeypatch):
  x = jnp.ones((8, 128), jnp.float32)
  path = tmp_path / "module.txt"
  path.write_text(jax.jit(lambda x: jnp.tanh(x) * 2 + x.sum()).lower(x).compile().as_text())
  assert hlo_report.main(["--hlo", str(path), "--top", "3"]) == 0
  assert "roofline of" in capsys.readouterr().out
  from jax.experimental import topologies

  def no_plugin(*args, **kwargs):
    raise NotImplementedError("topology not implemented for cuda")

  monkeypatch.setattr(topologies, "get_topology_desc", no_plugin)
  with pytest.raises(SystemExit, match=r"jax\[cuda13\]"):
    hlo_report.main(["--scheme", "baseline", "--backbone", "vgg11", "--res", "32", "--batch", "2"])


# A step's thunk sequence as XLA dumps it after its thunk passes (trimmed): a kernel, a copy and a convolution
# launched one by one, a command buffer (a CUDA graph of the three indented thunks, one launch), a convolution.
THUNKS = """199: kCustomKernel  [source        | next=200 (1) ] wrapped_convert_17 grid: [4608, 1, 1] threads: [128, 1, 1]
197: kCopy          [source        | next=198 (1) ] kCopy
200: kConvolution   [prev=199 (1)  | next=000 (1) ] kConvolution
000: kCommandBuffer [prev=200 (1)  | next=206 (1) ]
    201: kCustomKernel [source       | next=204 (3)] loop_subtract_fusion grid: [4, 1, 1] threads: [128, 1, 1]
    202: kCopy         [source       | next=204 (2)] kCopy
    204: kCustomKernel [prev=203 (1) | sink        ] loop_maximum_fusion_43 grid: [32, 1, 1] threads: [128, 1, 1]
206: kConvolution   [prev=000 (1)  | next=207 (1) ] kConvolution
"""


def test_hlo_report_counts_the_launches_of_a_thunk_sequence():
  assert hlo_report.launches(THUNKS) == (5, 1, 7)  # launches, of which graphs; kernels, calls and copies in all


def test_the_graphs_switch_reaches_xla_through_the_engines_steps(monkeypatch):
  from fgattn_jax.models import macnn
  from fgattn_jax.ops import crops, pooling
  from fgattn_jax.training import steps

  for module, name in ((steps, "COMPILER_OPTIONS"), (pooling, "POOLING"), (crops, "RESAMPLE"), (macnn, "STREAMS")):
    monkeypatch.setattr(module, name, getattr(module, name))  # put back after the test
  p = argparse.ArgumentParser()
  throughput.add_formulation_args(p)
  throughput.use_formulations(p.parse_args(["--graphs", "whole"]))
  assert steps.COMPILER_OPTIONS == throughput.GRAPHS["whole"]
  # XLA takes the GPU's command types on any backend (and uses them on a GPU); the row says which were asked for.
  r = throughput.measure(
    "baseline", "resnet18", 32, 2, steps=1, warmup=1, width=1 / 16, dtype="float32", evaluation=False
  )
  assert r["graphs"] == "whole" and r["train_img_s"] > 0 and "| whole |" in throughput.table([r])
  # Both steps hand their options to XLA: one it does not know fails their compilation, naming it.
  steps.COMPILER_OPTIONS = {"xla_gpu_enable_command_buffer": "NO_SUCH_COMMAND"}
  c = throughput.config_for("baseline", "resnet18", 32, 2, 1 / 16, "float32")
  for fn, args in throughput.setup_steps("baseline", c, abstract=True):
    with pytest.raises(jax.errors.JaxRuntimeError, match="NO_SUCH_COMMAND"):
      fn.lower(*args).compile()


@pytest.mark.parametrize("extra,expected", [(0, 144), (5e9, 128)])
def test_largest_batch_follows_the_memory_line_and_checks_its_crossing(monkeypatch, extra, expected):
  # A step needing 1 GB + 0.4 GB per image fits 70% of an H100's 85.5 GB up to batch 147: 144 in multiples of 8.
  # Rematerialisation past that (holding the memory under the limit up to batch 168) does not count: slower steps.
  # Memory above the line near the limit (extra) is found by the check, and the batch stepped down.
  def memory(batch):
    need = 1e9 + 0.4e9 * batch + (extra if batch > 100 else 0)
    return min(need, 59e9) if 152 <= batch <= 168 else need

  monkeypatch.setattr(hlo_report, "compile_for_gpu", lambda s, b, r, batch, card: ("", batch))
  monkeypatch.setattr(throughput, "program_memory", memory)
  compiled = []
  found = hlo_report.largest_batch("baseline", "vgg19", 448, "h100", log=compiled.append)
  assert found == expected and len(compiled) == 3 + (144 - expected) // 8


def test_the_tpu_report_without_libtpu_says_what_to_install(monkeypatch):
  # Without libtpu (this machine, CI) the compile-only TPU devices cannot open, and the report says why, with the
  # install line. With libtpu it reports each step's memory, cost and bound (RESULTS.md).
  from jax.experimental import topologies

  def no_libtpu(**kwargs):
    assert kwargs["platform"] == "tpu" and kwargs["topology_name"] == "v5p:1x1x1"
    raise RuntimeError("JAX TPU support not installed; cannot generate TPU topology")

  monkeypatch.setattr(topologies, "get_topology_desc", no_libtpu)
  with pytest.raises(SystemExit, match=r'needs libtpu, no TPU: pip install "jax\[tpu\]=='):
    tpu_report.main(["--scheme", "baseline", "--backbone", "vgg11_bn", "--res", "32", "--batch", "8"])


def test_the_tpu_report_traces_with_a_tpus_formulations(monkeypatch):
  # "auto" asks the backend the step is traced on, this CPU: compiling for a chip, the step must be traced with the
  # chip's choices (XLA's pooling, the crops' products), and the switches left as they were.
  import types

  from jax.experimental import topologies

  from fgattn_jax.ops import crops, pooling

  monkeypatch.setattr(topologies, "get_topology_desc", lambda **kw: types.SimpleNamespace(devices=jax.devices()))
  seen = []

  def setup(*args, **kwargs):
    seen.append((pooling.formulation(), crops.formulation()))
    raise RuntimeError("traced")

  monkeypatch.setattr(throughput, "setup_steps", setup)
  for pool, crop in (("auto", "auto"), ("slices", "gather")):
    monkeypatch.setattr(pooling, "POOLING", pool)
    monkeypatch.setattr(crops, "RESAMPLE", crop)
    with pytest.raises(RuntimeError, match="traced"):
      tpu_report.compile_for_tpu("racnn", "vgg11_bn", 32, 8, "v6e")
    assert (pooling.POOLING, crops.RESAMPLE) == (pool, crop)
  assert seen == [("reduce_window", "matmul"), ("slices", "gather")]  # a formulation named is kept


def test_a_tpu_table_row_whose_compiler_crashes_is_a_failed_row(monkeypatch):
  # libtpu can die compiling a step (a stack overflow: v6e's ResNet-50 training step, libtpu 0.0.42): each row of
  # --all compiles in its own process, so the crash is that row's result and the table goes on.
  import subprocess

  calls = []

  def crash(cmd, **kwargs):
    calls.append(cmd)
    return subprocess.CompletedProcess(cmd, -11, "", "F0000 stack overflow\n*** SIGSEGV STACK OVERFLOW\n")

  monkeypatch.setattr(subprocess, "run", crash)
  args = argparse.Namespace(
    chip="v6e", pool="slices", crop="auto", streams="vmap", eval=False, all=True, json="t.jsonl"
  )
  r = tpu_report._in_a_process(args, "baseline", "resnet50", 448, 32)
  assert r["error"].startswith("the compiling process died of signal 11: ") and "SIGSEGV" in r["error"]
  own = calls[0][calls[0].index("benchmarks.tpu_report") + 1 :]  # the row alone, into a file of its own
  assert (
    own[:-1]
    == [
      "--chip",
      "v6e",
      "--pool",
      "slices",
      "--crop",
      "auto",
      "--streams",
      "vmap",
      "--scheme",
      "baseline",
      "--backbone",
      "resnet50",
      "--res",
      "448",
      "--batch",
      "32",
      "--json",
    ]
    and own[-1] != "t.jsonl"
  )
  assert "| baseline | resnet50 | 448 | 32 |" in throughput.table([r], tpu_report.COLUMNS)
