"""pytest-benchmark suite: each op next to its native twin in one benchmark group.

Run with `python -m pytest benchmarks --benchmark-only` (GPU rows need CUDA); cases come from fastops.bench, the
same definitions `python -m fastops.bench` uses.
"""

import functools

import pytest
import torch

import fastops
from fastops.bench.core import mode_callable

DEVICE = "cuda" if torch.cuda.is_available() and fastops.has_cuda_kernels() else "cpu"


def run_case(benchmark, case, provider, mode):
    if provider == "compile" and "compile" not in case.providers:
        fn = torch.compile(case.providers["torch"])
    else:
        fn = case.providers[provider]
    args = case.make_inputs(DEVICE)
    run = functools.partial(fn, *args) if case.whole_step else mode_callable(fn, args, mode)
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
