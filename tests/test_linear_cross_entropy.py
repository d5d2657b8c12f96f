"""Fused linear + cross entropy against torch's unfused reference (linear, then cross_entropy) and, where torch has
it (>= 2.13), torch's own F.linear_cross_entropy: accuracy, gradients, chunking, compile, autocast, the module."""

import os
import pickle
import subprocess
import sys
import types
import warnings

import pytest
import torch
import torch.nn.functional as F
from reference import DEVICES, FLOAT_DTYPES, Sample, check_against_torch, check_compile_parity, make_tensor
from torch._C._profiler import _EventType

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


def _operands(dtype, device, *, bias=True, n=N, h=H, v=V, probabilities=False, layout="contiguous"):
    # Small values: logits of order 1, where every dtype keeps its relative precision.
    x = make_tensor((n, h), dtype, device, layout=layout, low=-1, high=1, requires_grad=True)
    w = make_tensor((v, h), dtype, device, layout=layout, low=-0.5, high=0.5, requires_grad=True)
    b = make_tensor((v,), dtype, device, layout=layout, low=-1, high=1, requires_grad=True) if bias else None
    if probabilities:
        t = torch.rand(n, v, device=device).softmax(1).to(dtype)
    else:
        t = torch.randint(0, v, (n,), device=device)
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


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float32), ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_probability_targets_and_no_bias_matches_torch(device, dtype):
    x, w, _, t = _operands(dtype, device, bias=False, probabilities=True)
    t.requires_grad_()  # torch differentiates probability targets too
    for reduction in ("mean", "sum", "none"):
        for rows in (None, 5):
            sample = Sample((x, w, None, t), {"reduction": reduction, "label_smoothing": 0.2}, f"{reduction} {rows}")
            check_against_torch(_fused(rows), _reference, sample, grad=True)


def _with_class_weight(fn):
    """fn with the class weight as a positional argument, so that check_against_torch differentiates it."""
    def call(x, w, b, t, class_weight, **kwargs):
        return fn(x, w, b, t, weight=class_weight, **kwargs)
    return call


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float32), ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_class_weight_gradient_with_probability_targets_matches_torch(device, dtype):
    x, w, b, t = _operands(dtype, device, probabilities=True)
    class_weight = (torch.rand(V, device=device) + 0.5).to(dtype).requires_grad_()
    for reduction in ("mean", "sum", "none"):
        for smoothing in (0.0, 0.1):
            sample = Sample((x, w, b, t, class_weight), {"reduction": reduction, "label_smoothing": smoothing},
                            f"{reduction} ls={smoothing}")
            check_against_torch(_with_class_weight(_fused(4)), _with_class_weight(_reference), sample, grad=True)


@pytest.mark.parametrize("layout", ("contiguous", "transposed", "sliced", "offset1"))
@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float32), ids=str)
def test_many_chunks_and_vocabulary_blocks_matches_torch(dtype, layout, monkeypatch):
    # op_db's chunked samples use batch_chunk_size=2: 128 chunks here. A 16-bit weight gradient accumulated over
    # them measured 6.3x torch's error (rounded once per chunk); each vocabulary block's weight gradient must come
    # from one GEMM over all 256 tokens. CHUNK_BYTES makes that 3 blocks (64, 64, 3 classes).
    monkeypatch.setattr(lce_ops, "CHUNK_BYTES", 64 * 256 * 2)
    n, h, v = 256, 16, 131
    x, w, b, t = _operands(dtype, "cpu", n=n, h=h, v=v, layout=layout)
    probabilities = _operands(dtype, "cpu", n=n, h=h, v=v, probabilities=True)[3].requires_grad_()
    class_weight = (torch.rand(v) + 0.5).to(dtype)
    configs = ({}, {"weight": class_weight, "label_smoothing": 0.1})
    for reduction in ("mean", "sum", "none"):
        for target in (t, probabilities):
            for kwargs in configs:
                sample = Sample((x, w, b, target), {"reduction": reduction, **kwargs},
                                f"{reduction} {target.dtype} {sorted(kwargs)}")
                check_against_torch(_fused(2), _reference, sample, grad=True)


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


