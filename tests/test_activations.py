"""The activation family against torch: accuracy, gradients, registration (opcheck), torch.compile, bad input."""

import functools
import inspect
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
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
FF = fastops.functional


class Act(NamedTuple):
    fast: Callable  # fastops functional with the parameters bound
    native: Callable  # torch's twin
    op: object  # the operator, called with `kwargs`
    modules: tuple  # (fastops module, torch module), built with `module_kwargs`
    kwargs: dict | None = None
    module_kwargs: dict | None = None


ACTIVATIONS = {
    "relu": Act(FF.relu, F.relu, ops.relu, (fastops.nn.ReLU, torch.nn.ReLU)),
    "gelu": Act(FF.gelu, F.gelu, ops.gelu, (fastops.nn.GELU, torch.nn.GELU)),
    "gelu_tanh": Act(functools.partial(FF.gelu, approximate="tanh"), functools.partial(F.gelu, approximate="tanh"),
                     ops.gelu, (fastops.nn.GELU, torch.nn.GELU), {"approximate": "tanh"}, {"approximate": "tanh"}),
    "silu": Act(FF.silu, F.silu, ops.silu, (fastops.nn.SiLU, torch.nn.SiLU)),
    "leaky_relu": Act(functools.partial(FF.leaky_relu, negative_slope=0.2),
                      functools.partial(F.leaky_relu, negative_slope=0.2), ops.leaky_relu,
                      (fastops.nn.LeakyReLU, torch.nn.LeakyReLU), {"negative_slope": 0.2}, {"negative_slope": 0.2}),
    "sigmoid": Act(FF.sigmoid, torch.sigmoid, ops.sigmoid, (fastops.nn.Sigmoid, torch.nn.Sigmoid)),
    "tanh": Act(FF.tanh, torch.tanh, ops.tanh, (fastops.nn.Tanh, torch.nn.Tanh)),
    "elu": Act(functools.partial(FF.elu, alpha=0.7), functools.partial(F.elu, alpha=0.7), ops.elu,
               (fastops.nn.ELU, torch.nn.ELU), {"alpha": 0.7}, {"alpha": 0.7}),
    "selu": Act(FF.selu, F.selu, ops.elu, (fastops.nn.SELU, torch.nn.SELU),
                {"alpha": 1.6732632423543772, "scale": 1.0507009873554805}),
    "celu": Act(functools.partial(FF.celu, alpha=1.5), functools.partial(F.celu, alpha=1.5), ops.elu,
                (fastops.nn.CELU, torch.nn.CELU), {"alpha": 1.5, "input_scale": 1 / 1.5}, {"alpha": 1.5}),
    "softplus": Act(functools.partial(FF.softplus, beta=2.0, threshold=1.5),
                    functools.partial(F.softplus, beta=2.0, threshold=1.5), ops.softplus,
                    (fastops.nn.Softplus, torch.nn.Softplus), {"beta": 2.0, "threshold": 1.5},
                    {"beta": 2.0, "threshold": 1.5}),
    "mish": Act(FF.mish, F.mish, ops.mish, (fastops.nn.Mish, torch.nn.Mish)),
    "hardswish": Act(FF.hardswish, F.hardswish, ops.hardswish, (fastops.nn.Hardswish, torch.nn.Hardswish)),
    "hardsigmoid": Act(FF.hardsigmoid, F.hardsigmoid, ops.hardsigmoid, (fastops.nn.Hardsigmoid, torch.nn.Hardsigmoid)),
    "hardtanh": Act(functools.partial(FF.hardtanh, min_val=-0.4, max_val=0.9),
                    functools.partial(F.hardtanh, min_val=-0.4, max_val=0.9), ops.hardtanh,
                    (fastops.nn.Hardtanh, torch.nn.Hardtanh), {"min_val": -0.4, "max_val": 0.9},
                    {"min_val": -0.4, "max_val": 0.9}),
    "relu6": Act(FF.relu6, F.relu6, ops.hardtanh, (fastops.nn.ReLU6, torch.nn.ReLU6), {"min_val": 0.0, "max_val": 6.0}),
}

