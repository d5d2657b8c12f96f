"""pytest-benchmark suite: each op next to its native twin in one benchmark group.

Run with `python -m pytest benchmarks --benchmark-only` (GPU rows need CUDA); cases come from fastops.bench, the
same definitions `python -m fastops.bench` uses, and each call runs as fastops.bench.core runs it (the same
provider callables, torch.compile of the torch provider, TF32 for 'tf32' rows, the GEMM ladder's environment
switches): only the timer differs.
"""

import pytest
import torch

import fastops
from fastops.bench.core import job_callable, provider_settings

DEVICE = "cuda" if torch.cuda.is_available() and fastops.has_cuda_kernels() else "cpu"


def run_case(benchmark, case, provider, mode):
    if provider not in case.providers and not (provider == "compile" and "torch" in case.providers):
        pytest.skip(f"{case.id} has no {provider} provider")
    with provider_settings(case, provider):
        run, _args = job_callable(case, provider, mode, DEVICE)
        if DEVICE == "cuda":
            def timed():
                run()
                torch.cuda.synchronize()
        else:
            timed = run
        benchmark.group = f"{case.id}-{mode}"
        benchmark.extra_info.update(op=case.op, dtype=case.dtype, shape=case.shape, provider=provider, mode=mode)
        benchmark(timed)


@pytest.fixture
def device():
    return DEVICE
