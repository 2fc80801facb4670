#!/usr/bin/env bash
# Build .whl/ (git-ignored): the wheels that the GPU machine's image lacks, so that
# scripts/gpu_check.sh can install them there without a network (DEVELOPERS.md).
#
# Run once on a machine with PyPI access. fvcore and iopath are sdists only on PyPI: `pip wheel`
# builds them into py3-none-any wheels. Everything else those need (numpy, pyyaml, tqdm, pillow,
# tabulate, portalocker, typing-extensions) is already on that image; torch and torchvision are
# the image's own and must not be carried.
#
# One binary wheel: safetensors (a core dependency: model.safetensors). It is a Rust extension, but
# built against the stable ABI (abi3), so the one manylinux x86_64 wheel for CPython 3.12 (the GPU
# image's Python) is downloaded, not built; it is the only non-pure wheel allowed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
PINS=(
    segment-anything==1.0
    fvcore==0.1.5.post20221221
    iopath==0.1.10
    yacs==0.1.8
    termcolor==3.3.0
)
SAFETENSORS_VERSION=0.8.0  # the version pinned in the development venv
tmp=".whl.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"
"$PY" -m pip wheel -q --no-deps --wheel-dir "$tmp" "${PINS[@]}"
"$PY" -m pip download -q --only-binary=:all: --no-deps --python-version 3.12 \
    --platform manylinux2014_x86_64 --dest "$tmp" "safetensors==$SAFETENSORS_VERSION"
for w in "$tmp"/*.whl; do
    case "$(basename "$w")" in
        *-none-any.whl) ;;
        "safetensors-$SAFETENSORS_VERSION"-*-abi3-*manylinux*_x86_64*.whl) ;;
        *) echo "fetch_gpu_wheels: $w is not a pure-Python wheel (nor the safetensors one)" >&2; exit 1 ;;
    esac
done
want=$(( ${#PINS[@]} + 1 ))  # the pins, and safetensors
n=$(ls "$tmp"/*.whl | wc -l)
if [ "$n" -ne "$want" ]; then
    echo "fetch_gpu_wheels: expected $want wheels, got $n" >&2
    exit 1
fi
rm -rf .whl
mv "$tmp" .whl
trap - EXIT
for w in .whl/*.whl; do
    printf '%-55s %6s KiB  needs: %s\n' "$(basename "$w")" "$(( $(stat -c %s "$w") / 1024 ))" \
        "$(unzip -p "$w" '*.dist-info/METADATA' | sed -n 's/^Requires-Dist: //p' | grep -v 'extra ==' | tr '\n' ' ')"
done
