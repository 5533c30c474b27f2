#!/usr/bin/env bash
# One command for a GPU machine: build lif_cuda in place with its CUDA kernels,
# run the whole test suite (tests/test_cuda.py included), then `python -m bench gpu` on the card
# (fused vs the copy_ bandwidth, Rockpool and SpikingJelly) and `python -m bench synaptic --device
# cuda` (the synaptic LIF against Rockpool's LIFTorch). Meant to finish within 10 minutes on an H200.
#
#     bash bench/gpu_check.sh             # from anywhere; uses the system python3 (no venv)
#     bash bench/gpu_check.sh --help      # this text
#
# Made for the project's GPU machines (torch 2.11+cu130, nvcc 13 at /usr/local/cuda, Python 3.12,
# pytest and numpy installed, no network) and works on any machine with torch, pytest and numpy:
# without a GPU it builds the CPU part, runs the tests (the CUDA ones skip) and says plainly that
# no GPU was found. Peers come from wheels in bench/wheels/ (bench/fetch_wheels.sh fetches them on
# a machine with network; carry the folder along), unpacked into build/peers/, never installed.
# Logs (build, pytest with a summary line for tests/test_cuda.py, benchmark, this script's own
# output) go to bench/results/gpu_check-<date>/ and, when $OUT is set, to $OUT; the benchmark's
# JSON to bench/results/ and $OUT.
#
# Environment: PYTHON (default python3), CUDA_HOME (default /usr/local/cuda), TORCH_CUDA_ARCH_LIST
# (default 9.0: H100/H200), MAX_JOBS, PYTEST_ARGS (pytest arguments instead of `tests`), BENCH_ARGS (extra
# `python -m bench gpu` arguments, e.g. --quick), SKIP_TESTS=1, SKIP_BENCH=1.
# Exit status: 0 when the build, the tests and (with a GPU) the benchmark all succeeded.
set -uo pipefail
if [ "${1:-}" = --help ] || [ "${1:-}" = -h ]; then
  sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 0
fi

cd "$(dirname "$0")/.."
REPO=$(pwd)
PYTHON=${PYTHON:-python3}
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-$(nproc 2>/dev/null || echo 4)}
export PYTHONUNBUFFERED=1
# The in-place build is imported from the checkout, whatever pytest puts on sys.path.
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
STAMP=$(date -u +%Y%m%d-%H%M%S)
LOG_DIR=$REPO/bench/results/gpu_check-$STAMP
mkdir -p "$LOG_DIR"
exec > >(tee "$LOG_DIR/gpu_check.log") 2>&1

say() { echo "gpu_check: $*"; }
status=0
# On exit, whatever happened: the logs to $OUT too.
copy_logs() {
  if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
    mkdir -p "$OUT/gpu_check-$STAMP" && cp -r "$LOG_DIR"/. "$OUT/gpu_check-$STAMP/" 2>/dev/null || true
  fi
}
trap copy_logs EXIT

# --------------------------------------------------------------------------- 0. the machine
say "repo $REPO, logs in $LOG_DIR"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | sed 's/^/gpu_check: gpu: /'
fi
if [ -x "$CUDA_HOME/bin/nvcc" ]; then
  say "nvcc: $("$CUDA_HOME/bin/nvcc" --version | tail -1)"
else
  say "no nvcc at $CUDA_HOME/bin/nvcc"
fi
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
  say "FAIL: $PYTHON cannot import torch"; exit 1
fi
read -r TORCH_VERSION TORCH_CUDA GPU_COUNT <<<"$("$PYTHON" -c \
  'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.device_count() if torch.cuda.is_available() else 0)')"
say "python $("$PYTHON" -c 'import platform; print(platform.python_version())'), torch $TORCH_VERSION (CUDA $TORCH_CUDA), $GPU_COUNT GPU(s) visible"
HAVE_GPU=0
[ "${GPU_COUNT:-0}" -gt 0 ] && HAVE_GPU=1
[ $HAVE_GPU = 1 ] || say "NO GPU FOUND: building the CPU part, running the tests (CUDA tests skip), no benchmark"

# --------------------------------------------------------------------------- 1. build in place
# A CUDA torch with nvcc: the CUDA kernels must build (LIF_FORCE_CUDA=1 fails loudly otherwise).
if [ "$TORCH_CUDA" != "None" ] && [ -x "$CUDA_HOME/bin/nvcc" ]; then
  export LIF_FORCE_CUDA=1
  say "building with CUDA kernels for TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST (MAX_JOBS=$MAX_JOBS)"
else
  export LIF_FORCE_CUDA=0
  say "building the CPU part only (torch without CUDA, or no nvcc)"
fi
rm -f lif_cuda/_C*.so  # never a stale (or foreign) build
t0=$SECONDS
# In place, nothing installed: `setup.py build_ext --inplace` needs no pip, no network and no
# write access to site-packages. (`pip install --no-build-isolation --no-deps -e .` also works.)
if "$PYTHON" setup.py build_ext --inplace >"$LOG_DIR/build.log" 2>&1; then
  say "build ok ($((SECONDS - t0)) s; log $LOG_DIR/build.log)"
else
  say "FAIL: build ($((SECONDS - t0)) s); the end of $LOG_DIR/build.log:"
  tail -40 "$LOG_DIR/build.log"
  exit 1
fi
"$PYTHON" - <<'PY' 2>&1 | tee "$LOG_DIR/import.log"
import torch  # first: lif_cuda._C links against the libraries torch loads
import lif_cuda
print("gpu_check: lif_cuda imported from", lif_cuda.__file__)
print("gpu_check: extension loaded:", lif_cuda.extension_loaded(), "| fused cpu:", lif_cuda.fused_available("cpu"),
      "| fused cuda:", lif_cuda.fused_available("cuda"))