@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_matches_torch_forward_and_backward(name, dtype, device):
    fast, native = ACTIVATIONS[name][:2]
    for sample in elementwise_samples(device, dtype, requires_grad=True):
        check_against_torch(fast, native, sample, grad=True)


@pytest.mark.parametrize("name", ("gelu", "gelu_tanh", "silu", "sigmoid", "tanh", "elu", "softplus", "mish"))
def test_strided_small_inputs_matches_torch(name):
    """torch evaluates a strided float32 input one element at a time with libm's functions (erff, tanhf, ...), more
    exactly than its vector formulas, so its error there is small and the accuracy rule tight. fastops' float32 gelu
    gradient with the Abramowitz-Stegun erf erred 1.6e-7 against torch's 3.8e-8 on a transposed 5x3 input (avx2).
    Many small transposed samples at four scales, forward and gradient."""
    fast, native = ACTIVATIONS[name][:2]
    gen = torch.Generator().manual_seed(0)
    for trial in range(120):
        rows = int(torch.randint(1, 40, (), generator=gen))
        scale = (0.3, 1.0, 3.0, 9.0)[trial % 4]
        x = (torch.randn(rows, 3, generator=gen) * scale).t().requires_grad_()
        check_against_torch(fast, native, Sample((x,), {}, f"{rows}x3 transposed, scale {scale}"), grad=True)


def test_gelu_float32_erf_by_layout_matches_torch():
    """torch's float32 gelu takes oneDNN's kernel, whose erf is the Abramowitz-Stegun formula (1.5e-7 absolute) in
    the backward and below AVX-512 in the forward, for a contiguous input of more than one element with oneDNN
    enabled, and std::erf elsewhere; fastops takes the formula where torch does (activations.h, coarse_gelu_erf) and
    its accurate erf elsewhere. At x = -1.2973689 the formula errs 13 ulps, more than the rule allows where torch is
    exact: each layout, forward and gradient, and oneDNN disabled."""
    x0 = -1.2973689
    wide = torch.full((64, 2), x0)
    layouts = {"contiguous": torch.full((64,), x0), "strided": wide[:, 0], "transposed": wide.t(),
               "one element": torch.full((1,), x0), "two elements": torch.full((2,), x0)}
    for layout, x in layouts.items():
        check_against_torch(FF.gelu, F.gelu, Sample((x.requires_grad_(),), {}, layout), grad=True)
    with torch.backends.mkldnn.flags(enabled=False):
        x = torch.full((64,), x0, requires_grad=True)
        check_against_torch(FF.gelu, F.gelu, Sample((x,), {}, "oneDNN disabled"), grad=True)


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("device", DEVICES)
def test_special_values_matches_torch(name, device):
    fast, native = ACTIVATIONS[name][:2]
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e-30, -1e30], device=device)
    # Against torch's float64 math: torch's float32 CPU gelu goes through oneDNN, which returns NaN for +inf.
    torch.testing.assert_close(fast(x), native(x.double()).float(), equal_nan=True)


@pytest.mark.parametrize("name", ("relu", "relu6", "hardtanh", "elu", "selu", "celu"))
def test_signed_zeros_matches_torch(name):
    """torch's relu and hardtanh are clamps, so -0.0 stays -0.0 (relu6(-0.0) was 0.0 in fastops' vector lanes); its
    elu family maps a zero of either sign linearly (elu(-0.0) was 0.0)."""
    fast, native = ACTIVATIONS[name][:2]
    x = torch.tensor([0.0, -0.0, float("nan"), 2.0, -2.0] * 9)  # 45 elements: whole vectors and a tail at every level
    out, ref = fast(x), native(x)
    torch.testing.assert_close(out, ref, equal_nan=True)
    assert torch.equal(torch.signbit(out[x == 0]), torch.signbit(ref[x == 0]))


