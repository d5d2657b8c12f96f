import pytest
from conftest import DEVICE, run_case

from fastops.bench import family_cases

CASES = family_cases("overhead", DEVICE, quick=True)


@pytest.mark.parametrize("provider", ["fastops", "torch", "compile"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("mode", ["fwd", "full"])
def test_overhead(benchmark, case, provider, mode):
    run_case(benchmark, case, provider, mode)
