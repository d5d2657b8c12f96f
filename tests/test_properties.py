"""Property tests (hypothesis): random shapes (0, 1, primes, larger), layouts (transposed, sliced, storage
offset, broadcast), dtypes and special values, each compared with torch under the accuracy rule. Every op family
adds its ops to the tables below; each op gets PROPERTY_EXAMPLES examples per device."""

import math
import types
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import DEVICES, FLOAT_DTYPES, LAYOUTS, Sample, check_against_torch, make_tensor

import fastops.functional as FF

PROPERTY_EXAMPLES = 200
SIZES = (0, 1, 2, 3, 5, 7, 13, 31, 64, 127, 257)

# Elementwise ops: name -> (fastops, torch, number of same-shaped tensor inputs).
ELEMENTWISE = {
    "relu": (FF.relu, F.relu, 1),
    "gelu": (FF.gelu, F.gelu, 1),
    "gelu_tanh": (partial(FF.gelu, approximate="tanh"), partial(F.gelu, approximate="tanh"), 1),
    "silu": (FF.silu, F.silu, 1),
    "leaky_relu": (partial(FF.leaky_relu, negative_slope=0.2), partial(F.leaky_relu, negative_slope=0.2), 1),
    "sigmoid": (FF.sigmoid, torch.sigmoid, 1),
    "tanh": (FF.tanh, torch.tanh, 1),
    "swiglu": (FF.swiglu, lambda gate, up: F.silu(gate) * up, 2),
    "geglu": (FF.geglu, lambda gate, up: F.gelu(gate) * up, 2),
    "mse_loss": (partial(FF.mse_loss, reduction="none"), partial(F.mse_loss, reduction="none"), 2),
    "mse_loss_mean": (FF.mse_loss, F.mse_loss, 2),
    "smooth_l1_loss": (partial(FF.smooth_l1_loss, reduction="none", beta=0.5),
                       partial(F.smooth_l1_loss, reduction="none", beta=0.5), 2),
    "huber_loss_sum": (partial(FF.huber_loss, reduction="sum", delta=2.0),
                       partial(F.huber_loss, reduction="sum", delta=2.0), 2),
    "bce_with_logits": (partial(FF.binary_cross_entropy_with_logits, reduction="none"),
                        partial(F.binary_cross_entropy_with_logits, reduction="none"), 2),
}