@pytest.mark.parametrize("name", ("relu", "relu6", "hardtanh", "hardswish", "hardsigmoid", "leaky_relu"))
def test_piecewise_backward_special_values_matches_torch(name):
    """The piecewise gradients at NaN, the infinities and the kinks, bitwise torch's: relu's passes the gradient at
    a NaN input, hardtanh's and hardsigmoid's give 0 there, hardswish's NaN. 64 elements are whole vectors at every
    level, for fastops and for torch, whose scalar tails treat a NaN differently from their vector bodies."""
    fast, native = ACTIVATIONS[name][:2]
    values = [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1.0, -1.0, 3.0, -3.0, 6.0, 2.5, -2.5, 7.0, -7.0]
    x = torch.tensor((values * 5)[:64])
    grad = torch.randn(64)
    xs = [x.clone().requires_grad_() for _ in range(2)]
    (out_grad,) = torch.autograd.grad(fast(xs[0]), xs[0], grad)
    (ref_grad,) = torch.autograd.grad(native(xs[1]), xs[1], grad)
    assert torch.equal(out_grad.isnan(), ref_grad.isnan())
    assert torch.equal(torch.nan_to_num(out_grad), torch.nan_to_num(ref_grad))


@pytest.mark.parametrize("name", ("elu", "selu", "celu"))
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64), ids=str)
def test_elu_family_small_values_matches_torch(name, dtype):
    """torch's elu is expm1(x) near zero, so tiny negative inputs keep their digits; exp(x) - 1 gave elu(-1e-10) = 0
    in float32 and erred 8e-8 relative in float64, which the accuracy rule's absolute floor does not see. Here the
    rule is applied to relative errors: the largest over the normal outputs, at most twice torch's plus half an ulp.
    The reference is aten::elu's formula in long double (more exact than float64, whose own error is the question)."""
    act = ACTIVATIONS[name]
    fast, native = act.fast, act.native
    params = {"alpha": 1.0, "scale": 1.0, "input_scale": 1.0, **act.kwargs}
    tiny = torch.finfo(dtype).tiny
    x = -torch.logspace(math.log10(tiny), 1, 4099, dtype=torch.float64).to(dtype)  # whole vectors and a tail
    x_long = x.double().numpy().astype(np.longdouble)
    ref = np.expm1(x_long * np.longdouble(params["input_scale"])) * np.longdouble(params["alpha"] * params["scale"])
    normal = np.abs(ref) >= tiny

    def relative_error(out):
        return float((np.abs(out.double().numpy().astype(np.longdouble) - ref) / np.abs(ref))[normal].max())

    err, native_err = relative_error(fast(x)), relative_error(native(x))
    assert err <= 2 * native_err + torch.finfo(dtype).eps / 2, f"relative error {err:.3g}, torch's {native_err:.3g}"


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_gradcheck(name):
    fast = ACTIVATIONS[name].fast
    # Keep inputs away from kinks (relu at 0) where finite differences are meaningless.
    x = make_tensor((4, 5), torch.float64, "cpu", low=0.1, high=2.0)
    x = torch.where(torch.rand_like(x) < 0.5, -x, x).requires_grad_()
    check_gradcheck(fast, Sample((x,), {}, "4x5"))


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(name, dtype, device):
    act = ACTIVATIONS[name]
    for sample in elementwise_samples(device, dtype, requires_grad=True):
        check_opcheck(act.op, Sample(sample.args, act.kwargs or {}, sample.desc))


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph_parity(name, device):
    fast = ACTIVATIONS[name].fast
    for layout in ("contiguous", "transposed", "sliced"):
        x = make_tensor((33, 65), torch.float32, device, layout=layout, requires_grad=True)
        check_compile_parity(fast, Sample((x,), {}, layout), grad=True)


