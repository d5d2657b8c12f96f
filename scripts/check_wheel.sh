#!/usr/bin/env bash
# Builds the one abi3 wheel (dist/fastops-*-cp310-abi3-*.whl), checks it with abi3audit (only the limited C API of
# CPython 3.10) and imports it from a clean directory: every CPU level library is inside and loads.
#   scripts/check_wheel.sh PYTHON
set -euo pipefail
PY=${1:?usage: check_wheel.sh PYTHON}
[[ $PY == */* ]] && PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")  # absolute, symlink kept (a venv's python)
cd "$(dirname "$0")/.."
rm -f dist/fastops-*.whl dist/build-info.txt
t0=$SECONDS
MAX_JOBS=${MAX_JOBS:-2} "$PY" -m pip wheel -q --no-build-isolation --no-deps -w dist .
wheel=$(ls dist/fastops-*-cp310-abi3-*.whl)
# build-info.txt: the torch and sources it was built from (scripts/gpu_check.sh's dry run installs this wheel).
"$PY" scripts/wheel_info.py write "$wheel" $((SECONDS - t0)) >/dev/null
echo "built $wheel ($(du -h "$wheel" | cut -f1)) in $((SECONDS - t0)) s"
"$PY" -m abi3audit --strict --summary "$wheel"
unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
"$PY" -m zipfile -e "$wheel" "$unpacked"
for level in $(cd "$unpacked" && "$PY" -c 'import fastops; print(*fastops.runnable_cpu_levels())'); do
  (cd "$unpacked" && FASTOPS_CPU_CAPABILITY=$level "$PY" -c '
import torch, fastops
x = torch.randn(64, 33)
assert fastops.__file__.startswith("'"$unpacked"'"), fastops.__file__
torch.testing.assert_close(fastops.functional.gelu(x), torch.nn.functional.gelu(x))
print("wheel imports at CPU level", fastops.cpu_capability())')
done
