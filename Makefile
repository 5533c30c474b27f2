# Two commands do all the set-up on a fresh machine (Python 3.11+, a C++ compiler):
#   make demo   - create .venv if missing, install torch 2.13.0 + lif_cuda and the `demo` extra
#                 (scikit-learn, matplotlib, tqdm), then train a spiking network on the digits
#                 (examples/train_digits.py)
#   make test   - the same set-up, the style checks (ruff, clang-format), the nvcc compile check of
#                 the CUDA sources (where nvcc exists), then the whole test suite (CUDA tests skip
#                 without a GPU)
# .ci/run calls `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=

# Rebuild the extension whenever a source or the build script changes.
SOURCES = setup.py pyproject.toml $(wildcard csrc/*.h csrc/*.cpp csrc/*/*)

NVCC ?= $(or $(wildcard $(CUDA_HOME)/bin/nvcc),$(wildcard /usr/local/cuda/bin/nvcc),$(shell command -v nvcc 2>/dev/null))

# The style checkers, pinned (a newer release may flag what this one accepts).
LINT_TOOLS = ruff==0.17.6 clang-format==23.1.5
CXX_SOURCES = $(wildcard csrc/*.h csrc/*.cpp csrc/*/*.h csrc/*/*.cpp csrc/*/*.cu)

.PHONY: demo test install lint check-cuda bench clean

$(VENV)/.deps:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q numpy setuptools wheel ninja pytest hypothesis
	touch $@

$(VENV)/.built: $(VENV)/.deps $(SOURCES)
	$(PY) -m pip install -q --no-build-isolation -e ".[test]"
	touch $@

install: $(VENV)/.built

$(VENV)/.lint-tools: $(VENV)/.deps
	$(PY) -m pip install -q $(LINT_TOOLS)
	touch $@

# Python style (pyproject.toml [tool.ruff]) and C++/CUDA formatting (.clang-format), checked only.
lint: $(VENV)/.lint-tools
	$(VENV)/bin/ruff check .
	$(VENV)/bin/clang-format --dry-run --Werror $(CXX_SOURCES)

# The `demo` extra's packages, read from pyproject.toml and installed beside the built package
# (`pip install -e ".[demo]"` would rebuild the extension, ~30 s, for nothing).
DEMO_EXTRA = $(PY) -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['demo']))"

$(VENV)/.demo: $(VENV)/.built pyproject.toml
	$(PY) -m pip install -q $$($(DEMO_EXTRA))
	touch $@

demo: $(VENV)/.demo
	$(PY) examples/train_digits.py

# Compile-check every CUDA source with nvcc (no GPU needed) where nvcc exists; skipped otherwise.
check-cuda: install
ifneq ($(strip $(NVCC)),)
	NVCC=$(NVCC) PYTHON=$(PY) bash .ci/check_cuda.sh
else
	@echo "check-cuda: nvcc not found, CUDA compile check skipped"
endif

# torch.compile's on-disk cache (shared by every checkout by default) does not see a rebuilt
# extension: a graph compiled against an earlier build replays that build's saving logic. The
# tests compile into this checkout's own cache, emptied first.
test: install lint check-cuda
	rm -rf .cache/inductor
	TORCHINDUCTOR_CACHE_DIR=$(CURDIR)/.cache/inductor $(PY) -m pytest -q $(PYTEST_ARGS) tests

bench: install
	$(PY) -m pip install -q -e ".[bench]" --no-build-isolation
	$(PY) -m bench layer

clean:
	rm -rf build lif_cuda/_C*.so *.egg-info $(VENV)