@st.composite
def elementwise_case(draw, n_inputs: int, device: str):
    # Up to 3 dims of awkward sizes, at most 2^16 elements so that 200 examples per op stay quick on 2 cores.
    shape = tuple(draw(st.lists(st.sampled_from(SIZES), min_size=0, max_size=3).filter(lambda s: math.prod(s) <= 1 << 16)))
    layout = draw(st.sampled_from(LAYOUTS if shape else ("contiguous",)))
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    seed = draw(st.integers(0, 2**31 - 1))
    special = draw(st.booleans())
    gen = torch.Generator().manual_seed(seed)
    args = []
    for _ in range(n_inputs):
        t = make_tensor(shape, dtype, device, layout=layout, generator=gen)
        if special and t.numel() > 0 and layout != "expanded":  # expanded views cannot be written
            # NaN / +-Inf at random positions must propagate exactly as torch propagates them.
            with torch.no_grad():
                for value in (float("nan"), float("inf"), -float("inf")):
                    t[tuple(int(torch.randint(0, s, (1,), generator=gen)) for s in shape)] = value
        args.append(t.requires_grad_(True))
    return Sample(tuple(args), {}, f"{shape}-{layout}-{dtype}-special={special}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_matches_torch(name, device):
    fast, native, n_inputs = ELEMENTWISE[name]

    @settings(max_examples=PROPERTY_EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(elementwise_case(n_inputs, device))
    def check(sample):
        check_against_torch(fast, native, sample, grad=True)

    check()


# m, n and k start at 5, so the output and both gradients (m x n, m x k, k x n) have at least 25 elements: the
# 2x-torch rule compares maxima, and over a handful of elements torch's maximum error is a few samples that are
# sometimes ~0 by luck while any other summation order is 1-3 ulps off. Sizes 1-4 (1x1x1, K=1, single rows) are
# covered by the fixed edge shapes in test_matmul.py.
MATMUL_SIZES = (5, 7, 13, 31, 64)


@st.composite
def matmul_case(draw, device: str):
    m, k, n = (draw(st.sampled_from(MATMUL_SIZES)) for _ in range(3))
    batch = tuple(draw(st.lists(st.sampled_from((1, 2, 3)), max_size=1)))
    # float64 is left to test_matmul.py, which makes inputs and upstream gradients exactly summable: torch's own
    # float64 error is ~0 there, so any other summation order would fail the rule by an ulp.
    dtype = draw(st.sampled_from((torch.float16, torch.bfloat16, torch.float32)))
    layouts = ("contiguous", "mT", "sliced", "offset1")
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    a = make_tensor(batch + (m, k), dtype, device, layout=draw(st.sampled_from(layouts)), generator=gen)
    b = make_tensor(batch + (k, n), dtype, device, layout=draw(st.sampled_from(layouts)), generator=gen)
    return Sample((a.requires_grad_(), b.requires_grad_()), {}, f"{tuple(a.shape)}x{tuple(b.shape)}-{dtype}")


@st.composite
def cross_entropy_case(draw, device: str):
    n = draw(st.sampled_from((0, 1, 2, 3, 7, 31, 64)))
    c = draw(st.sampled_from((1, 2, 3, 5, 7, 13, 31, 64, 127, 257)))
    # float64 is test_losses.py's (assert_close against torch, and the gradchecks): the rule's float64 floor is an
    # ulp of the largest gradient, while softmax - one-hot cancels from order 1 (seen: 2x3 logits, 1.47e-16 vs 1.47e-16).
    dtype = draw(st.sampled_from((torch.float16, torch.bfloat16, torch.float32)))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    logits = make_tensor((n, c), dtype, device, low=-8, high=8, generator=gen).requires_grad_()
    target = torch.randint(0, c, (n,), generator=gen)
    target = torch.where(torch.rand(n, generator=gen) < draw(st.sampled_from((0.0, 0.3))), -100, target).to(device)
    weighted = draw(st.booleans())
    weight = (torch.rand(c, generator=gen, dtype=torch.float64) + 0.5).to(device, dtype) if weighted else None
    kwargs = {"weight": weight, "reduction": draw(st.sampled_from(("mean", "sum", "none"))),
              "label_smoothing": draw(st.sampled_from((0.0, 0.1)))}
    return Sample((logits, target), kwargs, f"{n}x{c}-{dtype}-{kwargs['reduction']}-w{weighted}")


@st.composite
def linear_cross_entropy_case(draw, device: str):
    n = draw(st.sampled_from((1, 2, 3, 7, 31, 64)))
    h = draw(st.sampled_from((1, 5, 16, 33)))
    v = draw(st.sampled_from((1, 2, 7, 31, 257)))
    # float64 as for matmul: torch's own float64 GEMM error is ~0, so another summation order fails by an ulp.
    dtype = draw(st.sampled_from((torch.float16, torch.bfloat16, torch.float32)))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = make_tensor((n, h), dtype, device, low=-1, high=1, generator=gen).requires_grad_()
    w = make_tensor((v, h), dtype, device, low=-1, high=1, generator=gen).requires_grad_()
    b = make_tensor((v,), dtype, device, generator=gen).requires_grad_() if draw(st.booleans()) else None
    target = torch.randint(0, v, (n,), generator=gen)
    target = torch.where(torch.rand(n, generator=gen) < draw(st.sampled_from((0.0, 0.3))), -100, target).to(device)
    # Chunks of 1 row (up to 64 of them) to one chunk: the weight gradient must be as accurate whatever the count.
    rows = draw(st.sampled_from((None, 1, 3, 16)))
    kwargs = {"reduction": draw(st.sampled_from(("mean", "sum", "none"))),
              "label_smoothing": draw(st.sampled_from((0.0, 0.1))), "rows": rows}
    return Sample((x, w, b, target), kwargs, f"{n}x{h}x{v}-{dtype}-{kwargs['reduction']}-rows{rows}")


def _linear_cross_entropy(x, w, b, t, rows, **kwargs):
    options = types.SimpleNamespace(batch_chunk_size=rows) if rows else None
    return FF.linear_cross_entropy(x, w, t, linear_bias=b, options=options, **kwargs)


def _linear_then_cross_entropy(x, w, b, t, rows, **kwargs):
    return F.cross_entropy(F.linear(x, w, b), t, **kwargs)


STRUCTURED = {
    "matmul": (FF.matmul, torch.matmul, matmul_case),
    "cross_entropy": (FF.cross_entropy, F.cross_entropy, cross_entropy_case),
    "linear_cross_entropy": (_linear_cross_entropy, _linear_then_cross_entropy, linear_cross_entropy_case),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", STRUCTURED)
def test_structured_ops_match_torch(name, device):
    fast, native, case = STRUCTURED[name]

    @settings(max_examples=PROPERTY_EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(case(device))
    def check(sample):
        check_against_torch(fast, native, sample, grad=True)

    check()
