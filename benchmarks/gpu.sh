#!/usr/bin/env bash
# Every GPU check of issue 7, for a machine with a CUDA torch, in two parts that each fit one device
# call: `checks` (the GPU tests and every benchmark with --device cuda, about 5 minutes) and
# `schedule` (the paper's full 50 x 500 schedule through cat-ray train's loop, goal < 3 minutes).
# Logs go to $OUT (default gpu-logs/); DEVICE=cpu runs the same commands on a CPU (a smoke test).
#
#   bash benchmarks/gpu.sh checks|schedule|all
#
# The lent GPU machines of this workplace have torch but no smplx and no network. Before the run,
# here, in the repository's root (the .whl folder travels with `carry`, git ignores it):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl smplx==0.1.28
# then: run(command="bash benchmarks/gpu.sh checks", carry=[".whl"], timeout_s=420), and the same with
# `schedule` while the machine is warm.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-logs}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 CAT_RAY_CACHE="${CAT_RAY_CACHE:-/tmp/cat-ray-cache}"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site:$PWD"
fi
export PYTHONPATH="${PYTHONPATH:-$PWD}"

step() {  # step NAME SECONDS COMMAND...: one check, its log in $OUT/NAME.log, never more than SECONDS
    local name=$1 limit=$2
    shift 2
    echo "=== $name: $*"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log" | grep -E "^(machine|RESULT|sanity|schedule|cat-ray train|reference)|passed|failed|skipped|error" || true
}

DEVICE="${DEVICE:-cuda}"
what="${1:-all}"
nvidia-smi -L 2>&1 | tee "$OUT/gpu.log"
if [[ $what == checks || $what == all ]]; then
    step tests 120 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py
    step aggregation 30 python3 benchmarks/aggregation.py --device "$DEVICE" --precision fp32,bf16
    step joints 30 python3 benchmarks/joints.py --device "$DEVICE"
    step data 30 python3 benchmarks/data.py --device "$DEVICE"
    step train_step 60 python3 benchmarks/train_step.py --device "$DEVICE" --precision bf16
    step train_step_compiled 90 python3 benchmarks/train_step.py --device "$DEVICE" --precision bf16 --compile --sizes paper
    step checkpoint 30 python3 benchmarks/checkpoint.py --device "$DEVICE" --repeats 2
fi
if [[ $what == schedule || $what == all ]]; then
    step schedule 400 python3 benchmarks/schedule.py --device "$DEVICE" --precision bf16
fi