@pytest.mark.parametrize("name", ("relu", "gelu"))  # inductor is slow to compile: two representatives
def test_compile_inductor_dynamic(name):
    fast, native = ACTIVATIONS[name][:2]
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: fast(x) * 2, fullgraph=True, dynamic=True)
    for n in (5, 17, 300):
        x = torch.randn(n, 3)
        torch.testing.assert_close(compiled(x), fast(x) * 2, rtol=0, atol=0)
        torch.testing.assert_close(compiled(x), native(x) * 2)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_cpu_cuda_parity(name, dtype):
    fast = ACTIVATIONS[name].fast
    x = make_tensor((1000, 37), dtype, "cpu")
    expected = fast(x)
    torch.testing.assert_close(fast(x.cuda()).cpu(), expected, **backend_tolerance(expected))


def backend_tolerance(expected: torch.Tensor) -> dict:
    """CPU and CUDA evaluate erf/exp/tanh with different approximations (each within about an ulp); where a formula
    cancels (1 + erf(x) for x << 0) that ulp is relative to the operands, not the result, so allow a couple of ulps
    at the output's scale as well as relative to each value."""
    eps = torch.finfo(expected.dtype).eps
    scale = expected.detach().abs().max().item() if expected.numel() else 1.0
    return {"rtol": 2 * eps, "atol": 4 * eps * max(1.0, scale)}


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_module_is_drop_in(name):
    act = ACTIVATIONS[name]
    fast, native = (m(**(act.module_kwargs or {})) for m in act.modules)
    assert fast.state_dict().keys() == native.state_dict().keys()
    assert repr(fast) == repr(native)
    x = torch.randn(8, 9)
    torch.testing.assert_close(fast(x), native(x))


@pytest.mark.parametrize("name", [n for n, act in ACTIVATIONS.items() if "inplace" in inspect.signature(act.fast).parameters])
def test_inplace_matches_torch(name):
    # On a non-leaf that requires grad: the input is overwritten, and the gradient still flows (backward passes that
    # read the input get the value from before the write, as torch's in-place activations save it).
    act = ACTIVATIONS[name]
    base = make_tensor((6, 7), torch.float64, "cpu", low=-4, high=4, requires_grad=True)
    grads, outs = [], []
    for fn in (act.fast, act.native):
        h = base * 1.5
        out = fn(h, inplace=True)
        assert out is h
        outs.append(out.detach().clone())
        grads.append(torch.autograd.grad((out * out).sum(), base)[0])
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(grads[0], grads[1])


