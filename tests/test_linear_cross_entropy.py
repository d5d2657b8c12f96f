"""Fused linear + cross entropy against torch's unfused reference (linear, then cross_entropy) and, where torch has
it (>= 2.13), torch's own F.linear_cross_entropy: accuracy, gradients, chunking, compile, autocast, the module."""

import types
import warnings

import pytest
import torch
import torch.nn.functional as F
from reference import DEVICES, FLOAT_DTYPES, Sample, check_against_torch, check_compile_parity, make_tensor

import fastops
import fastops.functional as FF
from fastops.ops import linear_cross_entropy as lce_ops

N, H, V = 13, 24, 37  # primes and odd sizes: GEMM edge tiles, misaligned logits rows


def _chunked(rows: int):
    """torch's options object stands in: fastops reads its batch_chunk_size."""
    return types.SimpleNamespace(batch_chunk_size=rows)


def _reference(x, w, b, t, **kwargs):
    return F.cross_entropy(F.linear(x, w, b), t, **kwargs)


def _fused(rows=None):
    def fn(x, w, b, t, **kwargs):
        return FF.linear_cross_entropy(x, w, t, linear_bias=b, options=_chunked(rows) if rows else None, **kwargs)
    return fn


def _operands(dtype, device, *, bias=True, n=N, probabilities=False):
    # Small values: logits of order 1, where every dtype keeps its relative precision.
    x = make_tensor((n, H), dtype, device, low=-1, high=1, requires_grad=True)
    w = make_tensor((V, H), dtype, device, low=-0.5, high=0.5, requires_grad=True)
    b = make_tensor((V,), dtype, device, low=-1, high=1, requires_grad=True) if bias else None
    if probabilities:
        t = torch.rand(n, V, device=device).softmax(1).to(dtype)
    else:
        t = torch.randint(0, V, (n,), device=device)
        t[::4] = -100
    return x, w, b, t


@pytest.mark.parametrize("reduction", ("mean", "sum", "none"))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_matches_linear_then_cross_entropy(reduction, dtype, device):
    x, w, b, t = _operands(dtype, device)
    class_weight = (torch.rand(V, device=device) + 0.5).to(dtype)
    for rows in (None, 4):  # one chunk, and four chunks of which the last is short
        for kwargs in ({}, {"weight": class_weight, "label_smoothing": 0.1}):
            sample = Sample((x, w, b, t), {"reduction": reduction, **kwargs}, f"rows={rows} {sorted(kwargs)}")
            check_against_torch(_fused(rows), _reference, sample, grad=True)


@pytest.mark.parametrize("device", DEVICES)
def test_probability_targets_and_no_bias(device):
    x, w, _, t = _operands(torch.float32, device, bias=False, probabilities=True)
    for reduction in ("mean", "sum", "none"):
        sample = Sample((x, w, None, t), {"reduction": reduction, "label_smoothing": 0.2}, reduction)
        check_against_torch(_fused(5), _reference, sample, grad=True)


@pytest.mark.parametrize("device", DEVICES)
def test_unbatched_input_ignore_index_and_all_ignored(device):
    x, w, b, t = _operands(torch.float32, device)
    for reduction in ("mean", "none"):
        out = FF.linear_cross_entropy(x[0], w, t[1], linear_bias=b, reduction=reduction)
        torch.testing.assert_close(out, _reference(x[0], w, b, t[1], reduction=reduction))
        t3 = t.clamp(min=0)
        out = FF.linear_cross_entropy(x, w, t3, linear_bias=b, ignore_index=3, reduction=reduction)
        torch.testing.assert_close(out, _reference(x, w, b, t3, ignore_index=3, reduction=reduction))
    ignored = torch.full_like(t, -100)
    out = FF.linear_cross_entropy(x, w, ignored, linear_bias=b)
    assert torch.isnan(out)  # torch: the mean over no rows
    grads = torch.autograd.grad(out, (x, w, b))
    for got, want in zip(grads, torch.autograd.grad(_reference(x, w, b, ignored), (x, w, b))):
        torch.testing.assert_close(got, want, equal_nan=True)


