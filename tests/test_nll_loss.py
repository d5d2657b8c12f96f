"""nll_loss against torch: accuracy of the loss and its gradient for every reduction, class weights, ignore_index,
[C] / [N, C] / [N, C, d...] inputs in several layouts, 16-bit inputs, registration (opcheck), torch.compile,
autocast, the module, and torch's errors for bad input."""

import pytest
import torch
import torch.nn.functional as F
from reference import (
    DEVICES,
    FLOAT_DTYPES,
    Sample,
    check_against_torch,
    check_compile_parity,
    check_opcheck,
    make_tensor,
    requires_cuda,
)

import fastops

ops = torch.ops.fastops
FF = fastops.functional

# (input shape, layout): odd class counts, a long row, the unbatched [C], 3-D and 5-D inputs (spatial targets),
# a transposed and a sliced input (read in place of the permute torch does), and empty batches.
SHAPES = (((1, 1), "contiguous"), ((7, 5), "contiguous"), ((9, 1003), "contiguous"), ((5,), "contiguous"),
          ((4, 6, 3), "contiguous"), ((4, 6, 3, 2), "contiguous"), ((2, 3, 2, 2, 3), "contiguous"),
          ((7, 5), "transposed"), ((4, 6, 3), "sliced"), ((0, 7), "contiguous"), ((3, 4, 0), "contiguous"))
CONFIGS = ((False, -100, "mean"), (True, -100, "mean"), (True, 1, "sum"), (False, 0, "none"), (True, -100, "none"),
           (False, 2, "sum"), (True, 3, "mean"))


def samples(device, dtype, requires_grad=True):
    gen = torch.Generator().manual_seed(0)
    for shape, layout in SHAPES:
        c = shape[0] if len(shape) == 1 else shape[1]
        batch = () if len(shape) == 1 else shape[:1] + shape[2:]
        for weighted, ignore_index, reduction in CONFIGS:
            x = make_tensor(shape, dtype, device, layout=layout, low=-6, high=1, requires_grad=requires_grad,
                            generator=gen)
            target = torch.randint(0, max(c, 1), batch, generator=gen)
            target = torch.where(torch.rand(batch, generator=gen) < 0.2, ignore_index, target).to(device)
            weight = (torch.rand(c, generator=gen, dtype=torch.float64) + 0.5).to(device, dtype) if weighted else None
            kwargs = {"weight": weight, "ignore_index": ignore_index, "reduction": reduction}
            yield Sample((x, target), kwargs, f"{shape}-{layout}-{'w' if weighted else 'nw'}-ii{ignore_index}-"
                                              f"{reduction}")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_matches_torch_forward_and_backward(dtype, device):
    for sample in samples(device, dtype):
        check_against_torch(FF.nll_loss, F.nll_loss, sample, grad=True)


@pytest.mark.parametrize("device", DEVICES)
def test_log_softmax_then_nll_loss_is_cross_entropy(device):
    x = make_tensor((6, 11), torch.float32, device, requires_grad=True)
    t = torch.tensor([0, 3, 10, 5, -100, 2], device=device)
    loss = FF.nll_loss(FF.log_softmax(x, dim=1), t)
    check_against_torch(lambda x, t: FF.nll_loss(FF.log_softmax(x, 1), t),
                        lambda x, t: F.nll_loss(F.log_softmax(x, 1), t), Sample((x, t), {}, "composed"), grad=True)
    torch.testing.assert_close(loss, F.cross_entropy(x, t))


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(dtype, device):
    for sample in samples(device, dtype):
        x, target = sample.args
        weight, ignore_index = sample.kwargs["weight"], sample.kwargs["ignore_index"]
        w = None if weight is None else weight.double()
        check_opcheck(ops.nll_loss_forward, Sample((x, target, w, ignore_index), {}, sample.desc))
        rows = target.numel()
        grad_rows = torch.randn(rows, dtype=torch.float64, device=device)
        check_opcheck(ops.nll_loss_backward, Sample((grad_rows, x.detach(), target, w, ignore_index), {}, sample.desc))
        red = {"none": 0, "mean": 1, "sum": 2}[sample.kwargs["reduction"]]
        args = (x, target, weight, red, ignore_index)
        if ops.nll_loss(*args).isnan().any():
            # 'mean' over no rows is nan (0 / 0, as torch), and opcheck compares eager with traced outputs as
            # numbers, where nan != nan: check the traced graph's nan directly instead.
            torch._dynamo.reset()
            assert torch.compile(ops.nll_loss, fullgraph=True, backend="aot_eager")(*args).isnan().all()
            continue
        check_opcheck(ops.nll_loss, Sample(args, {}, sample.desc))


