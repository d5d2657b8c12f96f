#!/usr/bin/env bash
# The one command of a GPU visit: install the CUDA wheel built on a CPU machine (`make gpu-wheel`), then smoke test,
# CUDA test suite, compute-sanitizer and the headline benchmarks, each in its own time box, all inside one budget
# (default 470 s: a visit lends ~15 minutes, a machine takes a minute or two to start, and one command may run 10).
#
# Next GPU visit, exactly (the device tool copies the working tree; dist/ is ignored by git, so carry it):
#   run(command="bash scripts/gpu_check.sh", carry=["dist/gpu"], timeout_s=540)
# dist/gpu holds the wheel (14 MiB: fastops/_C is 45 MB of sm_90a + sm_80 code uncompressed) and build-info.txt;
# `make gpu-wheel` makes both, in the checkout that calls run (the tool sends that one). docs/gpu_visit.md has the rest.
#
# Steps, in order (each logs to its own file; a failed step never stops a later one):
#   install   pip-installs dist/gpu/*.whl into a private folder on PYTHONPATH when build-info.txt says it was built
#             against this machine's torch (version and CUDA) from this tree's sources; else builds a wheel here
#             (gemm_sm90.cu alone takes ~4 minutes: most of the budget) and installs that
#   sass      the installed library's SASS has the instructions each kernel family exists for (check_sass.py;
#             done by make gpu-wheel on the same bytes when the wheel came from there)
#   smoke     scripts/gpu_smoke.py: a few calls per kernel family against torch, in seconds
#   test      the CUDA tests (pytest -m cuda, parallel with pytest-xdist); on a failure the failed tests rerun
#             with each Hopper GEMM switch (FASTOPS_SM90_NO_CLUSTER, FASTOPS_SM90_DIRECT_STORE, FASTOPS_NO_SM90):
#             a switch under which they pass pins the fault on what it turns off
#   memcheck, racecheck, initcheck
#             compute-sanitizer over scripts/gpu_sanitize_cases.py (one small case per kernel, every Hopper GEMM
#             variant), the three tools at once
#   bench     python -m fastops.bench --headline: DESIGN.md's headline rows against torch and torch.compile, the
#             rows with a target first, until its box ends; then fastops' training step on this machine's CPU
# $OUT (default ./out) gets at most 5 files: summary.txt (each step PASS/FAIL/TIMEOUT/SKIP with seconds, each
# headline target with its measured ratio), logs.tgz (every log), the benchmark CSV and its plot, build-info.txt.
#
# Environment: PYTHON (default python3), GPU_CHECK_BUDGET_S (470), GPU_CHECK_BOX_<STEP> (a step's box in seconds,
# e.g. GPU_CHECK_BOX_TEST=200), STEPS (default "install sass smoke test sanitize bench"), GPU_CHECK_WHEEL (a wheel
# to use instead of dist/gpu's), GPU_CHECK_TESTS (pytest's selection, default "tests"; e.g. "tests/test_matmul.py"),
# GPU_CHECK_WORKERS (pytest-xdist workers, default 8), FASTOPS_GPU_CHECK_DRY=1: the dry run on a machine without a GPU (CI): the same
# install, boxes, $OUT layout and summary; each GPU step reports "skipped: no GPU", its script run on the CPU where
# that checks anything (smoke and sanitizer cases with --device cpu, the CUDA tests collected and skipped).
# Exit status: 0 when every step that ran passed (targets missed are reported, not failures).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
REPO=$PWD
OUT=${OUT:-$REPO/out}
DRY=${FASTOPS_GPU_CHECK_DRY:-0}
BUDGET=${GPU_CHECK_BUDGET_S:-470}
STEPS=${STEPS:-install sass smoke test sanitize bench}
if [[ -z ${PYTHON:-} && $DRY == 1 && -x $REPO/.venv/bin/python ]]; then PYTHON=$REPO/.venv/bin/python; fi
PY=${PYTHON:-python3}
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
SITE=$LOGS/site  # the installed wheel: a private folder first on PYTHONPATH, the machine's python left as it was
T0=$SECONDS
DEADLINE=$((T0 + BUDGET))
mkdir -p "$OUT" "$LOGS/bench"
# PYTHONSAFEPATH: python -m / -c must not import the checkout's fastops/ (sources without the built libraries)
# instead of the installed one; exported, so pytest-xdist's workers and compute-sanitizer's child get it too.
export PYTHONUNBUFFERED=1 PYTHONSAFEPATH=1 PYTHONDONTWRITEBYTECODE=1
declare -a SUMMARY=()
status=0