@pytest.mark.skipif(not hasattr(F, "linear_cross_entropy"), reason="torch < 2.13 has no F.linear_cross_entropy")
def test_matches_torch_linear_cross_entropy():
    x, w, b, t = _operands(torch.float32, "cpu")
    for reduction in ("mean", "sum", "none"):
        kwargs = {"linear_bias": b, "reduction": reduction, "label_smoothing": 0.1}
        out, ref = FF.linear_cross_entropy(x, w, t, **kwargs), F.linear_cross_entropy(x, w, t, **kwargs)
        torch.testing.assert_close(out, ref)
        up = torch.rand_like(out)
        for got, want in zip(torch.autograd.grad(out, (x, w, b), up), torch.autograd.grad(ref, (x, w, b), up)):
            torch.testing.assert_close(got, want)


def test_backward_only_scales_and_survives_retain_graph():
    x, w, b, t = _operands(torch.float32, "cpu")
    loss, ref = FF.linear_cross_entropy(x, w, t, linear_bias=b), _reference(x, w, b, t)
    for upstream in (1.0, 2.5, 1.0):
        up = torch.tensor(upstream)
        got = torch.autograd.grad(loss, (x, w, b), up, retain_graph=True)
        for g, r in zip(got, torch.autograd.grad(ref, (x, w, b), up, retain_graph=True)):
            torch.testing.assert_close(g, r)


def test_only_requested_gradients_are_computed():
    x, w, b, t = _operands(torch.float32, "cpu")
    x.requires_grad_(False)
    loss = FF.linear_cross_entropy(x, w, t, linear_bias=b)
    grad_w, grad_b = torch.autograd.grad(loss, (w, b))
    ref_w, ref_b = torch.autograd.grad(_reference(x, w, b, t), (w, b))
    torch.testing.assert_close(grad_w, ref_w)
    torch.testing.assert_close(grad_b, ref_b)
    with torch.no_grad():
        torch.testing.assert_close(FF.linear_cross_entropy(x, w, t, linear_bias=b), _reference(x, w, b, t))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_block_gradients_are_the_full_rows_gradient(device, dtype):
    # cross_entropy_block_grad_ over column blocks of the logits gives cross_entropy_backward's gradient of the
    # whole rows: the one-hot term only in its block, the smoothing mass spread over all the classes.
    n, c = 9, 203
    logits = make_tensor((n, c), dtype, device)
    index = torch.randint(0, c, (n,), device=device)
    index[::3] = -100
    probabilities = torch.rand(n, c, device=device).softmax(1).to(dtype)
    weight = torch.rand(c, device=device, dtype=torch.float64 if dtype == torch.float64 else torch.float32) + 0.5
    scale = torch.rand(n, device=device, dtype=torch.float64)
    for target in (index, probabilities):
        for class_weight, smoothing in ((None, 0.0), (weight, 0.1)):
            _, _, lse, mass = torch.ops.fastops.cross_entropy_forward(logits, target, class_weight, -100, smoothing)
            want = torch.ops.fastops.cross_entropy_backward(scale, logits, target, class_weight, lse, mass, -100,
                                                            smoothing)
            got = []
            for start, stop in ((0, 64), (64, 67), (67, 200), (200, 203)):
                block = logits[:, start:stop].clone()
                block_target = target[:, start:stop] if target.is_floating_point() else target
                block_weight = class_weight[start:stop] if class_weight is not None else None
                torch.ops.fastops.cross_entropy_block_grad_(block, block_target, block_weight, lse, mass, scale,
                                                            start, c, -100, smoothing)
                got.append(block)
            torch.testing.assert_close(torch.cat(got, 1), want)


def test_block_gradient_rejects_classes_past_num_classes():
    logits = torch.randn(3, 10)
    stats = torch.ops.fastops.cross_entropy_forward(logits, torch.zeros(3, dtype=torch.long), None, -100, 0.0)
    with pytest.raises(RuntimeError, match="num_classes"):
        torch.ops.fastops.cross_entropy_block_grad_(logits, torch.zeros(3, dtype=torch.long), None, stats[2],
                                                    stats[3], torch.ones((), dtype=torch.float64), 5, 12, -100, 0.0)


def test_chunk_rows_follow_the_memory_budget():
    assert lce_ops.chunk_rows(8192, 128256, torch.bfloat16) == 512
    assert lce_ops.chunk_rows(10, 128256, torch.bfloat16) == 10
    assert lce_ops.chunk_rows(8192, 2**40, torch.float32) == 1


