"""fastops' benchmark suite: `python -m fastops.bench --help`."""

from .core import CSV_COLUMNS, Case, Result, run_cases

FAMILIES = ("activations", "losses", "matmul", "training", "overhead")

__all__ = ["CSV_COLUMNS", "FAMILIES", "Case", "Result", "family_cases", "run_cases"]


def family_cases(family: str, device: str, quick: bool) -> list[Case]:
    import importlib

    return importlib.import_module(f"fastops.bench.cases_{family}").cases(device, quick)