# Nominal boxes (seconds) and the least each step needs, which earlier steps leave for it. Sized for the H200:
# smoke ~10 s, the CUDA tests ~2 minutes over 8 workers (an estimate: they have not run on a GPU yet), the three
# sanitizers at once ~1 minute, the headline rows that have targets ~80 s (62 timings and 6 torch.compile calls).
declare -A BOX=([install]=60 [build]=420 [sass]=90 [smoke]=60 [test]=170 [bisect]=40 [sanitize]=100 [bench]=200
                [cpu_step]=45)
declare -A LEAST=([install]=20 [sass]=5 [smoke]=15 [test]=40 [sanitize]=30 [bench]=60 [cpu_step]=30)
ORDER=(install sass smoke test sanitize bench cpu_step)
for name in "${!BOX[@]}"; do
  var=GPU_CHECK_BOX_${name^^}
  [[ -n ${!var:-} ]] && BOX[$name]=${!var}
done
wants() { [[ " $STEPS " == *" $1 "* || ($1 == cpu_step && " $STEPS " == *" bench "*) ]]; }

# box NAME STEP: NAME's nominal box, cut so that the steps after STEP (in ORDER, and wanted) keep their least
# seconds and the summary its 10.
box() {
  local name=$1 step=$2 reserve=10 after=0 s
  for s in "${ORDER[@]}"; do
    if ((after)) && wants "$s"; then reserve=$((reserve + ${LEAST[$s]})); fi
    [[ $s == "$step" ]] && after=1
  done
  local left=$((DEADLINE - SECONDS - reserve))
  ((left < BOX[$name])) && echo "$left" || echo "${BOX[$name]}"
}

record() {  # record STATUS NAME SECONDS BOX NOTE
  local line
  line=$(printf '%-7s %-24s %4d s of %4d s box' "$1" "$2" "$3" "$4")
  SUMMARY+=("$line${5:+  $5}")
  echo "--- $line${5:+  $5}"
}

# run_step NAME BOX CMD...: CMD under `timeout` (SIGTERM at the box's end, SIGKILL 10 s later, to its whole process
# group: pytest-xdist workers and compute-sanitizer's target too), logged to $LOGS/NAME.log. Returns CMD's status.
run_step() {
  local name=$1 limit=$2 rc
  shift 2
  local t0=$SECONDS
  if ((limit < 5)); then
    record SKIP "$name" 0 "$limit" "no time left in the ${BUDGET} s budget"
    return 125
  fi
  echo "=== $name ($limit s box): $*"
  if declare -F "$1" >/dev/null; then  # a function of this script: through a bash that has it (export -f)
    timeout -k 10 "$limit" bash -c '"$@"' bash "$@" >"$LOGS/$name.log" 2>&1
  else
    timeout -k 10 "$limit" "$@" >"$LOGS/$name.log" 2>&1
  fi
  rc=$?
  tail -n 12 "$LOGS/$name.log" | awk '{print "    " $0}'  # (awk: a last line without newline still gets one)
  STEP_SECONDS=$((SECONDS - t0))
  return $rc
}

# verdict NAME BOX RC [NOTE]: records PASS / FAIL / TIMEOUT from a run_step status.
verdict() {
  local name=$1 limit=$2 rc=$3 note=${4:-}
  case $rc in
    0) record PASS "$name" "$STEP_SECONDS" "$limit" "$note" ;;
    124 | 137) record TIMEOUT "$name" "$STEP_SECONDS" "$limit" "stopped at its box; see $name.log${note:+; $note}"; status=1 ;;
    125) ;;  # skipped for lack of time, already recorded
    *) record FAIL "$name" "$STEP_SECONDS" "$limit" "exit $rc; see $name.log${note:+; $note}"; status=1 ;;
  esac
}

