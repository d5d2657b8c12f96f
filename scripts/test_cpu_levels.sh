#!/usr/bin/env bash
# Reruns the accuracy suites (pytest marker cpu_levels, see tests/conftest.py) at each CPU kernel level below the
# best one this machine runs, so that every level's kernels are tested wherever `make test` runs. torch is held to
# the same level (ATen's kernels, MKL, oneDNN): the accuracy rule then compares fastops with what torch gives on a
# CPU of that level, as it would on an AVX2-only AMD EPYC or a pre-AVX2 x86-64.
#   scripts/test_cpu_levels.sh PYTHON [pytest args...]
set -euo pipefail
PY=${1:?usage: test_cpu_levels.sh PYTHON [pytest args...]}
shift
for level in $("$PY" -c 'import fastops; print(*fastops.runnable_cpu_levels()[:-1])'); do
  case $level in
    avx2) torch_env=(ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2) ;;
    default) torch_env=(ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2 ONEDNN_MAX_CPU_ISA=SSE41) ;;
    *) echo "test_cpu_levels.sh: no torch settings for level $level" >&2; exit 1 ;;
  esac
  echo "=== CPU kernel level $level (${torch_env[*]})"
  env FASTOPS_CPU_CAPABILITY="$level" "${torch_env[@]}" "$PY" -m pytest -q -p no:cacheprovider -m cpu_levels "$@" tests
done
