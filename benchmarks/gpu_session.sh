#!/usr/bin/env bash
# Issue #9's measurements in one call of a lent GPU machine, under a deadline: the standard table in JAX, the same
# schemes in PyTorch (eager, then torch.compile), the plain backbone steps the schemes are weighed against, and the
# input pipeline on the machine's cores; then the joined table and the chart. Each stage gets the time left minus
# what the later stages are promised, so a slow stage is cut short (its finished rows kept) instead of the rest.
#
#   bash benchmarks/gpu_session.sh [SECONDS]          # on the GPU machine, repo root; results in $OUT (or gpu_out/)
#   CPU=1 bash benchmarks/gpu_session.sh 400          # the same stages at toy sizes on a CPU: a dry run
#
# The GPU machine lacks grain, ml-collections and tensorflow-datasets: `bash ../shared/device/wheels.sh` puts them
# in .whl/ here, and the call carries .whl (installed below into /tmp/site).
set -uo pipefail
budget=${1:-540}
out=${OUT:-gpu_out}
mkdir -p "$out"
begin=$(date +%s)
export PYTHONUNBUFFERED=1

if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  # A carried Flax that does not work with the machine's JAX gives way to the machine's own.
  python3 -c "from flax import nnx; nnx.Linear(2, 2, rngs=nnx.Rngs(0))" 2>/dev/null ||
    { echo "carried flax failed to import; using the machine's"; rm -rf /tmp/site/flax /tmp/site/flax-*; }
else
  export PYTHONPATH=$PWD
fi

stage() {  # stage NAME RESERVE CMD...: CMD gets the time left minus RESERVE seconds (promised to later stages)
  local name=$1 reserve=$2
  shift 2
  local t=$((budget - ($(date +%s) - begin) - reserve)) s
  if ((t < 15)); then
    echo "## $name: skipped, ${t}s left for it"
    return
  fi
  echo "## $name: up to ${t}s: $*"
  s=$(date +%s)
  timeout -k 5 "$t" "$@" >"$out/$name.log" 2>&1
  echo "## $name: rc $? after $(($(date +%s) - s))s"
  grep -v '^{' "$out/$name.log" | grep -v '^\s*$' | tail -n 14
}

if [[ -n "${CPU:-}" ]]; then  # toy sizes: every stage's code path, minutes on a laptop
  size=(--cpu) torch_size=(--cpu) compile=() pipeline=(--sizes 64 --workers 0 2 --num-images 64 --steps 2)
else
  size=(--steps 30) torch_size=(--steps 30) compile=(--mode compile)
  pipeline=(--sizes 448 --workers 8 16 --num-images 256 --steps 10)
fi

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>/dev/null
  python3 -c "import jax, flax, optax, numpy, PIL; print('jax', jax.__version__, 'flax', flax.__version__,
'optax', optax.__version__, 'numpy', numpy.__version__, 'pillow', PIL.__version__, jax.devices())"
  python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda, torch.backends.cudnn.version())"
  python3 -c "import platform, os; print(platform.processor() or platform.machine(), os.cpu_count(), 'cores')"
} 2>&1 | tee "$out/machine.txt"

stage jax_train 250 python3 -m benchmarks.throughput --all "${size[@]}" --json "$out/jax.jsonl"
stage torch_eager 160 python3 -m benchmarks.torch_reference.run --all --mode eager "${torch_size[@]}" \
  --json "$out/torch.jsonl"
if ((${#compile[@]})); then
  stage torch_compile 100 python3 -m benchmarks.torch_reference.run --all "${compile[@]}" "${torch_size[@]}" \
    --json "$out/torch.jsonl"
fi
stage jax_passes 45 python3 -m benchmarks.throughput --all --passes "${size[@]}" --json "$out/passes.jsonl"
stage input_pipeline 12 python3 -m benchmarks.input_pipeline "${pipeline[@]}"

touch "$out/jax.jsonl" "$out/torch.jsonl" "$out/passes.jsonl"
python3 -m benchmarks.compare --collect "$out/jax.jsonl" "$out/torch.jsonl" --passes "$out/passes.jsonl" \
  --json "$out/results.jsonl" | tee "$out/table.md"
python3 -m benchmarks.throughput --collect "$out/jax.jsonl" "$out/passes.jsonl" 2>/dev/null | tee -a "$out/table.md"
[[ -s "$out/results.jsonl" ]] && python3 -m benchmarks.chart --json "$out/results.jsonl" --out "$out/throughput.png"
echo "## done in $(($(date +%s) - begin))s"
