"""CPU results do not depend on the thread count, bitwise: every op runs on 1, 2, 3 and 4 threads (odd splits put
task boundaries at other elements) on inputs large enough to be split, and must give the same bits each time.

The CPU kernels fix the order of every sum by the shape alone: elementwise maps split their range at multiples of
two vectors (the scalar tail is the same elements whatever the split), column sums and reduced losses add fixed
chunks in order, and the GEMM decides its K split from the shape (csrc/matmul/matmul_cpu.cpp, "Threading")."""

import pytest
import torch

import fastops.functional as FF

THREADS = (1, 2, 3, 4)


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _outputs_and_grads(fn, args):
    """fn(*args) and the gradients of every argument that requires grad, for a fixed upstream gradient."""
    out = fn(*args)
    inputs = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    if not inputs:
        return (out,)
    upstream = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7)).to(out.dtype)
    return (out.detach(),) + torch.autograd.grad(out, inputs, upstream)


def _assert_same_on_every_thread_count(fn, *args):
    results = {}
    for threads in THREADS:
        torch.set_num_threads(threads)
        results[threads] = _outputs_and_grads(fn, args)
    for threads in THREADS[1:]:
        for i, (one, other) in enumerate(zip(results[1], results[threads])):
            assert torch.equal(one, other), (
                f"result {i} differs between 1 and {threads} threads: max |diff| "
                f"{(one.double() - other.double()).abs().max().item():.3g}")


def _randn(*shape, dtype=torch.float32, scale=3.0, seed=0, requires_grad=True):
    # Drawn in float64, so that float64 inputs carry full mantissas (float32 values summed in double are exact).
    t = (torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * scale).to(dtype)
    return t.requires_grad_(requires_grad)


# 100003 elements: past the parallel grain (32768) and not a multiple of any vector width.
ELEMENTWISE = {
    "relu": FF.relu, "gelu": FF.gelu, "gelu_tanh": lambda x: FF.gelu(x, approximate="tanh"), "silu": FF.silu,
    "leaky_relu": FF.leaky_relu, "sigmoid": FF.sigmoid, "tanh": FF.tanh,
}


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_activations(name, dtype):
    _assert_same_on_every_thread_count(ELEMENTWISE[name], _randn(100003, dtype=dtype))


# float64 as well where sums are involved: float32 results of sums taken in double round most reorderings away.
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16, torch.float64), ids=str)
def test_fused_activations(dtype):
    for rows, cols in ((5000, 37), (3, 40001)):
        _assert_same_on_every_thread_count(FF.geglu, _randn(rows, 2 * cols, dtype=dtype))
        _assert_same_on_every_thread_count(FF.swiglu, _randn(rows, cols, dtype=dtype),
                                           _randn(rows, cols, dtype=dtype, seed=1))
        _assert_same_on_every_thread_count(lambda x, b: FF.bias_act(x, b, "gelu"), _randn(rows, cols, dtype=dtype),
                                           _randn(cols, dtype=dtype, seed=1))


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16, torch.float64), ids=str)
@pytest.mark.parametrize("reduction", ("none", "mean", "sum"))
def test_pointwise_losses(reduction, dtype):
    x, t = _randn(100003, dtype=dtype), _randn(100003, dtype=dtype, seed=1, requires_grad=False)
    for fn in (FF.mse_loss, FF.smooth_l1_loss, FF.huber_loss):
        _assert_same_on_every_thread_count(lambda a, b, fn=fn: fn(a, b, reduction=reduction), x, t)
    _assert_same_on_every_thread_count(
        lambda a, b: FF.binary_cross_entropy_with_logits(a, b, reduction=reduction), x, t.sigmoid())


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
def test_cross_entropy(dtype):
    # 20000 rows: split across threads, and few enough that the reduction over rows (torch's float64 sum) runs on
    # one thread.
    logits = _randn(20000, 7, dtype=dtype)
    target = torch.randint(0, 7, (20000,), generator=torch.Generator().manual_seed(1))
    for kwargs in ({}, {"label_smoothing": 0.1}, {"reduction": "none"}):
        _assert_same_on_every_thread_count(lambda z, t, kw=kwargs: FF.cross_entropy(z, t, **kw), logits, target)


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
@pytest.mark.parametrize("m,k,n", ((300, 700, 1100), (5, 9000, 37), (1, 5000, 300), (2100, 33, 64)),
                         ids=("panels", "split_k", "row", "many_row_blocks"))
def test_matmul(m, k, n, dtype):
    _assert_same_on_every_thread_count(FF.matmul, _randn(m, k, dtype=dtype, scale=1.0),
                                       _randn(k, n, dtype=dtype, scale=1.0, seed=1))


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16, torch.float64), ids=str)
def test_linear_and_its_gradients(dtype):
    # The weight gradient sums over 20000 rows (split K), the bias gradient is a column sum over them.
    x, w, b = (_randn(*shape, dtype=dtype, scale=1.0, seed=s) for s, shape in enumerate(((20000, 64), (48, 64), (48,))))
    _assert_same_on_every_thread_count(FF.linear, x, w, b)
    _assert_same_on_every_thread_count(lambda *a: FF.linear(*a, activation="gelu"), x, w, b)


def test_linear_cross_entropy():
    x, w = _randn(3000, 33, scale=1.0), _randn(31, 33, scale=1.0, seed=1)
    target = torch.randint(0, 31, (3000,), generator=torch.Generator().manual_seed(2))
    _assert_same_on_every_thread_count(lambda a, b, t: FF.linear_cross_entropy(a, b, t), x, w, target)
