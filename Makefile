# The README's commands. `make test` and `make bench` create .venv themselves on a fresh CPU machine.
# On a machine whose python already has torch (the GPU machine: no network), use FASTOPS_SYSTEM_PYTHON=1.
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
VENV := .venv

ifeq ($(FASTOPS_SYSTEM_PYTHON),1)
PY := $(PYTHON)
DEPS :=
else
PY := $(VENV)/bin/python
DEPS := $(VENV)/.deps
endif

# ccache in masquerade mode (a folder of compiler-named links first on PATH) makes rebuilds take seconds.
CCACHE_DIR_LINKS := $(abspath $(VENV))/ccache-links
export CCACHE_NOHASHDIR := 1
# Paths below the checkout hash as relative ones, so every clone and worktree shares one cache.
export CCACHE_BASEDIR := $(CURDIR)
export PATH := $(CCACHE_DIR_LINKS):$(PATH)

SOURCES := setup.py $(shell find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' 2>/dev/null)
NVCC ?= nvcc
# The nvcc architectures, in one place for this check and setup.py (csrc/cuda_archs.txt: "90a;80").
CUDA_ARCHS := $(shell cat csrc/cuda_archs.txt)
CUDA_ARCH_FLAGS := $(foreach a,$(subst ;, ,$(CUDA_ARCHS)),-gencode=arch=compute_$(a),code=sm_$(a))
# What torch's CUDAExtension passes to nvcc (torch.utils.cpp_extension.COMMON_NVCC_FLAGS): no implicit half/bf16
# conversions or operators. The check must see them, or code that builds here would fail in the real build.
TORCH_NVCC_FLAGS := -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ \
	-D__CUDA_NO_HALF2_OPERATORS__

.PHONY: all build test test-python wheel cuda-check bench bench-quick demo gpu-check lint clean

all: test

$(VENV)/.deps: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q torch==$(TORCH_VERSION) -r requirements-dev.txt
	mkdir -p $(CCACHE_DIR_LINKS)
	for c in cc c++ gcc g++; do ln -sf $(abspath $(VENV))/bin/ccache $(CCACHE_DIR_LINKS)/$$c; done
	touch $@

# The extension is rebuilt only when a source changes (editable install: fastops/_C*.so sits in the tree).
build: .build-stamp
.build-stamp: $(DEPS) $(SOURCES)
	MAX_JOBS=$${MAX_JOBS:-2} $(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

# The whole suite at the best CPU kernel level this machine runs, then the accuracy suites again at each lower level
# (scripts/test_cpu_levels.sh), so that every level's kernels are tested wherever the suite runs.
test: build
	$(PY) -m pytest -q tests
	scripts/test_cpu_levels.sh $(PY)
	$(MAKE) --no-print-directory wheel cuda-check

# The one abi3 wheel in dist/, checked by abi3audit and imported from a clean directory at every CPU level.
wheel: $(DEPS)
	scripts/check_wheel.sh $(PY)

# Compile every .cu for sm_90a and sm_80 (in parallel, largest first: the Hopper GEMM alone takes ~4 minutes on one
# core), check the SASS for the instructions each kernel family exists for, and syntax-check every CUDA binding
# against torch's CUDA headers: CI catches CUDA build errors without a GPU.
# Skipped (with a message) where nvcc is absent.
CUDA_OBJ_DIR := build/cuda-check
cuda-check: $(DEPS)
	@if ! command -v $(NVCC) >/dev/null 2>&1; then echo "cuda-check: nvcc not found, skipped"; exit 0; fi; \
	set -e; mkdir -p $(CUDA_OBJ_DIR); \
	find csrc -name '*.cu' | xargs ls -S | xargs -P $$(nproc) -I{} sh -c \
	  'echo "nvcc {}"; $(NVCC) -std=c++17 --expt-relaxed-constexpr -O3 -Icsrc $(TORCH_NVCC_FLAGS) $(CUDA_ARCH_FLAGS) \
	   -c {} -o $(CUDA_OBJ_DIR)/$$(basename {} .cu).o'; \
	$(PY) scripts/check_sass.py $(CUDA_OBJ_DIR); \
	TORCH_INC=$$($(PY) -c 'import torch.utils.cpp_extension as c; print(" ".join("-I"+p for p in c.include_paths()))'); \
	CUDA_INC=$$($(NVCC) --dryrun -c -x cu /dev/null 2>&1 | sed -n 's/.*INCLUDES="\(.*\)".*/\1/p' | head -n 1); \
	PY_INC=-I$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["include"])'); \
	for f in $$(find csrc -name '*_cuda.cpp'); do \
	  echo "c++ -fsyntax-only $$f"; \
	  c++ -std=c++20 -fsyntax-only -DFASTOPS_WITH_CUDA -Icsrc -Iscripts/syntax_check_include $$TORCH_INC $$CUDA_INC $$PY_INC $$f; \
	done

bench: build
	$(PY) -m fastops.bench $(BENCH_ARGS)

bench-quick: build
	$(PY) -m fastops.bench --quick $(BENCH_ARGS)

demo: build
	$(PY) examples/train_digits.py

gpu-check:
	bash scripts/gpu_check.sh

lint: $(DEPS)
	$(PY) -m ruff check fastops tests benchmarks examples scripts

clean:
	rm -rf build *.egg-info fastops/_*.so .build-stamp
