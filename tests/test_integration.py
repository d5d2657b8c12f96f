"""fastops inside real models: convert(), torch.compile without graph breaks or recompiles, torch.export,
TorchScript tracing, ONNX export (checked with onnxruntime) and DDP."""

import os
import subprocess
import sys
import tempfile
import warnings

import pytest
import torch
from reference import requires_cuda
from torch import nn

import fastops
import fastops.functional as FF
from fastops.nn import convert


def torch_mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 10))


def fastops_mlp(seed: int = 0) -> nn.Sequential:
    return convert(torch_mlp(seed))


def test_convert_swaps_in_place_and_keeps_parameters():
    model = torch_mlp()
    params = list(model.parameters())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    converted = convert(model)
    assert converted is model
    assert model.fastops_swapped == {"Linear": 3, "ReLU": 1, "GELU": 1}
    assert [type(m) for m in model] == [fastops.nn.Linear, fastops.nn.ReLU, fastops.nn.Linear, fastops.nn.GELU,
                                        fastops.nn.Linear]
    assert [p for p in model.parameters()] == params  # the same Parameter objects, so optimizers keep working
    assert model.state_dict().keys() == state.keys()
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])


def test_convert_not_inplace_leaves_original_untouched():
    model = torch_mlp()
    converted = convert(model, inplace=False)
    assert converted is not model
    assert type(model[1]) is nn.ReLU and type(converted[1]) is fastops.nn.ReLU


def test_convert_skips_subclasses():
    class MyReLU(nn.ReLU):
        def forward(self, x):
            return super().forward(x) + 1

    model = convert(nn.Sequential(MyReLU()))
    assert type(model[0]) is MyReLU and model.fastops_swapped == {}


def test_converted_model_matches_torch():
    x = torch.randn(64, 16)
    reference, model = torch_mlp(), fastops_mlp()
    torch.testing.assert_close(model(x), reference(x))
    loss_ref = reference(x).square().mean()
    loss = model(x).square().mean()
    loss_ref.backward()
    loss.backward()
    for p_ref, p in zip(reference.parameters(), model.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad)


def test_compile_fullgraph_dynamic_no_recompiles():
    torch._dynamo.reset()
    model = fastops_mlp()
    compiled = torch.compile(model, fullgraph=True, dynamic=True)
    counts = []
    from torch._dynamo.utils import counters

    counters.clear()
    for batch in (3, 17, 64):
        x = torch.randn(batch, 16, requires_grad=True)
        out = compiled(x)
        torch.testing.assert_close(out, model(x))
        out.sum().backward()
        counts.append(counters["stats"]["unique_graphs"])
    assert counts[0] == counts[-1] == 1, f"recompiled: unique graphs after each batch {counts}"


def test_torch_export_roundtrip():
    model = fastops_mlp().eval()
    x = torch.randn(5, 16)
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert {"fastops.relu.default", "fastops.gelu.default", "fastops.linear.default"} <= targets
    torch.testing.assert_close(program.module()(torch.randn(9, 16)).shape, torch.Size([9, 10]))
    y = torch.randn(7, 16)
    torch.testing.assert_close(program.module()(y), model(y))


def test_jit_trace_saves_and_loads_in_fresh_process():
    model = fastops_mlp().eval()
    x = torch.randn(4, 16)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.pt")
        torch.jit.trace(model, x).save(path)
        torch.save({"x": x, "y": model(x).detach()}, os.path.join(tmp, "io.pt"))
        script = (
            "import torch, fastops, sys\n"
            f"m = torch.jit.load({path!r})\n"
            f"io = torch.load({os.path.join(tmp, 'io.pt')!r})\n"
            "torch.testing.assert_close(m(io['x']), io['y'])\n"
            "assert 'fastops::relu' in str(m.inlined_graph)\n"
            "print('ok')\n"
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                                check=False)
        assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_onnx_export_runs_in_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    import fastops.onnx

    torch.manual_seed(0)
    fnn = fastops.nn
    # Every forward op the translation table covers appears once.
    model = nn.Sequential(
        fnn.Linear(16, 32), fnn.ReLU(), fnn.Linear(32, 32), fnn.GELU(), fnn.Linear(32, 32), fnn.GELU("tanh"),
        fnn.SiLU(), fnn.LeakyReLU(0.1), fnn.Linear(32, 64, bias=False), fnn.SwiGLU(), fnn.Linear(32, 64),
        fnn.GeGLU(), fnn.Sigmoid(), fnn.Tanh(), fnn.LinearAct(32, 32, activation="gelu"), fnn.Linear(32, 10),
        fnn.Softmax(dim=1), fnn.Linear(10, 10), fnn.LogSoftmax(dim=-1),
    ).eval()
    x = torch.randn(6, 16)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        fastops.onnx.export(model, (x,), path, dynamic_shapes=({0: torch.export.Dim("batch")},))
        import onnx

        graph = onnx.load(path).graph
        node_types = {n.op_type for n in graph.node} | {n.op_type for f in onnx.load(path).functions for n in f.node}
        assert {"Relu", "Erf", "Tanh", "Sigmoid", "LeakyRelu", "MatMul", "Split", "Softmax", "LogSoftmax"} <= node_types, node_types
        assert not any(n.domain.startswith("fastops") for n in graph.node)
        session = ort.InferenceSession(path)
        y = torch.randn(11, 16)
        (out,) = session.run(None, {session.get_inputs()[0].name: y.numpy()})
    # Two float32 implementations (onnxruntime's Erf/Tanh/Sigmoid are not torch's), so float32-level agreement.
    torch.testing.assert_close(torch.from_numpy(out), model(y).detach(), rtol=1e-4, atol=1e-5)