# dry_skip NAME BOX RC WHAT: a GPU step on a machine without one: SKIP, with what its CPU stand-in did.
dry_skip() {
  local name=$1 limit=$2 rc=$3 what=$4
  case $rc in
    0) record SKIP "$name" "$STEP_SECONDS" "$limit" "skipped: no GPU ($what passed on the CPU)" ;;
    124 | 137) record TIMEOUT "$name" "$STEP_SECONDS" "$limit" "skipped: no GPU, and $what on the CPU hit the box"; status=1 ;;
    125) ;;
    *) record FAIL "$name" "$STEP_SECONDS" "$limit" "skipped: no GPU, but $what failed on the CPU (exit $rc)"; status=1 ;;
  esac
}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  dry run: $DRY  python: $PY"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1 || true
  "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available())'
  command -v compute-sanitizer nvcc cuobjdump || true
} >"$LOGS/machine.txt" 2>&1
cat "$LOGS/machine.txt"
GPU=0
if [[ $DRY != 1 ]] && "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  GPU=1
elif [[ $DRY != 1 ]]; then
  # Not a dry run, yet no GPU: the steps run their CPU stand-ins, and the run fails, since it checked nothing.
  STEP_SECONDS=0
  record FAIL gpu 0 0 "no CUDA device visible to $PY (FASTOPS_GPU_CHECK_DRY=1 asks for a dry run)"
  status=1
fi

# ---- install -------------------------------------------------------------------------------------------------
# Candidates, first match wins: GPU_CHECK_WHEEL, dist/gpu (make gpu-wheel), and in a dry run dist/ (make wheel's
# CPU wheel, which scripts/check_wheel.sh describes with the same build-info.txt).
# Both run through `timeout` in a child bash (run_step, export -f): shellcheck cannot see the calls.
export PY SITE LOGS
# shellcheck disable=SC2317
install_wheel() {  # install_wheel WHEEL: into $SITE, then prove the import comes from there
  rm -rf "$SITE"
  "$PY" -m pip install --quiet --no-deps --no-index --no-compile --target "$SITE" "$1" || return 1
  PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH} "$PY" -c '
import sys, fastops
assert fastops.__file__.startswith(sys.argv[1]), f"fastops imported from {fastops.__file__}, not {sys.argv[1]}"
print("installed", fastops.__file__, "cuda kernels:", fastops.has_cuda_kernels(), "cpu level:", fastops.cpu_capability())
' "$SITE"
}
# shellcheck disable=SC2317
build_here() {  # a wheel from this tree with this machine's torch and nvcc, in $LOGS/wheel; then installed
  local wheels level=default flags
  rm -rf "$LOGS/wheel" && mkdir -p "$LOGS/wheel"
  # Only the CPU kernel level this machine runs: setuptools builds the extensions one after another, so each level
  # would add its own round of compiles after gemm_sm90.cu's ~4 minutes.
  flags="$(grep -m1 '^flags' /proc/cpuinfo) "
  [[ $flags == *" avx2 "* && $flags == *" fma "* && $flags == *" f16c "* ]] && level=avx2
  [[ $flags == *" avx512f "* && $flags == *" avx512bw "* && $flags == *" avx512vl "* && $flags == *" avx512dq "* ]] && level=avx512
  FASTOPS_CPU_LEVELS=$level MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" -m pip wheel --no-build-isolation --no-deps \
    -w "$LOGS/wheel" . || return 1
  wheels=("$LOGS"/wheel/fastops-*.whl)
  "$PY" scripts/wheel_info.py write "${wheels[0]}" && install_wheel "${wheels[0]}"
}
WHEEL=""
INFO=""
if wants install; then
  candidates=()
  [[ -n ${GPU_CHECK_WHEEL:-} ]] && candidates+=("$GPU_CHECK_WHEEL")
  candidates+=(dist/gpu/fastops-*.whl)
  [[ $DRY == 1 ]] && candidates+=(dist/fastops-*.whl)
  for w in "${candidates[@]}"; do
    [[ -f $w ]] || continue
    info=$(dirname "$w")/build-info.txt
    if [[ ! -f $info ]]; then
      echo "install: $w has no build-info.txt beside it: not used" | tee -a "$LOGS/install-choice.log"
      continue
    fi
    if why=$("$PY" scripts/wheel_info.py match "$info" 2>&1); then
      WHEEL=$w INFO=$info
      echo "install: $w: $why" | tee -a "$LOGS/install-choice.log"
      break
    fi
    echo "install: $w not used: $why" | tee -a "$LOGS/install-choice.log"
  done
  rc=1
  if [[ -n $WHEEL ]]; then
    export -f install_wheel
    limit=$(box install install)
    run_step install "$limit" install_wheel "$WHEEL"
    rc=$?
    verdict install "$limit" $rc "$(basename "$WHEEL") ($(($(stat -c %s "$WHEEL") / 1048576)) MiB, $(sed -n 's/^torch_full=//p' "$INFO"))"
  fi
  if ((rc != 0)) && [[ $DRY == 1 ]]; then
    # A dry run does not build: on a CPU machine that takes 10+ minutes (make wheel first, or GPU_CHECK_WHEEL=...).
    [[ -z $WHEEL ]] && record FAIL install 0 0 "no wheel fits this python's torch and tree (see install-choice.log); make wheel first"
    status=1
  elif ((rc != 0)); then
    # No prebuilt wheel fits this torch and tree, or it would not install or import (another glibc or libstdc++
    # than the build machine's?): build one here, as the old script did (MAX_JOBS: every core).
    export -f install_wheel build_here
    limit=$(box build install)
    run_step build "$limit" build_here
    rc=$?
    INFO=$LOGS/wheel/build-info.txt
    verdict build "$limit" $rc "no prebuilt wheel used (see install-choice.log and install.log): built here"
  fi
  [[ -f $SITE/fastops/__init__.py ]] && export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
  if [[ -f $INFO ]]; then
    cp "$INFO" "$OUT/build-info.txt"
    FASTOPS_COMMIT=$(sed -n 's/^commit=//p' "$INFO")  # the benchmark CSV's commit column: no .git here
    export FASTOPS_COMMIT
  fi
