import pytest
from conftest import DEVICE, run_case

from fastops.bench import family_cases

CASES = family_cases("matmul", DEVICE, quick=True)


# The GEMM ladder's variants (fastops_mma_sync, ...) where a case has them: run_case sets their switches.
PROVIDERS = sorted({p for c in CASES for p in c.providers} | {"compile"})


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_matmul(benchmark, case, provider):
    run_case(benchmark, case, provider, "fwd")
