#!/usr/bin/env bash
# The one-go GPU check (DEVELOPERS.md): install the checkout with --no-deps plus the carried wheels
# in .whl/ (scripts/fetch_gpu_wheels.sh), then run scripts/gpu_check.py, which writes
# $OUT/gpu_check.json and $OUT/gpu_check.md (default OUT: ./gpu_check_out) and prints the summary
# last. Arguments are passed on to gpu_check.py, e.g. `--device cpu --arch tiny`.
#   PYTHON=...          interpreter (default python3: on the GPU machine, the one with its torch)
#   GPU_CHECK_INSTALL=0 skip the installs (a dev machine whose environment already has everything)
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
PY="${PYTHON:-python3}"
OUT="${OUT:-./gpu_check_out}"
export OUT
mkdir -p "$OUT"
if [ "${GPU_CHECK_INSTALL:-1}" != "0" ]; then
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl
        export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "gpu_check: no .whl/*.whl (scripts/fetch_gpu_wheels.sh builds them); installing nothing" >&2
    fi
    # --no-build-isolation: no index to fetch setuptools from; the image has setuptools and wheel.
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . \
        || echo "gpu_check: editable install failed; running the checkout through PYTHONPATH" >&2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
setup=$(( $(date +%s) - t0 ))
set -o pipefail
"$PY" scripts/gpu_check.py --out "$OUT" --setup-s "$setup" "$@" 2>&1 | tee "$OUT/gpu_check.log"