@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph_parity(device):
    for reduction in ("mean", "none"):
        for shape, batch in (((9, 5), (9,)), ((3, 5, 4), (3, 4))):
            x = make_tensor(shape, torch.float32, device, requires_grad=True)
            t = torch.randint(0, 5, batch, device=device)
            check_compile_parity(FF.nll_loss, Sample((x, t), {"reduction": reduction, "ignore_index": 1}, reduction),
                                 grad=True)


def test_compile_inductor_dynamic():
    torch._dynamo.reset()
    compiled = torch.compile(lambda x, t: FF.nll_loss(FF.log_softmax(x, 1), t) * 2, fullgraph=True, dynamic=True)
    for n in (5, 17, 300):
        x, t = torch.randn(n, 7), torch.randint(0, 7, (n,))
        torch.testing.assert_close(compiled(x, t), FF.nll_loss(FF.log_softmax(x, 1), t) * 2, rtol=0, atol=0)
        torch.testing.assert_close(compiled(x, t), F.nll_loss(F.log_softmax(x, 1), t) * 2)


@pytest.mark.parametrize("reduction", ("mean", "none"))
@pytest.mark.parametrize("device", DEVICES)
def test_autocast_is_float32_like_torch(reduction, device):
    dtype = torch.bfloat16
    x = torch.randn(8, 5, device=device).to(dtype).requires_grad_()
    t = torch.randint(0, 5, (8,), device=device)
    w = torch.rand(5, device=device) + 0.5
    with torch.autocast(device, dtype=dtype):
        out = FF.nll_loss(x, t, weight=w, reduction=reduction)
        expected = F.nll_loss(x, t, weight=w, reduction=reduction)
    assert out.dtype == expected.dtype == torch.float32
    torch.testing.assert_close(out, expected)
    (g,), (ge,) = torch.autograd.grad(out.sum(), [x]), torch.autograd.grad(expected.sum(), [x])
    assert g.dtype == ge.dtype
    torch.testing.assert_close(g, ge)


def test_module_matches_torch():
    w = torch.rand(5) + 0.5
    x, t = torch.randn(6, 5), torch.tensor([0, 1, 4, 2, 2, 3])
    for kwargs in ({}, {"weight": w, "ignore_index": 2, "reduction": "sum"}, {"reduction": "none"}):
        fast, native = fastops.nn.NLLLoss(**kwargs), torch.nn.NLLLoss(**kwargs)
        assert isinstance(fast, torch.nn.NLLLoss) and repr(fast) == repr(native)
        assert fast.state_dict().keys() == native.state_dict().keys()
        torch.testing.assert_close(fast(x, t), native(x, t))


_x, _t = torch.randn(3, 5), torch.tensor([0, 1, 4])