def test_glu_matches_torch_along_every_dim():
    x = make_tensor((4, 6, 2), torch.float64, "cpu", requires_grad=True)
    for dim in (0, 1, -2, -3):
        check_against_torch(FF.glu, F.glu, Sample((x, dim), {}, f"dim={dim}"), grad=True)
        check_gradcheck(lambda t, dim=dim: FF.glu(t, dim), Sample((x,), {}, f"dim={dim}"))
    with pytest.raises(RuntimeError, match="Halving dimension must be even, but dimension 2 is size 3"):
        FF.glu(torch.zeros(2, 2, 3))
    with pytest.raises(IndexError, match="Dimension out of range"):
        FF.glu(torch.zeros(2, 2), 2)


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
    (lambda: ops.gelu(torch.zeros(3), approximate="fast"),
     r"fastops\.gelu: approximate argument must be either none or tanh, got 'fast'"),
    (lambda: ops.gelu_backward(torch.zeros(3), torch.zeros(3), approximate="erf"), r"approximate argument must be either"),
    (lambda: ops.silu_backward(torch.zeros(3), torch.zeros(2)), r"grad_output must have the shape of x \[2\]"),
    (lambda: ops.leaky_relu(torch.arange(3)), r"fastops\.leaky_relu: x must be float16/bfloat16/float32/float64"),
    (lambda: ops.bias_act(torch.zeros(4, 5), torch.zeros(4), "gelu"),
     r"fastops\.bias_act: bias must have shape \[5\] \(x's last dimension\), got \[4\]"),
    (lambda: ops.bias_act(torch.zeros(4, 5), torch.zeros(1, 5), "gelu"), r"bias must have shape \[5\]"),
    (lambda: ops.bias_act(torch.zeros(4, 5), torch.zeros(5, dtype=torch.float64), "gelu"),
     r"bias must have the dtype of x \(Float\), got Double"),
    (lambda: ops.bias_act(torch.zeros(4, 5), torch.zeros(5), "softplus"),
     r"fastops\.bias_act: act must be one of relu, gelu, gelu_tanh, silu, sigmoid, tanh; got 'softplus'"),
    (lambda: ops.bias_act(torch.zeros(()), torch.zeros(1), "relu"), r"x must have at least one dimension"),
    (lambda: ops.bias_act_backward(torch.zeros(4, 4), torch.zeros(4, 5), torch.zeros(5), "gelu"),
     r"grad_output must have the shape of x \[4, 5\], got \[4, 4\]"),
    (lambda: ops.swiglu(torch.zeros(4, 5), torch.zeros(4, 6)), r"fastops\.swiglu: up must have the shape of gate"),
    (lambda: ops.swiglu.packed(torch.zeros(4, 7)),
     r"fastops\.swiglu: x's last dimension must be even \(gate and up halves\), got 7"),
    (lambda: ops.geglu.packed(torch.zeros(3)[0]), r"fastops\.geglu: x must have a last dimension"),
    (lambda: ops.geglu(torch.zeros(2), torch.zeros(2), approximate="sigmoid"), r"approximate argument must be either"),
    (lambda: ops.swiglu(torch.zeros(2, dtype=torch.int64), torch.zeros(2, dtype=torch.int64)), r"gate must be float"),
    (lambda: ops.glu_packed_backward(torch.zeros(4, 4), torch.zeros(4, 6), "silu"),
     r"grad_output must have x's shape with the last dimension halved \[4, 3\], got \[4, 4\]"),
    (lambda: ops.elu(torch.arange(3), 1.0), r"fastops\.elu: x must be float16/bfloat16/float32/float64, got Long"),
    (lambda: ops.hardtanh_backward(torch.zeros(3), torch.zeros(4), -1.0, 1.0),
     r"fastops\.hardtanh_backward: grad_output must have the shape of x \[4\], got \[3\]"),
    (lambda: ops.glu_dim_backward(torch.zeros(4, 4), torch.zeros(4, 6), 0),
     r"fastops\.glu_dim_backward: grad_output must have x's shape with dim halved \[2, 6\], got \[4, 4\]"),
    (lambda: ops.glu(torch.zeros(())), r"glu does not support scalars because halving size must be even"),
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


# ---- bias_act: act(x + bias) fused, grad_x and grad_bias from one pass ----

BIAS_ACTS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": functools.partial(F.gelu, approximate="tanh"),
    "silu": F.silu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
}

# [..., N] shapes: odd N (scalar path), N a multiple of every vector width, a single row, 3-D, empty rows/cols.
ROW_SHAPES = ((7,), (3, 5), (33, 64), (129, 17), (2, 3, 40), (1, 4097), (0, 6), (4, 0))


def row_samples(device, dtype, n_inputs, layouts=("contiguous", "transposed", "offset1", "sliced")):
    """Operands [..., N] for the row-wise fused ops, in layouts that reach the vector, scalar and copy paths."""
    gen = torch.Generator().manual_seed(0)
    for shape in ROW_SHAPES:
        for layout in layouts:
            if layout == "transposed" and len(shape) < 2:
                continue
            args = tuple(make_tensor(shape, dtype, device, layout=layout, requires_grad=True, generator=gen)
                         for _ in range(n_inputs))
            yield shape, layout, args


def bias_samples(device, dtype):
    gen = torch.Generator().manual_seed(1)
    for shape, layout, (x,) in row_samples(device, dtype, 1):
        bias = make_tensor((shape[-1],), dtype, device, layout="offset1" if layout == "offset1" else "contiguous",
                           requires_grad=True, generator=gen)
        yield Sample((x, bias), {}, f"{shape}-{layout}")


