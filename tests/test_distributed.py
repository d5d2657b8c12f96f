"""fastops on torch.distributed, in real process groups: 2 and 4 processes on loopback (gloo on the CPU; NCCL with a
GPU per process where there are enough GPUs, skipped otherwise).

Every scenario below runs inside one world per (backend, size): the processes start once (starting a process that
imports torch costs seconds on these machines) and run the scenarios in turn; each test then reads its scenario's
outcome. A world is bounded twice: its process group times out collectives after PG_TIMEOUT_S, and the launcher kills
the whole process group after WORLD_TIMEOUT_S and fails what had not finished. A scenario that fails on one rank
ends that rank's process, so the others fail fast on a closed connection instead of waiting for a timeout.

What "equal to one rank's" means here is the project's accuracy rule (reference.py): a distributed fastops result's
error against a float64 one-process reference is at most twice the native result's error, plus the dtype floor, with
the native result being torch.nn run the same distributed way and, separately, fastops in one process.
"""

from __future__ import annotations

import copy
import datetime
import functools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import types

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))
sys.path.insert(0, HERE)

PG_TIMEOUT_S = 60
WORLD_TIMEOUT_S = 240

SCENARIOS: dict = {}  # name -> (function, world sizes)


def scenario(*world_sizes):
    def wrap(fn):
        SCENARIOS[fn.__name__] = (fn, world_sizes)
        return fn

    return wrap


# ---------------------------------------------------------------------------------------------------------------------
# The launcher (pytest side) and the worker (each rank)


def _scenarios_for(world_size: int) -> list[str]:
    return [name for name, (_, sizes) in SCENARIOS.items() if world_size in sizes]


