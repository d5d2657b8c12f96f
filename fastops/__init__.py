"""fastops: hand-written CUDA and C++ kernels for matmul/Linear, activations and losses as real PyTorch operators.

Every op lives in the ``torch.ops.fastops`` namespace with autograd, a fake kernel (torch.compile / export) and,
where AMP applies, an autocast rule. Use :mod:`fastops.functional` or the drop-in modules in :mod:`fastops.nn`.
"""

import importlib.util
import os
import warnings

import torch

from . import _C  # loading the library registers every schema (and the CUDA kernels, when built with them)

# The CPU kernels are built once per capability level (setup.py); load the best one this CPU and OS run, or the
# lower one FASTOPS_CPU_CAPABILITY asks for (read here, at import, as ATen reads ATEN_CPU_CAPABILITY).
_CPU_LEVELS = ("default", "avx2", "avx512")


def _built_levels() -> list:
    return [level for level in _CPU_LEVELS if importlib.util.find_spec(f"{__name__}._cpu_{level}") is not None]


def runnable_cpu_levels() -> list:
    """The CPU kernel levels this build has and this CPU and OS run, lowest first (what FASTOPS_CPU_CAPABILITY can
    pick; the tests run at each)."""
    best = _C._best_cpu_level()
    return [level for level in _built_levels() if _CPU_LEVELS.index(level) <= _CPU_LEVELS.index(best)]


def _choose_cpu_level() -> str:
    built = _built_levels()
    if not built:
        raise ImportError("fastops: no CPU kernel library (fastops/_cpu_<level>*.so) was built; reinstall fastops")
    best = _C._best_cpu_level()
    runnable = runnable_cpu_levels()
    if not runnable:
        raise ImportError(f"fastops: this CPU runs the {best!r} level, but only {built} were built")
    wanted = os.environ.get("FASTOPS_CPU_CAPABILITY", "").strip().lower()
    if not wanted:
        return runnable[-1]
    if wanted not in _CPU_LEVELS:
        raise ImportError(f"fastops: FASTOPS_CPU_CAPABILITY must be one of {', '.join(_CPU_LEVELS)}, got {wanted!r}")
    if wanted not in runnable:
        warnings.warn(f"fastops: FASTOPS_CPU_CAPABILITY={wanted} is not available here (this CPU runs up to {best!r}, "
                      f"built: {built}); using {runnable[-1]!r}", stacklevel=2)
        return runnable[-1]
    return wanted


_cpu_level = _choose_cpu_level()
torch.ops.load_library(importlib.util.find_spec(f"{__name__}._cpu_{_cpu_level}").origin)

from . import (
    functional,
    nn,
    ops,  # noqa: F401  (fake kernels, autograd, autocast)
)
from .functional import linear, matmul, relu

__version__ = "0.1.0"

__all__ = ["coverage", "cpu_capability", "disable", "enable", "functional", "has_cuda_kernels", "is_enabled", "linear",
           "matmul", "nn", "relu", "runnable_cpu_levels"]


def cpu_capability() -> str:
    """The CPU kernel level in use: ``'avx512'``, ``'avx2'`` or ``'default'`` (portable)."""
    return _cpu_level


def has_cuda_kernels() -> bool:
    """True when this build of fastops contains the CUDA kernels (torch with CUDA and nvcc at build time)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("fastops::relu", "CUDA")


# After has_cuda_kernels: the mode asks it once, at import.
from .coverage import coverage
from .mode import disable, enable, is_enabled