@pytest.mark.parametrize("act", BIAS_ACTS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_bias_act_matches_torch(act, dtype, device):
    native = BIAS_ACTS[act]
    for sample in bias_samples(device, dtype):
        check_against_torch(lambda x, b: FF.bias_act(x, b, act), lambda x, b: native(x + b), sample, grad=True)


@pytest.mark.parametrize("act", ("gelu", "relu"))
def test_bias_act_gradcheck(act):
    x = make_tensor((6, 9), torch.float64, "cpu", low=0.1, high=2.0)
    x = torch.where(torch.rand_like(x) < 0.5, -x, x).requires_grad_()
    bias = make_tensor((9,), torch.float64, "cpu", low=-0.05, high=0.05, requires_grad=True)
    check_gradcheck(lambda x, b: FF.bias_act(x, b, act), Sample((x, bias), {}, "6x9"))


def test_bias_act_grad_bias_is_deterministic_and_sums_many_rows():
    # 1000 rows span several row chunks / groups: the partial sums must add up to torch's column sum, identically on
    # every call.
    x = torch.randn(1000, 33, requires_grad=True)
    bias = torch.randn(33, requires_grad=True)
    g = torch.randn(1000, 33)
    grads = [torch.autograd.grad(FF.bias_act(x, bias, "silu"), (x, bias), g) for _ in range(2)]
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=0, atol=0)
    xd, bd = x.detach().double().requires_grad_(), bias.detach().double().requires_grad_()
    (expected,) = torch.autograd.grad(F.silu(xd + bd), (bd,), g.double())
    torch.testing.assert_close(grads[0][1].double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_bias_act_opcheck(dtype, device):
    for sample in bias_samples(device, dtype):
        check_opcheck(ops.bias_act, Sample(sample.args + ("gelu_tanh",), {}, sample.desc))


@pytest.mark.parametrize("device", DEVICES)
def test_bias_act_compile_parity(device):
    x = make_tensor((33, 65), torch.float32, device, layout="transposed", requires_grad=True)
    bias = make_tensor((65,), torch.float32, device, requires_grad=True)
    check_compile_parity(lambda x, b: FF.bias_act(x, b, "gelu"), Sample((x, bias), {}, "33x65"), grad=True)


# ---- gated units: swiglu / geglu on (gate, up) and on one packed [..., 2H] tensor ----

GATED = {
    "swiglu": (FF.swiglu, F.silu),
    "geglu": (FF.geglu, F.gelu),
    "geglu_tanh": (functools.partial(FF.geglu, approximate="tanh"), functools.partial(F.gelu, approximate="tanh")),
}


@pytest.mark.parametrize("name", GATED)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_gated_split_matches_torch(name, dtype, device):
    fast, act = GATED[name]
    for shape, layout, args in row_samples(device, dtype, 2):
        check_against_torch(fast, lambda g, u: act(g) * u, Sample(args, {}, f"{shape}-{layout}"), grad=True)


@pytest.mark.parametrize("name", GATED)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_gated_packed_matches_torch(name, dtype, device):
    fast, act = GATED[name]

    def native(x):
        gate, up = x.chunk(2, dim=-1)
        return act(gate) * up

    for shape in ((8,), (3, 10), (33, 128), (2, 5, 34), (1, 2 * 4097), (0, 6), (3, 0)):
        for layout in ("contiguous", "offset1", "sliced"):
            x = make_tensor(shape, dtype, device, layout=layout, requires_grad=True)
            check_against_torch(lambda x: fast(x), native, Sample((x,), {}, f"{shape}-{layout}"), grad=True)


@pytest.mark.parametrize("name", GATED)
@pytest.mark.parametrize("device", DEVICES)
def test_gated_packed_equals_split(name, device):
    fast, _ = GATED[name]
    x = make_tensor((17, 2 * 24), torch.float32, device, requires_grad=True)
    g = torch.randn(17, 24, device=device)
    packed = fast(x)
    (grad_packed,) = torch.autograd.grad(packed, (x,), g)
    gate, up = (t.detach().clone().requires_grad_() for t in x.chunk(2, dim=-1))
    split = fast(gate, up)
    grad_split = torch.cat(torch.autograd.grad(split, (gate, up), g), dim=-1)
    torch.testing.assert_close(packed, split, rtol=0, atol=0)
    torch.testing.assert_close(grad_packed, grad_split, rtol=0, atol=0)


@pytest.mark.parametrize("name", GATED)
def test_gated_gradcheck(name):
    fast, _ = GATED[name]
    x = make_tensor((4, 10), torch.float64, "cpu", requires_grad=True)
    check_gradcheck(lambda x: fast(x), Sample((x,), {}, "packed 4x10"))
    gate, up = (make_tensor((3, 5), torch.float64, "cpu", requires_grad=True) for _ in range(2))
    check_gradcheck(fast, Sample((gate, up), {}, "split 3x5"))


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_gated_opcheck(dtype, device):
    for shape, layout, (gate, up) in row_samples(device, dtype, 2, layouts=("contiguous", "sliced")):
        check_opcheck(ops.swiglu.default, Sample((gate, up), {}, f"{shape}-{layout}"))
        check_opcheck(ops.geglu.default, Sample((gate, up), {"approximate": "tanh"}, f"{shape}-{layout}"))
    for shape in ((3, 10), (2, 5, 34), (0, 6)):
        x = make_tensor(shape, dtype, device, requires_grad=True)
        check_opcheck(ops.swiglu.packed, Sample((x,), {}, str(shape)))
        check_opcheck(ops.geglu.packed, Sample((x,), {}, str(shape)))


@pytest.mark.parametrize("device", DEVICES)
def test_gated_compile_parity(device):
    x = make_tensor((33, 130), torch.float32, device, requires_grad=True)
    check_compile_parity(lambda x: FF.swiglu(x), Sample((x,), {}, "packed"), grad=True)
    gate, up = (make_tensor((33, 65), torch.float32, device, requires_grad=True) for _ in range(2))
    check_compile_parity(lambda g, u: FF.geglu(g, u, approximate="tanh"), Sample((gate, up), {}, "split"), grad=True)


def test_gated_modules():
    x = torch.randn(5, 12)
    torch.testing.assert_close(fastops.nn.SwiGLU()(x), F.silu(x[:, :6]) * x[:, 6:])
    torch.testing.assert_close(fastops.nn.GeGLU(approximate="tanh")(x),
                               F.gelu(x[:, :6], approximate="tanh") * x[:, 6:])
    assert fastops.nn.SwiGLU().state_dict() == {}
    assert repr(fastops.nn.GeGLU()) == "GeGLU(approximate='none')"


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_fused_cpu_cuda_parity(dtype):
    for shape in ((1000, 37), (257, 64), (3, 4096)):
        x, bias = make_tensor(shape, dtype, "cpu"), make_tensor(shape[-1:], dtype, "cpu")
        expected = FF.bias_act(x, bias, "gelu")
        torch.testing.assert_close(FF.bias_act(x.cuda(), bias.cuda(), "gelu").cpu(), expected,
                                   **backend_tolerance(expected))
        g = make_tensor(shape, dtype, "cpu")
        grad_x, grad_bias = ops.bias_act_backward(g, x, bias, "silu")
        cuda_grads = ops.bias_act_backward(g.cuda(), x.cuda(), bias.cuda(), "silu")
        torch.testing.assert_close(cuda_grads[0].cpu(), grad_x, **backend_tolerance(grad_x))
        # grad_bias: the same rows summed in a different order (and, for 16-bit types, width) on each backend.
        torch.testing.assert_close(cuda_grads[1].cpu(), grad_bias, **backend_tolerance(grad_bias))
        packed = make_tensor(shape[:-1] + (2 * shape[-1],), dtype, "cpu")
        expected = FF.swiglu(packed)
        torch.testing.assert_close(FF.swiglu(packed.cuda()).cpu(), expected, **backend_tolerance(expected))
