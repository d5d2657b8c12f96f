"""Property tests (hypothesis): random shapes (0, 1, primes, larger), layouts (transposed, sliced, storage
offset, broadcast), dtypes and special values, each compared with torch under the accuracy rule. Every op family
adds its ops to the tables below; each op gets PROPERTY_EXAMPLES examples per device."""

import math
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
