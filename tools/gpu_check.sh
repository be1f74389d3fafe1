#!/usr/bin/env bash
# The GPU checks in one run (about 10 minutes on one H100/H200), for a lent machine: bash tools/gpu_wheels.sh
# here first, then run this there with .whl in `carry`. It installs the carried wheels, runs the GPU tests
# (bf16, packed rows under sdpa and FlashAttention-2 when flash-attn is there, QLoRA on CUDA, xtune train
# plain and under ZeRO-2), then the GPU benchmark (Qwen2.5-0.5B LoRA and QLoRA vs TRL, bf16, MFU), and with
# XTUNE_GPU_7B=1 the 7B QLoRA peak memory. Results land in $OUT (or ./gpu_out).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XTUNE_SHARED_DIR=$PWD/shared HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD:$PWD/tools${PYTHONPATH:+:$PYTHONPATH}
else
    export PYTHONPATH=$PWD:$PWD/tools${PYTHONPATH:+:$PYTHONPATH}
fi
{ nvidia-smi; python3 -c "import torch, transformers, peft; print(torch.__version__, torch.version.cuda,
transformers.__version__, peft.__version__, torch.cuda.get_device_name(0))"; } > "$OUT/env.txt" 2>&1
status=0
python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.txt" || status=1
python3 tools/bench.py train --device cuda --quick --no-doc --json "$OUT/bench_gpu_quick.json" 2>&1 \
    | tee "$OUT/bench_gpu_quick.txt" || status=1
if [ "${XTUNE_GPU_7B:-0}" = "1" ]; then
    python3 tools/bench.py train --device cuda --only llama2-7b-qlora --no-doc --json "$OUT/bench_gpu_7b.json" 2>&1 \
        | tee "$OUT/bench_gpu_7b.txt" || status=1
fi
exit $status