@pytest.mark.parametrize("reduction", ("mean", "sum"))
def test_retained_graph_backward_sees_the_first_gradients(reduction):
    # Each backward must see the gradients the forward saved, whatever factor an earlier one applied (an in-place
    # scaling by 0 followed by a rescaling by 1 / 0 gave NaN).
    x, w, b, t = _operands(torch.float32, "cpu")
    loss = FF.linear_cross_entropy(x, w, t, linear_bias=b, reduction=reduction)
    ref = _reference(x, w, b, t, reduction=reduction)
    for upstream in (0.0, 1.0, 2.5, 1.0, -3.0, 1.0):
        up = torch.tensor(upstream)
        got = torch.autograd.grad(loss, (x, w, b), up, retain_graph=True)
        for g, r in zip(got, torch.autograd.grad(ref, (x, w, b), up, retain_graph=True)):
            torch.testing.assert_close(g, r)


def test_backward_of_an_upstream_one_does_no_work():
    # loss.backward()'s upstream gradient is exactly 1: the backward returns the gradients the forward computed
    # (the same memory every time), scaling nothing.
    x, w, b, t = _operands(torch.float32, "cpu")
    loss = FF.linear_cross_entropy(x, w, t, linear_bias=b)
    first = torch.autograd.grad(loss, (x, w, b), retain_graph=True)
    again = torch.autograd.grad(loss, (x, w, b))
    assert [g.data_ptr() for g in first] == [g.data_ptr() for g in again]


@pytest.mark.parametrize("reduction", ("mean", "sum", "none"))
@pytest.mark.parametrize("targets", ("index", "probabilities"))
def test_double_backward_gradgradcheck(reduction, targets):
    x, w, b, t = _operands(torch.float64, "cpu", n=5, h=4, v=6, probabilities=targets == "probabilities")
    class_weight = torch.rand(6, dtype=torch.float64) + 0.5
    inputs = (x, w, b, t.requires_grad_()) if targets == "probabilities" else (x, w, b)

    def fn(x, w, b, t_=t):
        return FF.linear_cross_entropy(x, w, t_, linear_bias=b, weight=class_weight, reduction=reduction,
                                       label_smoothing=0.1, options=_chunked(2))

    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("reduction", ("mean", "none"))
def test_double_backward_in_float32_matches_torch(reduction):
    x, w, b, t = _operands(torch.float32, "cpu")
    results = []
    for fn in (_fused(4), _reference):
        loss = fn(x, w, b, t, reduction=reduction)
        up = torch.ones_like(loss) if loss.dim() == 0 else torch.linspace(-1, 1, loss.numel())
        (g,) = torch.autograd.grad(loss, x, up, create_graph=True)
        results.append(torch.autograd.grad(g.pow(2).sum(), (x, w, b)))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want)


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


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_pass_1_and_pass_2_compute_the_same_logits(device, dtype):
    # Pass 2 softmaxes each vocabulary block's logits (all tokens in one GEMM) with the log-sum-exp pass 1 took from
    # its chunks' logits (all classes in one GEMM): the two GEMMs must agree bitwise, element by element.
    for n, h, v, rows, block in ((2, 16, 1, 1, 64), (64, 33, 257, 3, 64), (256, 16, 131, 2, 64), (300, 512, 1000, 128,
                                                                                                    192)):
        x = make_tensor((n, h), dtype, device)
        w = make_tensor((v, h), dtype, device)
        b = make_tensor((v,), dtype, device)
        chunks = lce_ops.token_chunks(n, rows, True)
        by_chunk = torch.cat([torch.ops.fastops.linear(x[start:stop], w, b) for start, stop in chunks])
        by_block = torch.cat([torch.ops.fastops.linear(x, w[start:start + block], b[start:start + block])
                              for start in range(0, v, block)], 1)
        assert torch.equal(by_chunk, by_block), (n, h, v, rows)


def test_token_chunks_never_leave_a_single_row_for_pass_2():
    assert lce_ops.token_chunks(7, 3, False) == [(0, 3), (3, 6), (6, 7)]
    assert lce_ops.token_chunks(7, 3, True) == [(0, 3), (3, 7)]
    assert lce_ops.token_chunks(5, 1, True) == [(0, 2), (2, 5)]
    assert lce_ops.token_chunks(3, 1, True) == [(0, 3)]


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


