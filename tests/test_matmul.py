"""The matmul family against torch: matmul (2-D, batched, broadcast, 1-D), linear, bias_grad, matmul_accumulate_
and nn.Linear — accuracy, gradients, registration (opcheck), torch.compile, autocast, TF32, bad input."""

import functools

import pytest
import torch
import torch.nn.functional as F
from reference import (
    DEVICES,
    FLOAT_DTYPES,
    MATMUL_LAYOUTS,
    MATMUL_MEDIUM_SHAPE,
    MATMUL_SHAPES,
    Sample,
    assert_accurate,
    check_against_torch,
    check_compile_parity,
    check_gradcheck,
    check_opcheck,
    make_tensor,
    matmul_samples,
    max_error,
    requires_cuda,
    to_reference,
)

import fastops
from fastops.bench.core import tf32_allowed

ops = torch.ops.fastops


def _exactly_summable(sample: Sample) -> Sample:
    """Rounds the operands to multiples of 1/64 so that every product and partial sum is exact in float64: torch's
    float64 result then *is* the exact one, and the accuracy rule (error <= 2x torch's) demands exactness from
    fastops too instead of comparing two float64 summation orders against each other."""
    with torch.no_grad():
        for t in sample.args:
            if isinstance(t, torch.Tensor):
                t.mul_(64).round_().div_(64)
    return sample


def _accuracy_samples(device, dtype, requires_grad, shapes=MATMUL_SHAPES):
    for sample in matmul_samples(device, dtype, requires_grad=requires_grad, shapes=shapes):
        yield _exactly_summable(sample) if dtype == torch.float64 else sample


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_matmul_matches_torch(dtype, device):
    # float64 gradients are checked by gradcheck: their upstream gradient is not exactly summable.
    for sample in _accuracy_samples(device, dtype, requires_grad=True):
        check_against_torch(ops.matmul, torch.matmul, sample, grad=dtype != torch.float64)


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float32), ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_matmul_medium_shape_crosses_every_block(dtype, device):
    for sample in matmul_samples(device, dtype, shapes=(MATMUL_MEDIUM_SHAPE,), layouts=(("contiguous", "mT"),)):
        check_against_torch(ops.matmul, torch.matmul, sample)


# A small output over a long K: the CPU kernel splits K into chunks summed apart (run_split in matmul_cpu.cpp), in
# matmul (row-major and transposed operands), in linear with a bias, and in linear's weight gradient (K = tokens, the
# shape that motivated the split), for every dtype the chunks' partial sums carry.
LONG_K_SHAPES = (((), (), 5, 9000, 37), ((), (), 29, 12345, 7))


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float32), ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_matmul_long_k_split_matches_torch(dtype, device):
    for sample in matmul_samples(device, dtype, shapes=LONG_K_SHAPES, layouts=(("contiguous", "contiguous"),
                                                                               ("mT", "mT"))):
        check_against_torch(ops.matmul, torch.matmul, sample)
    gen = torch.Generator().manual_seed(3)
    x = make_tensor((9000, 37), dtype, device, requires_grad=True, generator=gen)
    w = make_tensor((5, 37), dtype, device, requires_grad=True, generator=gen)
    b = make_tensor((5,), dtype, device, requires_grad=True, generator=gen)
    check_against_torch(fastops.functional.linear, F.linear, Sample((x, w, b), {}, "weight gradient over 9000 rows"),
                        grad=True)
    x_long, w_long, b_long = (make_tensor(shape, dtype, device, generator=gen)
                              for shape in ((3, 9000), (37, 9000), (37,)))
    check_against_torch(fastops.functional.linear, F.linear, Sample((x_long, w_long, b_long), {}, "long K, bias"))
    for sample in accumulate_samples(device, dtype, shapes=((5, 9000, 37),), layouts=(("mT", "contiguous"),)):
        check_accumulate_against_torch(sample)
    if device == "cpu":
        # The CPU kernel computes an output narrower than its tile (n = 7) transposed, C^T = B^T A^T: the same sums in
        # the same order as the product of the transposed operands (n = 29), transposed back, which it must equal.
        a, b = (make_tensor(shape, dtype, device, generator=gen) for shape in ((29, 12345), (12345, 7)))
        assert torch.equal(ops.matmul(a, b), ops.matmul(b.mT, a.mT).mT)


def test_cpu_one_row_product_is_correctly_rounded():
    # The CPU kernel sums a one-row product (m == 1: a single token's logits, a decode step) in double and rounds
    # once, so each float32 output is the float64 product rounded (barring ties closer than K double ulps, which
    # these seeds do not hit). With float partial sums, linear_cross_entropy's weight gradient over one token erred
    # past the accuracy rule on an AVX2-only AMD EPYC: the softmax gradient carries the logits'
    # rounding into every element.
    gen = torch.Generator().manual_seed(11)
    a, b, c = (make_tensor(shape, torch.float32, "cpu", generator=gen) for shape in ((1, 1000), (1000, 300), (1, 300)))
    w, bias = b.t().contiguous(), c[0]
    exact = to_reference(a) @ to_reference(b)
    assert torch.equal(ops.matmul(a, b), exact.float())
    assert torch.equal(ops.linear(a, w, bias), (exact + to_reference(bias)).float())
    assert torch.equal(_accumulated(c, a, b), (to_reference(c) + exact).float())


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float32), ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_matmul_reads_expanded_views_in_place(dtype, device):
    # Stride 0 along the first dim: a batch stride of 0 (3-D) or a leading dimension of 0 (2-D, repeated rows).
    for a_shape, b_shape in (((4, 5, 6), (4, 6, 3)), ((5, 6), (6, 7)), ((3, 1, 9), (1, 9, 33))):
        a = make_tensor(a_shape, dtype, device, layout="expanded")
        b = make_tensor(b_shape, dtype, device, layout="expanded")
        check_against_torch(ops.matmul, torch.matmul, Sample((a, b), {}, f"{a_shape}x{b_shape}-expanded"))