def test_onnx_export_of_the_parametrised_activations():
    ort = pytest.importorskip("onnxruntime")
    import fastops.onnx

    class EachOnInput(nn.Module):
        def __init__(self, *activations):
            super().__init__()
            self.activations = nn.ModuleList(activations)

        def forward(self, x):
            return torch.cat([act(x) for act in self.activations], dim=1)

    fnn = fastops.nn
    # Non-default parameters, so that a lowering that dropped one would show; inputs on both sides of every kink.
    model = EachOnInput(fnn.ELU(0.7), fnn.SELU(), fnn.CELU(1.5), fnn.Softplus(2.0, 1.5), fnn.Mish(), fnn.Hardswish(),
                        fnn.Hardsigmoid(), fnn.Hardtanh(-0.4, 0.9), fnn.ReLU6(), fnn.GLU(dim=1)).eval()
    x = torch.randn(6, 16) * 4
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        fastops.onnx.export(model, (x,), path)
        session = ort.InferenceSession(path)
        (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), model(x), rtol=1e-4, atol=1e-5)


class _LossModel(nn.Module):
    """loss(scale * x, target, ...): the loss's input depends on a parameter, so that an export with grad enabled
    meets the ops a training graph holds (cross_entropy's forward that also writes the gradient)."""

    def __init__(self, loss):
        super().__init__()
        self.loss = loss
        self.scale = nn.Parameter(torch.tensor(1.5))

    def forward(self, x, target):
        return self.loss(x * self.scale, target)


def _probs(*shape):
    return torch.rand(*shape) * 0.9 + 0.05


_W5 = torch.rand(5) + 0.5
_IDX = torch.tensor([0, 4, -100, 2, 3, 1])
_IDX_SPATIAL = torch.tensor([[[0, 4], [1, -100], [3, 3]], [[2, 2], [0, -100], [4, 1]]])  # [2, 3, 2], 5 classes