BAD_INPUTS = [
    (lambda: FF.nll_loss(_x, torch.tensor([0, 5, 1])), IndexError, r"Target 5 is out of bounds\."),
    (lambda: FF.nll_loss(_x, torch.tensor([0, -1, 1])), IndexError, r"Target -1 is out of bounds\."),
    (lambda: FF.nll_loss(_x, torch.tensor([0, 1])), ValueError,
     r"Expected input batch_size \(3\) to match target batch_size \(2\)\."),
    (lambda: FF.nll_loss(_x, _t.float()), RuntimeError, r"expected target dtype to be Long or Byte, but got Float"),
    (lambda: FF.nll_loss(torch.tensor(1.0), torch.tensor(0)), ValueError, r"Expected 1 or more dimensions \(got 0\)"),
    (lambda: FF.nll_loss(torch.randn(5), torch.tensor([1, 2])), ValueError,
     r"For 1D input, 1D target must have size 1, but got target size: 2"),
    (lambda: FF.nll_loss(_x, _t, weight=torch.ones(4)), RuntimeError,
     r"weight tensor should be defined either for all 5 classes or no classes but got weight tensor of shape: \[4\]"),
    (lambda: FF.nll_loss(_x, _t, weight=torch.ones(5, dtype=torch.float64)), RuntimeError,
     r"expected scalar type Float but found Double"),
    (lambda: FF.nll_loss(torch.randn(2, 3, 4, 5), torch.zeros(2, 4, 6, dtype=torch.long)), RuntimeError,
     r"size mismatch \(got input: \[2, 3, 4, 5\] , target: \[2, 4, 6\]"),
    (lambda: FF.nll_loss(torch.randn(2, 3, 4), torch.zeros(2, 5, dtype=torch.long)), RuntimeError,
     r"Expected target size \[2, 4\], got \[2, 5\]"),
    (lambda: FF.nll_loss(_x, _t, reduction="avg"), ValueError, r"avg is not a valid value for reduction"),
    (lambda: FF.nll_loss(_x.long(), _t), RuntimeError, r"input must be float16/bfloat16/float32/float64, got Long"),
    (lambda: FF.nll_loss(_x, _t, weight=torch.ones(5, requires_grad=True)), RuntimeError,
     r"not differentiable with respect to argument 'weight'"),
    (lambda: ops.nll_loss_forward(_x, torch.tensor([0, 1]), None, -100), RuntimeError,
     r"target must have one class per row \(3\), got 2"),
    (lambda: ops.nll_loss_backward(torch.ones(2, dtype=torch.float64), _x, _t, None, -100), RuntimeError,
     r"grad_rows must have shape \[3\], got \[2\]"),
]


@pytest.mark.parametrize("call,error,message", BAD_INPUTS)
def test_bad_input_raises_like_torch(call, error, message):
    with pytest.raises(error, match=message):
        call()


@requires_cuda
@pytest.mark.cuda
def test_cuda_bad_target_raises_without_killing_the_process():
    # No host sync in the call: the bad row's loss is NaN at once, and the error is raised by the next recording call
    # once the GPU has run the bad one (csrc/losses/kernel_errors.h).
    x = torch.randn(4, 10, device="cuda")
    good = torch.tensor([0, 1, 2, 3], device="cuda")
    torch.cuda._sleep(10**7)  # the GPU is still busy when the bad call returns: it raises nothing itself
    loss = FF.nll_loss(x, torch.tensor([0, 1, 10, 2], device="cuda"), reduction="none")
    torch.cuda.synchronize()
    assert torch.isnan(loss[2]) and torch.isfinite(loss[[0, 1, 3]]).all()
    with pytest.raises(IndexError, match=r"Target 10 is out of bounds\."):
        FF.nll_loss(x, good)
    torch.testing.assert_close(FF.nll_loss(x, good), F.nll_loss(x, good))


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_cpu_cuda_parity(dtype):
    for sample in samples("cpu", dtype):
        x, t = sample.args
        xc = x.detach().cuda().requires_grad_()
        kw = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in sample.kwargs.items()}
        y, yc = FF.nll_loss(x, t, **sample.kwargs), FF.nll_loss(xc, t.cuda(), **kw)
        torch.testing.assert_close(yc.cpu(), y, equal_nan=True)
        if y.numel():
            up = torch.randn_like(y)
            (g,), (gc,) = torch.autograd.grad(y, [x], up), torch.autograd.grad(yc, [xc], up.cuda())
            torch.testing.assert_close(gc.cpu(), g)
