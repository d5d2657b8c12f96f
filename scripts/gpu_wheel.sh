#!/usr/bin/env bash
# Builds the GPU wheel on a CPU machine (`make gpu-wheel`): the whole extension, CUDA kernels for sm_90a and sm_80
# (setup.py's default architectures) and the CPU kernels at every level, against the CUDA torch of PYTHON's venv,
# as one abi3 wheel in dist/gpu/ with build-info.txt beside it (what scripts/gpu_check.sh reads to decide whether
# the wheel fits the GPU machine). Then checks it: at most 60 MiB (the device tool carries 64 MiB in all),
# abi3audit, CUDA machine code for sm_90a and sm_80, the Hopper GEMM's and elementwise kernels' SASS
# (check_sass.py), and an import from a clean folder with has_cuda_kernels() true.
#   scripts/gpu_wheel.sh PYTHON
# MAX_JOBS (default: the cores) parallel compiles; nvcc compiles each .cu's two architectures in parallel too.
# ccache, when the venv has it, caches the host compiles and nvcc's (CCACHE_BASEDIR: the tree's own paths hash
# as relative ones, so a rebuild in any worktree hits).
set -euo pipefail
PY=${1:?usage: gpu_wheel.sh PYTHON}
[[ $PY == */* ]] && PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")  # absolute, symlink kept (a venv's python)
cd "$(dirname "$0")/.."
VENV=$(dirname "$(dirname "$PY")")
OUT_DIR=dist/gpu
MAX_MIB=60

"$PY" -c 'import torch, sys; sys.exit(0 if torch.version.cuda else "gpu_wheel.sh: " + torch.__version__ + " has no CUDA")'
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
[[ -x $NVCC ]] || { echo "gpu_wheel.sh: nvcc not found" >&2; exit 1; }
if [[ -x $VENV/bin/ccache ]]; then
  mkdir -p "$VENV/ccache-links"
  for c in cc c++ gcc g++; do ln -sf "$VENV/bin/ccache" "$VENV/ccache-links/$c"; done
  export PATH=$VENV/ccache-links:$PATH PYTORCH_NVCC="$VENV/bin/ccache $NVCC"
  export CCACHE_BASEDIR=$PWD CCACHE_NOHASHDIR=1
  "$VENV/bin/ccache" -z >/dev/null
fi
# nvcc's --threads compiles the two -gencode targets of a .cu at once (gemm_sm90.cu: sm_90a is most of its time).
export NVCC_APPEND_FLAGS="${NVCC_APPEND_FLAGS:-} --threads 2"
rm -rf "$OUT_DIR"
t0=$SECONDS
MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" -m pip wheel --no-build-isolation --no-deps -w "$OUT_DIR" .
seconds=$((SECONDS - t0))
if [[ -x $VENV/bin/ccache ]]; then "$VENV/bin/ccache" -s | grep -E 'Hits|Misses' || true; fi
wheels=("$OUT_DIR"/fastops-*-cp310-abi3-*.whl)
wheel=${wheels[0]}
"$PY" scripts/wheel_info.py write "$wheel" "$seconds" >/dev/null
cat "$OUT_DIR/build-info.txt"
mib=$(($(stat -c %s "$wheel") / 1024 / 1024))
echo "built $wheel: ${mib} MiB in ${seconds} s (MAX_JOBS=${MAX_JOBS:-$(nproc)} on $(nproc) cores)"
if ((mib > MAX_MIB)); then
  echo "gpu_wheel.sh: the wheel is over ${MAX_MIB} MiB: the device tool carries 64 MiB in all" >&2
  exit 1
fi
"$PY" -m abi3audit --strict --summary "$wheel"
archs=$(sed -n 's/^cuda_arch=//p' "$OUT_DIR/build-info.txt")
for arch in sm_80 sm_90a; do
  [[ " $archs " == *" $arch "* ]] || { echo "gpu_wheel.sh: no $arch machine code in fastops/_C ($archs)" >&2; exit 1; }
done
unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
"$PY" -m zipfile -e "$wheel" "$unpacked"
# The SASS check reads every sm_90a kernel (462: ~1 minute of CPU): done here once, recorded in build-info.txt, so
# that the GPU visit need not repeat it on the same bytes.
libs=("$unpacked"/fastops/_C*.so)
"$PY" scripts/check_sass.py "${libs[0]}" | tee "$unpacked/sass.txt"
echo "sass_checked=$(grep -c ' x[1-9]' "$unpacked/sass.txt") instructions present (check_sass.py)" \
  >>"$OUT_DIR/build-info.txt"
# Imported from the unpacked wheel alone: PYTHONSAFEPATH keeps this checkout's fastops/ off sys.path.
(PYTHONSAFEPATH=1 PYTHONPATH=$unpacked "$PY" -c '
import sys, torch, fastops
assert fastops.__file__.startswith(sys.argv[1]), fastops.__file__
assert fastops.has_cuda_kernels(), "fastops/_C has no CUDA kernels"
x = torch.randn(64, 33)
torch.testing.assert_close(fastops.functional.gelu(x), torch.nn.functional.gelu(x))
print("wheel imports with torch", torch.__version__, "- CUDA kernels registered, CPU level", fastops.cpu_capability())
' "$unpacked")
echo "gpu_wheel.sh: $wheel is ready; carry dist/gpu to the GPU machine (docs/gpu_visit.md)"
