import pytest
import torch

import fastops

# torch.compile's on-disk caches (FX graphs, AOT autograd) are keyed by the traced graph and torch, not by the
# kernels and autograd code of an extension: a rebuilt fastops could reuse graphs compiled against the previous build
# (seen: guards of a shape-specialising build made a dynamic model recompile per batch size). Every test compiles
# afresh, as on a new CI machine.
torch._inductor.config.fx_graph_cache = False
torch._functorch.config.enable_autograd_cache = False

# Tests that check numbers against torch run again at every lower CPU kernel level this machine supports (`make test`
# reruns `pytest -m cpu_levels` with FASTOPS_CPU_CAPABILITY=avx2, =default): every accuracy test (a name with
# "matches_torch"), the property tests, torch's own OpInfo/ModuleInfo data, and the thread-count independence tests
# (each level has its own vector widths and so its own task boundaries).
CPU_LEVEL_FILES = ("test_properties.py", "test_torch_opinfo.py", "test_torch_modules.py", "test_threads.py")


def pytest_configure(config):
    config.addinivalue_line("markers", "cpu_levels: rerun at every CPU kernel level (see tests/conftest.py)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "matches_torch" in item.name or item.path.name in CPU_LEVEL_FILES:
            item.add_marker(pytest.mark.cpu_levels)


def pytest_report_header(config):
    return (f"fastops CPU kernel level: {fastops.cpu_capability()} (runnable here: "
            f"{', '.join(fastops.runnable_cpu_levels())}); torch {torch.__version__}")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
