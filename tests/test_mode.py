"""fastops.enable(): the torch functions a model calls run on fastops with torch's results (the accuracy rule), the
arguments fastops does not take stay in torch, and it works under autocast and torch.compile(fullgraph=True)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from reference import assert_accurate, to_reference
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import fastops
from fastops import mode


class RecordOps(TorchDispatchMode):
    """The operator namespaces that ran (fastops or aten)."""

    def __init__(self) -> None:
        super().__init__()
        self.fastops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "fastops":
            self.fastops.append(func._overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@dataclasses.dataclass
class Case:
    name: str
    route: Callable  # the torch callable the case calls (its key in the routing table)
    call: Callable
    shapes: tuple  # float tensors' shapes, in argument order, then extra non-float args
    extra: tuple = ()
    low: float = -3.0
    high: float = 3.0
    grad: bool = True

    def __repr__(self) -> str:
        return self.name

    def args(self, dtype=torch.float32, requires_grad=False):
        gen = torch.Generator().manual_seed(0)
        tensors = []
        for shape in self.shapes:
            t = torch.rand(shape, generator=gen, dtype=torch.float64) * (self.high - self.low) + self.low
            tensors.append(t.to(dtype).requires_grad_(requires_grad))
        return (*tensors, *(e() if callable(e) else e for e in self.extra))


def _targets(n, c):
    return torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(1))


def _probabilities(n, c):
    return torch.rand(n, c, generator=torch.Generator().manual_seed(2), dtype=torch.float64).softmax(1).float()


CASES = [
    # GEMMs
    Case("F.linear", F.linear, lambda x, w, b: F.linear(x, w, b), ((4, 5, 7), (3, 7), (3,))),
    Case("F.linear-nobias", F.linear, lambda x, w: F.linear(x, w), ((5, 7), (3, 7))),
    Case("torch.addmm", torch.addmm, lambda b, x, w: torch.addmm(b, x, w), ((3,), (5, 7), (7, 3))),
    Case("Tensor.addmm", Tensor.addmm, lambda b, x, w: b.addmm(x, w), ((3,), (5, 7), (7, 3))),
    Case("torch.matmul", torch.matmul, lambda a, b: torch.matmul(a, b), ((2, 5, 7), (7, 3))),
    Case("torch.matmul-1d", torch.matmul, lambda a, b: torch.matmul(a, b), ((7,), (2, 7, 3))),
    Case("Tensor.matmul", Tensor.matmul, lambda a, b: a.matmul(b), ((2, 5, 7), (1, 7, 3))),
    Case("Tensor.__matmul__", Tensor.__matmul__, lambda a, b: a @ b, ((5, 7), (7, 3))),
    Case("torch.mm", torch.mm, lambda a, b: torch.mm(a, b), ((5, 7), (7, 3))),
    Case("Tensor.mm", Tensor.mm, lambda a, b: a.mm(b.mT), ((5, 7), (3, 7))),
    Case("torch.bmm", torch.bmm, lambda a, b: torch.bmm(a, b), ((2, 5, 7), (2, 7, 3))),
    Case("Tensor.bmm", Tensor.bmm, lambda a, b: a.bmm(b), ((2, 5, 7), (2, 7, 3))),
    Case("F.conv2d-patches", F.conv2d, lambda x, w, b: F.conv2d(x, w, b, stride=4), ((2, 3, 9, 8), (5, 3, 4, 4), (5,))),
    Case("F.conv2d-patches-unbatched", F.conv2d, lambda x, w: F.conv2d(x, w, stride=(2, 3)), ((3, 4, 6), (5, 3, 2, 3))),
    # activations
    Case("F.relu", F.relu, lambda x: F.relu(x), ((33, 7),)),
    Case("torch.relu", torch.relu, lambda x: torch.relu(x), ((33, 7),)),
    Case("Tensor.relu", Tensor.relu, lambda x: x.relu(), ((33, 7),)),
    Case("F.relu-inplace", F.relu, lambda x: F.relu(x * 1, inplace=True), ((33, 7),)),
    Case("Tensor.relu_", Tensor.relu_, lambda x: (x * 1).relu_(), ((33, 7),)),
    Case("torch.relu_", torch.relu_, lambda x: torch.relu_(x * 1), ((33, 7),)),
    Case("F.gelu", F.gelu, lambda x: F.gelu(x), ((33, 7),)),
    Case("F.gelu-tanh", F.gelu, lambda x: F.gelu(x, approximate="tanh"), ((33, 7),)),
    Case("F.silu", F.silu, lambda x: F.silu(x), ((33, 7),)),
    Case("F.leaky_relu", F.leaky_relu, lambda x: F.leaky_relu(x, 0.2), ((33, 7),)),
    Case("torch.sigmoid", torch.sigmoid, lambda x: torch.sigmoid(x), ((33, 7),)),
    Case("Tensor.sigmoid", Tensor.sigmoid, lambda x: F.sigmoid(x), ((33, 7),)),
    Case("torch.special.expit", torch.special.expit, lambda x: torch.special.expit(x), ((33, 7),)),
    Case("torch.tanh", torch.tanh, lambda x: torch.tanh(x), ((33, 7),)),
    Case("Tensor.tanh", Tensor.tanh, lambda x: F.tanh(x), ((33, 7),)),
    Case("F.softmax", F.softmax, lambda x: F.softmax(x, dim=1), ((5, 7),)),
    Case("torch.softmax", torch.softmax, lambda x: torch.softmax(x, 0), ((5, 7),)),
    Case("Tensor.softmax", Tensor.softmax, lambda x: x.softmax(-1), ((5, 7),)),
    Case("F.log_softmax", F.log_softmax, lambda x: F.log_softmax(x, dim=1), ((5, 7),)),
    Case("torch.log_softmax", torch.log_softmax, lambda x: torch.log_softmax(x, 0), ((5, 7),)),
    Case("Tensor.log_softmax", Tensor.log_softmax, lambda x: x.log_softmax(-1), ((5, 7),)),
    Case("F.elu", F.elu, lambda x: F.elu(x, 0.5), ((33, 7),)),
    Case("F.selu", F.selu, lambda x: F.selu(x), ((33, 7),)),
    Case("F.softplus", F.softplus, lambda x: F.softplus(x, beta=2.0), ((33, 7),)),
    Case("F.mish", F.mish, lambda x: F.mish(x), ((33, 7),)),
    Case("F.hardswish", F.hardswish, lambda x: F.hardswish(x), ((33, 7),)),
    Case("F.hardsigmoid", F.hardsigmoid, lambda x: F.hardsigmoid(x), ((33, 7),)),
    Case("F.relu6", F.relu6, lambda x: F.relu6(x * 3), ((33, 7),)),
    Case("F.hardtanh", F.hardtanh, lambda x: F.hardtanh(x, -0.5, 2.0), ((33, 7),)),
    Case("F.glu", F.glu, lambda x: F.glu(x, dim=0), ((6, 7),)),
    # losses
    Case("F.cross_entropy", F.cross_entropy, lambda x, t: F.cross_entropy(x, t), ((9, 11),), (_targets(9, 11),)),
    Case("F.cross_entropy-options", F.cross_entropy,
         lambda x, w, t: F.cross_entropy(x, t, weight=w.detach().abs() + 0.5, ignore_index=3, label_smoothing=0.1,
                                         reduction="sum"), ((9, 11), (11,)), (_targets(9, 11),)),
    Case("F.cross_entropy-probabilities", F.cross_entropy, lambda x, t: F.cross_entropy(x, t), ((9, 11),),
         (_probabilities(9, 11),)),
    Case("nn.CrossEntropyLoss", F.cross_entropy, lambda x, t: nn.CrossEntropyLoss(ignore_index=-1)(x, t), ((9, 11),),
         (torch.tensor([0, -1, 3, 4, 5, -1, 7, 8, 9]),)),
    Case("F.nll_loss", F.nll_loss, lambda x, t: F.nll_loss(x, t), ((9, 11),), (_targets(9, 11),)),
    Case("F.mse_loss", F.mse_loss, lambda x, y: F.mse_loss(x, y), ((9, 11), (9, 11))),
    Case("nn.MSELoss", F.mse_loss, lambda x, y: nn.MSELoss(reduction="none")(x, y), ((9, 11), (9, 11))),
    Case("F.l1_loss", F.l1_loss, lambda x, y: F.l1_loss(x, y), ((9, 11), (9, 11))),
    Case("F.smooth_l1_loss", F.smooth_l1_loss, lambda x, y: F.smooth_l1_loss(x, y, beta=0.5), ((9, 11), (9, 11))),
    Case("F.huber_loss", F.huber_loss, lambda x, y: F.huber_loss(x, y, delta=0.5), ((9, 11), (9, 11))),
    Case("F.binary_cross_entropy_with_logits", F.binary_cross_entropy_with_logits,
         lambda x, y, w: F.binary_cross_entropy_with_logits(x, y.sigmoid(), pos_weight=w.detach().abs()),
         ((9, 11), (9, 11), (11,))),
    Case("F.binary_cross_entropy", F.binary_cross_entropy, lambda x, y: F.binary_cross_entropy(x, y), ((9, 11),) * 2,
         low=0.05, high=0.95),
    # x in [-3, -0.1] serves as log-probabilities as it is (a log_softmax here would itself be routed)
    Case("F.kl_div", F.kl_div, lambda x, y: F.kl_div(x, y, reduction="batchmean", log_target=True),
         ((9, 11), (9, 11)), low=-3.0, high=-0.1),
]


def test_routes_are_active_iff_fastops_functional_has_the_function():
    for torch_fn, (name, _, _) in mode._ROUTES.items():
        assert (torch_fn in mode.routes()) == hasattr(fastops.functional, name), torch_fn
    assert mode.routes()[F.linear] == "linear" and mode.routes()[torch.addmm] == "linear"


def test_every_route_has_a_case():
    assert {c.route for c in CASES} == set(mode._ROUTES)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_routed_call_matches_torch(case):
    """Inside enable(), an active route runs fastops (an inactive one torch), with torch's result and gradients under
    the accuracy rule against float64."""
    active = case.route in mode.routes()
    args = case.args(requires_grad=case.grad)
    with fastops.enable(), RecordOps() as ops:
        out = case.call(*args)
        grads = _grads(out, args) if case.grad else []
    assert bool(ops.fastops) == active, f"fastops ops {ops.fastops}, route active: {active}"
    native_args = case.args(requires_grad=case.grad)
    native = case.call(*native_args)
    ref_args = tuple(to_reference(a).requires_grad_(case.grad) if a.is_floating_point() else a
                     for a in case.args())
    ref = case.call(*ref_args)
    assert_accurate(out, native, ref)
    if case.grad:
        for i, (g, gn, gr) in enumerate(zip(grads, _grads(native, native_args), _grads(ref, ref_args))):
            assert_accurate(g, gn, gr, what=f"grad of argument {i}")


def _grads(out, args):
    """Gradients for one random upstream gradient, rounded to float32 (the cases' dtype) for every run."""
    inputs = [a for a in args if isinstance(a, Tensor) and a.requires_grad]
    upstream = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    return torch.autograd.grad(out, inputs, upstream.float().to(out.dtype), allow_unused=True,
                               materialize_grads=True)


def _run_both(call, *args):
    with fastops.enable(), RecordOps() as ops:
        try:
            out = call(*args)
        except Exception as e:  # noqa: BLE001  (torch's own error must come out unchanged)
            out = e
    try:
        native = call(*args)
    except Exception as e:  # noqa: BLE001
        native = e
    return ops.fastops, out, native


class Plain(Tensor):
    """A tensor subclass with torch's default __torch_function__: enable() must leave its calls to it."""


FALLBACKS = {
    "int64 matmul": lambda: torch.matmul(torch.arange(6).view(2, 3), torch.arange(6).view(3, 2)),
    "complex mm": lambda: torch.mm(torch.ones(2, 3, dtype=torch.complex64), torch.ones(3, 2, dtype=torch.complex64)),
    "sparse mm": lambda: torch.mm(torch.eye(3).to_sparse(), torch.ones(3, 2)),
    "float16 x float32 linear": lambda: F.linear(torch.ones(2, 3, dtype=torch.float16), torch.ones(4, 3)),
    "addmm beta": lambda: torch.addmm(torch.ones(2), torch.ones(3, 4), torch.ones(4, 2), beta=0.5),
    "addmm 2-D bias": lambda: torch.addmm(torch.ones(3, 2), torch.ones(3, 4), torch.ones(4, 2)),
    "mm out=": lambda: torch.mm(torch.ones(2, 3), torch.ones(3, 2), out=torch.empty(2, 2)),
    "bmm unequal batches": lambda: torch.bmm(torch.ones(2, 2, 3), torch.ones(1, 3, 2)),
    "matmul shape error": lambda: torch.matmul(torch.ones(2, 3), torch.ones(4, 2)),
    "relu int": lambda: torch.relu(torch.arange(-3, 3)),
    "tanh out=": lambda: torch.tanh(torch.ones(3), out=torch.empty(3)),
    "gelu bad approximate": lambda: F.gelu(torch.ones(3), approximate="erf"),
    "softmax implicit dim": lambda: F.softmax(torch.ones(2, 3), _stacklevel=5),
    "cross_entropy int32 target": lambda: F.cross_entropy(torch.ones(2, 3), torch.zeros(2, dtype=torch.int32)),
    "mse_loss weight": lambda: F.mse_loss(torch.ones(3), torch.zeros(3), weight=torch.ones(3)),
    "bce pos_weight grad": lambda: F.binary_cross_entropy_with_logits(
        torch.ones(2, 3), torch.zeros(2, 3), pos_weight=torch.ones(3, requires_grad=True)),
    "meta device": lambda: F.linear(torch.ones(2, 3, device="meta"), torch.ones(4, 3, device="meta")),
    "tensor subclass": lambda: torch.relu(torch.ones(3).as_subclass(Plain)),
    "conv2d overlapping": lambda: F.conv2d(torch.ones(1, 2, 5, 5), torch.ones(3, 2, 3, 3)),
    "conv2d padding": lambda: F.conv2d(torch.ones(1, 2, 4, 4), torch.ones(3, 2, 2, 2), stride=2, padding=1),
}


@pytest.mark.filterwarnings("ignore:Implicit dimension choice for softmax")
@pytest.mark.parametrize("name", FALLBACKS)
def test_arguments_fastops_does_not_take_stay_in_torch(name):
    ran, out, native = _run_both(FALLBACKS[name])
    assert not ran, f"fastops ran {ran}"
    if isinstance(native, Exception):
        assert type(out) is type(native) and str(out) == str(native)
    elif native.is_sparse or native.is_meta:
        assert out.layout == native.layout and out.shape == native.shape and out.device == native.device
    else:
        assert type(out) is type(native) and torch.equal(out, native)


def test_autocast_matches_torch_dtypes_and_values():
    gen = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(6, 8, generator=gen), torch.randn(5, 8, generator=gen), torch.randn(5, generator=gen)
    logits, t = torch.randn(6, 5, generator=gen).bfloat16(), torch.randint(0, 5, (6,), generator=gen)
    # References: float64 math on what autocast hands the ops (GEMM operands rounded to bfloat16).
    xr, wr, br = (to_reference(a.bfloat16()) for a in (x, w, b))
    calls = {
        "linear": (lambda: F.linear(x, w, b), lambda: F.linear(xr, wr, br)),
        "matmul": (lambda: torch.matmul(x, w.mT), lambda: xr @ wr.mT),
        "gelu": (lambda: F.gelu(logits), lambda: F.gelu(to_reference(logits))),
        "cross_entropy": (lambda: F.cross_entropy(logits, t), lambda: F.cross_entropy(to_reference(logits), t)),
    }
    for name, (call, reference) in calls.items():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            with fastops.enable(), RecordOps() as ops:
                out = call()
            native = call()
        assert ops.fastops, name
        assert out.dtype == native.dtype, name
        assert_accurate(out, native, reference(), what=name)


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 5)

    def forward(self, x, t):
        h = F.silu(self.fc1(x))
        logits = self.fc2(torch.tanh(h) @ torch.eye(16) + F.relu(h))
        return F.cross_entropy(logits, t)


