import pytest
import torch

import fastops  # noqa: F401  (registers the ops before any test collects them)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