# (a shape, b shape) pairs covering torch.matmul's 1-D promotion rules.
VECTOR_CASES = (((7,), (7,)), ((7,), (7, 3)), ((4, 7), (7,)), ((2, 4, 7), (7,)), ((7,), (2, 7, 3)))


@pytest.mark.parametrize("shapes", VECTOR_CASES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_functional_matmul_handles_vectors_like_torch(shapes, device):
    a, b = (make_tensor(s, torch.float32, device, requires_grad=True) for s in shapes)
    check_against_torch(fastops.functional.matmul, torch.matmul, Sample((a, b), {}, str(shapes)), grad=True)


def linear_samples(device, dtype, requires_grad=False):
    """(x, weight, bias) with x of 1, 2 and 3 dims, transposed / sliced operands, and no bias."""
    gen = torch.Generator().manual_seed(0)
    cases = (((7,), 7, 3, True, "contiguous", "contiguous"),
             ((1, 1), 1, 1, True, "contiguous", "contiguous"),
             ((13, 17), 17, 19, True, "mT", "contiguous"),
             ((13, 17), 17, 19, False, "contiguous", "mT"),
             ((2, 3, 33), 33, 10, True, "contiguous", "sliced"),
             ((3, 4, 40), 40, 12, True, "transposed", "offset1"),
             ((0, 5), 5, 4, True, "contiguous", "contiguous"),
             ((4, 0), 0, 3, True, "contiguous", "contiguous"),
             ((3, 0), 0, 3, False, "contiguous", "contiguous"),
             ((6, 300), 300, 70, True, "contiguous", "contiguous"))
    for x_shape, fan_in, fan_out, has_bias, x_layout, w_layout in cases:
        def make(shape, layout):
            return make_tensor(shape, dtype, device, layout=layout, requires_grad=requires_grad, generator=gen)
        x = make(x_shape, x_layout)
        w = make((fan_out, fan_in), w_layout)
        args = (x, w, make((fan_out,), "contiguous")) if has_bias else (x, w)
        yield Sample(args, {}, f"x{x_shape}-{x_layout}-w{(fan_out, fan_in)}-{w_layout}-bias={has_bias}")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_linear_matches_torch(dtype, device):
    for sample in linear_samples(device, dtype, requires_grad=True):
        if dtype == torch.float64:
            sample = _exactly_summable(sample)
        check_against_torch(fastops.functional.linear, F.linear, sample, grad=dtype != torch.float64)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_bias_grad_matches_torch_sum(dtype, device):
    for shape in ((1,), (5, 3), (2, 7, 33), (1000, 17), (0, 4), (3, 0)):
        g = make_tensor(shape, dtype, device)
        if dtype == torch.float64:
            g = _exactly_summable(Sample((g,), {}, "")).args[0]

        def native(t):
            return t.sum(dim=tuple(range(t.dim() - 1))) if t.dim() > 1 else t.clone()

        check_against_torch(ops.bias_grad, native, Sample((g,), {}, str(shape)))


def test_gradcheck_matmul():
    small = [s for s in MATMUL_SHAPES if s[3] * (s[2] + s[4]) <= 400]  # finite differences cost one call per input
    for sample in matmul_samples("cpu", torch.float64, requires_grad=True, shapes=small,
                                 layouts=(("contiguous", "mT"), ("sliced", "offset1"))):
        check_gradcheck(ops.matmul, sample)


def test_double_backward():
    x = make_tensor((3, 4), torch.float64, "cpu", requires_grad=True)
    w = make_tensor((5, 4), torch.float64, "cpu", requires_grad=True)
    b = make_tensor((5,), torch.float64, "cpu", requires_grad=True)
    assert torch.autograd.gradgradcheck(fastops.functional.linear, (x, w, b))
    assert torch.autograd.gradgradcheck(fastops.functional.matmul, (x, w.t()))


def test_gradcheck_linear_and_bias_grad():
    for sample in linear_samples("cpu", torch.float64, requires_grad=True):
        if sample.args[0].numel() <= 300:
            check_gradcheck(fastops.functional.linear, sample)
    g = make_tensor((3, 4, 5), torch.float64, "cpu", requires_grad=True)
    check_gradcheck(ops.bias_grad, Sample((g,), {}, "3x4x5"))


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(dtype, device):
    for sample in matmul_samples(device, dtype, requires_grad=True, shapes=MATMUL_SHAPES[::2],
                                 layouts=(("contiguous", "mT"),)):
        check_opcheck(ops.matmul, sample)
    for sample in linear_samples(device, dtype, requires_grad=True):
        check_opcheck(ops.linear, sample)
    check_opcheck(ops.bias_grad, Sample((make_tensor((4, 6), dtype, device, requires_grad=True),), {}, "4x6"))


@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph_parity(device):
    for sample in matmul_samples(device, torch.float32, requires_grad=True, shapes=MATMUL_SHAPES[5:9],
                                 layouts=(("mT", "contiguous"),)):
        check_compile_parity(fastops.functional.matmul, sample, grad=True)
    for sample in linear_samples(device, torch.float32, requires_grad=True):
        if sample.args[0].numel() > 0:
            check_compile_parity(fastops.functional.linear, sample, grad=True)


def test_compile_inductor_linear_dynamic():
    torch._dynamo.reset()
    w, b = torch.randn(8, 16), torch.randn(8)
    compiled = torch.compile(lambda x: fastops.functional.linear(x, w, b) * 2, fullgraph=True, dynamic=True)
    for rows in (3, 17, 40):
        x = torch.randn(rows, 16)
        torch.testing.assert_close(compiled(x), fastops.functional.linear(x, w, b) * 2, rtol=0, atol=0)


@pytest.mark.parametrize("autocast_dtype", (torch.bfloat16, torch.float16), ids=str)
def test_autocast_runs_in_the_current_autocast_dtype(autocast_dtype):
    x, w, b = torch.randn(9, 33), torch.randn(5, 33), torch.randn(5)
    with torch.autocast("cpu", dtype=autocast_dtype):
        out = fastops.functional.linear(x, w, b)
        native = F.linear(x, w, b)
        prod = fastops.functional.matmul(x, w.t())
    assert out.dtype == native.dtype == prod.dtype == autocast_dtype
    cast = [t.to(autocast_dtype) for t in (x, w, b)]
    assert_accurate(out, native, F.linear(*map(to_reference, cast)))
    assert_accurate(prod, torch.matmul(cast[0], cast[1].t()), torch.matmul(*map(to_reference, (cast[0], cast[1].t()))))
    with torch.autocast("cpu", dtype=autocast_dtype):  # float64 is not an autocast type: it keeps its precision
        assert fastops.functional.linear(x.double(), w.double()).dtype == torch.float64


def test_autocast_under_compile_and_backward():
    x, w = torch.randn(9, 33, requires_grad=True), torch.randn(5, 33, requires_grad=True)

    def f(x, w):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fastops.functional.linear(x, w)

    torch._dynamo.reset()
    eager, compiled = f(x, w), torch.compile(f, fullgraph=True, backend="aot_eager")(x, w)
    assert compiled.dtype == eager.dtype == torch.bfloat16
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)
    gx, gw = torch.autograd.grad(eager.float().sum(), (x, w))
    assert gx.dtype == gw.dtype == torch.float32  # gradients flow back through the cast to the inputs' dtype


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("shape", (MATMUL_SHAPES[3], MATMUL_SHAPES[4], MATMUL_SHAPES[6], ((), (), 300, 257, 129)),
                         ids=str)