# id -> (loss(x, target), x, target): every reduction and option each loss lowering has.
ONNX_LOSSES = {
    **{f"mse {r}": (lambda x, t, r=r: FF.mse_loss(x, t, reduction=r), torch.randn(6, 5), torch.randn(6, 5))
       for r in ("none", "mean", "sum")},
    **{f"l1 {r}": (lambda x, t, r=r: FF.l1_loss(x, t, reduction=r), torch.randn(6, 5), torch.randn(6, 5))
       for r in ("none", "mean", "sum")},
    "smooth_l1 beta": (lambda x, t: FF.smooth_l1_loss(x, t, beta=0.5, reduction="none"), torch.randn(6, 5),
                       torch.randn(6, 5)),
    "smooth_l1 beta0 sum": (lambda x, t: FF.smooth_l1_loss(x, t, beta=0.0, reduction="sum"), torch.randn(6, 5),
                            torch.randn(6, 5)),
    "huber": (lambda x, t: FF.huber_loss(x, t, delta=0.7, reduction="none"), torch.randn(6, 5), torch.randn(6, 5)),
    "huber mean": (lambda x, t: FF.huber_loss(x, t), torch.randn(6, 5), torch.randn(6, 5)),
    "bce": (lambda x, t: FF.binary_cross_entropy(x.clamp(0, 1), t, reduction="none"), _probs(6, 5), _probs(6, 5)),
    "bce weight mean": (lambda x, t: FF.binary_cross_entropy(x.clamp(0, 1), t, weight=_W5), _probs(6, 5),
                        _probs(6, 5)),
    "bce clamped logs sum": (lambda x, t: FF.binary_cross_entropy(x.clamp(0, 1), t, reduction="sum"),
                             torch.tensor([[0.0, 1.0, 0.5]]), torch.tensor([[1.0, 0.0, 0.5]])),
    "bce_with_logits": (lambda x, t: FF.binary_cross_entropy_with_logits(x, t, reduction="none"),
                        torch.randn(6, 5) * 8, _probs(6, 5)),
    "bce_with_logits weights sum": (lambda x, t: FF.binary_cross_entropy_with_logits(
        x, t, weight=_W5, pos_weight=_W5 * 2, reduction="sum"), torch.randn(6, 5) * 8, _probs(6, 5)),
    **{f"kl_div {r} log_target={lt}": (lambda x, t, r=r, lt=lt: FF.kl_div(x, t, reduction=r, log_target=lt),
                                       torch.randn(6, 5).log_softmax(1),
                                       torch.randn(6, 5).log_softmax(1) if lt else torch.rand(6, 5).softmax(1))
       for r in ("none", "batchmean", "sum", "mean") for lt in (False, True)},
    "kl_div zero target": (lambda x, t: FF.kl_div(x, t, reduction="sum"), torch.randn(2, 3),
                           torch.tensor([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])),
    "nll_loss": (lambda x, t: FF.nll_loss(x, t), torch.randn(6, 5), _IDX),
    "nll_loss weight none": (lambda x, t: FF.nll_loss(x, t, weight=_W5, reduction="none"), torch.randn(6, 5), _IDX),
    "nll_loss ignore_index sum": (lambda x, t: FF.nll_loss(x, t, ignore_index=4, reduction="sum"), torch.randn(6, 5),
                                  _IDX.clamp(min=0)),
    "nll_loss spatial weight": (lambda x, t: FF.nll_loss(x, t, weight=_W5), torch.randn(2, 5, 3, 2), _IDX_SPATIAL),
    "nll_loss unbatched": (lambda x, t: FF.nll_loss(x, t), torch.randn(5), torch.tensor(3)),
    "cross_entropy": (lambda x, t: FF.cross_entropy(x, t), torch.randn(6, 5), _IDX),
    "cross_entropy weight smoothing none": (lambda x, t: FF.cross_entropy(x, t, weight=_W5, label_smoothing=0.1,
                                                                          reduction="none"), torch.randn(6, 5), _IDX),
    "cross_entropy weight sum": (lambda x, t: FF.cross_entropy(x, t, weight=_W5, reduction="sum"), torch.randn(6, 5),
                                 _IDX),
    "cross_entropy ignore_index smoothing": (lambda x, t: FF.cross_entropy(x, t, ignore_index=2, label_smoothing=0.2),
                                             torch.randn(6, 5), _IDX.clamp(min=0)),
    "cross_entropy spatial weight": (lambda x, t: FF.cross_entropy(x, t, weight=_W5), torch.randn(2, 5, 3, 2),
                                     _IDX_SPATIAL),
    "cross_entropy probabilities weight smoothing": (lambda x, t: FF.cross_entropy(x, t, weight=_W5,
                                                                                   label_smoothing=0.1),
                                                     torch.randn(6, 5), torch.rand(6, 5).softmax(1)),
    "cross_entropy probabilities none": (lambda x, t: FF.cross_entropy(x, t, reduction="none"), torch.randn(6, 5),
                                         torch.rand(6, 5).softmax(1)),
    # The forward that also writes the gradient, which cross_entropy's composite calls where the logits require grad
    # (the exporter decomposes it without grad, so it is called here directly): its loss and its gradient.
    **{f"cross_entropy_loss_forward_grad {kind} {reduction} {part}": (
        lambda x, t, r=r, i=i: torch.ops.fastops.cross_entropy_loss_forward_grad(x, t, _W5, r, 2, 0.1,
                                                                                 torch.float32)[i],
        torch.randn(6, 5), target)
       for kind, target in (("index", _IDX.clamp(min=0)), ("probabilities", torch.rand(6, 5).softmax(1)))
       for reduction, r in (("mean", 1), ("sum", 2))
       for i, part in enumerate(("loss", "grad"))},
}