fi

# ---- sass ----------------------------------------------------------------------------------------------------
if wants sass; then
  limit=$(box sass sass)
  libs=("$SITE"/fastops/_C*.so)
  lib=${libs[0]}
  [[ -f $lib ]] || lib=""
  if [[ $GPU != 1 ]]; then
    STEP_SECONDS=0
    record SKIP sass 0 "$limit" "skipped: no GPU"
  elif [[ -f $INFO ]] && grep -q '^sass_checked=' "$INFO"; then
    # make gpu-wheel read these very bytes' SASS (~1 minute of CPU for 462 kernels): not again on GPU time.
    STEP_SECONDS=0
    record PASS sass 0 "$limit" "checked by make gpu-wheel on the same binary: $(sed -n 's/^sass_checked=//p' "$INFO")"
  elif [[ -z $lib ]]; then
    STEP_SECONDS=0
    record FAIL sass 0 "$limit" "no installed fastops/_C library"
    status=1
  else
    run_step sass "$limit" "$PY" scripts/check_sass.py "$lib"
    verdict sass "$limit" $?
  fi
fi

# ---- smoke ---------------------------------------------------------------------------------------------------
if wants smoke; then
  limit=$(box smoke smoke)
  if [[ $GPU == 1 ]]; then
    run_step smoke "$limit" "$PY" scripts/gpu_smoke.py --device cuda
    verdict smoke "$limit" $?
  else
    run_step smoke "$limit" "$PY" scripts/gpu_smoke.py --device cpu
    dry_skip smoke "$limit" $? "scripts/gpu_smoke.py --device cpu"
  fi
fi

