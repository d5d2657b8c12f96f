"""Build fastops._C: the C++ (CPU) kernels always, the CUDA kernels when torch has CUDA and nvcc is present.

Build with `pip install --no-build-isolation .` so the extension compiles against the torch you already have.
Environment knobs:
  FASTOPS_CUDA_ARCH        nvcc -gencode list, default "90a;80" (sm_90a for wgmma/TMA, sm_80 for Ampere)
  FASTOPS_CPU_CAPABILITY   avx512 | avx2 | default; defaults to the best the build machine supports
  FASTOPS_FORCE_CPU=1      skip the CUDA sources even where CUDA is available
  MAX_JOBS                 parallel compile jobs (ninja)
"""

import glob
import os
import shutil
import sys

from setuptools import setup

try:
    import torch
    from torch.utils import cpp_extension
except ImportError:
    sys.exit(
        "fastops: torch is not importable. Install it first (CPU: `pip install torch==2.13.0`), then build with "
        "`pip install --no-build-isolation .`"
    )

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join("csrc")


def cpu_capability():
    """The widest ATen vector ISA this machine runs; fastops is built from source on the machine that uses it."""
    wanted = os.environ.get("FASTOPS_CPU_CAPABILITY")
    if wanted:
        return wanted
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return "default"
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        return "avx512"
    if {"avx2", "fma", "f16c"} <= flags:
        return "avx2"
    return "default"


CPU_FLAGS = {
    "avx512": ["-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512", "-mavx512f", "-mavx512bw", "-mavx512vl",
               "-mavx512dq", "-mfma", "-mf16c"],
    "avx2": ["-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2", "-mavx2", "-mfma", "-mf16c"],
    "default": [],
}


def cuda_wanted():
    if os.environ.get("FASTOPS_FORCE_CPU") == "1":
        return False
    return torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None and (
        shutil.which("nvcc") or os.path.exists(os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc"))
    )


def gencode_flags():
    archs = os.environ.get("FASTOPS_CUDA_ARCH", "90a;80").replace(",", ";").split(";")
    return [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs if a]


def sources(with_cuda):
    all_cpp = sorted(glob.glob(os.path.join(CSRC, "**", "*.cpp"), recursive=True))
    cpp = [s for s in all_cpp if with_cuda or not s.endswith("_cuda.cpp")]
    cu = sorted(glob.glob(os.path.join(CSRC, "**", "*.cu"), recursive=True)) if with_cuda else []
    return cpp + cu


def extension():
    with_cuda = cuda_wanted()
    cxx = ["-O3", "-fvisibility=hidden"] + CPU_FLAGS[cpu_capability()]
    if sys.platform != "win32":
        cxx.append("-fopenmp")
    args = dict(
        name="fastops._C",
        sources=sources(with_cuda),
        include_dirs=[os.path.join(ROOT, CSRC)],
        extra_link_args=["-fopenmp"] if sys.platform != "win32" else [],
    )
    if with_cuda:
        nvcc = ["-O3", "-std=c++17", "--expt-relaxed-constexpr", "-lineinfo", *gencode_flags()]
        return cpp_extension.CUDAExtension(
            extra_compile_args={"cxx": cxx + ["-DFASTOPS_WITH_CUDA"], "nvcc": nvcc}, **args
        )
    return cpp_extension.CppExtension(extra_compile_args={"cxx": cxx}, **args)


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
