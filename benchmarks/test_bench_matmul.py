import pytest
import torch
from conftest import DEVICE, run_case

from fastops.bench import family_cases

CASES = family_cases("matmul", DEVICE, quick=True)


@pytest.mark.parametrize("provider", ["fastops", "torch", "compile"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_matmul(benchmark, case, provider):
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = case.tf32  # the 'tf32' rows are float32 on TF32 tensor cores
    try:
        run_case(benchmark, case, provider, "fwd")
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