# ---- test ----------------------------------------------------------------------------------------------------
# -m cuda: the CPU tests run in CI. pytest-xdist (8 workers of the 16 cores: torch.compile tests compile on the
# CPU) where installed; pytest-timeout, where installed, ends a test stuck in a kernel after 120 s (thread method:
# the worker dies, xdist replaces it and names the test) so one hang cannot eat the whole box. The pytest cache
# lives in $LOGS, so the bisect reruns only the failed tests (--last-failed).
if wants test; then
  limit=$(box test test)
  PYTEST=("$PY" -m pytest -p no:randomly -o "cache_dir=$LOGS/pytest-cache" -rfE)
  # xdist workers: 8 on the GPU machine; 2 in a dry run (this checks the flags, and CI has 2 cores)
  "$PY" -c 'import xdist' 2>/dev/null && PYTEST+=(-n "${GPU_CHECK_WORKERS:-$((GPU ? 8 : 2))}")
  "$PY" -c 'import pytest_timeout' 2>/dev/null && PYTEST+=(--timeout 120 --timeout-method thread)
  if [[ $GPU == 1 ]]; then
    # -v: each finished test gets a line, so a step stopped at its box still shows how far it got; --durations: the
    # slowest tests, to size this box on the next visit (the suite has not run on a GPU before).
    # shellcheck disable=SC2086  # GPU_CHECK_TESTS: pytest arguments, word-split on purpose
    run_step test "$limit" "${PYTEST[@]}" -v --durations=25 -m cuda ${GPU_CHECK_TESTS:-tests}
    rc=$?
    verdict test "$limit" $rc
    if ((rc != 0 && rc != 124 && rc != 137 && rc != 125)); then
      for switch in FASTOPS_SM90_NO_CLUSTER FASTOPS_SM90_DIRECT_STORE FASTOPS_NO_SM90; do
        name=bisect-${switch#FASTOPS_}
        limit=$(box bisect test)
        # shellcheck disable=SC2086
        run_step "$name" "$limit" env "$switch=1" "${PYTEST[@]}" -v -m cuda --last-failed --last-failed-no-failures none \
          ${GPU_CHECK_TESTS:-tests}
        rc=$?
        case $rc in
          0) note="the failed tests pass with $switch=1: the fault is in what it turns off" ;;
          5) note="no failed test recorded to rerun (a crash at collection? see test.log)" ;;
          *) note="the failed tests still fail with $switch=1" ;;
        esac
        if ((rc == 124 || rc == 137)); then verdict "$name" "$limit" $rc; continue; fi
        ((rc == 125)) && continue
        record INFO "$name" "$STEP_SECONDS" "$limit" "$note"
      done
    fi
  else
    # Collect the CUDA tests and let them skip: checks the command line, the plugins and the collection.
    # shellcheck disable=SC2086
    run_step test "$limit" "${PYTEST[@]}" -q -m cuda ${GPU_CHECK_TESTS:-tests}
    dry_skip test "$limit" $? "pytest -m cuda (every case skips)"
  fi
fi

# ---- sanitize ------------------------------------------------------------------------------------------------
# The three tools at once (each its own process, log and verdict) on the small cases; torch's caching allocator
# off, so that every tensor is its own allocation and memcheck sees an overrun past its end.
if wants sanitize; then
  limit=$(box sanitize sanitize)
  if [[ $GPU == 1 ]] && command -v compute-sanitizer >/dev/null; then
    declare -A PIDS=()
    t0=$SECONDS
    echo "=== memcheck, racecheck, initcheck ($limit s box, at once)"
    for tool in memcheck racecheck initcheck; do
      PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout -k 10 "$limit" compute-sanitizer --tool "$tool" --error-exitcode 1 \
        --print-limit 50 --report-api-errors no --target-processes all "$PY" scripts/gpu_sanitize_cases.py \
        --device cuda >"$LOGS/$tool.log" 2>&1 &
      PIDS[$tool]=$!
    done
    for tool in memcheck racecheck initcheck; do
      wait "${PIDS[$tool]}"
      rc=$?
      STEP_SECONDS=$((SECONDS - t0))
      tail -n 4 "$LOGS/$tool.log" | awk '{print "    " $0}'
      verdict "$tool" "$limit" $rc "$(grep -m1 -o 'ERROR SUMMARY: [0-9]* errors*' "$LOGS/$tool.log")"
    done
  elif [[ $GPU == 1 ]]; then
    record FAIL sanitize 0 "$limit" "compute-sanitizer not on PATH"
    status=1
  else
    # GPU_CHECK_DRY_STALL=S holds the step S seconds after its stand-in ran: the dry run's test of the time boxes
    # (a stand-in that merely runs long would finish inside a small box on a fast machine).
    run_step sanitize "$limit" bash -c '"$@" && sleep "$0"' "${GPU_CHECK_DRY_STALL:-0}" \
      "$PY" scripts/gpu_sanitize_cases.py --device cpu
    dry_skip sanitize "$limit" $? "scripts/gpu_sanitize_cases.py --device cpu (no sanitizer)"
  fi