def test_cuda_tf32_follows_torch_precision_setting(shape):
    # Each precision setting is checked against torch under the same setting (TF32 error is torch's TF32 error).
    prev = torch.get_float32_matmul_precision()
    try:
        for precision in ("high", "highest"):
            torch.set_float32_matmul_precision(precision)
            for sample in matmul_samples("cuda", torch.float32, shapes=(shape,)):
                check_against_torch(ops.matmul, torch.matmul, sample)
    finally:
        torch.set_float32_matmul_precision(prev)


@requires_cuda
@pytest.mark.cuda
def test_cuda_tf32_switch_changes_the_kernel():
    a, b = make_tensor((300, 257), torch.float32, "cuda"), make_tensor((257, 129), torch.float32, "cuda")
    with tf32_allowed(True):
        tf32 = ops.matmul(a, b)
    with tf32_allowed(False):
        full = ops.matmul(a, b)
    ref = torch.matmul(to_reference(a), to_reference(b))
    assert max_error(full, ref) < max_error(tf32, ref)  # 10-bit TF32 mantissas: visibly less accurate


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_cuda_larger_shapes_and_alignment(dtype):
    # Sizes around tile edges, K not a multiple of the K tile, and odd leading dimensions (scalar load paths).
    shapes = (((), (), 129, 65, 257), ((2,), (2,), 64, 128, 64), ((), (), 1, 4096, 1), ((), (), 255, 33, 7),
              ((), (), 512, 1000, 384))
    for sample in matmul_samples("cuda", dtype, shapes=shapes):
        if dtype == torch.float64:
            sample = _exactly_summable(sample)
        check_against_torch(ops.matmul, torch.matmul, sample)


# Shapes that select each variant of the Hopper (sm_90a) kernel on an H100/H200: 128 x 128 tiles with split-K
# (decode-like M = 128), 128 x 256 tiles in 2-CTA clusters on a large grid, the same with an odd number of M-blocks
# (the last cluster's upper CTA computes a tile below C) and a last N-block of 56 columns (the upper CTA's half of B
# lies wholly outside B; a 16-bit C stores one TMA chunk there, an odd count), and edge tiles in M, N and K. On
# other GPUs they run the mma.sync kernel, which must pass the same rule.
HOPPER_SHAPES = ((128, 4096, 4096), (2048, 4096, 1024), (2100, 3896, 264), (1000, 520, 1000), (136, 264, 72))


def every_tensor_core_path(test):
    """CUDA only, over the tensor-core dtypes x HOPPER_SHAPES x the four operand layouts. float32 runs with TF32
    allowed (fastops and torch alike): the Hopper kernel's TF32 wgmma when both operands are K-major (Linear's
    forward), the mma.sync kernel otherwise."""

    @functools.wraps(test)
    def with_tf32_allowed(**kwargs):
        with tf32_allowed(True):
            test(**kwargs)

    test = with_tf32_allowed
    for mark in (pytest.mark.parametrize("layout_a,layout_b", (("contiguous", "contiguous"), ("contiguous", "mT"),
                                                               ("mT", "contiguous"), ("mT", "mT"))),
                 pytest.mark.parametrize("m,n,k", HOPPER_SHAPES),
                 pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16, torch.float32), ids=str),
                 pytest.mark.cuda, requires_cuda):
        test = mark(test)
    return test


@every_tensor_core_path
def test_cuda_tensor_core_paths_every_layout(dtype, m, n, k, layout_a, layout_b):
    a = make_tensor((m, k), dtype, "cuda", layout=layout_a, low=-2, high=2)
    b = make_tensor((k, n), dtype, "cuda", layout=layout_b, low=-2, high=2)
    bias = make_tensor((n,), dtype, "cuda")
    ref = a.double() @ b.double()  # float64 on the GPU: the CPU would take seconds for these sizes
    assert_accurate(ops.matmul(a, b), torch.matmul(a, b), ref)
    # linear reads its weight [n, k] transposed: the other B layout, plus the fused bias.
    weight = b.t()
    assert_accurate(ops.linear(a, weight, bias), F.linear(a, weight, bias), ref + bias.double())