@pytest.mark.parametrize("grad", (False, True), ids=("inference", "grad_enabled"))
@pytest.mark.parametrize("case", ONNX_LOSSES)
def test_onnx_loss_export_runs_in_onnxruntime(case, grad):
    ort = pytest.importorskip("onnxruntime")
    import onnx

    import fastops.onnx

    loss, x, t = ONNX_LOSSES[case]
    model = _LossModel(loss)
    with tempfile.TemporaryDirectory() as tmp, torch.set_grad_enabled(grad), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kl_div's 'mean' warning, as torch's
        path = os.path.join(tmp, "loss.onnx")
        fastops.onnx.export(model, (x, t), path)
        expected = model(x, t).detach()
        graph = onnx.load(path).graph
        assert not any(n.domain.startswith("fastops") for n in graph.node)
        session = ort.InferenceSession(path)
        names = [i.name for i in session.get_inputs()]
        feeds = {name: v.numpy() for name, v in zip(names, (x, t))}
        (out,) = session.run(None, feeds)
    # onnxruntime's Log / Exp are not torch's: float32-level agreement.
    torch.testing.assert_close(torch.from_numpy(out), expected, rtol=1e-5, atol=1e-6, equal_nan=True)


def _ddp_worker(rank, world_size, init_file, x, t, result_file):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only: never depend on how this machine's hostname resolves
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        model = DistributedDataParallel(fastops_mlp())
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        shard = slice(rank * len(x) // world_size, (rank + 1) * len(x) // world_size)
        loss = nn.functional.cross_entropy(model(x[shard]), t[shard])
        loss.backward()
        opt.step()
        if rank == 0:  # written whole, then renamed: the file exists only once the step's allreduce is done
            torch.save([p.detach() for p in model.module.parameters()], result_file + ".part")
            os.replace(result_file + ".part", result_file)
        dist.barrier()  # no rank tears gloo down while the other still talks to it
    finally:
        dist.destroy_process_group()


def test_ddp_gloo_two_processes_matches_single_process():
    import torch.multiprocessing as mp

    torch.manual_seed(1)
    x, t = torch.randn(32, 16), torch.randint(0, 10, (32,))
    with tempfile.TemporaryDirectory() as tmp:
        result_file = os.path.join(tmp, "params.pt")
        # A SIGABRT is tolerated only from gloo's C++ teardown: once in about ten runs on a loaded 2-core machine it
        # aborted a worker ("terminate called without an active exception") after the step had finished, and a retry
        # aborted again in one CI run of four. So an abort after rank 0 wrote the stepped parameters (which needs
        # both ranks' allreduce) is gloo's exit, not a failed step; before that, one retry. A deterministic crash
        # fails both attempts; a wrong result fails the comparison below.
        for attempt in range(2):
            try:
                mp.spawn(_ddp_worker, args=(2, os.path.join(tmp, f"init{attempt}"), x, t, result_file), nprocs=2,
                         join=True)
                break
            except mp.ProcessExitedException as e:
                if os.path.exists(result_file) and e.signal_name == "SIGABRT":
                    break
                if e.signal_name != "SIGABRT" or attempt == 1:
                    raise
        ddp_params = torch.load(result_file)
    model = fastops_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    nn.functional.cross_entropy(model(x), t).backward()
    opt.step()
    for p_ddp, p in zip(ddp_params, model.parameters()):
        torch.testing.assert_close(p_ddp, p.detach())


@requires_cuda
@pytest.mark.cuda
def test_ddp_nccl_one_rank_matches_plain_step():
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    if not dist.is_nccl_available():
        pytest.skip("torch built without NCCL")
    torch.manual_seed(1)
    x, t = torch.randn(32, 16, device="cuda"), torch.randint(0, 10, (32,), device="cuda")
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("nccl", init_method=f"file://{os.path.join(tmp, 'init')}", rank=0, world_size=1)
        try:
            model = DistributedDataParallel(fastops_mlp().cuda(), device_ids=[torch.cuda.current_device()])
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            fastops.functional.cross_entropy(model(x), t).backward()
            opt.step()
            ddp_params = [p.detach().clone() for p in model.module.parameters()]
        finally:
            dist.destroy_process_group()
    plain = fastops_mlp().cuda()
    opt = torch.optim.SGD(plain.parameters(), lr=0.1)
    fastops.functional.cross_entropy(plain(x), t).backward()
    opt.step()
    for p_ddp, p in zip(ddp_params, plain.parameters()):
        torch.testing.assert_close(p_ddp, p.detach())