# Arguments torch's F.linear_cross_entropy refuses, as changes to the good call (x [N, H], w [V, H], targets t), with
# the message fastops must give: the same exception type as torch's, naming the argument.
BAD_ARGUMENTS = {
    "target one row longer": (lambda x, w, t: {"target": torch.cat([t, t[:1]])}, "target batch_size"),
    "target one row shorter": (lambda x, w, t: {"target": t[1:]}, "target batch_size"),
    "int64 target of the logits' shape": (lambda x, w, t: {"target": torch.randint(0, V, (N, V))},
                                          "Expected floating point type for target with class probabilities"),
    "2-D class-index target": (lambda x, w, t: {"target": torch.randint(0, V, (N, 2))}, "1D target"),
    "0-d target for a batch": (lambda x, w, t: {"target": t[0]}, "target batch_size"),
    "int32 target": (lambda x, w, t: {"target": t.int()}, "target dtype"),
    "unbatched input, two targets": (lambda x, w, t: {"input": x[0], "target": t[:2].clamp(min=0)}, "target size"),
    "weight one short": (lambda x, w, t: {"weight": torch.rand(V - 1)}, "weight"),
    "weight two long": (lambda x, w, t: {"weight": torch.rand(V + 2)}, "weight"),
    "2-D weight": (lambda x, w, t: {"weight": torch.rand(V, 1)}, "weight"),
    "float64 weight": (lambda x, w, t: {"weight": torch.rand(V, dtype=torch.float64)}, "weight"),
    "int64 weight": (lambda x, w, t: {"weight": torch.ones(V, dtype=torch.int64)}, "weight"),
    "float16 weight": (lambda x, w, t: {"weight": torch.rand(V, dtype=torch.float16)}, "weight"),
    "weight requiring grad": (lambda x, w, t: {"weight": torch.rand(V, requires_grad=True)}, "weight"),
    "weight requiring grad, smoothing": (lambda x, w, t: {"weight": torch.rand(V, requires_grad=True),
                                                          "label_smoothing": 0.1}, "weight"),
    "target on another device": (lambda x, w, t: {"target": t.to("meta")}, "target is on device meta"),
    "weight on another device": (lambda x, w, t: {"weight": torch.rand(V, device="meta")}, "weight is on device meta"),
}


@pytest.mark.skipif(not hasattr(F, "linear_cross_entropy"), reason="torch < 2.13 has no F.linear_cross_entropy")
@pytest.mark.parametrize("case", BAD_ARGUMENTS)
def test_bad_arguments_raise_what_torch_raises(case):
    change, message = BAD_ARGUMENTS[case]
    x, w, _, t = _operands(torch.float32, "cpu", bias=False)
    kwargs = {"input": x, "linear_weight": w, "target": t, **change(x, w, t)}
    with pytest.raises(Exception) as theirs:
        F.linear_cross_entropy(**kwargs)
    with pytest.raises(type(theirs.value), match=message) as ours:
        FF.linear_cross_entropy(**kwargs)
    assert type(ours.value) is type(theirs.value)


@pytest.mark.skipif(not hasattr(F, "linear_cross_entropy"), reason="torch < 2.13 has no F.linear_cross_entropy")
@pytest.mark.parametrize("case", ["uint8 targets", "unbatched input, one target", "float64 probabilities",
                                  "probabilities, float64 weight", "probabilities, int64 weight",
                                  "weight requiring grad without grad mode"])
def test_arguments_torch_accepts_give_its_result(case):
    x, w, b, t = _operands(torch.float32, "cpu")
    p = torch.rand(N, V).softmax(1)
    kwargs = {
        "uint8 targets": {"target": t.clamp(min=0).to(torch.uint8)},
        "unbatched input, one target": {"input": x[0], "target": t[1:2]},
        "float64 probabilities": {"target": p.double()},
        "probabilities, float64 weight": {"target": p, "weight": torch.rand(V, dtype=torch.float64) + 0.5},
        "probabilities, int64 weight": {"target": p, "weight": torch.randint(1, 3, (V,))},
        "weight requiring grad without grad mode": {"weight": torch.rand(V, requires_grad=True)},
    }[case]
    kwargs = {"input": x, "linear_weight": w, "target": t, "linear_bias": b, **kwargs}
    with torch.set_grad_enabled(case != "weight requiring grad without grad mode"):
        out, ref = FF.linear_cross_entropy(**kwargs), F.linear_cross_entropy(**kwargs)
    assert out.dtype == ref.dtype and out.shape == ref.shape
    torch.testing.assert_close(out, ref, check_dtype=False, atol=1e-5, rtol=1e-5)


