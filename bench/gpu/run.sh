#!/usr/bin/env bash
# The GPU run, from the repository root on a machine with a GPU:
#
#     bash bench/gpu/run.sh [--quick] [--tiny] [OUTDIR]      (OUTDIR defaults to $OUT, else bench/gpu/out)
#
# Installs the wheels carried in bench/gpu/wheels (lark, pytorch-crf, torch-struct:
# `make gpu-wheels` fills the folder) into a temporary folder, puts it and the
# repository (dagnet itself, not pip-installed) on PYTHONPATH, then runs
# `python -m bench.gpu.run`: the CUDA tests, then the GPU benchmarks, writing
# results.json, results.md, pytest.log and run.log to OUTDIR. Full mode stays
# under 8 minutes, --quick under 3. DAGNET_BENCH_DEVICE=cpu runs it on the CPU
# (with --tiny: the CI check in tests/test_gpu_script.py).
set -u
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
ARGS=()
OUTDIR=""
for arg in "$@"; do
    case "$arg" in
        --*) ARGS+=("$arg") ;;
        *) OUTDIR=$arg ;;
    esac
done
OUTDIR=${OUTDIR:-${OUT:-$ROOT/bench/gpu/out}}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)

SITE=""
if compgen -G "bench/gpu/wheels/*.whl" > /dev/null; then
    SITE=$(mktemp -d)
    trap 'rm -rf "$SITE"' EXIT
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
        --target "$SITE" bench/gpu/wheels/*.whl \
        || echo "run.sh: the carried wheels did not install; going on with what is there" >&2
fi
export PYTHONPATH="$ROOT${SITE:+:$SITE}${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,temperature.gpu --format=csv 2>&1 | tee "$OUTDIR/run.log"
fi
set -o pipefail
"$PY" -m bench.gpu.run ${ARGS[@]+"${ARGS[@]}"} "$OUTDIR" 2>&1 | tee -a "$OUTDIR/run.log"
