#!/usr/bin/env bash
# The GPU measurements of issue 17 as one prepared run, for a session that is lent the device machine
# (docs/benchmarks.md, "CUDA"). Two commands:
#
#   bash benchmarks/device_check.sh --stage     # here: copy ../shared's fixtures and assets into .device/shared
#   device tool: run(command="bash benchmarks/device_check.sh", carry=[".device"], timeout_s=560)
#
# On the device machine python3 already holds a CUDA build of PyTorch, numpy, OpenCV, SciPy, onnxruntime and
# pytest (the device tool's KINDS.md); the runtime runs from this checkout (PYTHONPATH), nothing is installed and
# nothing is downloaded. The steps, each under its own time limit so that a slow one cannot starve the rest
# (together at most 510 s):
#
#   environment      nvidia-smi, torch / CUDA / numpy versions                                       (30 s)
#   gpu_tests        tests/gpu: every fixture verified in fp32 on the GPU, TF32 and bf16 tolerances,
#                    both Mesh-VQ-VAE graph paths against the CPU                                      (150 s)
#   bench_decode     benchmarks/bench_decode.py --device cuda: fp32, TF32, bf16; batch 1, 8 and 64      (210 s)
#   bench_precision  the fixtures' seeded models rebuilt as checkpoints (`verify --write-checkpoints`), then
#                    bf16's agreement with fp32 on the GPU: argmax tokens, mean mesh and spread of 64
#                    hypotheses, 3 crops × 2 seeds                                                       (120 s)
#
# Each step's output goes to the terminal and to $OUT/<step>.log ($OUT is the device tool's folder that comes
# back; ./device-out where it is unset). Exit status 0 when every step passed, else 1 (the others still run).
# `--compiled` runs, after the environment, only bench_decode with `--compile` in bf16 at batch 1 (the sampling
# steps as CUDA graphs; compiling each step's shapes takes minutes, so this is a call of its own)     (420 s)
set -u
cd "$(dirname "$0")/.."

stage_name=${MEGA_DEVICE_DIR:-.device}  # relative to the repository's root (what carry names), or absolute
stage_dir=$stage_name
[[ $stage_dir == /* ]] || stage_dir=$PWD/$stage_dir

if [[ ${1:-} == --stage ]]; then
    src=${MEGA_SHARED_DIR:-../shared}
    for part in fixtures assets; do
        if [[ ! -d $src/$part ]]; then
            echo "error: $src/$part is missing; set MEGA_SHARED_DIR to the folder that holds fixtures/ and assets/" >&2
            exit 2
        fi
    done
    mkdir -p "$stage_dir/shared"
    for part in fixtures assets; do
        mkdir -p "$stage_dir/shared/$part"
        cp -R "$src/$part/." "$stage_dir/shared/$part/"
    done
    echo "staged $(du -sh "$stage_dir" | cut -f1) in $stage_name: name it in the device run's carry"
    exit 0
fi

compiled=0
if [[ ${1:-} == --compiled ]]; then
    compiled=1
elif [[ $# -gt 0 ]]; then
    echo "error: unknown argument '$1' (use --stage here, or no argument / --compiled on the device machine)" >&2
    exit 2
fi

python=${PYTHON:-python3}
out=${OUT:-device-out}
mkdir -p "$out"
shared=$stage_dir/shared
if [[ ! -d $shared/fixtures || ! -d $shared/assets ]]; then
    echo "error: $shared holds no fixtures/ and assets/; run 'bash benchmarks/device_check.sh --stage' first" \
        "and carry $stage_name" >&2
    exit 2
fi
export MEGA_SHARED_DIR=$shared MEGA_ASSETS_DIR=$shared/assets MEGA_OFFLINE=1 PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

status=0
step() {
    local name=$1 limit=$2
    shift 2
    echo "== $name (at most ${limit} s)"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc$([[ $rc == 124 || $rc == 137 ]] && echo ' (time limit)')"
    [[ $rc == 0 ]] || status=1
}

# shell functions for the steps that are more than one command (timeout runs them through `bash -c`)
environment() {
    nvidia-smi
    "$python" -c 'import numpy, torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "available",
        torch.cuda.is_available(), "numpy", numpy.__version__)'
}
precision_agreement() {
    local checkpoints
    checkpoints=$(mktemp -d) || return 1
    "$python" -m mega_runtime verify "$shared/fixtures/cvqmae_resnet" "$shared/fixtures/vqmae" \
        "$shared/fixtures/mesh_vqvae" --write-checkpoints "$checkpoints" &&
        "$python" benchmarks/bench_precision.py --device cuda --modes fp32 bf16 --checkpoint-dir "$checkpoints" \
            --crops 3 --seeds 2 --hypotheses 64 --repeats 0 --pass-repeats 1
}
export python shared
export -f environment precision_agreement

step environment 30 bash -c environment
if [[ $compiled == 1 ]]; then
    step bench_decode_compiled 420 "$python" benchmarks/bench_decode.py --device cuda --precision bf16 --compile \
        --only deterministic hypotheses16 --batches 1 --repeats 5
    exit $status
fi
step gpu_tests 150 "$python" -m pytest -q -p no:cacheprovider tests/gpu
step bench_decode 210 "$python" benchmarks/bench_decode.py --device cuda --precision all --repeats 5 --batches 1 8 64
step bench_precision 120 bash -c precision_agreement
exit $status