def _peak_extra_bytes(run) -> int:
    """Peak CPU memory allocated during run() beyond what was allocated before it (torch's allocator events)."""
    run()  # warm up: first-call allocations (thread pools, packed weights) are not the op's
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        run()

    def walk(events):
        for e in events:
            yield e
            yield from walk(e.children)

    allocations = sorted((e.start_time_ns, e.extra_fields.alloc_size, e.extra_fields.total_allocated)
                         for e in walk(prof.profiler.kineto_results.experimental_event_tree())
                         if e.tag == _EventType.Allocation and str(e.extra_fields.device) == "cpu")
    base = allocations[0][2] - allocations[0][1]
    return max(a[2] for a in allocations) - base


def test_peak_memory_is_the_gradients_plus_one_chunk(monkeypatch):
    # The headline shape's proportions scaled down (tokens x hidden x vocabulary 8192 x 4096 x 128256 -> 512 x 64 x
    # 2048, the chunk budget with them): 8 chunks of tokens, 8 vocabulary blocks.
    n, h, v = 512, 64, 2048
    monkeypatch.setattr(lce_ops, "CHUNK_BYTES", 64 * v * 2)
    x = (torch.randn(n, h) / h**0.5).bfloat16().requires_grad_()
    w = torch.randn(v, h, dtype=torch.bfloat16, requires_grad=True)
    t = torch.randint(0, v, (n,))

    def step(fn):
        return lambda: torch.autograd.grad(fn(x, w, t), (x, w))

    ours = _peak_extra_bytes(step(lambda x, w, t: FF.linear_cross_entropy(x, w, t)))
    theirs = _peak_extra_bytes(step(lambda x, w, t: F.cross_entropy(F.linear(x, w), t)))
    gradients = (n * h + v * h) * 2
    # The gradients, one chunk of logits and per-row statistics (a few float64 per token).
    assert ours <= gradients + lce_ops.CHUNK_BYTES + 64 * n, (ours, gradients)
    assert 4 * ours <= theirs, (ours, theirs)


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


def _options_outcome(fn, dtype, options, **kwargs):
    """What fn does with torch's options: (exception type, message) or (loss dtype, warnings); the values are torch's
    OpInfo / ModuleInfo suites' to check (tests/test_torch_opinfo.py, tests/test_torch_modules.py)."""
    torch.manual_seed(0)
    x, w = torch.randn(8, 3, dtype=dtype), torch.randn(5, 3, dtype=dtype)
    t = torch.randint(0, 5, (8,))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loss = fn(x, w, t, options=options, **kwargs)
    except Exception as e:  # noqa: BLE001 - the outcome compared is the exception itself
        return type(e), str(e)
    return loss.dtype, [str(c.message) for c in caught]


@pytest.mark.skipif(not hasattr(torch.nn, "LinearCrossEntropyOptions"), reason="torch < 2.13")
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16, torch.float16), ids=str)
@pytest.mark.parametrize("case", ["default", "acc_float32", "acc_own", "acc_float64", "acc_other_16bit", "compact",
                                  "chunks_conflict", "aspect_ratio", "label_smoothing", "none"])
def test_options_follow_torchs_rules(case, dtype):
    """torch's LinearCrossEntropyOptions as torch reads them: its acc_dtype rule (float32 only for 16-bit inputs; the
    loss keeps the input's dtype), its chunk-size resolution and ValueError, its warning where it ignores them."""
    O = torch.nn.LinearCrossEntropyOptions
    other = torch.float16 if dtype == torch.bfloat16 else torch.bfloat16
    options, kwargs = {
        "default": (O(), {}), "acc_float32": (O(acc_dtype=torch.float32), {}), "acc_own": (O(acc_dtype=dtype), {}),
        "acc_float64": (O(acc_dtype=torch.float64), {}), "acc_other_16bit": (O(acc_dtype=other), {}),
        "compact": (O(acc_policy="compact", batch_chunk_size=3), {"reduction": "sum"}),
        "chunks_conflict": (O(batch_chunk_size=3, chunking_method="aspect_ratio"), {}),
        "aspect_ratio": (O(chunking_method="aspect_ratio:2"), {"reduction": "none"}),
        "label_smoothing": (O(batch_chunk_size=2), {"label_smoothing": 0.1}),
        "none": (O(batch_chunk_size=2), {"reduction": "none"}),
    }[case]
    ours = _options_outcome(FF.linear_cross_entropy, dtype, options, **kwargs)
    theirs = _options_outcome(F.linear_cross_entropy, dtype, options, **kwargs)
    assert ours == theirs


@pytest.mark.skipif(not hasattr(torch.nn, "LinearCrossEntropyLoss"), reason="torch < 2.13")
@pytest.mark.parametrize("kwargs", [{}, {"bias": True}, {"out_features": (4, 3)},
                                    {"reduction": "sum", "ignore_index": 1, "label_smoothing": 0.1}, "weight",
                                    "options"], ids=str)
