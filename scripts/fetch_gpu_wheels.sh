#!/usr/bin/env bash
# Build .whl/ (git-ignored): the pure-Python wheels that the GPU machine's image lacks, so that
# scripts/gpu_check.sh can install them there without a network (DEVELOPERS.md).
#
# Run once on a machine with PyPI access. fvcore and iopath are sdists only on PyPI: `pip wheel`
# builds them into py3-none-any wheels. Everything else those need (numpy, pyyaml, tqdm, pillow,
# tabulate, portalocker, typing-extensions) is already on that image; torch and torchvision are
# the image's own and must not be carried.
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
tmp=".whl.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"
"$PY" -m pip wheel -q --no-deps --wheel-dir "$tmp" "${PINS[@]}"
for w in "$tmp"/*.whl; do
    case "$(basename "$w")" in
        *-none-any.whl) ;;
        *) echo "fetch_gpu_wheels: $w is not a pure-Python wheel" >&2; exit 1 ;;
    esac
done
n=$(ls "$tmp"/*.whl | wc -l)
if [ "$n" -ne "${#PINS[@]}" ]; then
    echo "fetch_gpu_wheels: expected ${#PINS[@]} wheels, got $n" >&2
    exit 1
fi
rm -rf .whl
mv "$tmp" .whl
trap - EXIT
for w in .whl/*.whl; do
    printf '%-55s %6s KiB  needs: %s\n' "$(basename "$w")" "$(( $(stat -c %s "$w") / 1024 ))" \
        "$(unzip -p "$w" '*.dist-info/METADATA' | sed -n 's/^Requires-Dist: //p' | grep -v 'extra ==' | tr '\n' ' ')"
done
