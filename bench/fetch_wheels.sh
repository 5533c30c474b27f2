#!/usr/bin/env bash
# Fetches the peers' wheels for bench/gpu_check.sh into bench/wheels/ (git-ignored), on a machine
# with network, for the GPU machines, which have none (Python 3.12, x86-64 Linux, torch, numpy,
# scipy and torchvision installed): Rockpool 3.1.0 (an sdist on the index: built here into a pure
# Python wheel) and SpikingJelly 2.0.0 with loguru, each without its dependencies (they would pull
# another torch). A few MB: carry bench/wheels along (the device tool's `carry`, 64 MiB in all).
#
#     bash bench/fetch_wheels.sh          env: PYTHON (default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
DEST=bench/wheels
mkdir -p "$DEST"
# Pure Python ones, built here where the index has only a source distribution.
"$PYTHON" -m pip wheel -q --no-deps -w "$DEST" rockpool==3.1.0 spikingjelly==2.0.0 loguru==0.7.3
ls -la "$DEST"