def test_module_repr_state_dict_pickle_and_modes_match_torch(kwargs):
    if kwargs == "weight":
        kwargs = {"weight": torch.rand(2)}
    elif kwargs == "options":
        kwargs = {"options": torch.nn.LinearCrossEntropyOptions(batch_chunk_size=2)}
    torch.manual_seed(0)
    ours = fastops.nn.LinearCrossEntropyLoss(3, 2, **kwargs)
    theirs = torch.nn.LinearCrossEntropyLoss(3, 2, **kwargs)
    assert repr(ours) == repr(theirs)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    theirs.load_state_dict(ours.state_dict())
    copy = pickle.loads(pickle.dumps(ours))
    assert repr(copy) == repr(ours)
    x = torch.randn(5, 3)
    t = torch.randint(0, 2, (5, *kwargs.get("out_features", ())))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the K-dimensional weight's "runs unfused"; torch's options note
        torch.testing.assert_close(copy(x, t), theirs(x, t))
    for module in (ours, theirs):
        module.eval()
    assert [m.training for m in ours.modules()] == [m.training for m in theirs.modules()] == [False, False]
    ours.train()
    assert all(m.training for m in ours.modules())


class _Classifier(torch.nn.Module):
    """A body and a LinearCrossEntropyLoss head, as a language model's last layers."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Linear(8, H)
        self.head = fastops.nn.LinearCrossEntropyLoss(H, V, bias=True, label_smoothing=0.1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.body(x)), t)


_TRAIN = """
import sys, torch, fastops
model = torch.jit.load(sys.argv[1])
io = torch.load(sys.argv[2])
out = model(io["x"], io["t"])
torch.testing.assert_close(out, io["loss"])
grads = torch.autograd.grad(out, list(model.parameters()))
for g, want in zip(grads, io["grads"]):
    torch.testing.assert_close(g, want)
optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
for _ in range(5):
    optimizer.zero_grad()
    loss = model(io["x"], io["t"])
    loss.backward()
    optimizer.step()
torch.testing.assert_close(loss, io["trained"])
print("ok")
"""


@pytest.mark.parametrize("how", ("script", "trace"))
def test_torchscript_model_saves_loads_in_a_fresh_process_and_trains(how, tmp_path):
    torch.manual_seed(0)
    model = _Classifier()
    x, t = torch.randn(N, 8), torch.randint(0, V, (N,))
    with torch.no_grad():  # a model traced for inference still trains
        compiled = torch.jit.script(model) if how == "script" else torch.jit.trace(model, (x, t))
    loss = model(x, t)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    torch.testing.assert_close(compiled(x, t), loss)
    reference = _Classifier()
    reference.load_state_dict(model.state_dict())
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.5)
    for _ in range(5):
        optimizer.zero_grad()
        trained = reference(x, t)
        trained.backward()
        optimizer.step()
    compiled.save(str(tmp_path / "model.pt"))
    torch.save({"x": x, "t": t, "loss": loss.detach(), "grads": grads, "trained": trained.detach()},
               tmp_path / "io.pt")
    result = subprocess.run([sys.executable, "-c", _TRAIN, str(tmp_path / "model.pt"), str(tmp_path / "io.pt")],
                            capture_output=True, text=True, timeout=300, check=False,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_operators_pass_opcheck():
    x, w, b, t = _operands(torch.float32, "cpu")
    p = _operands(torch.float32, "cpu", probabilities=True)[3].requires_grad_()
    scale = torch.full((), 1 / N, dtype=torch.float64)
    for target in (t, p):
        needs = [True, True, True, target.requires_grad, False]
        torch.library.opcheck(torch.ops.fastops.linear_cross_entropy,
                              (x, w, target, b, None, -100, 0.1, scale, 4, needs))
        torch.library.opcheck(torch.ops.fastops.linear_cross_entropy_rows, (x, w, target, b, None, -100, 0.1, 4))
    with torch.no_grad():
        logits = F.linear(x, w, b)
        _, _, lse, mass = torch.ops.fastops.cross_entropy_forward(logits, t, None, -100, 0.1)
    torch.library.opcheck(torch.ops.fastops.cross_entropy_block_grad_,
                          (logits[:, 8:20].contiguous(), t, None, lse, mass, scale, 8, V, -100, 0.1))
