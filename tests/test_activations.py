"""The activation family against torch: accuracy, gradients, registration (opcheck), torch.compile, bad input."""

import pytest
import torch
import torch.nn.functional as F
from reference import (
    DEVICES,
    FLOAT_DTYPES,
    Sample,
    check_against_torch,
    check_compile_parity,
    check_gradcheck,
    check_opcheck,
    elementwise_samples,
    make_tensor,
    requires_cuda,
)

import fastops

ops = torch.ops.fastops

# name -> (fastops functional, torch functional, the operator, module pair)
ACTIVATIONS = {
    "relu": (fastops.functional.relu, F.relu, ops.relu, (fastops.nn.ReLU, torch.nn.ReLU)),
}


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_matches_torch_forward_and_backward(name, dtype, device):
    fast, native, _, _ = ACTIVATIONS[name]
    for sample in elementwise_samples(device, dtype, requires_grad=True):
        check_against_torch(fast, native, sample, grad=True)


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("device", DEVICES)
def test_special_values_propagate_like_torch(name, device):
    fast, native, _, _ = ACTIVATIONS[name]
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e-30, -1e30], device=device)
    torch.testing.assert_close(fast(x), native(x), equal_nan=True)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_gradcheck(name):
    fast, _, _, _ = ACTIVATIONS[name]
    # Keep inputs away from kinks (relu at 0) where finite differences are meaningless.
    x = make_tensor((4, 5), torch.float64, "cpu", low=0.1, high=2.0)
    x = torch.where(torch.rand_like(x) < 0.5, -x, x).requires_grad_()
    check_gradcheck(fast, Sample((x,), {}, "4x5"))


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(name, dtype, device):
    _, _, op, _ = ACTIVATIONS[name]
    for sample in elementwise_samples(device, dtype, requires_grad=dtype.is_floating_point):
        check_opcheck(op, sample)


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph_parity(name, device):
    fast, _, _, _ = ACTIVATIONS[name]
    for layout in ("contiguous", "transposed", "sliced"):
        x = make_tensor((33, 65), torch.float32, device, layout=layout, requires_grad=True)
        check_compile_parity(fast, Sample((x,), {}, layout), grad=True)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_compile_inductor_dynamic(name):
    fast, native, _, _ = ACTIVATIONS[name]
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: fast(x) * 2, fullgraph=True, dynamic=True)
    for n in (5, 17, 300):
        x = torch.randn(n, 3)
        torch.testing.assert_close(compiled(x), native(x) * 2, rtol=0, atol=0)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_cpu_cuda_parity(name, dtype):
    fast, _, _, _ = ACTIVATIONS[name]
    x = make_tensor((1000, 37), dtype, "cpu")
    torch.testing.assert_close(fast(x.cuda()).cpu(), fast(x), rtol=2 * torch.finfo(dtype).eps, atol=0)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_module_is_drop_in(name):
    _, _, _, (fast_module, torch_module) = ACTIVATIONS[name]
    fast, native = fast_module(), torch_module()
    assert fast.state_dict().keys() == native.state_dict().keys()
    x = torch.randn(8, 9)
    torch.testing.assert_close(fast(x), native(x))


def test_relu_inplace_matches_torch():
    x = torch.randn(10)
    expected = F.relu(x.clone())
    out = fastops.functional.relu(x, inplace=True)
    assert out is x
    torch.testing.assert_close(x, expected)
    assert repr(fastops.nn.ReLU(inplace=True)) == repr(torch.nn.ReLU(inplace=True))


BAD_INPUTS = [
    (lambda: ops.relu(torch.arange(4)), r"fastops\.relu: x must be float16/bfloat16/float32/float64, got Long"),
    (lambda: ops.relu(torch.zeros(2, dtype=torch.bool)), r"x must be float16/bfloat16/float32/float64, got Bool"),
    (lambda: ops.relu_backward(torch.zeros(3), torch.zeros(4)),
     r"fastops\.relu_backward: grad_output must have the shape of result \[4\], got \[3\]"),
    (lambda: ops.relu_backward(torch.zeros(3), torch.zeros(3, dtype=torch.float64)),
     r"fastops\.relu_backward: result must have the dtype of grad_output \(Float\), got Double"),
    (lambda: ops.relu_backward(torch.zeros(3, dtype=torch.int32), torch.zeros(3)), r"grad_output must be float"),
]


@pytest.mark.parametrize("call,message", BAD_INPUTS)
def test_bad_input_raises_clear_error(call, message):
    with pytest.raises(RuntimeError, match=message):
        call()


@requires_cuda
@pytest.mark.cuda
def test_cpu_cuda_mix_is_rejected():
    with pytest.raises(RuntimeError, match=r"result must be on the device of grad_output"):
        ops.relu_backward(torch.zeros(3, device="cuda"), torch.zeros(3))
