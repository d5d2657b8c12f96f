import pytest
from conftest import DEVICE, run_case

from fastops.bench import family_cases

CASES = family_cases("training", DEVICE, quick=True)


@pytest.mark.parametrize("provider", ["fastops", "torch", "compile", "fastops+compile"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_train_step(benchmark, case, provider):
    run_case(benchmark, case, provider, "full")