# The Hopper kernel's later steps change where data moves, never the arithmetic: the same wgmma sequence per tile, the
# same rounding. With clusters (B multicast) or the TMA-store epilogue switched off, every output must be bitwise the
# same. (On other GPUs the switches change nothing and the test holds trivially.)
SM90_VARIANTS = {"no clusters": {"FASTOPS_SM90_NO_CLUSTER": "1"}, "direct stores": {"FASTOPS_SM90_DIRECT_STORE": "1"}}


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float32), ids=str)
@pytest.mark.parametrize("m,n,k", HOPPER_SHAPES)
def test_cuda_hopper_variants_agree_bitwise(monkeypatch, dtype, m, n, k):
    a = make_tensor((m, k), dtype, "cuda", low=-2, high=2)
    weight = make_tensor((n, k), dtype, "cuda", low=-2, high=2)
    bias = make_tensor((n,), dtype, "cuda")
    calls = {
        "linear": lambda: ops.linear(a, weight, bias),
        "linear_act": lambda: ops.linear_act(a, weight, bias, "gelu", True),  # output and pre-activation
    }
    with tf32_allowed(True):  # float32 on TF32 wgmma (K-major operands: Linear's forward)
        for name, call in calls.items():
            expected = call()
            for variant, variables in SM90_VARIANTS.items():
                with monkeypatch.context() as env:
                    for key, value in variables.items():
                        env.setenv(key, value)
                    ops._refresh_kernel_switches()  # the switches are read once per process otherwise
                    got = call()
                ops._refresh_kernel_switches()
                for e, g in zip(torch.utils._pytree.tree_leaves(expected), torch.utils._pytree.tree_leaves(got)):
                    assert torch.equal(e, g), f"{name} with {variant} differs at {m}x{n}x{k}"


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_cpu_cuda_parity(dtype):
    a, b = make_tensor((70, 90), dtype, "cpu"), make_tensor((90, 50), dtype, "cpu")
    if dtype == torch.float64:
        a, b = _exactly_summable(Sample((a, b), {}, "")).args
    with tf32_allowed(False):
        out_cuda = ops.matmul(a.cuda(), b.cuda()).cpu()
    ref = torch.matmul(to_reference(a), to_reference(b))
    assert_accurate(out_cuda, ops.matmul(a, b), ref)


# The bfloat16 CPU GEMM runs on AMX tiles where the CPU has them; FASTOPS_CPU_GEMM_FALLBACK=1 (read at every call)
# forces the portable kernel. (m, k, n): sizes that are not multiples of the 32 x 32 x 32 tile block, one row (the
# m == 1 path), and a K past the 256-deep K slice (the float workspace carries the sum across slices).
FALLBACK_SHAPES = ((1, 1, 1), (17, 65, 33), (100, 31, 257), (1, 300, 70), (70, 600, 300))


def test_cpu_bf16_gemm_fast_path_matches_fallback(monkeypatch):
    gen = torch.Generator().manual_seed(5)
    samples = matmul_samples("cpu", torch.bfloat16, shapes=[((), (), m, k, n) for m, k, n in FALLBACK_SHAPES])
    for sample in samples:
        a, b = sample.args
        bias = make_tensor((b.shape[1],), torch.bfloat16, "cpu", generator=gen)
        out = make_tensor((a.shape[0], b.shape[1]), torch.bfloat16, "cpu", generator=gen)
        # Every epilogue: plain, bias (linear reads its weight transposed), accumulate into an existing out.
        calls = {
            "matmul": (lambda a=a, b=b: ops.matmul(a, b), to_reference(a) @ to_reference(b)),
            "linear": (lambda a=a, b=b, bias=bias: ops.linear(a, b.t(), bias),
                       to_reference(a) @ to_reference(b) + to_reference(bias)),
            "accumulate": (lambda a=a, b=b, out=out: _accumulated(out, a, b),
                           to_reference(out) + to_reference(a) @ to_reference(b)),
        }
        for name, (call, ref) in calls.items():
            fast = call()
            with monkeypatch.context() as env:
                env.setenv("FASTOPS_CPU_GEMM_FALLBACK", "1")
                fallback = call()
            assert_accurate(fast, fallback, ref, what=f"{name} {sample.desc}")


def test_module_is_drop_in():
    torch.manual_seed(3)
    fast = fastops.nn.Linear(20, 7)
    torch.manual_seed(3)
    native = torch.nn.Linear(20, 7)
    assert fast.state_dict().keys() == native.state_dict().keys()
    for name, value in native.state_dict().items():  # same reset_parameters: identical init from the same seed
        torch.testing.assert_close(fast.state_dict()[name], value, rtol=0, atol=0)
    other = torch.nn.Linear(20, 7)
    fast.load_state_dict(other.state_dict())
    native.load_state_dict(fast.state_dict())
    x = torch.randn(4, 5, 20)
    ref = F.linear(*map(to_reference, (x, other.weight, other.bias)))
    assert_accurate(fast(x), other(x), ref)
    no_bias = fastops.nn.Linear(3, 2, bias=False, dtype=torch.float64)
    assert no_bias.bias is None and no_bias.weight.dtype == torch.float64
    assert repr(no_bias) == repr(torch.nn.Linear(3, 2, bias=False))


