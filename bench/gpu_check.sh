#!/usr/bin/env bash
# The GPU check: what only a GPU can show, in one device call of 600 s, the build included. Stages,
# each under its own time limit (`--plan` prints them and their total, at most 540 s):
#
#   machine   nvidia-smi, nvcc, torch and the GPU it sees
#   peers     the peers' wheels from bench/wheels/ (bench/fetch_wheels.sh) unpacked into build/peers/
#   build     setup.py build_ext --inplace with the CUDA kernels (LIF_FORCE_CUDA=1), sm_90
#   cuda      pytest tests/test_cuda.py: every test that needs a GPU (the CPU suite runs in CI)
#   bench     python -m bench gpu --quick: fused vs the copy_ bandwidth, Rockpool and SpikingJelly
#   synaptic  python -m bench synaptic --device cuda --quick: the synaptic LIF against Rockpool
#
# Each stage writes its own log into the results folder as it runs, and one line to summary.txt
# when it ends (its exit status and seconds; 124 = cut at its limit), so a run cut short still
# returns what it did. Results folder: $OUT when set (the device tool's: at most 8 files come back,
# this writes 7), else bench/results/gpu_check-<date>/.
#
#     bash bench/gpu_check.sh             # from anywhere; uses the system python3 (no venv)
#     bash bench/gpu_check.sh --plan      # the stages and their limits, runs nothing
#     bash bench/gpu_check.sh --help      # this text
#
# On the device machine (no network; carry the wheels):
#     run(command="bash bench/gpu_check.sh", carry=["bench/wheels"], timeout_s=600)
#
# Environment: PYTHON (default python3), CUDA_HOME (default /usr/local/cuda), TORCH_CUDA_ARCH_LIST
# (default 9.0: H100/H200), MAX_JOBS (default: the cores), PYTEST_ARGS (instead of tests/test_cuda.py),
# SKIP_BENCH=1. Exit status: 0 when every stage that ran succeeded.
set -uo pipefail

# name:limit_s, in order. Their sum stays at most 540 s (60 s of the call's 600 for the machine's
# start and the transfers).
STAGES=(machine:15 peers:15 build:270 cuda:150 bench:60 synaptic:30)

usage() { sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; }
plan() {
  local total=0 s
  for s in "${STAGES[@]}"; do
    printf 'gpu_check: stage %-9s limit %4d s\n' "${s%%:*}" "${s##*:}"
    total=$((total + ${s##*:}))
  done
  printf 'gpu_check: total            %4d s (at most 540)\n' "$total"
  [ "$total" -le 540 ]
}
case "${1:-}" in
  --help | -h) usage; exit 0 ;;
  --plan) plan; exit $? ;;
  "") ;;
  *) echo "gpu_check: unknown argument $1 (--plan, --help)" >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.."
REPO=$(pwd)
export PYTHON=${PYTHON:-python3}
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-$(nproc 2>/dev/null || echo 4)}
export PYTHONUNBUFFERED=1
# The in-place build is imported from the checkout, whatever pytest puts on sys.path.
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
  RES=$OUT
else
  RES=$REPO/bench/results/gpu_check-$(date -u +%Y%m%d-%H%M%S)
  mkdir -p "$RES"
fi
SUMMARY=$RES/summary.txt
: >"$SUMMARY"
say() { echo "gpu_check: $*" | tee -a "$SUMMARY"; }
limit_of() { local s; for s in "${STAGES[@]}"; do [ "${s%%:*}" = "$1" ] && echo "${s##*:}"; done; }
status=0

# stage NAME LOG CMD...: CMD (a program, or a function of this script) under NAME's limit, its
# output to LOG (appended), a summary line.
stage() {
  local name=$1 log=$2 t0=$SECONDS rc=0
  shift 2
  if [ "$(type -t "$1")" = function ]; then
    timeout --kill-after=5 "$(limit_of "$name")" bash -c "$(declare -f "$1"); $1" >>"$log" 2>&1 || rc=$?
  else
    timeout --kill-after=5 "$(limit_of "$name")" "$@" >>"$log" 2>&1 || rc=$?
  fi
  local what=ok
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && what="CUT at its limit"
  [ $rc -ne 0 ] && [ "$what" = ok ] && what=FAIL
  say "stage $name: $what (exit $rc, $((SECONDS - t0)) s of $(limit_of "$name"); log $(basename "$log"))"
  [ $rc -eq 0 ] || status=1
  return $rc
}

say "repo $REPO, results in $RES"
machine() {
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  [ -x "$CUDA_HOME/bin/nvcc" ] && "$CUDA_HOME/bin/nvcc" --version | tail -1
  "$PYTHON" -c 'import platform, torch
n = torch.cuda.device_count() if torch.cuda.is_available() else 0
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda, "gpus", n)
raise SystemExit(0 if n else 3)'
}
stage machine "$SUMMARY" machine || { say "DONE: no GPU (or no torch) here: nothing else to check"; exit 1; }

peers() {
  shopt -s nullglob
  local wheels=(bench/wheels/*.whl)
  [ ${#wheels[@]} -gt 0 ] || { echo "no bench/wheels/*.whl: Rockpool and SpikingJelly only if installed"; return 0; }
  rm -rf build/peers && mkdir -p build/peers
  "$PYTHON" - "${wheels[@]}" <<'PY'
import os, sys, zipfile
tag = "cp%d%d" % sys.version_info[:2]
for w in sys.argv[1:]:
    name = os.path.basename(w)
    if "-cp" in name and f"-{tag}-" not in name:
        print(f"peers: skipped {name} (not for this Python, {tag})")
        continue
    zipfile.ZipFile(w).extractall("build/peers")
    print(f"peers: unpacked {name}")
PY
}
stage peers "$SUMMARY" peers && [ -d build/peers ] && export PYTHONPATH="$PYTHONPATH:$REPO/build/peers"

build() {
  export LIF_FORCE_CUDA=1
  rm -f lif_cuda/_C*.so  # never a stale (or foreign) build
  "$PYTHON" setup.py build_ext --inplace || return
  "$PYTHON" -c 'import torch, lif_cuda
print("lif_cuda", lif_cuda.__file__, "fused cuda:", lif_cuda.fused_available("cuda"))
raise SystemExit(0 if lif_cuda.fused_available("cuda") else 1)'
}
stage build "$RES/build.log" build || { say "DONE with failures: the build failed (build.log)"; exit 1; }

# shellcheck disable=SC2086
stage cuda "$RES/cuda_tests.log" "$PYTHON" -m pytest -v -rfEs --durations=10 -p no:cacheprovider \
  ${PYTEST_ARGS:-tests/test_cuda.py}
grep -E '^(FAILED|ERROR)|[0-9]+ (passed|failed)' "$RES/cuda_tests.log" | tail -15 | sed 's/^/gpu_check: /' | tee -a "$SUMMARY"

if [ "${SKIP_BENCH:-0}" != 1 ]; then
  stage bench "$RES/bench_gpu.log" "$PYTHON" -m bench gpu --quick --no-progress --no-plot --out "$RES/bench-gpu.json"
  stage synaptic "$RES/bench_synaptic.log" "$PYTHON" -m bench synaptic --device cuda --quick --no-progress \
    --no-plot --out "$RES/bench-synaptic.json"
fi

say "total $SECONDS s"
[ $status = 0 ] && say "DONE: every stage passed" || say "DONE with failures (see the stage lines above)"
exit $status
