#!/usr/bin/env bash
# Fetches the peers' wheels for bench/gpu_check.sh into bench/wheels/ (git-ignored), on a machine
# with network, for the GPU machines, which have none (Python 3.12, x86-64 Linux, torch 2.11,
# numpy, triton and cupy installed): Rockpool 3.1.0 (an sdist on the index: built here into a pure
# Python wheel) with SciPy, which it imports; SpikingJelly 2.0.0 with loguru. Each without its dependencies
# (they would pull another torch). About 37 MB: carry bench/wheels along to the GPU machine.
#
#     bash bench/fetch_wheels.sh          env: PYTHON (default .venv/bin/python), PY_VERSION (3.12)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
PY_VERSION=${PY_VERSION:-3.12}
DEST=bench/wheels
mkdir -p "$DEST"
# Binary wheels for the GPU machine's Python (not this one's).
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$DEST" scipy
# Pure Python ones, built here where the index has only a source distribution.
"$PYTHON" -m pip wheel -q --no-deps -w "$DEST" rockpool==3.1.0 spikingjelly==2.0.0 loguru==0.7.3
ls -la "$DEST"
