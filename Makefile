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

.PHONY: all build test test-python wheel cuda-check bench bench-quick demo gpu-check gpu-check-dry gpu-wheel \
	gpu-wheel-test lint clean

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
# (scripts/test_cpu_levels.sh), so that every level's kernels are tested wherever the suite runs. The wheel is built
# first: tests/test_gpu_check.py dry-runs scripts/gpu_check.sh, which installs it (and must, here: REQUIRE).
test: build
	$(MAKE) --no-print-directory wheel
	FASTOPS_GPU_CHECK_TEST_REQUIRE=1 $(PY) -m pytest -q tests
	scripts/test_cpu_levels.sh $(PY)
	$(MAKE) --no-print-directory cuda-check

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

# ---- The GPU visit (issue 16; docs/gpu_visit.md) ----------------------------------------------------------------
# `make gpu-wheel` builds the CUDA extension here, on a CPU machine, against the GPU machine's torch (the registry's
# torch 2.11.0 is its CUDA 13.0 build), in a venv of its own with Python 3.12 as there (which also shows the abi3
# wheel loading on a CPython it was not built with). torch is installed with --no-deps (no triton, no 2.5 GB of
# nvidia-* packages pulled by its pins); its CUDA build still needs, to import at all, the shared libraries
# libtorch_cuda.so names (readelf -d: cublas, cublasLt, cudnn, cufft, cufile, curand, cusolver, cusparse,
# cusparseLt, nccl, nvshmem, nvJitLink): GPU_TORCH_LIBS, the CUDA 13.0 releases of them. libcudart and libcupti come
# from the system CUDA toolkit (LD_LIBRARY_PATH below), as nvcc does. No GPU is needed: torch.cuda.is_available()
# is False and the CUDA tests skip. Another torch: GPU_TORCH=2.12.0 (and its CUDA's libraries in GPU_TORCH_LIBS).
GPU_TORCH ?= 2.11.0
GPU_PYTHON ?= $(firstword $(wildcard /root/.pyenv/versions/3.12.*/bin/python) python3.12)
GPU_VENV := .venv-gpu
GPU_TORCH_LIBS ?= nvidia-cublas==13.1.1.3 nvidia-cufft==12.0.0.61 nvidia-cufile==1.15.1.6 nvidia-curand==10.4.0.35 \
	nvidia-cusolver==12.0.4.66 nvidia-cusparse==12.6.3.3 nvidia-nvjitlink==13.4.92 nvidia-cudnn-cu13==9.24.0.43 \
	nvidia-cusparselt-cu13==0.8.1 nvidia-nccl-cu13==2.30.7 nvidia-nvshmem-cu13==3.4.5
# The toolkit nvcc belongs to (nvcc may be a wrapper script elsewhere on PATH: torch would then guess a wrong root).
CUDA_HOME ?= $(patsubst %/bin,%,$(shell $(NVCC) --dryrun -c -x cu /dev/null 2>&1 | sed -n 's/^\#\$$ _HERE_=//p'))
GPU_ENV := LD_LIBRARY_PATH=$(CUDA_HOME)/lib64$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH} CUDA_HOME=$(CUDA_HOME)

$(GPU_VENV)/.deps: requirements-dev.txt
	@test -x "$(GPU_PYTHON)" || { echo "gpu-wheel: no Python 3.12 (GPU_PYTHON=$(GPU_PYTHON))"; exit 1; }
	rm -rf $(GPU_VENV)
	$(GPU_PYTHON) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/python -m pip install -q --upgrade pip
	$(GPU_VENV)/bin/python -m pip install -q --no-deps torch==$(GPU_TORCH) $(GPU_TORCH_LIBS)
	$(GPU_VENV)/bin/python -c 'import importlib.metadata as m; print("\n".join(r.split(";")[0] for r in m.requires("torch") \
	  if "extra ==" not in r and not r.startswith(("nvidia", "cuda", "triton"))))' >$(GPU_VENV)/torch-deps.txt
	$(GPU_VENV)/bin/python -m pip install -q -r $(GPU_VENV)/torch-deps.txt -r requirements-dev.txt
	$(GPU_ENV) $(GPU_VENV)/bin/python -c 'import torch; assert torch.version.cuda, torch.__version__; \
	  print("torch", torch.__version__, "CUDA", torch.version.cuda, "imports without a GPU")'
	touch $@

# dist/gpu/fastops-*.whl + build-info.txt, checked (size, abi3, sm_90a + sm_80 code, SASS, import).
gpu-wheel: $(GPU_VENV)/.deps
	$(GPU_ENV) scripts/gpu_wheel.sh $(GPU_VENV)/bin/python

# The CPU test suite against the GPU wheel installed into that venv (CUDA cases skip): the wheel, not the tree's
# sources, is what the tests import (PYTHONSAFEPATH keeps the checkout's fastops/ off sys.path).
gpu-wheel-test: $(GPU_VENV)/.deps
	$(GPU_ENV) $(GPU_VENV)/bin/python scripts/wheel_info.py match dist/gpu/build-info.txt || \
	  { echo "gpu-wheel-test: dist/gpu does not hold a wheel of this tree: make gpu-wheel first"; exit 1; }
	$(GPU_VENV)/bin/python -m pip install -q --no-deps --force-reinstall dist/gpu/fastops-*.whl
	cd /tmp && $(GPU_ENV) PYTHONSAFEPATH=1 $(abspath $(GPU_VENV))/bin/python -c \
	  'import fastops, sys; assert fastops.has_cuda_kernels() and "site-packages" in fastops.__file__, fastops.__file__; \
	   print("testing", fastops.__file__)'
	$(GPU_ENV) PYTHONSAFEPATH=1 $(GPU_VENV)/bin/python -m pytest -q -p no:cacheprovider tests

# The GPU check's dry run (no GPU needed): the wheel install, time boxes, $$OUT layout and summary.
gpu-check-dry: wheel
	FASTOPS_GPU_CHECK_DRY=1 PYTHON=$(abspath $(PY)) OUT=$(abspath out) bash scripts/gpu_check.sh

lint: $(DEPS)
	$(PY) -m ruff check fastops tests benchmarks examples scripts

clean:
	rm -rf build *.egg-info fastops/_*.so .build-stamp
