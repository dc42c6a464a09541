#!/usr/bin/env bash
# One prepared check for a machine with a CUDA GPU (issue 11), to run in a single device call:
#   bash benchmarks/gpu_check.sh [DEVICE] [OUT]   DEVICE: cuda (default) or cpu; OUT: where results go (a relative
#   path is taken from the repository root)
# It trains a tiny entropy model and a tiny BLT on the GPU in bf16 (four stdlib packages as the corpus), resumes
# the BLT, evaluates it, generates with the engine and by full recompute, then runs the model and patching
# benchmarks and the training benchmark against transformers there. Every step's output goes to OUT/log.txt;
# results are JSON files in OUT.
# Set PY to the Python that has torch (default: python3); the checkout is put on PYTHONPATH, nothing is installed.
# STEPS (default 40) and SUITE (default full) make it shorter, e.g. STEPS=4 SUITE=quick for a dry run on the CPU.
set -euo pipefail
DEVICE=${1:-cuda}
OUT=${2:-runs/gpu_check}
PY=${PY:-python3}
STEPS=${STEPS:-40}
SUITE=${SUITE:-full}
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"

main() {
    blt() { echo "+ blt $*"; "$PY" -m blt "$@"; }
    WORK="$OUT/work"
    rm -rf "$WORK"

    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    "$PY" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"

    SOURCES=$("$PY" -c "import asyncio, email, http, json, os; print(*(os.path.dirname(m.__file__) for m in (asyncio, email, http, json)))")
    # shellcheck disable=SC2086  # one argument per package directory
    blt data prepare $SOURCES --out "$WORK/data" --val-fraction 0.2
    COMMON=(--device "$DEVICE" --precision bf16 --quiet --set train.eval_every=0 --set train.checkpoint_every=$((STEPS / 2)))
    blt train-entropy --data "$WORK/data" --out "$WORK/ent" --steps "$STEPS" "${COMMON[@]}"
    blt train --data "$WORK/data" --entropy-model "$WORK/ent" --out "$WORK/blt" --steps "$STEPS" "${COMMON[@]}"
    blt train --data "$WORK/data" --out "$WORK/blt" --steps $((STEPS + STEPS / 2)) --resume --device "$DEVICE" --quiet
    blt eval "$WORK/blt" --device "$DEVICE" --batches 8 --json "$OUT/eval.json"
    blt generate "$WORK/blt" --device "$DEVICE" --prompt "def parse(" --max-bytes 64
    blt generate "$WORK/blt" --device "$DEVICE" --prompt "def parse(" --max-bytes 64 --full-recompute
    blt bench model --suite "$SUITE" --device "$DEVICE" --json "$OUT/model.json"
    blt bench patching --suite "$SUITE" --device "$DEVICE" --json "$OUT/patching.json"
    # last: the device image's transformers may differ from the version our interop is tested with
    blt bench training --against-hf --suite "$SUITE" --device "$DEVICE" --json "$OUT/training.json"
    echo "gpu_check: all steps passed"
}

main 2>&1 | tee "$OUT/log.txt"  # pipefail: the script fails when a step fails, after the log is complete