fi

# ---- bench ---------------------------------------------------------------------------------------------------
# Rows are appended to the CSV as they are measured; at the box's end the run stops (SIGTERM) with its table and
# plot drawn from what it has. rep 100 ms per timing (the default 200 doubles the time for little).
CSV=""
CPU_CSV=$LOGS/bench-cpu/cpu.csv
if wants bench; then
  limit=$(box bench bench)
  if [[ $GPU == 1 ]]; then
    run_step bench "$limit" "$PY" -m fastops.bench --headline --no-progress --rep-ms 100 \
      --results "$LOGS/bench" --plots "$LOGS/bench"
    rc=$?
    csvs=("$LOGS"/bench/*.csv)
    CSV=${csvs[0]}
    rows=0
    if [[ -f $CSV ]]; then rows=$(($(wc -l <"$CSV") - 1)); else CSV=""; fi
    # SIGTERM at the box is the planned end of a long run: its rows count; the summary lists what is missing.
    if ((rc == 124)) && ((rows > 1)); then
      record PASS bench "$STEP_SECONDS" "$limit" "stopped at its box after $rows rows (see the targets below)"
    else
      verdict bench "$limit" $rc "$rows rows"
    fi
    # The GPU-vs-CPU comparison: fastops' training step at the headline shape on this machine's CPU, if time is left.
    limit=$(box cpu_step cpu_step)
    run_step cpu-step "$limit" "$PY" -m fastops.bench --cpu-train-step --no-progress --results "$LOGS/bench-cpu" \
      --plots "$LOGS/bench-cpu"
    verdict cpu-step "$limit" $?
  else
    STEP_SECONDS=0
    record SKIP bench 0 "$limit" "skipped: no GPU (the headline rows are GPU rows)"
  fi
fi

# ---- summary -------------------------------------------------------------------------------------------------
{
  echo "fastops GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), $((SECONDS - T0)) s of a $BUDGET s budget$([[ $DRY == 1 ]] && echo ' (dry run, no GPU)')"
  grep -E 'MiB|^python ' "$LOGS/machine.txt"
  [[ -n $INFO && -f $INFO ]] && echo "wheel: $(sed -n 's/^wheel=//p' "$INFO"), torch $(sed -n 's/^torch_full=//p' "$INFO"), commit $(sed -n 's/^commit=//p' "$INFO"), sources $(sed -n 's/^source_hash=//p' "$INFO"), archs $(sed -n 's/^cuda_arch=//p' "$INFO")"
  echo
  printf '%s\n' "${SUMMARY[@]}"
  if wants bench; then
    echo
    "$PY" -m fastops.bench.headline "${CSV:-$LOGS/bench/none.csv}" --cpu-csv "$CPU_CSV" 2>&1
  fi
} >"$OUT/summary.txt"

# Logs: one tarball (the device tool returns at most 8 files of 16 MiB). A runaway log (a sanitizer reporting the
# same error in every thread) keeps its first and last 4 MiB.
for f in "$LOGS"/*.log; do
  if [[ -f $f ]] && (($(stat -c %s "$f") > 8 * 1024 * 1024)); then
    { head -c 4194304 "$f"; printf '\n[... cut by gpu_check.sh ...]\n'; tail -c 4194304 "$f"; } >"$f.cut" && mv "$f.cut" "$f"
  fi
done
[[ -n $CSV && -f $CSV ]] && cp "$CSV" "$OUT/" && cp "$LOGS"/bench/*.png "$OUT/" 2>/dev/null
cp "$OUT/summary.txt" "$LOGS/"
tar -czf "$OUT/logs.tgz" -C "$LOGS" --exclude=site --exclude=wheel --exclude=pytest-cache .
echo
echo "=== summary ($OUT/summary.txt)"
cat "$OUT/summary.txt"
rm -rf "$LOGS"
exit $status
