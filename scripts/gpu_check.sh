#!/usr/bin/env bash
# The GPU check (docs/benchmarks.md, "GPU check"): from a fresh copy of the repository on a machine with an
# NVIDIA GPU, in one run of at most GPU_CHECK_TOTAL_S seconds (default 480), in stages:
#   setup   install what pyproject.toml asks for and the machine lacks, from a carried wheel folder (--wheels);
#           torch too, but only where no CUDA torch is there (a CUDA torch already there is kept)
#   env     the machine: GPU, driver, torch, Triton, nvcc (fails without a CUDA GPU)
#   build   panning._C and panning._C_cuda (pip install -e ., PANNING_CUDA=1: the CUDA build must succeed)
#   import  every backend (cpp, triton, cuda) loads and sees the GPU
#   tests   the GPU part of the test suite (GPU_TESTS below), Triton kernels compiled, junit XML
#   bench   bench/bench_gpu.py on the shapes of docs/benchmarks.md
# Each stage runs under `timeout` with its own budget (GPU_CHECK_<STAGE>_S overrides it), cut to what is left of
# the total; a failing stage does not stop the next. Written under OUT (--out, else $OUT, else ./gpu-out):
# setup.log, build.log, tests.log, bench.log, junit.xml, gpu-<device>-<date>.md and summary.md (printed last).
# Exit status: 0 if every stage passed, 1 if any failed or ran out of time, 2 for bad usage.
#
#   bash scripts/gpu_check.sh [--out DIR] [--wheels DIR] [--stages setup,env,...]   on the GPU machine
#   bash scripts/gpu_check.sh --dry-run        anywhere: the stages, and every check that needs no GPU
#   bash scripts/gpu_check.sh --download-wheels DIR [NAME ...]    here, with network: wheels for --wheels
#
# Relative paths are taken from the repository's root. PYTHON: the Python to use (default: the first of
# .venv/bin/python, python3, python whose torch sees a GPU, else the first of them that exists).
set -uo pipefail  # no -e: a failing stage must not stop the next
cd "$(dirname "$0")/.."

STAGES=(setup env build import tests bench)
declare -A BUDGET=([setup]=60 [env]=30 [build]=200 [import]=30 [tests]=150 [bench]=270)
declare -A LOG=([setup]=setup.log [env]=setup.log [build]=build.log [import]=build.log [tests]=tests.log
                [bench]=bench.log)
# The GPU part of the test suite: the CUDA and Triton backends against the reference, the sparse layers and
# jackpot search steps on the GPU, and the CUDA sources through nvcc.
GPU_TESTS=(tests/ops/test_cuda_kernels.py tests/ops/test_cuda_compile.py tests/ops/test_triton_kernels.py
           tests/ops/test_ops.py tests/nn/test_nn_cuda.py tests/jackpot/test_jackpot_cuda.py)
TOTAL=${GPU_CHECK_TOTAL_S:-480}
RESERVE=30  # seconds kept for the summary

usage() { echo "usage: bash scripts/gpu_check.sh [--out DIR] [--wheels DIR] [--stages LIST] [--dry-run]" \
               "| --download-wheels DIR [NAME ...]" >&2; exit 2; }

