"""CUDA runtime behaviour of every op: side streams, two streams at once, CUDA graph capture/replay, a device other
than the current one, and tensors past 2^31 elements. GPU only (skipped on CPU machines); every op family adds its
forward and backward kernels to RUNTIME_CASES."""

import pytest
import torch
from reference import requires_cuda

import fastops

pytestmark = [requires_cuda, pytest.mark.cuda]

ops = torch.ops.fastops


def _randn(*shape, dtype=torch.float32, device="cuda"):
    return torch.randn(*shape, dtype=dtype, device=device)


# name -> (make_inputs(device) -> tuple of tensors, fn(*inputs) -> tensor). Inputs are regenerated per test.
def _unary(d):
    return (_randn(1000, 37, device=d),)


def _binary(d):
    return (_randn(1000, 37, device=d), _randn(1000, 37, device=d))


def _bias_act(d):
    return (_randn(1000, 37, device=d), _randn(37, device=d))


def _on_a_copy(in_place_op):
    """An in-place op as a function of its inputs: it mutates a copy of the first one and returns it."""
    def fn(first, *rest):
        out = first.clone()
        in_place_op(out, *rest)
        return out
    return fn


RUNTIME_CASES = {
    "relu": (_unary, ops.relu),
    "relu_backward": (_binary, ops.relu_backward),
    "gelu": (_unary, ops.gelu),
    "gelu_backward": (_binary, ops.gelu_backward),
    "gelu_tanh_backward": (_binary, lambda g, x: ops.gelu_backward(g, x, approximate="tanh")),
    "silu": (_unary, ops.silu),
    "silu_backward": (_binary, ops.silu_backward),
    "leaky_relu": (_unary, ops.leaky_relu),
    "leaky_relu_backward": (_binary, ops.leaky_relu_backward),
    "sigmoid_backward": (_binary, ops.sigmoid_backward),
    "tanh_backward": (_binary, ops.tanh_backward),
    "bias_act": (_bias_act, lambda x, b: ops.bias_act(x, b, "gelu")),
    "bias_act_backward": (lambda d: (*_binary(d), _randn(37, device=d)),
                          lambda g, x, b: torch.cat([t.reshape(-1) for t in ops.bias_act_backward(g, x, b, "gelu")])),
    "swiglu": (_binary, ops.swiglu),
    "swiglu_packed": (lambda d: (_randn(1000, 2 * 37, device=d),), ops.swiglu.packed),
    "cross_entropy": (lambda d: (_randn(64, 1000, device=d), torch.randint(0, 1000, (64,), device=d)),
                      fastops.functional.cross_entropy),
    "mse_loss": (_binary, fastops.functional.mse_loss),
    "matmul": (lambda d: (_randn(200, 96, device=d, dtype=torch.bfloat16), _randn(96, 136, device=d,
                                                                                   dtype=torch.bfloat16)), ops.matmul),
    "linear": (lambda d: (_randn(200, 96, device=d), _randn(136, 96, device=d), _randn(136, device=d)), ops.linear),
    "cross_entropy_loss_forward_grad": (
        lambda d: (_randn(64, 1000, device=d), torch.randint(0, 1000, (64,), device=d)),
        lambda x, t: torch.cat([r.reshape(-1).double()
                                for r in ops.cross_entropy_loss_forward_grad(x, t, None, 1, -100, 0.1, x.dtype)])),
    "scale_rows_": (lambda d: (_randn(64, 1000, device=d), torch.rand(64, device=d, dtype=torch.float64)),
                    _on_a_copy(ops.scale_rows_)),
    "linear_cross_entropy": (
        lambda d: (_randn(64, 96, device=d), _randn(1000, 96, device=d), torch.randint(0, 1000, (64,), device=d)),
        lambda x, w, t: torch.cat([r.reshape(-1).double() for r in torch.ops.fastops.linear_cross_entropy(
            x, w, t, None, None, -100, 0.0, torch.ones((), dtype=torch.float64, device=x.device), 24,
            [True, True, False, False, False])])),
    "cross_entropy_block_grad_": (
        lambda d: (_randn(64, 1000, device=d), torch.randint(0, 3000, (64,), device=d),
                   torch.rand(64, device=d, dtype=torch.float64) + 8, torch.rand(64, device=d) + 1,
                   torch.rand(64, device=d, dtype=torch.float64)),
        _on_a_copy(lambda x, t, lse, mass, s: ops.cross_entropy_block_grad_(x, t, None, lse, mass, s, 1000, 3000,
                                                                            -100, 0.1))),
    "matmul_accumulate_": (lambda d: (_randn(200, 136, device=d), _randn(96, 200, device=d).mT, _randn(96, 136,
                                                                                                     device=d)),
                           _on_a_copy(ops.matmul_accumulate_)),
    "glu_backward": (lambda d: (*_binary(d), _randn(1000, 37, device=d)),
                     lambda g, a, b: torch.cat([t.reshape(-1) for t in ops.glu_backward(g, a, b, "silu")])),
}