def test_module_trains():
    model = torch.nn.Sequential(fastops.nn.Linear(4, 16), torch.nn.Tanh(), fastops.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(64, 4)
    y = x.sum(dim=1, keepdim=True)
    first = None
    for _ in range(50):
        loss = F.mse_loss(model(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first


BAD_INPUTS = [
    (lambda: ops.matmul(torch.zeros(2, 3), torch.zeros(4, 5)),
     r"fastops\.matmul: a's last dim \(3\) must equal b's second-to-last dim \(4\)"),
    (lambda: ops.matmul(torch.zeros(3), torch.zeros(3, 2)), r"fastops\.matmul: a and b must have at least 2 dims"),
    (lambda: ops.matmul(torch.zeros(2, 2, 3), torch.zeros(3, 3, 4)), r"fastops\.matmul: batch dims .* cannot be broadcast"),
    (lambda: ops.matmul(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long)),
     r"fastops\.matmul: a must be float16/bfloat16/float32/float64, got Long"),
    (lambda: ops.matmul(torch.zeros(2, 3), torch.zeros(3, 2, dtype=torch.float64)),
     r"fastops\.matmul: b must have the dtype of a \(Float\), got Double"),
    (lambda: ops.linear(torch.zeros(2, 3), torch.zeros(4, 5)),
     r"fastops\.linear: x's last dim \(3\) must equal weight's in_features \(5\)"),
    (lambda: ops.linear(torch.zeros(2, 3), torch.zeros(3)), r"fastops\.linear: weight must be 2-D"),
    (lambda: ops.linear(torch.zeros(2, 3), torch.zeros(4, 3), torch.zeros(5)),
     r"fastops\.linear: bias must have shape \[4\], got \[5\]"),
    (lambda: ops.linear(torch.zeros(2, 3), torch.zeros(4, 3), torch.zeros(4, dtype=torch.float16)),
     r"fastops\.linear: bias must have the dtype of x \(Float\), got Half"),
    (lambda: ops.linear(torch.tensor(1.0), torch.zeros(4, 1)), r"fastops\.linear: x must have at least 1 dim"),
    (lambda: ops.bias_grad(torch.tensor(1.0)), r"fastops\.bias_grad: grad_output must have at least 1 dim"),
    (lambda: fastops.functional.matmul(torch.tensor(1.0), torch.zeros(2)), r"need to be at least 1D"),
]


@pytest.mark.parametrize("call,message", BAD_INPUTS)
def test_bad_input_raises_clear_error(call, message):
    with pytest.raises(RuntimeError, match=message):
        call()


@requires_cuda
@pytest.mark.cuda
def test_cpu_cuda_mix_is_rejected():
    with pytest.raises(RuntimeError, match=r"b must be on the device of a"):
        ops.matmul(torch.zeros(2, 2, device="cuda"), torch.zeros(2, 2))


# ---- matmul_accumulate_: out += a @ b in place ----

# (m, k, n): 1x1x1; a single row (the CPU's m == 1 path); primes; K past the CPU kernel's 256-deep K slice (the old
# out must join the sum once across slices) and not a multiple of any tile; a small output with a long K, which the
# Hopper kernel splits over K (the old out must be added once, not once per split); empty outputs and K == 0.
ACCUMULATE_SHAPES = ((1, 1, 1), (1, 300, 70), (13, 17, 19), (67, 300, 45), (37, 601, 53), (64, 2048, 256),
                     (0, 4, 3), (5, 0, 3))


def accumulate_samples(device, dtype, shapes=ACCUMULATE_SHAPES, layouts=MATMUL_LAYOUTS):
    """(out, a, b) triples: matmul_samples' operand pairs plus a random row-major out to accumulate into."""
    gen = torch.Generator().manual_seed(2)
    for sample in matmul_samples(device, dtype, shapes=[((), (), m, k, n) for m, k, n in shapes], layouts=layouts):
        a, b = sample.args
        out = make_tensor((a.shape[0], b.shape[1]), dtype, device, generator=gen)
        yield Sample((out, a, b), {}, sample.desc)


def _accumulated(out, a, b):
    result = out.clone()
    ops.matmul_accumulate_(result, a, b)
    return result


def check_accumulate_against_torch(sample):
    out, a, b = sample.args
    fast = _accumulated(out, a, b)
    native = out.clone().addmm_(a, b)
    ref = to_reference(out) + to_reference(a) @ to_reference(b)
    assert_accurate(fast, native, ref, what=sample.desc)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_matmul_accumulate_matches_torch_addmm(dtype, device):
    for sample in accumulate_samples(device, dtype):
        check_accumulate_against_torch(_exactly_summable(sample) if dtype == torch.float64 else sample)


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float32), ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_matmul_accumulate_medium_shape_crosses_every_block(dtype, device):
    # Row blocks, K slices and column panels of the CPU kernel; several tiles in every dim on the GPU.
    for sample in accumulate_samples(device, dtype, shapes=((150, 520, 2100),), layouts=(("mT", "contiguous"),)):
        check_accumulate_against_torch(sample)


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float32), ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_matmul_accumulate_sums_chunks_into_a_weight_gradient(dtype, device):
    # The fused linear + cross-entropy use: grad_w (V, H) += g_c^T (V, n_c) . x_c (n_c, H) over token chunks, with
    # g_c^T a transposed view of the chunk's logits gradient (n_c, V). Compared with torch doing the same chunked
    # addmm_, against the float64 sum of the chunks' products.
    vocab, hidden, chunk, chunks = 67, 45, 300, 3
    g = make_tensor((chunk * chunks, vocab), dtype, device)
    x = make_tensor((chunk * chunks, hidden), dtype, device)
    fast = torch.zeros(vocab, hidden, dtype=dtype, device=device)
    native = fast.clone()
    for c in range(chunks):
        rows = slice(c * chunk, (c + 1) * chunk)
        ops.matmul_accumulate_(fast, g[rows].mT, x[rows])
        native.addmm_(g[rows].mT, x[rows])
    ref = torch.zeros(vocab, hidden, dtype=torch.float64)
    for c in range(chunks):
        rows = slice(c * chunk, (c + 1) * chunk)
        ref += to_reference(g[rows]).mT @ to_reference(x[rows])
    assert_accurate(fast, native, ref)