@pytest.mark.parametrize("device", DEVICES)
def test_autocast_runs_gemms_in_bfloat16_and_returns_float32(device):
    x, w, b, t = _operands(torch.float32, device)
    with torch.autocast(device, dtype=torch.bfloat16):
        out = FF.linear_cross_entropy(x, w, t, linear_bias=b)
        ref = _reference(x, w, b, t)
    assert out.dtype == ref.dtype == torch.float32
    exact = _reference(*(a.double() for a in (x, w, b)), t)
    assert (out - exact).abs() <= 2 * (ref - exact).abs() + torch.finfo(torch.bfloat16).eps


@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph_parity(device):
    x, w, b, t = _operands(torch.float32, device)
    check_compile_parity(lambda x, w, b: FF.linear_cross_entropy(x, w, t, linear_bias=b) * 2,
                         Sample((x, w, b), {}, "mean"), grad=True)
    check_compile_parity(lambda x, w, b: FF.linear_cross_entropy(x, w, t, linear_bias=b, reduction="none"),
                         Sample((x, w, b), {}, "none"), grad=True)


def test_k_dimensional_weight_runs_unfused_with_a_warning():
    x = torch.randn(6, H, requires_grad=True)
    w = torch.randn(V, 3, H, requires_grad=True)
    t = torch.randint(0, V, (6, 3))
    with pytest.warns(UserWarning, match="K-dimensional"):
        out = FF.linear_cross_entropy(x, w, t)
    ref = F.cross_entropy(F.linear(x, w.reshape(-1, H)).reshape(6, V, 3), t)
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("call, message", [
    (lambda x, w, t: FF.linear_cross_entropy(x[None], w, t), "dimensionality 1 or 2"),
    (lambda x, w, t: FF.linear_cross_entropy(x, w[0], t), "linear_weight with dimensionality"),
    (lambda x, w, t: FF.linear_cross_entropy(x[:, :5], w, t), "in_features"),
    (lambda x, w, t: FF.linear_cross_entropy(x, w, t, linear_bias=w[:, 0][:-1]), "linear_bias shape"),
    (lambda x, w, t: FF.linear_cross_entropy(x, w, torch.rand(N, V), ignore_index=1), "probabilities"),
    (lambda x, w, t: FF.linear_cross_entropy(x, w, t, reduction="avg"), "not a valid value for reduction"),
    (lambda x, w, t: FF.linear_cross_entropy(x, w, t.clamp(min=0) + V), "out of bounds"),
    (lambda x, w, t: FF.linear_cross_entropy(x, w.double(), t), "dtype"),
])
def test_bad_input(call, message):
    x, w, _, t = _operands(torch.float32, "cpu", bias=False)
    with pytest.raises((RuntimeError, ValueError, IndexError), match=message):
        call(x, w, t)


def test_module_is_a_drop_in_for_torch():
    torch.manual_seed(0)
    module = fastops.nn.LinearCrossEntropyLoss(H, V, bias=True, label_smoothing=0.1, weight=torch.rand(V))
    assert sorted(module.state_dict()) == ["linear.bias", "linear.weight", "weight"]
    x, _, _, t = _operands(torch.float32, "cpu")
    ref = _reference(x, module.linear.weight, module.linear.bias, t, weight=module.weight, label_smoothing=0.1)
    torch.testing.assert_close(module(x, t), ref)
    if hasattr(torch.nn, "LinearCrossEntropyLoss"):
        theirs = torch.nn.LinearCrossEntropyLoss(H, V, bias=True, label_smoothing=0.1, weight=torch.rand(V))
        theirs.load_state_dict(module.state_dict())
        module.load_state_dict(theirs.state_dict())
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            torch.testing.assert_close(module(x, t), theirs(x, t))


@pytest.mark.skipif(not hasattr(torch.nn, "LinearCrossEntropyLoss"), reason="torch < 2.13")
def test_convert_swaps_torchs_module():
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"head": torch.nn.LinearCrossEntropyLoss(H, V, bias=True)})
    x, _, _, t = _operands(torch.float32, "cpu")
    want = model["head"](x, t)
    fastops.nn.convert(model)
    assert type(model["head"]) is fastops.nn.LinearCrossEntropyLoss
    assert model.fastops_swapped == {"LinearCrossEntropyLoss": 1}
    torch.testing.assert_close(model["head"](x, t), want)