if not lif_cuda.extension_loaded():
    raise SystemExit(f"gpu_check: FAIL: lif_cuda._C did not load: {lif_cuda._ext.load_error()}")
if torch.cuda.is_available() and not lif_cuda.fused_available("cuda"):
    raise SystemExit("gpu_check: FAIL: a GPU is present but the CUDA kernels are not registered")
PY
[ "${PIPESTATUS[0]}" -eq 0 ] || { say "FAIL: the built extension does not load as it should"; exit 1; }

# --------------------------------------------------------------------------- peers from wheels
# Wheels are zip files: unpacked (not installed) into build/peers/, which goes on PYTHONPATH.
shopt -s nullglob
WHEELS=(bench/wheels/*.whl)
if [ ${#WHEELS[@]} -gt 0 ]; then
  rm -rf build/peers && mkdir -p build/peers
  # Only the wheels for this Python (a binary wheel's cpXY tag must match: scipy).
  if "$PYTHON" - "${WHEELS[@]}" <<'PY'; then
import os, sys, zipfile
tag = "cp%d%d" % sys.version_info[:2]
for w in sys.argv[1:]:
    name = os.path.basename(w)
    if "-cp" in name and f"-{tag}-" not in name:
        print(f"gpu_check: peers: skipped {name} (not for this Python, {tag})")
        continue
    zipfile.ZipFile(w).extractall("build/peers")
    print(f"gpu_check: peers: unpacked {name}")
PY
    export PYTHONPATH="$PYTHONPATH:$REPO/build/peers"
  else
    say "peers: could not unpack bench/wheels/*.whl (the benchmark reports them unavailable)"
  fi
else
  say "peers: no bench/wheels/*.whl (bench/fetch_wheels.sh); Rockpool and SpikingJelly run only if installed"
fi

# --------------------------------------------------------------------------- 2. the test suite
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  t0=$SECONDS
  say "running the test suite (log $LOG_DIR/pytest.log)"
  # shellcheck disable=SC2086
  "$PYTHON" -m pytest -q -rs -p no:cacheprovider --junitxml="$LOG_DIR/pytest.xml" ${PYTEST_ARGS:-tests} \
    2>&1 | tee "$LOG_DIR/pytest.log" | tail -40
  rc=${PIPESTATUS[0]}
  if [ "$rc" -eq 0 ]; then
    say "tests ok ($((SECONDS - t0)) s)"
  else
    say "FAIL: tests (pytest exit $rc, $((SECONDS - t0)) s)"; status=1
  fi
  # One line per test file for the CUDA tests, from the JUnit XML: what ran on the card.
  "$PYTHON" - "$LOG_DIR/pytest.xml" <<'PY' 2>&1 | tee "$LOG_DIR/pytest-summary.txt"
import collections, sys, xml.etree.ElementTree as ET
counts = collections.Counter()
for case in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    if "test_cuda" not in (case.get("classname") or "") + (case.get("file") or ""):
        continue
    kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
    counts[kind] += 1
print(f"gpu_check: tests/test_cuda.py: {counts['passed']} passed, {counts['failure'] + counts['error']} failed, "
      f"{counts['skipped']} skipped")
PY
  if [ $HAVE_GPU = 1 ] && grep -q "test_cuda.py.*SKIPPED\|SKIPPED.*test_cuda.py" "$LOG_DIR/pytest.log"; then
    say "note: some CUDA tests were skipped (see -rs summary above)"
  fi
fi

# --------------------------------------------------------------------------- 3. the benchmark
if [ $HAVE_GPU = 1 ] && [ "${SKIP_BENCH:-0}" != 1 ]; then
  t0=$SECONDS
  say "benchmark (log $LOG_DIR/bench.log)"
  # shellcheck disable=SC2086
  "$PYTHON" -m bench gpu --no-progress ${BENCH_ARGS:-} 2>&1 | tee "$LOG_DIR/bench.log"
  rc=${PIPESTATUS[0]}
  [ -n "${OUT:-}" ] && cp bench/results/gpu-cuda-*.json "$OUT"/ 2>/dev/null
  if [ "$rc" -eq 0 ]; then say "benchmark ok ($((SECONDS - t0)) s)"; else say "FAIL: benchmark (exit $rc)"; status=1; fi
  t0=$SECONDS
  say "synaptic benchmark (log $LOG_DIR/bench_synaptic.log)"
  "$PYTHON" -m bench synaptic --device cuda --no-progress 2>&1 | tee "$LOG_DIR/bench_synaptic.log"
  rc=${PIPESTATUS[0]}
  [ -n "${OUT:-}" ] && cp bench/results/synaptic-cuda-*.json "$OUT"/ 2>/dev/null
  if [ "$rc" -eq 0 ]; then say "synaptic benchmark ok ($((SECONDS - t0)) s)"; else say "FAIL: synaptic benchmark (exit $rc)"; status=1; fi
fi

say "total $SECONDS s$([ $SECONDS -gt 600 ] && echo ' (over the 10 minutes this check should take)')"
if [ $HAVE_GPU = 1 ]; then
  [ $status = 0 ] && say "DONE: build, tests and benchmark passed on $GPU_COUNT GPU(s)" || say "DONE with failures"
else
  [ $status = 0 ] && say "DONE: build and tests passed; NO GPU FOUND, so the CUDA tests were skipped and nothing was benchmarked" \
                  || say "DONE with failures (and NO GPU FOUND)"
fi
exit $status