@pytest.mark.parametrize("name", RUNTIME_CASES)
def test_side_stream_matches_default_stream(name):
    make, fn = RUNTIME_CASES[name]
    inputs = make("cuda")
    expected = fn(*inputs)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        out = fn(*inputs)
    torch.cuda.current_stream().wait_stream(side)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", RUNTIME_CASES)
def test_two_streams_at_once(name):
    make, fn = RUNTIME_CASES[name]
    inputs_a, inputs_b = make("cuda"), make("cuda")
    expected_a, expected_b = fn(*inputs_a), fn(*inputs_b)
    streams = torch.cuda.Stream(), torch.cuda.Stream()
    for s in streams:
        s.wait_stream(torch.cuda.current_stream())
    outs = []
    for _ in range(5):  # interleave launches so the streams overlap
        for s, inputs in zip(streams, (inputs_a, inputs_b)):
            with torch.cuda.stream(s):
                outs.append(fn(*inputs))
    for s in streams:
        torch.cuda.current_stream().wait_stream(s)
    for i, out in enumerate(outs):
        torch.testing.assert_close(out, expected_a if i % 2 == 0 else expected_b, rtol=0, atol=0)


@pytest.mark.parametrize("name", RUNTIME_CASES)
def test_cuda_graph_capture_and_replay(name):
    make, fn = RUNTIME_CASES[name]
    static_inputs = make("cuda")
    warmup = torch.cuda.Stream()
    warmup.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(warmup):  # allocator warm-up outside capture, as torch.cuda.graph requires
        fn(*static_inputs)
    torch.cuda.current_stream().wait_stream(warmup)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = fn(*static_inputs)
    for _ in range(2):
        fresh = make("cuda")
        for s, f in zip(static_inputs, fresh):
            s.copy_(f)
        graph.replay()
        torch.testing.assert_close(static_out, fn(*fresh), rtol=0, atol=0)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("name", RUNTIME_CASES)
def test_tensors_on_non_current_device(name):
    make, fn = RUNTIME_CASES[name]
    inputs = make("cuda:1")
    with torch.cuda.device(0):
        out = fn(*inputs)
    assert out.device == torch.device("cuda:1")
    torch.testing.assert_close(out.cpu(), fn(*[t.cpu() for t in inputs]))


def _free_gib() -> float:
    free, _ = torch.cuda.mem_get_info()
    return free / 2**30


@pytest.mark.slow
def test_relu_past_int32_indexing():
    n = 2**31 + 17  # one past what 32-bit indices reach, plus a tail that does not fill a 16-byte pack
    if _free_gib() < 6 * n * 2 / 2**30:  # x, y, grad and torch's references, 4 GiB each
        pytest.skip("not enough GPU memory")
    x = torch.randn(n, dtype=torch.bfloat16, device="cuda")
    y = ops.relu(x)
    assert torch.equal(y, torch.relu(x))
    grad = ops.relu_backward(x, y)  # x stands in for the incoming gradient
    assert torch.equal(grad, torch.where(y > 0, x, torch.zeros_like(x)))


@pytest.mark.slow
def test_gelu_past_int32_indexing():
    n = 2**31 + 17
    if _free_gib() < 6 * n * 2 / 2**30:
        pytest.skip("not enough GPU memory")
    x = torch.randn(n, dtype=torch.bfloat16, device="cuda")
    y = ops.gelu(x)
    # The tail past 2^31 against torch on the same slice (a whole-tensor reference would double the memory).
    tail = slice(2**31 - 1000, n)
    torch.testing.assert_close(y[tail], torch.nn.functional.gelu(x[tail]))
    assert torch.isfinite(y).all()


@pytest.mark.slow
def test_cross_entropy_past_int32_indexing():
    n, c = 2**15 + 1, 65537  # N * C > 2^31; rows start at every misalignment
    if _free_gib() < 3 * n * c * 2 / 2**30 + 1:
        pytest.skip("not enough GPU memory")
    x = torch.randn(n, c, dtype=torch.bfloat16, device="cuda", requires_grad=True)
    t = torch.randint(0, c, (n,), device="cuda")
    loss = fastops.functional.cross_entropy(x, t, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    last = slice(n - 8, n)  # the rows whose elements lie past 2^31
    with torch.no_grad():
        row_losses = torch.nn.functional.cross_entropy(x[last].float(), t[last], reduction="none")
        mine = fastops.functional.cross_entropy(x[last], t[last], reduction="none")
    torch.testing.assert_close(mine.float(), row_losses, rtol=2e-2, atol=2e-2)
    rows = x[last].detach().requires_grad_()
    want = torch.autograd.grad(torch.nn.functional.cross_entropy(rows, t[last], reduction="sum"), rows)[0]
    torch.testing.assert_close(grad[last], want)
    assert torch.isfinite(loss)


@pytest.mark.slow
def test_matmul_past_int32_indexing():
    m, n, k = 65536, 32776, 64  # C has m * n > 2^31 elements
    if _free_gib() < 2 * m * n * 2 / 2**30 + 1:
        pytest.skip("not enough GPU memory")
    a = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(k, n, dtype=torch.bfloat16, device="cuda")
    c = ops.matmul(a, b)
    last = slice(m - 16, m)
    torch.testing.assert_close(c[last], torch.matmul(a[last], b))