OUT_DIR=${OUT:-gpu-out}
WHEELS=""
SELECTED=$(IFS=,; echo "${STAGES[*]}")
DRY_RUN=0
while (($#)); do
  case $1 in
    --out) [[ $# -ge 2 ]] || usage; OUT_DIR=$2; shift 2 ;;
    --wheels) [[ $# -ge 2 ]] || usage; WHEELS=$2; shift 2 ;;
    --stages) [[ $# -ge 2 ]] || usage; SELECTED=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --download-wheels) DOWNLOAD=1; shift; break ;;
    *) echo "gpu_check.sh: unknown argument: $1" >&2; usage ;;
  esac
done
for stage in ${SELECTED//,/ }; do
  [[ -n ${BUDGET[$stage]+x} ]] || { echo "--stages: unknown stage '$stage'; stages: ${STAGES[*]}" >&2; exit 2; }
done

pick_python() {
  if [[ -n ${PYTHON:-} ]]; then echo "$PYTHON"; return; fi
  local candidate first=""
  for candidate in .venv/bin/python python3 python; do
    command -v "$candidate" >/dev/null 2>&1 || continue
    first=${first:-$candidate}
    if "$candidate" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
      echo "$candidate"; return
    fi
  done
  echo "${first:-python3}"
}
PY=$(pick_python)

if [[ ${DOWNLOAD:-0} == 1 ]]; then
  [[ $# -ge 1 ]] || usage
  exec "$PY" scripts/gpu_check.py wheels "$@"
fi

budget() {  # the stage's budget, cut to what is left of the total
  local name=$1 var="GPU_CHECK_${1^^}_S"
  local own=${!var:-${BUDGET[$name]}} left=$((TOTAL - RESERVE - SECONDS))
  echo $((own < left ? own : left))
}

selected() { [[ ",$SELECTED," == *",$1,"* ]]; }

stage_command() {  # the command of a stage, one word per line (--dry-run prints them)
  case $1 in
    setup) printf '%s\n' "$PY" scripts/gpu_check.py deps ${WHEELS:+--wheels "$WHEELS"} ;;
    env) printf '%s\n' "$PY" scripts/gpu_check.py env ;;
    build) printf '%s\n' env PANNING_CUDA=1 "MAX_JOBS=$(nproc)" "$PY" -m pip install --no-index \
             --no-build-isolation --no-deps --disable-pip-version-check -e . ;;
    import) printf '%s\n' "$PY" scripts/gpu_check.py backends ;;
    tests) printf '%s\n' "$PY" -m pytest -q -rs --durations=15 -p no:cacheprovider "--junitxml=$OUT_DIR/junit.xml" \
             $(plugin_options) "${GPU_TESTS[@]}" ;;
    bench) printf '%s\n' "$PY" bench/bench_gpu.py --output-dir "$OUT_DIR" ;;
  esac
}

plugin_options() {  # where installed: pytest-xdist workers, so that the Triton compiles run in parallel; a time
  # limit per test (pytest-timeout), so that one hanging kernel fails its test, not the stage and its junit.xml
  if "$PY" -c 'import xdist' 2>/dev/null; then echo "-n${GPU_CHECK_WORKERS:-8}"; fi
  if "$PY" -c 'import pytest_timeout' 2>/dev/null; then echo "--timeout=90"; fi
}

# ---------------------------------------------------------------------------------------------- dry run

if ((DRY_RUN)); then
  failed=0
  check() {  # check WHAT COMMAND...: run it quietly, say ok with its last line, or FAILED with its last lines
    local what=$1; shift
    local output
    if output=$("$@" 2>&1); then echo "  ok      $what${output:+: $(tail -n 1 <<<"$output" | cut -c 1-90)}"; else
      echo "  FAILED  $what"; [[ -z $output ]] || tail -n 15 <<<"$output" | sed 's/^/          /'; failed=1; fi
  }
  echo "gpu_check.sh --dry-run: Python $PY, OUT $OUT_DIR, total budget ${TOTAL}s"
  echo "stages (budget in seconds, log, command):"
  for stage in "${STAGES[@]}"; do
    selected "$stage" || continue
    var="GPU_CHECK_${stage^^}_S"
    echo "  $stage ${!var:-${BUDGET[$stage]}}s ${LOG[$stage]}: $(stage_command "$stage" | tr '\n' ' ')"
  done
  echo "checks:"
  check "bash syntax of $0" bash -n "$0"
  for path in setup.py pyproject.toml scripts/gpu_check.py bench/bench_gpu.py "${GPU_TESTS[@]}"; do
    check "file $path" test -f "$path"
  done
  check "command timeout" command -v timeout
  check "command nproc" command -v nproc
  check "Python $PY" "$PY" --version
  check "pip" "$PY" -m pip --version
  check "pyproject.toml's requirements read (missing ones listed in setup.log on the GPU)" \
    "$PY" scripts/gpu_check.py deps --dry-run
  [[ -z $WHEELS ]] || check "wheel folder $WHEELS" test -d "$WHEELS"
  list_cases() { local cases; cases=$("$PY" bench/bench_gpu.py --list) || return 1; echo "$(wc -l <<<"$cases") cases"; }
  check "bench/bench_gpu.py imports and lists its cases" list_cases
  check "the pytest selection collects" "$PY" -m pytest --collect-only -q -p no:cacheprovider "${GPU_TESTS[@]}"
  for tool in nvidia-smi nvcc; do  # needed on the GPU machine only
    if command -v "$tool" >/dev/null; then echo "  ok      command $tool"
    else echo "  absent  command $tool (needed on the GPU machine, not for the dry run)"; fi
  done
  exit $failed
fi

# ---------------------------------------------------------------------------------------------- the run

mkdir -p "$OUT_DIR" || exit 2
unset TRITON_INTERPRET  # the tests and the benchmark must compile the kernels (tests/conftest.py sets it only
export PYTHONUNBUFFERED=1  # without a GPU); logs are complete up to the second a stage is stopped
RESULTS=$(mktemp)
trap 'rm -f "$RESULTS"' EXIT
status=0
echo "gpu_check.sh: Python $PY, OUT $OUT_DIR, stages $SELECTED, total budget ${TOTAL}s"
for stage in "${STAGES[@]}"; do
  selected "$stage" || continue
  log="$OUT_DIR/${LOG[$stage]}"
  limit=$(budget "$stage")
  mapfile -t command < <(stage_command "$stage")
  echo "== $stage (budget ${limit}s): ${command[*]}" >>"$log"
  start=$SECONDS
  if ((limit > 0)); then
    timeout --kill-after=15 "$limit" "${command[@]}" >>"$log" 2>&1
    rc=$?
  else
    echo "no time left of the ${TOTAL}s total" >>"$log"
    rc=124
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$stage" "$rc" $((SECONDS - start)) "$limit" "${LOG[$stage]}" >>"$RESULTS"
  if ((rc == 0)); then echo "$stage: ok ($((SECONDS - start))s)"; else
    status=1
    echo "$stage: FAILED, exit $rc ($((SECONDS - start))s of ${limit}s); the end of ${LOG[$stage]}:"
    tail -n 12 "$log" | sed 's/^/    /'
  fi
done
echo
if ! timeout 60 "$PY" scripts/gpu_check.py summary "$OUT_DIR" "$RESULTS"; then
  { echo "# panning GPU check (the summary script failed; stage, exit status, seconds, budget, log)"; echo
    sed 's/\t/ | /g; s/^/| /; s/$/ |/' "$RESULTS"; } | tee "$OUT_DIR/summary.md"
fi
echo "exit status $status ($( ((status)) && echo 'a stage failed' || echo 'every stage passed')); files in $OUT_DIR"
exit $status
