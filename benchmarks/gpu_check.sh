#!/usr/bin/env bash
# The GPU check, in one script: run it from the repository root on a machine with a CUDA
# GPU, in an environment where specprobe is installed with a CUDA build of torch
# (pip install -e ".[dev]"). Sized for one H200: the steps' time limits add up to
# 7 min 5 s with one GPU, 8 min 5 s with several.
#
#   OUT=/tmp/gpu-check bash benchmarks/gpu_check.sh
#
# Writes everything under $OUT (default ./gpu-check): one log per step and summary.txt.
# Steps: selftest on cuda; the GPU tests (pytest -m gpu: CPU/GPU agreement of every
# estimator with the same probes, probes drawn on the device equal to the CPU draw);
# bench_scale on Pythia configurations in bfloat16 and float32 up to the largest that
# fits; bench_processes: a sweep across processes against one process (one per GPU with
# several GPUs, then groups of 2 GPUs per model; two processes sharing the GPU with one),
# records equal to 1e-4. A step that fails is reported and the others still run; the exit
# code is the number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-check}
mkdir -p "$out"
summary="$out/summary.txt"
: > "$summary"
failed=0

step() {  # step NAME TIMEOUT_S COMMAND...
    local name=$1 limit=$2
    shift 2
    local start=$(date +%s)
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    local rc=$?
    echo "$name: exit $rc in $(( $(date +%s) - start )) s" | tee -a "$summary"
    [ "$rc" -eq 0 ] || failed=$((failed + 1))
}

python - <<'PY' > "$out/env.log" 2>&1
import torch, transformers, specprobe
print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)
print("devices", [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
PY
cat "$out/env.log" | tee -a "$summary"

step selftest 45 specprobe selftest --device cuda
step gpu_tests 90 python -m pytest -q -m gpu tests/core/test_gpu.py
step bench_bf16 120 python benchmarks/bench_scale.py --device cuda --dtype bfloat16 \
    --sizes 1b,2.8b,6.9b,12b --batch 2 --seq-len 64 --probes 32
step bench_f32 80 python benchmarks/bench_scale.py --device cuda --dtype float32 \
    --sizes 1b,2.8b --batch 2 --seq-len 64 --probes 32
step precision 30 python benchmarks/bench_precision.py
ngpu=$(python -c "import torch; print(torch.cuda.device_count())" 2> /dev/null || echo 0)
if [ "$ngpu" -ge 2 ]; then
    step bench_processes 60 python benchmarks/bench_processes.py --device cuda --processes "$ngpu" --repeats 1
    step bench_processes_grouped 60 python benchmarks/bench_processes.py --device cuda \
        --processes "$ngpu" --gpus-per-model 2 --repeats 1
else
    step bench_processes 60 python benchmarks/bench_processes.py --device cuda --processes 2 --repeats 1
fi

for f in "$out"/bench_*.log; do
    echo "== $f" >> "$summary"
    cat "$f" >> "$summary"
done
echo "failed steps: $failed" | tee -a "$summary"
exit "$failed"
