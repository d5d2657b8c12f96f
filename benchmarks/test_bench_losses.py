import pytest
from conftest import DEVICE, run_case

from fastops.bench import family_cases

CASES = family_cases("losses", DEVICE, quick=True)


@pytest.mark.parametrize("provider", ["fastops", "torch", "compile"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("mode", ["fwd", "full"])
def test_loss(benchmark, case, provider, mode):
    if mode not in case.modes:
        pytest.skip(f"{case.op} has no {mode} row")
    run_case(benchmark, case, provider, mode)
