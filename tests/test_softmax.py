"""softmax / log_softmax against torch: accuracy (any dim, long rows, every layout, special values), gradients,
registration (opcheck), torch.compile, modules, bad input."""

import warnings

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
    make_tensor,
    requires_cuda,
)

import fastops

ops = torch.ops.fastops
FF = fastops.functional

FUNCTIONS = {"softmax": (FF.softmax, F.softmax), "log_softmax": (FF.log_softmax, F.log_softmax)}

# (shape, dim): the last dim (vector body and tails), every other dim (the column path: full vectors of columns and
# a partial block), a long row (the sum flushed to double), a wide slab, scalars, one-element and empty dims.
CASES = (((7,), 0), ((33, 65), -1), ((33, 65), 0), ((3, 5, 7), 1), ((3, 5, 7), 0), ((4, 37, 19), 1),
         ((2, 3, 40), -2), ((5, 32000), 1), ((3, 1000, 2), 1), ((), 0), ((), -1), ((6, 1), 1), ((1, 9), 0),
         ((0, 5), 1), ((5, 0), 1), ((2, 0, 3), 2))


def samples(device, dtype, requires_grad=True):
    gen = torch.Generator().manual_seed(0)
    for shape, dim in CASES:
        for layout in ("contiguous", "transposed", "sliced", "offset1"):
            if len(shape) == 0 and layout != "contiguous":
                continue
            x = make_tensor(shape, dtype, device, layout=layout, low=-8, high=8, requires_grad=requires_grad,
                            generator=gen)
            yield Sample((x, dim), {}, f"{shape}-dim{dim}-{layout}")


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_matches_torch_forward_and_backward(name, dtype, device):
    fast, native = FUNCTIONS[name]
    for sample in samples(device, dtype):
        check_against_torch(fast, native, sample, grad=True)


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("device", DEVICES)
def test_dtype_argument_casts_first(name, device):
    fast, native = FUNCTIONS[name]
    x = make_tensor((4, 9), torch.bfloat16, device, requires_grad=True)
    for dtype in (torch.float32, torch.float64):
        check_against_torch(fast, native, Sample((x, 1), {"dtype": dtype}, str(dtype)), grad=True)
    ints = torch.randint(-5, 5, (3, 4), device=device)
    torch.testing.assert_close(fast(ints, 1, dtype=torch.float64), native(ints, 1, dtype=torch.float64), rtol=0,
                               atol=1e-15)


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("device", DEVICES)
def test_special_values_propagate_like_torch(name, device):
    fast, native = FUNCTIONS[name]
    inf, nan = float("inf"), float("nan")
    x = torch.tensor([[0.0, 1.0, -inf, 2.0], [nan, 0.0, 1.0, 2.0], [inf, 0.0, 1.0, 2.0], [-inf] * 4,
                      [1e30, -1e30, 0.0, 1e30]], device=device)
    for dim in (0, 1):
        torch.testing.assert_close(fast(x, dim), native(x.double(), dim).float(), equal_nan=True)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_implicit_dim_warns_like_torch(name):
    fast, native = FUNCTIONS[name]
    for shape in ((5,), (3, 4), (2, 3, 4), (2, 3, 4, 5)):
        x = torch.randn(shape)
        with pytest.warns(UserWarning, match="Implicit dimension choice"):
            out = fast(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = native(x)
        torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_gradcheck(name):
    fast = FUNCTIONS[name][0]
    for dim in (0, 1, 2):
        x = make_tensor((3, 4, 5), torch.float64, "cpu", requires_grad=True)
        check_gradcheck(fast, Sample((x, dim), {}, f"dim{dim}"))


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(name, dtype, device):
    for sample in samples(device, dtype):
        if sample.args[0].dim() > 0 and sample.args[0].shape[-1] == 32000:
            continue  # opcheck re-runs each op a dozen times; the long row adds nothing to registration checks
        check_opcheck(getattr(ops, name), sample)
        x, dim = sample.args
        y = getattr(ops, name)(x.detach(), dim)
        check_opcheck(getattr(ops, f"{name}_backward"), Sample((torch.randn_like(y), y, dim), {}, sample.desc))


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph_parity(name, device):
    fast = FUNCTIONS[name][0]
    for layout in ("contiguous", "transposed", "sliced"):
        for dim in (0, 1):
            x = make_tensor((33, 65), torch.float32, device, layout=layout, requires_grad=True)
            check_compile_parity(fast, Sample((x, dim), {}, f"{layout}-dim{dim}"), grad=True)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_compile_inductor_dynamic(name):
    fast, native = FUNCTIONS[name]
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: fast(x, -1) * 2, fullgraph=True, dynamic=True)
    for n in (5, 17, 300):
        x = torch.randn(n, 3)
        torch.testing.assert_close(compiled(x), fast(x, -1) * 2, rtol=0, atol=0)
        torch.testing.assert_close(compiled(x), native(x, -1) * 2)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_modules_match_torch(name):
    fast_cls, native_cls = {"softmax": (fastops.nn.Softmax, torch.nn.Softmax),
                            "log_softmax": (fastops.nn.LogSoftmax, torch.nn.LogSoftmax)}[name]
    x = torch.randn(4, 6, 3)
    for dim in (0, 1, -1):
        fast, native = fast_cls(dim=dim), native_cls(dim=dim)
        assert isinstance(fast, native_cls) and repr(fast) == repr(native)
        torch.testing.assert_close(fast(x), native(x))


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("device", DEVICES)
def test_bad_input_raises(name, device):
    fast = FUNCTIONS[name][0]
    x = torch.randn(3, 4, device=device)
    with pytest.raises(IndexError, match=r"Dimension out of range \(expected to be in range of \[-2, 1\], but got 2\)"):
        fast(x, 2)
    with pytest.raises(IndexError, match="Dimension out of range"):
        fast(torch.tensor(1.0, device=device), 1)
    with pytest.raises(RuntimeError, match="x must be float16/bfloat16/float32/float64, got Long"):
        fast(torch.ones(3, dtype=torch.long, device=device), 0)
    op = getattr(ops, f"{name}_backward")
    with pytest.raises(RuntimeError, match="grad_output must have the shape of output"):
        op(torch.randn(3, 5, device=device), x, 1)
    with pytest.raises(RuntimeError, match="must have the dtype of grad_output"):
        op(x, x.double(), 1)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_cpu_cuda_parity(name, dtype):
    fast = FUNCTIONS[name][0]
    for shape, dim in (((1000, 37), 1), ((7, 5000), 1), ((64, 33, 9), 1)):
        x = make_tensor(shape, dtype, "cpu", requires_grad=True)
        xc = x.detach().cuda().requires_grad_()
        y, yc = fast(x, dim), fast(xc, dim)
        up = torch.randn_like(y)
        (g,), (gc,) = torch.autograd.grad(y, [x], up), torch.autograd.grad(yc, [xc], up.cuda())
        tol = {"rtol": 4 * torch.finfo(dtype).eps, "atol": 4 * torch.finfo(dtype).eps}
        torch.testing.assert_close(yc.cpu(), y, **tol)
        torch.testing.assert_close(gc.cpu(), g, **tol)