@pytest.mark.parametrize("autocast", [False, True], ids=["float32", "autocast-bf16"])
def test_compile_fullgraph_records_fastops_ops(autocast):
    torch.manual_seed(0)
    model, x, t = SmallNet(), torch.randn(4, 8), torch.randint(0, 5, (4,))
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm

    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), fastops.enable():
        loss = compiled(x, t)
        eager = model(x, t)
    (graph,) = graphs
    targets = {str(n.target) for n in graph.graph.nodes if n.op == "call_function"}
    assert {"fastops.linear", "fastops.silu", "fastops.tanh", "fastops.matmul", "fastops.relu"} <= targets, targets
    assert any("cross_entropy" in s for s in targets)
    assert not any("torch.nn.functional" in s or "aten" in s for s in targets), targets
    torch.testing.assert_close(loss, eager, rtol=0, atol=0)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    eager_grads = torch.autograd.grad(eager, list(model.parameters()))
    for g, ge in zip(grads, eager_grads):
        torch.testing.assert_close(g, ge, rtol=0, atol=0)


def test_enable_is_a_switch_and_a_context_manager():
    assert not fastops.is_enabled()
    with fastops.enable():
        assert fastops.is_enabled()
        with fastops.enable():  # nested: the outer one stays on
            assert fastops.is_enabled()
        assert fastops.is_enabled()
    assert not fastops.is_enabled()
    fastops.enable()
    try:
        assert fastops.is_enabled()
        with RecordOps() as ops:
            torch.relu(torch.ones(3))
        assert ops.fastops == ["relu"]
    finally:
        fastops.disable()
    assert not fastops.is_enabled()
    fastops.disable()  # a no-op when off


def test_disable_under_another_mode_keeps_that_mode():
    class Counting(TorchFunctionMode):
        calls = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            Counting.calls += 1
            return func(*args, **(kwargs or {}))

    x = torch.ones(2)
    fastops.enable()
    with Counting():
        fastops.disable()
        assert not fastops.is_enabled()
        with RecordOps() as ops:
            torch.relu(x)
        assert Counting.calls == 1 and not ops.fastops
