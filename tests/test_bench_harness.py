"""The benchmark harness's own behaviour that results depend on (the kernels are tested elsewhere)."""

import os

import torch

from fastops.bench.core import Case, run_cases


def test_provider_env_applies_to_its_provider_only():
    # The GEMM ladder times kernel variants through environment switches: each must be set while its provider runs,
    # absent for the others, and the caller's environment left as it was.
    seen = {}

    def provider(name):
        def run(x):
            seen.setdefault(name, set()).add(os.environ.get("FASTOPS_SM90_NO_CLUSTER"))
            return x * 2
        return run

    case = Case(op="probe", dtype="float32", shape="16", make_inputs=lambda device: (torch.ones(16),),
                providers={"fastops": provider("fastops"), "fastops_variant": provider("fastops_variant")},
                bytes=lambda mode: 128.0, provider_env={"fastops_variant": {"FASTOPS_SM90_NO_CLUSTER": "1"}})
    before = os.environ.get("FASTOPS_SM90_NO_CLUSTER")
    results = run_cases([case], "cpu", quick=True, progress=False)
    assert {r.provider for r in results} == {"fastops", "fastops_variant"}
    assert seen == {"fastops": {before}, "fastops_variant": {"1"}}
    assert os.environ.get("FASTOPS_SM90_NO_CLUSTER") == before