@pytest.mark.parametrize("device", DEVICES)
def test_matmul_accumulate_writes_only_out_rows_of_a_wider_matrix(device):
    # out may be a column slice of a wider matrix (rows ldc elements apart): the columns beside it stay untouched.
    wide = make_tensor((13, 30), torch.float32, device)
    before = wide.clone()
    a, b = make_tensor((13, 17), torch.float32, device), make_tensor((17, 19), torch.float32, device)
    ops.matmul_accumulate_(wide[:, 5:24], a, b)
    assert torch.equal(wide[:, :5], before[:, :5]) and torch.equal(wide[:, 24:], before[:, 24:])
    ref = to_reference(before[:, 5:24]) + to_reference(a) @ to_reference(b)
    assert_accurate(wide[:, 5:24], before[:, 5:24].clone().addmm_(a, b), ref)


@pytest.mark.parametrize("device", DEVICES)
def test_matmul_accumulate_on_tensors_that_require_grad(device):
    # Allowed under no_grad (the way a gradient computation calls it), with out's version bumped like any in-place
    # op; refused in grad mode, where it would silently leave the product out of the autograd graph.
    a = make_tensor((4, 6), torch.float32, device, requires_grad=True)
    b = make_tensor((6, 5), torch.float32, device, requires_grad=True)
    out = make_tensor((4, 5), torch.float32, device, requires_grad=True)
    ref = to_reference(out) + to_reference(a) @ to_reference(b)
    native = out.detach().clone().addmm_(a.detach(), b.detach())
    with torch.no_grad():
        version = out._version
        ops.matmul_accumulate_(out, a, b)
    assert out._version > version
    assert_accurate(out.detach(), native, ref)
    with pytest.raises(RuntimeError, match=r"fastops\.matmul_accumulate_ has no autograd formula: call it under "
                                           r"torch\.no_grad\(\)"):
        ops.matmul_accumulate_(torch.zeros(4, 5, device=device), a, b)
    saved = torch.zeros(4, 5, device=device, requires_grad=True).exp()  # exp saves its output for the backward
    with torch.no_grad():
        ops.matmul_accumulate_(saved, a, b)
    with pytest.raises(RuntimeError, match=r"modified by an inplace operation"):
        saved.sum().backward()


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_matmul_accumulate_opcheck_and_compile(dtype, device):
    for sample in accumulate_samples(device, dtype, shapes=ACCUMULATE_SHAPES[2:5], layouts=(("mT", "contiguous"),)):
        check_opcheck(ops.matmul_accumulate_, sample)

    def accumulate_twice(out, a, b):
        out = out.clone()
        ops.matmul_accumulate_(out, a, b)
        ops.matmul_accumulate_(out, a, b)
        return out

    for sample in accumulate_samples(device, dtype, shapes=ACCUMULATE_SHAPES[3:4], layouts=(("mT", "contiguous"),)):
        check_compile_parity(accumulate_twice, sample)


_SHARED = torch.zeros(6, 4)  # storage shared by out and an operand (the checks fail before anything is written)
ACCUMULATE_BAD_INPUTS = [
    (lambda: ops.matmul_accumulate_(torch.zeros(2, 4), torch.zeros(2, 3, dtype=torch.float64), torch.zeros(3, 4)),
     r"fastops\.matmul_accumulate_: a must have the dtype of out \(Float\), got Double"),
    (lambda: ops.matmul_accumulate_(torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 3), torch.zeros(3, 4)),
     r"fastops\.matmul_accumulate_: out must be float16/bfloat16/float32/float64, got Long"),
    (lambda: ops.matmul_accumulate_(torch.zeros(2, 4), torch.zeros(2, 3), torch.zeros(5, 4)),
     r"fastops\.matmul_accumulate_: a's columns \(3\) must equal b's rows \(5\)"),
    (lambda: ops.matmul_accumulate_(torch.zeros(3, 4), torch.zeros(2, 3), torch.zeros(3, 4)),
     r"fastops\.matmul_accumulate_: out must have shape \[2, 4\] \(a's rows, b's columns\), got \[3, 4\]"),
    (lambda: ops.matmul_accumulate_(torch.zeros(2, 4), torch.zeros(1, 2, 3), torch.zeros(3, 4)),
     r"fastops\.matmul_accumulate_: out, a and b must be 2-D, got 2, 3 and 2 dims"),
    (lambda: ops.matmul_accumulate_(torch.zeros(4, 2).t(), torch.zeros(2, 3), torch.zeros(3, 4)),
     r"fastops\.matmul_accumulate_: out must be row-major \(unit column stride, rows not overlapping\)"),
    (lambda: ops.matmul_accumulate_(torch.zeros(1, 4).expand(2, 4), torch.zeros(2, 3), torch.zeros(3, 4)),
     r"fastops\.matmul_accumulate_: out must be row-major"),
    (lambda: ops.matmul_accumulate_(_SHARED[:3, :3], _SHARED[:3, :3], torch.zeros(3, 3)),
     r"fastops\.matmul_accumulate_: out must not share memory with a"),
    (lambda: ops.matmul_accumulate_(_SHARED[:3], torch.zeros(3, 4), _SHARED[2:]),
     r"fastops\.matmul_accumulate_: out must not share memory with b"),
]


@pytest.mark.parametrize("call,message", ACCUMULATE_BAD_INPUTS)
def test_matmul_accumulate_bad_input_raises_clear_error(call, message):
    with pytest.raises(RuntimeError, match=message):
        call()


@requires_cuda
@pytest.mark.cuda
def test_matmul_accumulate_rejects_mixed_devices():
    with pytest.raises(RuntimeError, match=r"fastops\.matmul_accumulate_: a must be on the device of out"):
        ops.matmul_accumulate_(torch.zeros(2, 4, device="cuda"), torch.zeros(2, 3), torch.zeros(3, 4, device="cuda"))


