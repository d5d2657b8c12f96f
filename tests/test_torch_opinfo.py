"""torch's own test data (OpInfo: torch.testing._internal.common_methods_invocations.op_db) against every
fastops.functional op that mirrors a torch op: each sample input of every variant, forward and gradients under the
accuracy rule against float64 (tests/reference.py, never widened), gradgradcheck in float64 where torch supports it,
and torch's error inputs (the same exception type, a message matching torch's pattern).

An op joins as soon as fastops.functional has it (TWINS maps torch's OpInfo name to fastops' function name)."""

import pytest
import torch
from reference import DEVICES, Sample, check_against_torch, torch_cross_entropy_of_fastops_logits
from torch.testing._internal.common_methods_invocations import op_db

import fastops.functional as FF

# OpInfo name -> fastops.functional name.
TWINS = {
    "nn.functional.relu": "relu",
    "nn.functional.gelu": "gelu",
    "nn.functional.silu": "silu",
    "nn.functional.leaky_relu": "leaky_relu",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "nn.functional.elu": "elu",
    "nn.functional.selu": "selu",
    "nn.functional.celu": "celu",
    "nn.functional.softplus": "softplus",
    "nn.functional.mish": "mish",
    "nn.functional.hardswish": "hardswish",
    "nn.functional.hardsigmoid": "hardsigmoid",
    "nn.functional.relu6": "relu6",
    "nn.functional.hardtanh": "hardtanh",
    "nn.functional.glu": "glu",
    "softmax": "softmax",
    "log_softmax": "log_softmax",
    "matmul": "matmul",
    "nn.functional.linear": "linear",
    "nn.functional.cross_entropy": "cross_entropy",
    "nn.functional.linear_cross_entropy": "linear_cross_entropy",
    "nn.functional.nll_loss": "nll_loss",
    "nn.functional.mse_loss": "mse_loss",
    "nn.functional.l1_loss": "l1_loss",
    "nn.functional.smooth_l1_loss": "smooth_l1_loss",
    "nn.functional.huber_loss": "huber_loss",
    "nn.functional.kl_div": "kl_div",
    "nn.functional.binary_cross_entropy": "binary_cross_entropy",
    "nn.functional.binary_cross_entropy_with_logits": "binary_cross_entropy_with_logits",
}

# A second torch evaluation of the same math, counted in torch's error below float64 (see the function's comment).
SECOND_TORCH_EVALUATIONS = {"nn.functional.linear_cross_entropy": torch_cross_entropy_of_fastops_logits}

OPS = [op for op in op_db if op.name in TWINS and hasattr(FF, TWINS[op.name])]
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _id(op) -> str:
    return op.name + (f".{op.variant_test_name}" if op.variant_test_name else "")


def _fast(op):
    return getattr(FF, TWINS[op.name])


def _as_sample(s) -> Sample:
    return Sample((s.input, *s.args), dict(s.kwargs), repr(s.summary()) if hasattr(s, "summary") else str(s))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", OPS, ids=_id)
def test_samples_match_torch(op, device, dtype):
    if dtype not in op.supported_dtypes(device):
        pytest.skip(f"torch's OpInfo does not list {dtype} for {_id(op)} on {device}")
    grad = dtype in op.supported_backward_dtypes(device)
    for s in op.sample_inputs(device, dtype, requires_grad=grad):
        check_against_torch(_fast(op), op.op, _as_sample(s), grad=grad and s.input.requires_grad,
                            torch_second=SECOND_TORCH_EVALUATIONS.get(op.name))


@pytest.mark.parametrize("op", [op for op in OPS if op.supports_gradgrad], ids=_id)
def test_gradgradcheck(op):
    for s in op.sample_inputs("cpu", torch.float64, requires_grad=True):
        tensors = [a for a in (s.input, *s.args, *s.kwargs.values())
                   if isinstance(a, torch.Tensor) and a.requires_grad]
        if not tensors:
            continue

        def fn(*inputs, s=s, tensors=tensors):
            swap = dict(zip(map(id, tensors), inputs))

            def pick(value):
                return swap.get(id(value), value)

            return _fast(op)(pick(s.input), *map(pick, s.args), **{k: pick(v) for k, v in s.kwargs.items()})

        assert torch.autograd.gradgradcheck(fn, tensors, eps=1e-6, atol=1e-5, fast_mode=True), s


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", [op for op in OPS if op.error_inputs_func is not None], ids=_id)
def test_error_inputs_raise_like_torch(op, device):
    for e in op.error_inputs(device):
        s = e.sample_input
        with pytest.raises(e.error_type, match=e.error_regex):
            _fast(op)(s.input, *s.args, **s.kwargs)