@functools.cache
def run_world(world_size: int, backend: str) -> dict:
    """Runs every scenario for `world_size` in `world_size` fresh processes; returns {"results": [per-rank dict],
    "log": the last lines of every rank's stderr, "timed_out": bool, "seconds": float}."""
    tmp = tempfile.mkdtemp(prefix=f"fastops-dist{world_size}-")
    names = _scenarios_for(world_size)
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", PYTHONUNBUFFERED="1")
    procs, logs = [], []
    start = time.monotonic()
    for rank in range(world_size):
        log = open(os.path.join(tmp, f"rank{rank}.log"), "w")  # noqa: SIM115  (closed below)
        logs.append(log)
        # Its own session: the launcher can kill a rank and anything it started, and nothing outlives the test.
        procs.append(subprocess.Popen([sys.executable, __file__, "--worker", str(rank), str(world_size), backend, tmp,
                                       ",".join(names)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True))
    timed_out = False
    for p in procs:
        try:
            p.wait(timeout=max(1.0, WORLD_TIMEOUT_S - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            timed_out = True
            break
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    for log in logs:
        log.close()
    results, tails = [], []
    for rank in range(world_size):
        path = os.path.join(tmp, f"result{rank}.json")
        if os.path.exists(path):
            with open(path) as f:
                results.append(json.load(f))
        else:
            results.append({})
        with open(os.path.join(tmp, f"rank{rank}.log")) as f:
            tails.append(f"--- rank {rank} ---\n" + "".join(f.readlines()[-40:]))
    shutil.rmtree(tmp, ignore_errors=True)  # logs live on as their tails; checkpoints are not needed past the world
    return {"results": results, "log": "\n".join(tails), "timed_out": timed_out,
            "seconds": time.monotonic() - start}


def _worker(rank: int, world_size: int, backend: str, tmp: str, names: list[str]) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    device = "cpu"
    if backend == "nccl":
        torch.cuda.set_device(rank)
        device = f"cuda:{rank}"
    dist.init_process_group(backend, init_method=f"file://{os.path.join(tmp, 'init')}", rank=rank,
                            world_size=world_size, timeout=datetime.timedelta(seconds=PG_TIMEOUT_S))
    results: dict = {}
    path = os.path.join(tmp, f"result{rank}.json")
    failed = False
    try:
        for name in names:
            start = time.perf_counter()
            try:
                torch.manual_seed(0)
                ctx = types.SimpleNamespace(rank=rank, world_size=world_size, device=device, backend=backend,
                                            tmp=os.path.join(tmp, name))
                os.makedirs(ctx.tmp, exist_ok=True)
                measured = SCENARIOS[name][0](ctx) or {}
                results[name] = {"ok": True, "measured": measured}
            except Exception:  # noqa: BLE001  (any failure is this scenario's outcome, reported by its test)
                results[name] = {"ok": False, "error": traceback.format_exc()}
                failed = True
            results[name]["seconds"] = round(time.perf_counter() - start, 2)
            with open(path, "w") as f:
                json.dump(results, f)
            if failed:
                break
            dist.barrier()
    finally:
        with open(path, "w") as f:
            json.dump(results, f)
        if failed:
            os._exit(1)  # the other ranks see a closed connection at once
        dist.destroy_process_group()


def _check(world_size: int, backend: str, name: str) -> None:
    world = run_world(world_size, backend)
    for rank, results in enumerate(world["results"]):
        outcome = results.get(name)
        if outcome is None:
            why = f"timed out after {WORLD_TIMEOUT_S} s" if world["timed_out"] else "did not run"
            pytest.fail(f"{name} on rank {rank} {why}\n{world['log']}")
        assert outcome["ok"], f"{name} failed on rank {rank}:\n{outcome['error']}"


def _nccl_ready(world_size: int) -> bool:
    import torch.distributed as dist
    from reference import cuda_ready

    return cuda_ready() and dist.is_nccl_available() and torch.cuda.device_count() >= world_size


# ---------------------------------------------------------------------------------------------------------------------
# Shared helpers (run inside the workers)


def _mesh(ctx, shape=None, names=None):
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh("cuda" if ctx.backend == "nccl" else "cpu", shape or (ctx.world_size,),
                            mesh_dim_names=names)


def _comm_counts(fn):
    """fn()'s result and the collectives it issued ({name: count})."""
    from torch.distributed.tensor.debug import CommDebugMode

    with CommDebugMode() as comm:
        result = fn()
    return result, {str(k).split(".")[-1].split("'")[0]: v for k, v in comm.get_comm_counts().items()}


def _full(t):
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def _accurate(out, natives: dict, ref, what: str) -> dict:
    """The accuracy rule against each native result; returns the measured errors for the report."""
    from reference import assert_accurate, max_error

    measured = {"error": max_error(out, ref)}
    for name, native in natives.items():
        assert_accurate(out, native, ref, what=f"{what} (native: {name})")
        measured[f"{name}_error"] = max_error(native, ref, special_values_must_match=False)
    return measured


# ---------------------------------------------------------------------------------------------------------------------
# Scenarios: the sharding rules, op by op


def _op_samples(device):
    """(op, args) for every fastops op; float32, every dim a multiple of 4 so any dim can be split over 4 ranks."""
    gen = torch.Generator().manual_seed(0)
    ops = torch.ops.fastops

    def t(*shape, low=-3.0, high=3.0, dtype=torch.float32):
        return (torch.rand(shape, generator=gen, dtype=torch.float64) * (high - low) + low).to(device, dtype)

    x, g = t(4, 8), t(4, 8)
    yield ops.relu.default, (x,)
    yield ops.gelu.default, (x, "tanh")
    yield ops.silu.default, (x,)
    yield ops.leaky_relu.default, (x, 0.1)
    yield ops.sigmoid.default, (x,)
    yield ops.tanh.default, (x,)
    yield ops.relu_backward.default, (g, ops.relu(x))
    yield ops.gelu_backward.default, (g, x, "tanh")
    yield ops.silu_backward.default, (g, x)
    yield ops.leaky_relu_backward.default, (g, x, 0.1)
    yield ops.sigmoid_backward.default, (g, ops.sigmoid(x))
    yield ops.tanh_backward.default, (g, ops.tanh(x))
    elu = (1.3, 1.05, 0.5)  # alpha, scale, input_scale
    yield ops.elu.default, (x, *elu)
    yield ops.elu_backward.default, (g, x, *elu)
    yield ops.softplus.default, (x, 2.0, 3.0)
    yield ops.softplus_backward.default, (g, x, 2.0, 3.0)
    yield ops.hardtanh.default, (x, -0.5, 2.0)
    yield ops.hardtanh_backward.default, (g, x, -0.5, 2.0)
    for name in ("mish", "hardswish", "hardsigmoid"):
        yield getattr(ops, name).default, (x,)
        yield getattr(ops, f"{name}_backward").default, (g, x)
    x3, g3, b = t(4, 4, 8), t(4, 4, 8), t(8)
    yield ops.bias_act.default, (x3, b, "gelu")
    yield ops.bias_act_backward.default, (g3, x3, b, "silu")
    up = t(4, 4, 8)
    yield ops.swiglu.default, (x3, up)
    yield ops.geglu.default, (x3, up, "tanh")
    packed = t(4, 4, 16)
    yield ops.swiglu.packed, (packed,)
    yield ops.geglu.packed, (packed, "none")
    yield ops.glu_backward.default, (g3, x3, up, "silu")
    yield ops.glu_packed_backward.default, (g3, packed, "gelu")
    yield ops.glu.default, (packed, 1)
    yield ops.glu.default, (packed, -1)
    yield ops.glu_dim_backward.default, (t(4, 2, 16), packed, 1)
    yield ops.matmul.default, (t(4, 8), t(8, 12))
    yield ops.matmul.default, (t(4, 4, 8), t(4, 8, 12))
    yield ops.matmul.default, (t(4, 4, 8), t(8, 12))
    w, bias = t(12, 8), t(12)
    yield ops.linear.default, (x3, w, bias)
    yield ops.linear.default, (x3, w, None)
    yield ops.linear.default, (t(8), w, bias)
    yield ops.linear_act.default, (x3, w, bias, "gelu", True)
    yield ops.linear_act.default, (x3, w, None, "relu", False)
    yield ops.bias_grad.default, (t(4, 4, 12),)
    yield ops.matmul_accumulate_.default, (t(4, 8), t(4, 12), t(12, 8))
    logits, cw = t(8, 12), t(12, low=0.5, high=1.5)
    target = torch.randint(0, 12, (8,), generator=gen).to(device)
    target[::3] = -100
    prob = torch.rand(8, 12, generator=gen).softmax(1).to(device)
    yield ops.cross_entropy_forward.default, (logits, target, cw, -100, 0.1)
    yield ops.cross_entropy_forward.default, (logits, prob, None, -100, 0.0)
    _, _, lse, mass = ops.cross_entropy_forward(logits, target, cw, -100, 0.1)
    grad_rows = t(8, dtype=torch.float64)
    yield ops.cross_entropy_backward.default, (grad_rows, logits, target, cw, lse, mass, -100, 0.1)
    scale0, scale_rows = torch.tensor(0.25, dtype=torch.float64, device=device), t(8, dtype=torch.float64)
    for reduction in (0, 1, 2):
        yield ops.cross_entropy_loss_forward.default, (logits, target, cw, reduction, -100, 0.1, torch.float32)
        yield ops.cross_entropy_loss_forward.default, (logits, prob, None, reduction, -100, 0.0, torch.float32)
    for reduction in (1, 2):
        yield ops.cross_entropy_loss_forward_grad.default, (logits, target, cw, reduction, -100, 0.1, torch.float32)
        yield ops.cross_entropy_loss_forward_grad.default, (logits, prob, None, reduction, -100, 0.0, torch.float32)
    yield ops.scale_rows_.default, (t(8, 12), scale_rows)
    yield ops.scale_rows_.default, (t(8, 12), scale0)
    a, y = t(4, 8), t(4, 8)
    for reduction in (0, 1, 2):
        up_loss = t(4, 8) if reduction == 0 else t()
        yield ops.mse_loss.default, (a, y, reduction)
        yield ops.l1_loss.default, (a, y, reduction)
        yield ops.l1_loss_backward.default, (up_loss, a, y, reduction)
        yield ops.smooth_l1_loss.default, (a, y, reduction, 0.5)
        yield ops.huber_loss.default, (a, y, reduction, 1.5)
        yield ops.mse_loss_backward.default, (up_loss, a, y, reduction)
        yield ops.smooth_l1_loss_backward.default, (up_loss, a, y, reduction, 0.5)
        yield ops.huber_loss_backward.default, (up_loss, a, y, reduction, 1.5)
        p, wb, pw = t(4, 8, low=0, high=1), t(4, 8, low=0.5, high=1.5), t(4, 8, low=0.5, high=2)
        yield ops.binary_cross_entropy_with_logits.default, (a, p, wb, pw, reduction)
        yield ops.binary_cross_entropy_with_logits_backward.default, (up_loss, a, p, wb, pw, reduction)
        x01 = t(4, 8, low=0.05, high=0.95)
        yield ops.binary_cross_entropy.default, (x01, p, wb, reduction)
        yield ops.binary_cross_entropy.default, (x01, p, None, reduction)
        yield ops.binary_cross_entropy_backward.default, (up_loss, x01, p, wb, reduction)
        yield ops.kl_div.default, (a, p, reduction, False)
        yield ops.kl_div.default, (a, y, reduction, True)
        yield ops.kl_div_backward.default, (up_loss, a, p, reduction, False)
    for dim in (0, 1, -1):
        z = t(6, 8, 4)
        yield ops.softmax.default, (z, dim)
        yield ops.log_softmax.default, (z, dim)
        yield ops.softmax_backward.default, (t(6, 8, 4), ops.softmax(z, dim), dim)
        yield ops.log_softmax_backward.default, (t(6, 8, 4), ops.log_softmax(z, dim), dim)
    log_p, classes = ops.log_softmax(t(8, 12), 1), torch.randint(0, 12, (8,), generator=gen).to(device)
    yield ops.nll_loss_forward.default, (log_p, classes, cw, -100)
    yield ops.nll_loss_forward.default, (log_p, classes, None, 3)
    yield ops.nll_loss_backward.default, (t(8, dtype=torch.float64), log_p, classes, cw, -100)


_REDUCTION_NAMES = ("none", "mean", "sum")


def _torch_twins() -> dict:
    """torch's own op for the fastops ops whose split strategies reduce: a sum over a split dim is a partial sum per
    rank, rounded to the output dtype before the ranks add them (torch's DTensor gives its losses the same
    Partial placements), so "the native op at the same precision" is torch's op split the same way: run on each
    rank's shards and combined as the output placement says. (Calling torch's losses on the DTensors themselves
    gives the same placements but goes through DTensor's decomposition tracing: 16 s of this scenario's 27.)"""
    import torch.nn.functional as F

    ops, aten = torch.ops.fastops, torch.ops.aten
    return {
        ops.mse_loss.default: lambda x, t, r: F.mse_loss(x, t, reduction=_REDUCTION_NAMES[r]),
        ops.l1_loss.default: lambda x, t, r: F.l1_loss(x, t, reduction=_REDUCTION_NAMES[r]),
        ops.binary_cross_entropy.default: lambda x, t, w, r: F.binary_cross_entropy(x, t, w,
                                                                                   reduction=_REDUCTION_NAMES[r]),
        ops.smooth_l1_loss.default: lambda x, t, r, beta: F.smooth_l1_loss(x, t, reduction=_REDUCTION_NAMES[r],
                                                                         beta=beta),
        ops.huber_loss.default: lambda x, t, r, delta: F.huber_loss(x, t, reduction=_REDUCTION_NAMES[r], delta=delta),
        ops.kl_div.default: lambda x, t, r, log_target: torch.kl_div(x, t, r, log_target=log_target),
        ops.binary_cross_entropy_with_logits.default: lambda x, t, w, pw, r: F.binary_cross_entropy_with_logits(
            x, t, w, pos_weight=pw, reduction=_REDUCTION_NAMES[r]),
        ops.mse_loss_backward.default: aten.mse_loss_backward.default,
        ops.smooth_l1_loss_backward.default: aten.smooth_l1_loss_backward.default,
        ops.huber_loss_backward.default: aten.huber_loss_backward.default,
    }


def _spec_of(arg, mesh):
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor._dtensor_spec import DTensorSpec, TensorMeta

    if isinstance(arg, torch.Tensor):
        return DTensorSpec(mesh, (Replicate(),), tensor_meta=TensorMeta(arg.shape, arg.stride(), arg.dtype))
    return arg


def _distribute(arg, placement, mesh):
    from torch.distributed.tensor import DTensor, Partial, distribute_tensor

    if isinstance(placement, Partial):  # each rank holds 1 / ranks of the value: exact for 2 and 4 ranks
        return DTensor.from_local(arg / mesh.size(), mesh, (placement,), run_check=False)
    return distribute_tensor(arg, mesh, (placement,))


@scenario(2, 4)
def sharding_rules_every_op(ctx):
    """Every strategy every rule lists, for every fastops op: inputs placed as the strategy says, the op runs with no
    communication, its outputs come out placed as the strategy says, and gathered they meet the accuracy rule
    (float64 reference: the same op in float64 on one rank; native: torch's op split the same way where _torch_twins
    names one, else fastops' op on one rank)."""
    from reference import to_reference
    from torch.distributed.tensor import DTensor

    from fastops.distributed._rules import RULES, is_tensor_argument

    mesh = _mesh(ctx)
    twins = _torch_twins()
    covered, runs = set(), 0
    for op, args in _op_samples(ctx.device):
        covered.add(str(op))
        strategies = RULES[op](*(_spec_of(a, mesh) for a in args))
        tensor_positions = [i for i, a in enumerate(op._schema.arguments) if is_tensor_argument(a)]
        for outs, ins in strategies:
            dargs = list(args)
            for pos, placement in zip(tensor_positions, ins):
                if args[pos] is not None:
                    dargs[pos] = _distribute(args[pos].clone(), placement, mesh)
            plain = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
            ref_args = [to_reference(a) for a in args]
            result, comms = _comm_counts(lambda: op(*dargs))  # noqa: B023
            what = f"{op} with inputs {ins}"
            assert not comms, f"{what}: redistributed ({comms})"
            single, ref = op(*plain), op(*ref_args)
            native_name = "torch_split_the_same_way" if op in twins else "fastops_one_rank"
            if op in twins:
                local = [a.to_local() if isinstance(a, DTensor) else a for a in dargs]
                single = _full(DTensor.from_local(twins[op](*local), mesh, (outs[0],), run_check=False))
            if op._schema.returns:
                results = result if isinstance(result, tuple) else (result,)
                singles = single if isinstance(single, tuple) else (single,)
                refs = ref if isinstance(ref, tuple) else (ref,)
                for i, (r, placement) in enumerate(zip(results, outs)):
                    assert isinstance(r, DTensor) and r.placements == (placement,), \
                        f"{what}: output {i} placed {getattr(r, 'placements', None)}, the rule says {placement}"
            else:  # in place: the mutated first argument is the result
                results, singles, refs = (dargs[0],), (plain[0],), (ref_args[0],)
            for i, (r, s, f) in enumerate(zip(results, singles, refs)):
                if s.is_floating_point():
                    _accurate(_full(r), {native_name: s}, f, what=f"{what}: output {i}")
            runs += 1
    missing = {str(o) for o in RULES} - covered
    assert not missing, f"ops without a sample here: {missing}"
    # Every fastops op has a rule, but the in-place cross_entropy_forward_grad_ and cross_entropy_block_grad_ (see
    # _rules.py; loss_parallel runs them), the
    # Python custom ops linear_cross_entropy(_rows), whose chunk loop DTensor cannot see into (the same), and the
    # composite ops (CompositeImplicitAutograd: DTensor sees the ops they decompose into).
    schemas = {n.split("::")[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("fastops::")
               and not torch._C._dispatch_has_kernel_for_dispatch_key(n, "CompositeImplicitAutograd")}
    unruled = {n for n in schemas if not {f"fastops.{n}", f"fastops.{n}.default"} & {str(o) for o in RULES}}
    assert unruled <= {"cross_entropy_forward_grad_", "cross_entropy_block_grad_", "linear_cross_entropy",
                       "linear_cross_entropy_rows"}, unruled
    return {"ops": len(covered), "strategy_runs": runs}


@scenario(2)
def sharding_rules_refuse_and_cache(ctx):
    """The splits that have no local rule fail with an explanation rather than a silent gather (a packed gated unit
    split through [gate | up], a row-wise LinearAct, a 'mean' elementwise loss over split inputs); and two calls that
    differ only in a non-tensor argument do not share a cached sharding decision."""
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    import fastops.distributed  # noqa: F401

    ops = torch.ops.fastops
    mesh = _mesh(ctx)
    x, w = torch.randn(4, 8, device=ctx.device), torch.randn(6, 8, device=ctx.device)
    packed = distribute_tensor(torch.randn(4, 8, device=ctx.device), mesh, [Shard(1)])
    with pytest.raises(Exception, match=r"split along its last dim, which holds \[gate \| up\]"):
        ops.swiglu.packed(packed)
    with pytest.raises(Exception, match="split by input features"):
        ops.linear_act(distribute_tensor(x, mesh, [Shard(1)]), distribute_tensor(w, mesh, [Shard(1)]), None, "gelu",
                       True)
    with pytest.raises(Exception, match="reduction='mean' over an input split across ranks"):
        ops.mse_loss(distribute_tensor(x, mesh, [Shard(0)]), distribute_tensor(x, mesh, [Shard(0)]), 1)
    dx, dw = distribute_tensor(x, mesh, [Replicate()]), distribute_tensor(w, mesh, [Shard(0)])
    _, pre = ops.linear_act(dx, dw, None, "gelu", True)
    assert pre.shape == (4, 6)
    _, pre = ops.linear_act(dx, dw, None, "gelu", False)  # the same specs; only store_pre differs
    assert pre.shape == (0,) and pre.to_local().shape == (0,), pre.shape


# ---------------------------------------------------------------------------------------------------------------------
# Scenarios: tensor and sequence parallelism on fastops modules


class _MLP(torch.nn.Module):
    """in -> w1, w3 (column-wise) -> gated unit or activations -> w2 (row-wise), from fastops.nn or torch.nn."""

    def __init__(self, kind: str, modules, dim=16, hidden=32):
        super().__init__()
        import fastops.nn as fnn

        fast = modules is fnn
        self.kind = kind
        self.act_in = modules.Tanh()  # sequence parallel in the "sp" plans
        linear_act = kind == "linear_act"
        self.w1 = (fnn.LinearAct(dim, hidden, activation="gelu") if fast else torch.nn.Linear(dim, hidden)) \
            if linear_act else modules.Linear(dim, hidden)
        self.w3 = modules.Linear(dim, hidden)
        self.w2 = modules.Linear(hidden, dim)
        if kind == "swiglu":
            self.glu = fnn.SwiGLU() if fast else None
        elif kind == "geglu":
            self.glu = fnn.GeGLU("tanh") if fast else None
        elif kind == "activations":
            self.acts = torch.nn.Sequential(modules.GELU(), modules.SiLU(), modules.LeakyReLU(0.2), modules.Sigmoid(),
                                            modules.ReLU(), modules.Tanh())
        self.fast = fast

    def forward(self, x):
        h = self.act_in(x)
        if self.kind == "swiglu":
            z = self.glu(self.w1(h), self.w3(h)) if self.fast else torch.nn.functional.silu(self.w1(h)) * self.w3(h)
        elif self.kind == "geglu":
            z = self.glu(self.w1(h), self.w3(h)) if self.fast else \
                torch.nn.functional.gelu(self.w1(h), approximate="tanh") * self.w3(h)
        elif self.kind == "linear_act":
            z = self.w1(h) if self.fast else torch.nn.functional.gelu(self.w1(h))
            z = z * self.w3(h)
        else:
            z = self.acts(self.w1(h)) * self.w3(h)
        return self.w2(z)


def _tp_plan(sequence_parallel: bool) -> dict:
    from torch.distributed.tensor import Shard
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, SequenceParallel

    if not sequence_parallel:
        return {"w1": ColwiseParallel(use_local_output=False), "w3": ColwiseParallel(use_local_output=False),
                "w2": RowwiseParallel()}
    return {"act_in": SequenceParallel(),
            "w1": ColwiseParallel(input_layouts=Shard(1), use_local_output=False),
            "w3": ColwiseParallel(input_layouts=Shard(1), use_local_output=False),
            "w2": RowwiseParallel(output_layouts=Shard(1))}


@scenario(2, 4)
def tensor_parallel_mlp(ctx):
    """Llama-style MLPs (SwiGLU, GeGLU; a LinearAct one; one with every activation) split column-wise / row-wise,
    with and without sequence parallelism: the same collectives as the torch.nn twin under the same plan and no
    other; output and every gradient equal one rank's (accuracy rule against torch.nn split the same way and
    against fastops on one rank, float64 reference)."""
    import torch.distributed as dist
    from torch.distributed.tensor.parallel import parallelize_module

    import fastops.distributed  # noqa: F401  (the sharding rules: what a user imports too)
    import fastops.nn as fnn

    mesh = _mesh(ctx)
    measured = {}
    gen = torch.Generator().manual_seed(1)
    x_full = torch.randn(2, 8, 16, generator=gen).to(ctx.device)
    for kind in ("swiglu", "geglu", "linear_act", "activations"):
        for sp in (False, True):
            torch.manual_seed(0)
            models = {name: _MLP(kind, mod).to(ctx.device) for name, mod in (("fast", fnn), ("torch", torch.nn))}
            models["torch"].load_state_dict(models["fast"].state_dict())
            one_rank = {"fastops_one_rank": _MLP(kind, fnn).to(ctx.device),
                        "ref": _MLP(kind, torch.nn).to(ctx.device).double()}
            for m in one_rank.values():
                m.load_state_dict(models["fast"].state_dict())
            outs, comms = {}, {}
            for name, model in models.items():
                parallelize_module(model, mesh, _tp_plan(sp))
                rows = x_full.shape[1] // ctx.world_size
                x = (x_full[:, ctx.rank * rows:(ctx.rank + 1) * rows] if sp else x_full).clone().requires_grad_()
                y, fwd = _comm_counts(lambda: model(x))  # noqa: B023
                _, bwd = _comm_counts(lambda: y.backward(torch.full_like(y, 0.5)))  # noqa: B023
                if sp:  # gather the sequence shards
                    y_parts = [torch.empty_like(y) for _ in range(ctx.world_size)]
                    g_parts = [torch.empty_like(x.grad) for _ in range(ctx.world_size)]
                    dist.all_gather(y_parts, y.detach().contiguous())
                    dist.all_gather(g_parts, x.grad.contiguous())
                    y_all, gx = torch.cat(y_parts, 1), torch.cat(g_parts, 1)
                else:
                    y_all, gx = y.detach(), x.grad
                outs[name] = {"out": y_all, "grad_x": gx,
                              **{f"grad_{n}": _full(p.grad) for n, p in model.named_parameters()}}
                comms[name] = (fwd, bwd)
            label = f"{kind}{' sequence-parallel' if sp else ''}"
            assert comms["fast"] == comms["torch"], f"{label}: fastops {comms['fast']}, torch {comms['torch']}"
            expected_fwd = {"all_gather_into_tensor": 2, "reduce_scatter_tensor": 1} if sp else {"all_reduce": 1}
            assert comms["fast"][0] == expected_fwd, f"{label}: forward collectives {comms['fast'][0]}"
            for name, model in one_rank.items():  # one rank: the whole input, the same upstream gradient
                xr = x_full.clone().to(next(model.parameters()).dtype).requires_grad_()
                y = model(xr)
                y.backward(torch.full_like(y, 0.5))
                outs[name] = {"out": y.detach(), "grad_x": xr.grad,
                              **{f"grad_{n}": p.grad for n, p in model.named_parameters()}}
            for key in outs["fast"]:
                natives = {"torch_split_the_same_way": outs["torch"][key],
                           "fastops_one_rank": outs["fastops_one_rank"][key]}
                m = _accurate(outs["fast"][key], natives, outs["ref"][key], what=f"{label} {key}")
                measured[f"{label} {key} error"] = m["error"]
            measured[f"{label} collectives"] = comms["fast"]
    return measured


# ---------------------------------------------------------------------------------------------------------------------
# Scenarios: vocabulary-parallel losses


@scenario(2, 4)
def vocab_parallel_cross_entropy(ctx):
    """fastops cross entropy over logits split along the classes (37 classes: uneven shards), under
    fastops.distributed.loss_parallel: one all-gather of per-row numbers in the forward, none in the backward; loss and
    gradient equal one rank's for class weights, ignored rows (also an ignore_index that is a real class), label
    smoothing and every reduction, float32 and bfloat16."""
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    import fastops.distributed as fdist
    import fastops.functional as F

    mesh = _mesh(ctx)
    gen = torch.Generator().manual_seed(2)
    n, v = 12, 37
    configs = [(False, -100, 0.0, "mean"), (True, -100, 0.0, "sum"), (False, 3, 0.1, "mean"), (True, -100, 0.2, "none"),
               (True, 5, 0.0, "none"), (False, -100, 0.3, "sum")]
    measured = {}
    for dtype in (torch.float32, torch.bfloat16):
        for weighted, ignore_index, eps, reduction in configs:
            logits = (torch.randn(n, v, generator=gen, dtype=torch.float64) * 3).to(ctx.device, dtype)
            target = torch.randint(0, v, (n,), generator=gen).to(ctx.device)
            target[::4] = ignore_index
            weight = (torch.rand(v, generator=gen) + 0.5).to(ctx.device, dtype) if weighted else None
            upstream = torch.randn(n, generator=gen).to(ctx.device, dtype) if reduction == "none" else None
            kwargs = {"weight": weight, "ignore_index": ignore_index, "reduction": reduction, "label_smoothing": eps}
            what = f"{dtype} w={weighted} ignore={ignore_index} eps={eps} {reduction}"

            dl = distribute_tensor(logits, mesh, [Shard(1)]).requires_grad_()
            with fdist.loss_parallel():
                loss, fwd = _comm_counts(lambda: F.cross_entropy(dl, target, **kwargs))  # noqa: B023
                up = upstream if upstream is None else \
                    torch.distributed.tensor.distribute_tensor(upstream, mesh, loss.placements)
                _, bwd = _comm_counts(lambda: loss.backward(up))  # noqa: B023
            assert fwd == {"_allgather_base_": 1} and bwd == {}, f"{what}: collectives {fwd}, {bwd}"
            results = {"loss": _full(loss).detach(), "grad": _full(dl.grad)}
            natives = {}
            for name, fn, dt in (("fastops_one_rank", F.cross_entropy, dtype),
                                 ("torch_one_rank", torch.nn.functional.cross_entropy, dtype),
                                 ("ref", torch.nn.functional.cross_entropy, torch.float64)):
                lg = logits.to(dt).clone().requires_grad_()
                kw = dict(kwargs, weight=weight.to(dt) if weighted else None)
                out = fn(lg, target, **kw)
                out.backward(None if upstream is None else upstream.to(dt))
                natives[name] = {"loss": out.detach(), "grad": lg.grad}
            for key, value in results.items():
                measured[f"{what} {key}"] = _accurate(
                    value, {k: natives[k][key] for k in ("fastops_one_rank", "torch_one_rank")}, natives["ref"][key],
                    what=f"{what} {key}")
    # Outside loss_parallel() split classes are refused rather than gathered; inside it, probability targets are.
    dl = distribute_tensor(torch.randn(n, v, device=ctx.device), mesh, [Shard(1)]).requires_grad_()
    target = torch.randint(0, v, (n,), device=ctx.device)
    with pytest.raises(Exception, match=r"split along the classes; run the loss .* inside"):
        F.cross_entropy(dl, distribute_tensor(target, mesh, [Replicate()]))
    with pytest.raises(NotImplementedError, match="probability targets"), fdist.loss_parallel():
        F.cross_entropy(dl, torch.rand(n, v, device=ctx.device).softmax(1))
    return measured


def _peak_bytes(fn):
    """fn()'s result and the most memory this process's allocator held at once during it: on the CPU, the running sum
    of the profiler's allocation / free records in time order (the raw records: the op-level summary books a free
    inside an op at that op's start, before allocations made after it), on a GPU the CUDA allocator's peak."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        result = fn()
        torch.cuda.synchronize()
        return result, torch.cuda.max_memory_allocated() - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    records = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for record in sorted(records, key=lambda e: e.start_ns()):
        live += record.nbytes()
        peak = max(peak, live)
    return result, peak


@scenario(2, 4)
def vocab_parallel_linear_cross_entropy(ctx):
    """fastops.nn.LinearCrossEntropyLoss with its classifier split along the vocabulary (VocabParallel): loss and
    gradients (hidden states, weight, bias) equal one rank's (accuracy rule against torch's LinearCrossEntropyLoss
    and fastops' on one rank); the collectives are one all-gather per chunk of rows and one all-reduce of the hidden
    states' gradient, all in the forward; and this rank's peak memory for a 512-token x 8192-class head is measured
    (the test below asserts it falls with the rank count)."""
    from torch.distributed.tensor.parallel import parallelize_module

    import fastops.distributed as fdist
    import fastops.nn as fnn

    mesh = _mesh(ctx)
    gen = torch.Generator().manual_seed(3)
    measured = {}
    h, v, n, chunk = 16, 90, 32, 8
    for bias, eps, reduction, weighted in ((True, 0.0, "mean", False), (False, 0.1, "sum", True),
                                           (True, 0.2, "mean", True)):
        what = f"bias={bias} eps={eps} {reduction} weighted={weighted}"
        cw = (torch.rand(v, generator=gen) + 0.5).to(ctx.device) if weighted else None
        options = types.SimpleNamespace(batch_chunk_size=chunk)

        def make(fast: bool, bias=bias, cw=cw, eps=eps, reduction=reduction, options=options):
            if fast:
                return fnn.LinearCrossEntropyLoss(h, v, bias=bias, weight=cw, label_smoothing=eps, reduction=reduction,
                                                  options=options, device=ctx.device)
            return torch.nn.LinearCrossEntropyLoss(h, v, bias=bias, weight=cw, label_smoothing=eps,
                                                   reduction=reduction, device=ctx.device)

        torch.manual_seed(0)
        split = make(True)
        state = {k: val.clone() for k, val in split.state_dict().items()}
        hidden = torch.randn(n, h, generator=gen).to(ctx.device)
        target = torch.randint(0, v, (n,), generator=gen).to(ctx.device)
        target[::5] = -100
        parallelize_module(split, mesh, fdist.VocabParallel())
        x = hidden.clone().requires_grad_()
        with fdist.loss_parallel():
            loss, fwd = _comm_counts(lambda: split(x, target))  # noqa: B023
            _, bwd = _comm_counts(loss.backward)
        assert fwd == {"_allgather_base_": n // chunk, "allreduce_": 1} and bwd == {}, \
            f"{what}: collectives {fwd}, {bwd}"
        results = {"loss": loss.detach(), "grad_hidden": x.grad, "grad_weight": _full(split.linear.weight.grad)}
        if bias:
            results["grad_bias"] = _full(split.linear.bias.grad)
        natives = {}
        for name, fast, dt in (("fastops_one_rank", True, torch.float32), ("torch_one_rank", False, torch.float32),
                               ("ref", False, torch.float64)):
            m = make(fast).to(dt)
            m.load_state_dict(state)
            xr = hidden.to(dt).clone().requires_grad_()
            out = m(xr, target)
            out.backward()
            natives[name] = {"loss": out.detach(), "grad_hidden": xr.grad, "grad_weight": m.linear.weight.grad,
                             "grad_bias": m.linear.bias.grad if bias else None}
        for key, value in results.items():
            measured[f"{what} {key}"] = _accurate(
                value, {k: natives[k][key] for k in ("fastops_one_rank", "torch_one_rank")}, natives["ref"][key],
                what=f"{what} {key}")

    # Hidden states split by rows (as a sequence-parallel model's, flattened) are gathered first; the backward hands each
    # rank its rows' gradient without communicating (every rank holds the whole, identical gradient).
    from torch.distributed.tensor import Shard

    torch.manual_seed(0)
    split = fnn.LinearCrossEntropyLoss(h, v, device=ctx.device, options=types.SimpleNamespace(batch_chunk_size=chunk))
    one = fnn.LinearCrossEntropyLoss(h, v, device=ctx.device, options=types.SimpleNamespace(batch_chunk_size=chunk))
    one.load_state_dict(split.state_dict())
    parallelize_module(split, mesh, fdist.VocabParallel(input_layouts=Shard(0)))
    hidden = torch.randn(n, h, generator=gen).to(ctx.device)
    target = torch.randint(0, v, (n,), generator=gen).to(ctx.device)
    rows = slice(ctx.rank * n // ctx.world_size, (ctx.rank + 1) * n // ctx.world_size)
    x = hidden[rows].clone().requires_grad_()
    with fdist.loss_parallel():
        loss, fwd = _comm_counts(lambda: split(x, target))
        _, bwd = _comm_counts(loss.backward)
    assert fwd == {"all_gather_into_tensor": 1, "_allgather_base_": n // chunk, "allreduce_": 1} and bwd == {}, \
        f"rows split: collectives {fwd}, {bwd}"
    natives = {}
    for name, model in (("fastops_one_rank", one), ("ref", copy.deepcopy(one).double())):
        xr = hidden.to(next(model.parameters()).dtype).clone().requires_grad_()
        out = model(xr, target)
        out.backward()
        natives[name] = {"loss": out.detach(), "grad_rows": xr.grad[rows]}
    for key, value in (("loss", loss.detach()), ("grad_rows", x.grad)):
        measured[f"rows split {key}"] = _accurate(value, {"fastops_one_rank": natives["fastops_one_rank"][key]},
                                                  natives["ref"][key], what=f"rows split {key}")
    with pytest.raises(NotImplementedError, match="reduction='none'"), fdist.loss_parallel():
        split.reduction = "none"
        split(x, target)

    # Memory: a 512-token x 8192-class head over 64 hidden features, float32, in one chunk of rows.
    h, v, n = 64, 8192, 512
    torch.manual_seed(0)
    hidden = torch.randn(n, h, device=ctx.device, requires_grad=True)
    target = torch.randint(0, v, (n,), device=ctx.device)
    big = fnn.LinearCrossEntropyLoss(h, v, device=ctx.device, options=types.SimpleNamespace(batch_chunk_size=n))
    if ctx.rank == 0:  # the one-process figure, on rank 0 while the others wait at the barrier below
        one = fnn.LinearCrossEntropyLoss(h, v, device=ctx.device, options=types.SimpleNamespace(batch_chunk_size=n))
        _, measured["peak_bytes_one_process"] = _peak_bytes(lambda: one(hidden, target).backward())
    torch.distributed.barrier()
    parallelize_module(big, mesh, fdist.VocabParallel())

    def step():
        with fdist.loss_parallel():
            big(hidden, target).backward()

    _, measured["peak_bytes"] = _peak_bytes(step)
    measured["logits_bytes_one_process"] = n * v * 4
    return measured


# ---------------------------------------------------------------------------------------------------------------------
# Scenarios: FSDP2


def _gpt_state(cfg):
    from gpt import GPT

    import fastops.nn as fnn

    torch.manual_seed(0)
    return {k: v.clone() for k, v in GPT(cfg, fnn).state_dict().items()}


def _fsdp_gpt(cfg, modules, ctx, state, *, param_dtype=None, checkpointing=False, convert=False, mesh=None):
    """The GPT built on the meta device, sharded by FSDP2 block by block, materialised by to_empty() and the modules'
    own reset_parameters (checked), then loaded from `state` so that every run starts equal."""
    from gpt import GPT
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    import fastops.nn as fnn

    with torch.device("meta"):
        model = GPT(cfg, torch.nn if convert else modules, activation_checkpointing=checkpointing)
        if convert:
            fnn.convert(model)
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    for block in model.blocks:
        fully_shard(block, mp_policy=mp, mesh=mesh)
    fully_shard(model, mp_policy=mp, mesh=mesh)
    model.to_empty(device=ctx.device)
    model.init_weights()
    for name, p in model.named_parameters():
        full = _full(p.detach())
        assert torch.isfinite(full).all() and full.abs().max() > 0, name
        if name.endswith("norm.weight"):
            assert torch.equal(full, torch.ones_like(full)), name
        elif "emb" not in name:  # Linear: kaiming-uniform with a = sqrt(5): |w| <= 1 / sqrt(in_features)
            assert full.abs().max() <= 1 / math.sqrt(full.shape[1]), name
    set_model_state_dict(model, dict(state), options=StateDictOptions(full_state_dict=True))
    return model


def _fsdp_step(model, tokens, targets, ctx):
    """One forward / backward on this rank's half of the batch: the global mean loss and the full gradients."""
    import torch.distributed as dist

    rows = slice(ctx.rank * len(tokens) // ctx.world_size, (ctx.rank + 1) * len(tokens) // ctx.world_size)
    loss = model(tokens[rows].to(ctx.device), targets[rows].to(ctx.device))
    loss.backward()
    mean = loss.detach().float().clone()
    dist.all_reduce(mean)
    grads = {n: _full(p.grad).float() for n, p in model.named_parameters()}
    return {"loss": mean / ctx.world_size, **grads}


def _one_process_step(cfg, modules, state, tokens, targets, dtype, device):
    from gpt import GPT

    model = GPT(cfg, modules).to(device=device, dtype=dtype)
    model.load_state_dict(state)
    loss = model(tokens.to(device), targets.to(device))
    loss.backward()
    return {"loss": loss.detach(), **{n: p.grad for n, p in model.named_parameters()}}


@scenario(2)
def fsdp2_gpt(ctx):
    """FSDP2 over the small GPT of the examples: built on the meta device and materialised, with and without
    activation checkpointing, from fastops modules and as a converted torch.nn model, and in bfloat16 under a
    MixedPrecisionPolicy: the loss and every gradient equal one rank's (accuracy rule against torch.nn under the same
    FSDP2 setup, and against fastops in one process; float64 reference in one process)."""
    from gpt import GPTConfig, markov_batches

    import fastops.nn as fnn

    cfg = GPTConfig()
    state = _gpt_state(cfg)
    ((tokens, targets),) = markov_batches(cfg, 8, 1)
    ref = _one_process_step(cfg, torch.nn, state, tokens, targets, torch.float64, ctx.device)
    one_rank = _one_process_step(cfg, fnn, state, tokens, targets, torch.float32, ctx.device)
    measured = {}
    for label, kwargs in (("fastops", {}), ("fastops_checkpointed", {"checkpointing": True}),
                          ("converted_checkpointed", {"convert": True, "checkpointing": True}),
                          ("bf16_mixed_precision", {"param_dtype": torch.bfloat16})):
        fast = _fsdp_step(_fsdp_gpt(cfg, fnn, ctx, state, **kwargs), tokens, targets, ctx)
        native_kwargs = {k: v for k, v in kwargs.items() if k != "convert"}
        native = _fsdp_step(_fsdp_gpt(cfg, torch.nn, ctx, state, **native_kwargs), tokens, targets, ctx)
        for key in fast:
            natives = {"torch_fsdp2": native[key]}
            if "param_dtype" not in kwargs:
                natives["fastops_one_process"] = one_rank[key]
            measured[f"{label} {key}"] = _accurate(fast[key], natives, ref[key], what=f"{label} {key}")
    summary = {k: v for k, v in measured.items() if k.endswith(" loss")}
    for label in {k.split(" ")[0] for k in measured}:  # the worst gradient of each setup, with torch's error there
        grads = [v for k, v in measured.items() if k.startswith(f"{label} ") and not k.endswith(" loss")]
        worst = max(grads, key=lambda m: m["error"])
        summary[f"{label} worst gradient"] = worst
    return summary


@scenario(2)
def fsdp2_distributed_checkpoint(ctx):
    """Sharded state dicts saved with torch.distributed.checkpoint by the fastops GPT under FSDP2 load into the
    torch.nn GPT under FSDP2 and back, bit for bit; a checkpoint also loads into the one-process model."""
    import torch.distributed.checkpoint as dcp
    from gpt import GPT, GPTConfig
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    import fastops.nn as fnn

    cfg = GPTConfig()
    state = _gpt_state(cfg)
    shifted = {k: v + 1 for k, v in state.items()}
    for src, dst, weights in ((fnn, torch.nn, state), (torch.nn, fnn, shifted)):
        path = os.path.join(ctx.tmp, f"{src.__name__}")
        saver = _fsdp_gpt(cfg, src, ctx, weights)
        dcp.save(get_model_state_dict(saver), checkpoint_id=path)
        loader = _fsdp_gpt(cfg, dst, ctx, {k: torch.zeros_like(v) for k, v in state.items()})
        sd = get_model_state_dict(loader)
        dcp.load(sd, checkpoint_id=path)
        set_model_state_dict(loader, sd)
        for name, p in loader.named_parameters():
            assert torch.equal(_full(p.detach()).cpu(), weights[name]), f"{src.__name__} -> {dst.__name__}: {name}"
        if ctx.rank == 0:  # and into one process's plain model
            plain = GPT(cfg, dst)
            sd = {k: torch.zeros_like(v) for k, v in plain.state_dict().items()}
            dcp.load(sd, checkpoint_id=path, no_dist=True)
            plain.load_state_dict(sd)
            for name, t in plain.state_dict().items():
                assert torch.equal(t, weights[name]), name
        torch.distributed.barrier()


@scenario(4)
def fsdp2_tensor_parallel_gpt_training(ctx):
    """The example (examples/train_gpt_distributed.py's run(), what its command line runs after setting up the process
    group): the fastops GPT on a 2 x 2 mesh (FSDP2 over data parallel, tensor parallelism with the
    vocabulary-parallel head) trained 6 steps with AdamW, then in one process on rank 0, which prints both curves.
    The curve equals one process's under the accuracy rule (native: torch.nn in one process in float32, and fastops'
    one-process curve; reference: torch.nn in float64)."""
    import contextlib
    import io

    import torch.distributed as dist
    from gpt import GPTConfig, markov_batches
    from train_gpt_distributed import parse_args, run, train_single

    args = parse_args(["--steps", "6", "--batch", "8"])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        curve, one_process = run(args, _mesh(ctx, (2, 2), ("dp", "tp")), ctx.device)
    # torch.nn's curves from the same initial weights (run() draws them the same way), on ranks 2 and 3 in parallel.
    cfg = GPTConfig()
    state = _gpt_state(cfg)
    jobs = {2: ("torch_one_process", torch.float32), 3: ("ref", torch.float64)}
    mine = {"fastops_one_process": one_process} if ctx.rank == 0 else {}
    if ctx.rank in jobs:
        name, dtype = jobs[ctx.rank]
        mine[name] = train_single(torch.nn, cfg, markov_batches(cfg, args.batch, args.steps), state, dtype=dtype,
                                  device=ctx.device)
    gathered = [None] * ctx.world_size
    dist.all_gather_object(gathered, mine)
    curves = {k: torch.tensor(v, dtype=torch.float64 if k == "ref" else torch.float32)
              for d in gathered for k, v in d.items()}
    measured = _accurate(torch.tensor(curve), {k: curves[k] for k in ("fastops_one_process", "torch_one_process")},
                         curves["ref"], what="loss curve")
    if ctx.rank == 0:
        text = printed.getvalue()
        assert "4 processes: 2 data parallel x 2 tensor parallel" in text and "max |difference|" in text, text
    return {**measured, "curve": curve, "one_process": curves["fastops_one_process"].tolist()}


# ---------------------------------------------------------------------------------------------------------------------
# The tests

CASES = [(name, ws) for name, (_, sizes) in SCENARIOS.items() for ws in sizes]
CASE_IDS = [f"{name}-{ws}" for name, ws in CASES]


@pytest.mark.parametrize(("name", "world_size"), CASES, ids=CASE_IDS)
def test_gloo(name, world_size):
    _check(world_size, "gloo", name)


@pytest.mark.cuda
@pytest.mark.parametrize(("name", "world_size"), CASES, ids=CASE_IDS)
def test_nccl(name, world_size):
    if not _nccl_ready(world_size):
        pytest.skip(f"needs {world_size} GPUs, NCCL and a fastops build with CUDA kernels")
    _check(world_size, "nccl", name)


def test_distributed_package_ships_in_the_wheel():
    """pyproject.toml lists the packages explicitly: fastops.distributed must be among them (it was not at first, and
    the wheel check, which imports fastops only, did not notice)."""
    with open(os.path.join(HERE, "..", "pyproject.toml")) as f:  # (tomllib is Python >= 3.11)
        packages = next(line for line in f if line.startswith("packages = ["))
    assert '"fastops.distributed"' in packages, packages


def test_vocab_parallel_memory_falls_with_rank_count():
    """The per-rank peak memory of the vocabulary-parallel head (measured in vocab_parallel_linear_cross_entropy)
    falls from one process to 2 ranks to 4."""
    peaks = {}
    for ws in (2, 4):
        _check(ws, "gloo", "vocab_parallel_linear_cross_entropy")
        measured = [r["vocab_parallel_linear_cross_entropy"]["measured"] for r in run_world(ws, "gloo")["results"]]
        peaks[ws] = max(m["peak_bytes"] for m in measured)
        peaks[1] = measured[0]["peak_bytes_one_process"]
    assert peaks[4] < peaks[2] < peaks[1], peaks


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--worker":
    _worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6].split(","))