@every_tensor_core_path
def test_cuda_matmul_accumulate_every_tensor_core_path(dtype, m, n, k, layout_a, layout_b):
    # HOPPER_SHAPES select split-K, 128 x 256 tiles and edge tiles on sm_90a (mma.sync elsewhere): each epilogue,
    # and the split-K reduction, must add the old out exactly once.
    a = make_tensor((m, k), dtype, "cuda", layout=layout_a, low=-2, high=2)
    b = make_tensor((k, n), dtype, "cuda", layout=layout_b, low=-2, high=2)
    out = make_tensor((m, n), dtype, "cuda", low=-64, high=64)
    ref = out.double() + a.double() @ b.double()  # float64 on the GPU: the CPU would take seconds for these sizes
    assert_accurate(_accumulated(out, a, b), out.clone().addmm_(a, b), ref)


# linear(..., activation=) and LinearAct (fastops::linear_act): the activation in the Hopper GEMM's epilogue, or the
# GEMM then one fused bias + activation pass.
TORCH_ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda y: F.gelu(y, approximate="tanh"),
    "silu": F.silu,
}


def _linear_act_fns(activation):
    native = TORCH_ACTIVATIONS[activation]
    return (lambda x, w, *b: fastops.functional.linear(x, w, *b, activation=activation),
            lambda x, w, *b: native(F.linear(x, w, *b)))


@pytest.mark.parametrize("with_bias", (True, False), ids=("bias", "no_bias"))
@pytest.mark.parametrize("activation", TORCH_ACTIVATIONS)
@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16, torch.float32), ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_linear_activation_matches_torch(device, dtype, activation, with_bias):
    fast, native = _linear_act_fns(activation)
    for rows in ((37,), (3, 5), (0,)):
        x = make_tensor(rows + (29,), dtype, device, requires_grad=True)
        args = (x, make_tensor((23, 29), dtype, device, requires_grad=True))
        if with_bias:
            args += (make_tensor((23,), dtype, device, requires_grad=True),)
        check_against_torch(fast, native, Sample(args, {}, f"{rows}-{activation}"), grad=True)


@pytest.mark.parametrize("activation", TORCH_ACTIVATIONS)
def test_linear_activation_gradcheck(activation):
    fast, _ = _linear_act_fns(activation)
    args = tuple(make_tensor(s, torch.float64, "cpu", low=-1, high=1, requires_grad=True) for s in ((4, 5), (3, 5), (3,)))
    check_gradcheck(fast, Sample(args, {}, activation))


def test_linear_act_module_loads_nn_linear_weights_and_compiles():
    reference = torch.nn.Sequential(torch.nn.Linear(12, 7), torch.nn.GELU(approximate="tanh"))
    module = fastops.nn.LinearAct(12, 7, activation="gelu_tanh")
    assert module.state_dict().keys() == reference[0].state_dict().keys()
    module.load_state_dict(reference[0].state_dict())
    x = torch.randn(9, 12)
    torch.testing.assert_close(module(x), reference(x))
    torch._dynamo.reset()
    torch.testing.assert_close(torch.compile(module, fullgraph=True)(x), module(x), rtol=0, atol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 GEMM output, float32 bias parameter
        assert module(x).dtype == torch.bfloat16
    assert "activation='gelu_tanh'" in repr(module)


@pytest.mark.parametrize("device", DEVICES)
def test_linear_act_op_stores_the_product_before_the_bias(device):
    x, w, b = (make_tensor(s, torch.float32, device) for s in ((6, 9), (5, 9), (5,)))
    for bias in (b, None):
        out, pre = ops.linear_act(x, w, bias, "silu", True)
        torch.testing.assert_close(pre, ops.linear(x, w, None), rtol=0, atol=0)
        torch.testing.assert_close(out, ops.bias_act(pre, b if bias is not None else torch.zeros_like(b), "silu"))
        out_only, nothing = ops.linear_act(x, w, bias, "silu", False)
        assert nothing.numel() == 0
        torch.testing.assert_close(out_only, out, rtol=0, atol=0)
        for store_pre in (True, False):  # store_pre=False is the inference form: no gradient through it
            args = tuple(t if t is None else t.clone().requires_grad_(store_pre) for t in (x, w, bias))
            check_opcheck(ops.linear_act, Sample((*args, "silu", store_pre), {}, f"store_pre={store_pre}"))
    with pytest.raises(RuntimeError, match=r"fastops\.linear_act: act must be"):
        ops.linear_act(x, w, b, "tanh", False)
    # Where autograd records a backward the op keeps the product before the bias whatever store_pre says, so a
    # graph traced with store_pre=False (the functional API's constant) still trains.
    x.requires_grad_()
    out, pre = ops.linear_act(x, w, b, "gelu", False)
    assert pre.shape == out.shape
    (grad,) = torch.autograd.grad(out.sum(), x)
    (expected,) = torch.autograd.grad(torch.nn.functional.gelu(torch.nn.functional.linear(x, w, b)).sum(), x)
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("device", DEVICES)
def test_bias_act_backward_without_bias_is_the_activation_backward(device):
    # linear_act's backward when the layer has no bias: grad * act'(pre), no invented zero bias, no grad_bias.
    x, g = make_tensor((7, 9), torch.float32, device), make_tensor((7, 9), torch.float32, device)
    for act, backward in (("relu", lambda: ops.relu_backward(g, ops.relu(x))), ("gelu", lambda: ops.gelu_backward(g, x)),
                          ("gelu_tanh", lambda: ops.gelu_backward(g, x, "tanh")), ("silu", lambda: ops.silu_backward(g, x))):
        grad_x, grad_bias = ops.bias_act_backward(g, x, None, act)
        assert grad_bias.numel() == 0
        torch.testing.assert_close(grad_x, backward(), rtol=0, atol=0)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("activation", TORCH_ACTIVATIONS)
@pytest.mark.parametrize("m,n,k", HOPPER_SHAPES)
def test_cuda_linear_activation_epilogue(m, n, k, activation):
    # On sm_90a these shapes run the activation inside the Hopper GEMM's epilogue (direct and split-K); elsewhere
    # the composed path. Forward and every gradient under the accuracy rule.
    fast, native = _linear_act_fns(activation)
    args = (make_tensor((m, k), torch.bfloat16, "cuda", low=-1, high=1, requires_grad=True),
            make_tensor((n, k), torch.bfloat16, "cuda", low=-1, high=1, requires_grad=True),
            make_tensor((n,), torch.bfloat16, "cuda", requires_grad=True))
    check_against_torch(fast, native, Sample(args, {}, f"{m}x{n}x{k}-{activation}"), grad=True)


def test_linear_activation_rejects_unknown_names():
    for device in ("cpu", "meta"):  # the kernel's check, and the fake's
        with pytest.raises(RuntimeError, match=r"fastops\.linear_act: act must be one of relu, gelu, gelu_tanh, silu; "
                           r"got 'tanh'"):
            fastops.functional.linear(torch.zeros(2, 3, device=device), torch.zeros(4, 3, device=device),
                                      activation="tanh")
    with pytest.raises(ValueError, match=r"LinearAct: activation must be one of"):
        fastops.nn.LinearAct(3, 4, activation="softplus")


# ---- the CUDA GEMM plan (csrc/matmul/gemm_plan.h), checked without a GPU ----


def _plan(dtype=torch.bfloat16, m=4096, n=4096, k=4096, **kwargs) -> dict:
    """plan_gemm's decision for a described problem on a described device (default: an H100/H200, 132 SMs)."""
    text = ops._gemm_plan(dtype, m, n, k, **kwargs)
    return dict(field.split("=", 1) for field in text.split(";"))


def test_gemm_plan_takes_the_hopper_kernel_where_it_can():
    big = _plan()  # a @ b with row-major b: A K-major, B MN-major
    assert (big["kernel"], big["tile_n"], big["cluster"], big["splits"], big["workspace"], big["tma_store"]) == (
        "wgmma", "256", "2", "1", "0", "1")
    assert _plan(torch.float16, b_trans=True)["kernel"] == "wgmma"
    # Split-K for decode-like shapes: 128 x 128 tiles fill fewer than half the SMs; fp32 slices in the workspace.
    decode = _plan(m=128)
    splits = int(decode["splits"])
    assert decode["kernel"] == "wgmma" and splits > 1 and decode["tile_n"] == "128" and decode["cluster"] == "1"
    assert int(decode["workspace"]) == splits * 128 * 4096 and decode["tma_store"] == "0"
    assert int(decode["k_tiles_per_split"]) * splits >= 4096 // 64
    # 128-wide tiles and no cluster when the wide tiles cannot fill the SMs; clusters need two M-blocks.
    assert (_plan(m=1024, n=1024)["tile_n"], _plan(m=1024, n=1024)["cluster"]) == ("128", "1")


@pytest.mark.parametrize("kwargs, kernel, reason", [
    ({"dtype": torch.float32}, "simt", "not a tensor-core problem"),
    ({"dtype": torch.float32, "allow_tf32": True, "b_trans": True}, "wgmma", ""),  # Linear's forward
    ({"dtype": torch.float32, "allow_tf32": True}, "mma_sync", "TF32 operands are not both K-major"),
    ({"dtype": torch.float64}, "float64", "not a tensor-core problem"),
    ({"batch": 3}, "mma_sync", "batched"),
    ({"cc": 80}, "mma_sync", "not an sm_90 device"),
    ({"cc": 75}, "simt", "not an sm_90 device"),
    ({"offset": [1, 0, 0, 0]}, "mma_sync", "A or B is not 16-byte aligned"),
    ({"ld": [4100, 4096, 4096]}, "mma_sync", "a row stride of A or B is not a multiple of 16 bytes"),
    ({"tma": False}, "mma_sync", "the driver does not provide cuTensorMapEncodeTiled"),
])
def test_gemm_plan_kernel_choice(kwargs, kernel, reason):
    plan = _plan(**kwargs)
    assert plan["kernel"] == kernel and plan["not_sm90"].startswith(reason), plan


def test_gemm_plan_epilogue_choices():
    # The TMA-store epilogue needs a C (and pre) TMA can address and no read of the old C.
    assert _plan(accumulate=True)["tma_store"] == "0"
    assert _plan(offset=[0, 0, 1, 0])["tma_store"] == "0"
    assert _plan(ld=[4096, 4096, 4104])["tma_store"] == "1" and _plan(ld=[4096, 4096, 4100])["tma_store"] == "0"
    assert _plan(fuse_act=True, pre=True, offset=[0, 0, 0, 3])["tma_store"] == "0"
    # The activation epilogue is the Hopper kernel's: elsewhere linear_act composes (one GEMM, one bias_act pass).
    assert _plan(fuse_act=True)["fused"] == "1" and _plan(fuse_act=True, m=64)["fused"] == "1"  # split-K reduces it
    assert _plan(fuse_act=True, cc=80)["fused"] == "0" and _plan(fuse_act=False)["fused"] == "0"


def test_gemm_plan_reads_the_switches_once_until_refreshed(monkeypatch):
    assert _plan()["kernel"] == "wgmma"
    for variable, field, value in (("FASTOPS_SM90_NO_CLUSTER", "cluster", "1"),
                                   ("FASTOPS_SM90_DIRECT_STORE", "tma_store", "0"),
                                   ("FASTOPS_NO_SM90", "kernel", "mma_sync")):
        before = _plan()[field]
        with monkeypatch.context() as env:
            env.setenv(variable, "1")
            assert _plan()[field] == before  # cached: the environment is read once per process
            ops._refresh_kernel_switches()
            assert _plan()[field] == value
        ops._refresh_kernel_switches()
        assert _plan()[field] == before
