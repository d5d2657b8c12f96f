"""fastops.coverage(model, *inputs): what share of a model's work runs on fastops, and what stays in torch.

One forward and backward run under a :class:`torch.utils._python_dispatch.TorchDispatchMode` that sees every operator
below autograd: ``fastops::*`` ops and torch's ``aten::*`` ops. Each one of interest is sorted into a kind (GEMMs,
batched GEMMs, attention, convolution, activations, losses) and counted, GEMM-like ones with their FLOPs from the
shapes (torch's own FLOP formulas, ``torch.utils.flop_counter``, for aten ops). A
:class:`torch.overrides.TorchFunctionMode` above it knows which torch function (``F.cross_entropy``,
``torch.addmm``, ...) each forward op comes from, in which module and from which source line, and writes that into
the metadata of the autograd nodes the call records, so that backward ops are attributed to the same call. An aten op
left in torch is reported with that call and whether fastops has a function for it.
"""

from __future__ import annotations

import collections
import os
import sys
import sysconfig
import typing

import torch
from torch import Tensor
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

from . import functional

__all__ = ["KINDS", "Report", "coverage"]

KINDS = ("gemm", "batched_gemm", "attention", "conv", "activation", "loss")
FLOP_KINDS = ("gemm", "batched_gemm", "attention", "conv")

# fastops.functional name -> kind, for attributing torch ops to the torch.nn.functional function that issued them.
_FUNCTION_KINDS = {
    **dict.fromkeys(("relu", "gelu", "silu", "leaky_relu", "sigmoid", "tanh", "softmax", "log_softmax", "elu", "selu",
                     "celu", "softplus", "mish", "hardswish", "hardsigmoid", "relu6", "hardtanh", "glu"), "activation"),
    **dict.fromkeys(("cross_entropy", "nll_loss", "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss",
                     "binary_cross_entropy", "binary_cross_entropy_with_logits", "kl_div"), "loss"),
}

# aten op (overload packet name, a trailing in-place "_" removed) -> (kind, the fastops.functional function that
# would run it).
_ATEN = {
    **dict.fromkeys(("mm", "addmm", "mv", "addmv", "dot", "vdot", "_addmm_activation"), ("gemm", "linear")),
    **dict.fromkeys(("bmm", "baddbmm", "addbmm"), ("batched_gemm", "matmul")),
    **dict.fromkeys(("convolution", "_convolution", "convolution_backward", "cudnn_convolution",
                     "_slow_conv2d_forward"), ("conv", None)),
    "relu": ("activation", "relu"), "threshold_backward": ("activation", "relu"),
    "_softmax": ("activation", "softmax"), "_softmax_backward_data": ("activation", "softmax"),
    "_log_softmax": ("activation", "log_softmax"), "_log_softmax_backward_data": ("activation", "log_softmax"),
    "nll_loss_forward": ("loss", "nll_loss"), "nll_loss_backward": ("loss", "nll_loss"),
    "nll_loss2d_forward": ("loss", "nll_loss"), "nll_loss2d_backward": ("loss", "nll_loss"),
    "threshold": ("activation", None), "celu": ("activation", None), "prelu": ("activation", None),
    "_prelu_kernel": ("activation", None), "_prelu_kernel_backward": ("activation", None),
    "rrelu_with_noise": ("activation", None), "softshrink": ("activation", None),
    "hardshrink": ("activation", None), "logsigmoid": ("activation", None),
}
for _name in ("gelu", "silu", "leaky_relu", "sigmoid", "tanh", "elu", "softplus", "mish", "hardswish", "hardsigmoid",
              "hardtanh", "glu"):
    _ATEN[_name] = _ATEN[f"{_name}_backward"] = ("activation", _name)
for _name in ("mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "binary_cross_entropy",
              "binary_cross_entropy_with_logits", "kl_div"):
    _ATEN[_name] = _ATEN[f"{_name}_backward"] = ("loss", _name)

# torch's FLOP formulas by aten op; the CPU attention kernels take the same leading arguments as the CUDA ones.
_FLOPS = {packet.__name__: formula for packet, formula in flop_registry.items()}
for _cpu, _cuda in (("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention"),
                    ("_scaled_dot_product_flash_attention_for_cpu_backward",
                     "_scaled_dot_product_flash_attention_backward")):
    _FLOPS[_cpu] = _FLOPS[_cuda]
_FLOPS["mv"] = _FLOPS["addmv"] = lambda *args, out_val=None, **kwargs: 2 * args[-2].numel()
_FLOPS["dot"] = _FLOPS["vdot"] = lambda a, b, out_val=None, **kwargs: 2 * a.numel()
_FLOPS["_addmm_activation"] = _FLOPS["addmm"]
_FLOPS["addbmm"] = lambda inp, a, b, out_val=None, **kwargs: 2 * a.numel() * b.shape[-1]


def _aten_kind(name: str) -> tuple[str | None, str | None]:
    if "attention" in name:
        return "attention", None
    entry = _ATEN.get(name) or _ATEN.get(name.rstrip("_"))
    return entry if entry is not None else (None, None)


def _fastops_kind(name: str, args) -> str | None:
    """The kind of a fastops op; ops that are parts of another op's work (bias_grad: the column sum in linear's
    backward) count for nothing."""
    if name == "bias_grad":
        return None
    if name == "matmul":
        return "batched_gemm" if args[1].dim() > 2 else "gemm"
    if name.startswith(("linear_cross_entropy", "cross_entropy", "scale_rows")) or "loss" in name or "nll" in name \
            or "kl_div" in name:
        return "loss"
    if name.startswith(("linear", "matmul")):
        return "gemm"
    return "activation"


def _fastops_flops(name: str, args, out) -> int:
    """FLOPs of fastops' GEMM ops, 2 per multiply-add."""
    if name in ("matmul", "linear", "linear_act"):
        result = out[0] if isinstance(out, (tuple, list)) else out
        return 2 * result.numel() * args[1].shape[-1 if name != "matmul" else -2]
    if name == "matmul_accumulate_":
        _, a, b = args[:3]
        return 2 * a.shape[0] * a.shape[1] * b.shape[1]
    if name == "linear_cross_entropy":  # the logits' GEMM, plus one per gradient its forward computes
        input, weight = args[:2]
        return 2 * input.shape[0] * weight.shape[0] * weight.shape[1] * (1 + args[9] + args[10])
    if name == "linear_cross_entropy_rows":
        input, weight = args[:2]
        return 2 * input.shape[0] * weight.shape[0] * weight.shape[1]
    return 0


# Frames of these trees are plumbing, not the model's source: torch, fastops itself, the standard library (not its
# site-packages, where the model's library may live).
_PACKAGES = tuple(os.path.dirname(os.path.abspath(m.__file__)) + os.sep for m in (torch, sys.modules[__package__]))
_STDLIB = os.path.abspath(sysconfig.get_paths()["stdlib"]) + os.sep


def _plumbing(path: str) -> bool:
    return path.startswith(_PACKAGES) or (path.startswith(_STDLIB) and "-packages" + os.sep not in path)


def _source() -> str:
    """file:line of the innermost frame of the caller's stack that is the model's code (or the user's)."""
    frame = sys._getframe()
    while frame is not None and _plumbing(os.path.abspath(frame.f_code.co_filename)):
        frame = frame.f_back
    if frame is None:
        return ""
    return f"{os.sep.join(frame.f_code.co_filename.split(os.sep)[-2:])}:{frame.f_lineno}"


def _display_name(func) -> str:
    name = getattr(func, "__name__", repr(func))
    for prefix, namespace in (("F.", torch.nn.functional), ("torch.", torch), ("Tensor.", Tensor)):
        if getattr(namespace, name, None) is func:
            return prefix + name
    return name


_TAG = "fastops_coverage"  # the key of a call's Call in its autograd nodes' metadata


class _Call(typing.NamedTuple):
    function: str  # the torch function, e.g. F.cross_entropy
    name: str  # its bare name, e.g. cross_entropy
    module: str
    source: str


class _Calls(TorchFunctionMode):
    """Knows, while a torch function runs in the forward, which function it is, in which module and from which source
    line; tags the autograd nodes the call records with that, so that their backward ops are attributed too."""

    def __init__(self, module_names: dict) -> None:
        super().__init__()
        self.module_names = module_names
        self.modules: list[str] = []
        self.current: _Call | None = None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if torch._C._current_autograd_node() is not None:
            return func(*args, **kwargs)  # a Python backward formula's calls: its node is attributed already
        name = getattr(func, "__name__", "")
        self.current = _Call(_display_name(func), name, self.modules[-1] if self.modules else "", _source())
        try:
            result = func(*args, **kwargs)
            if torch.is_grad_enabled():
                self._tag(result)
        finally:
            self.current = None
        return result

    def _tag(self, result) -> None:
        # The nodes this call recorded are those reachable from its outputs' grad_fn before reaching a node tagged
        # by an earlier call (its inputs' nodes) or a leaf's AccumulateGrad.
        stack = [t.grad_fn for t in tree_flatten(result)[0] if isinstance(t, Tensor) and t.grad_fn is not None]
        while stack:
            node = stack.pop()
            if node is None or _TAG in node.metadata or not node.next_functions and node.name().endswith(
                    "AccumulateGrad"):
                continue
            node.metadata[_TAG] = self.current
            stack.extend(n for n, _ in node.next_functions)

    def enter_module(self, module, *_) -> None:
        self.modules.append(self.module_names.get(module, type(module).__name__))

    def exit_module(self, *_) -> None:
        self.modules.pop()


class _Recorder(TorchDispatchMode):
    def __init__(self, calls: _Calls) -> None:
        super().__init__()
        self.calls = calls
        # (phase, kind, on_fastops, op, function, fastops_has, module, source) -> [calls, flops]
        self.rows: dict = collections.defaultdict(lambda: [0, 0])

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func._overloadpacket.__name__
        node = torch._C._current_autograd_node()
        phase = "backward" if node is not None else "forward"
        if func.namespace == "fastops":
            kind = _fastops_kind(name, args)
            if kind is not None:
                row = self.rows[(phase, kind, True, f"fastops.{name}", "", True, "", "")]
                row[0] += 1
                row[1] += _fastops_flops(name, args, out) if kind in FLOP_KINDS else 0
            return out
        if func.namespace != "aten":
            return out
        kind, fastops_name = _aten_kind(name)
        if kind is None:  # views, copies, elementwise arithmetic: neither counted nor reported
            return out
        call = self.calls.current if node is None else node.metadata.get(_TAG)
        call = call or _Call("", "", "", "")
        if call.name in _FUNCTION_KINDS:  # e.g. the log_softmax and nll_loss of F.cross_entropy are one loss
            kind, fastops_name = _FUNCTION_KINDS[call.name], call.name
        elif call.name == "scaled_dot_product_attention":  # its math path: bmm, softmax
            kind, fastops_name = "attention", None
        fastops_has = fastops_name is not None and hasattr(functional, fastops_name)
        row = self.rows[(phase, kind, False, f"aten.{name}", call.function, fastops_has, call.module, call.source)]
        row[0] += 1
        formula = _FLOPS.get(name)
        if kind in FLOP_KINDS and formula is not None:
            row[1] += formula(*args, **kwargs, out_val=out)
        return out


def _flops(n: int) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return str(n)


class Report(dict):
    """The result of :func:`coverage`: a dict (``report["forward"]["gemm"]["fastops_share"]``, ...) whose str() is a
    readable table.

    ``report[phase][kind]`` (phase ``forward`` / ``backward``, kind in :data:`KINDS`) holds ``fastops_calls``,
    ``torch_calls``, ``torch_calls_fastops_has`` (calls left in torch that fastops has a function for) and, for
    GEMM-like kinds, ``fastops_flops`` / ``torch_flops``; ``fastops_share`` is the share of FLOPs (GEMM-like kinds)
    or calls (activations, losses) on fastops, None when the kind did not occur. ``report["in_torch"]`` lists what
    ran in torch: phase, kind, op, function (the torch.nn.functional function that called it, if any),
    fastops_has, module, source, calls, flops."""

    def __str__(self) -> str:
        header = (f"{'phase':<9} {'kind':<13} {'calls fastops / torch':>21} {'FLOP fastops / torch':>21} "
                  f"{'on fastops':>11}")
        lines = [f"fastops coverage of {self['model']} (one forward and backward)", header]
        for phase in ("forward", "backward"):
            for kind, s in self[phase].items():
                if s["fastops_calls"] + s["torch_calls"] == 0:
                    continue
                flops = f"{_flops(s['fastops_flops']):>9} / {_flops(s['torch_flops']):<9}" if kind in FLOP_KINDS else ""
                share = f"{100 * s['fastops_share']:.1f}%"
                lines.append(f"{phase:<9} {kind:<13} {s['fastops_calls']:>9} / {s['torch_calls']:<9} {flops:>21} "
                             f"{share:>11}")
        if self["in_torch"]:
            lines.append("left in torch (* = fastops has a function for it; fastops.enable() or convert() routes it):")
            for r in self["in_torch"]:
                what = r["op"] + (f" ({r['function']})" if r["function"] else "")
                flops = f", {_flops(r['flops'])} FLOP" if r["flops"] else ""
                lines.append(f"  {'*' if r['fastops_has'] else ' '} {r['phase']:<8} {r['kind']:<12} {what} x{r['calls']}"
                             f"{flops} in {r['module'] or '(no module)'} at {r['source'] or '?'}")
        return "\n".join(lines)


def _summary(rows: dict, model_name: str) -> Report:
    report = Report(model=model_name)
    for phase in ("forward", "backward"):
        report[phase] = {kind: {"fastops_calls": 0, "torch_calls": 0, "torch_calls_fastops_has": 0,
                                "fastops_flops": 0, "torch_flops": 0, "fastops_share": None} for kind in KINDS}
    in_torch = []
    for (phase, kind, on_fastops, op, function, fastops_has, module, source), (calls, flops) in rows.items():
        s = report[phase][kind]
        side = "fastops" if on_fastops else "torch"
        s[f"{side}_calls"] += calls
        s[f"{side}_flops"] += flops
        if not on_fastops:
            s["torch_calls_fastops_has"] += calls if fastops_has else 0
            in_torch.append({"phase": phase, "kind": kind, "op": op, "function": function, "fastops_has": fastops_has,
                             "module": module, "source": source, "calls": calls, "flops": flops})
    for phase in ("forward", "backward"):
        for kind, s in report[phase].items():
            unit = "flops" if kind in FLOP_KINDS else "calls"
            total = s[f"fastops_{unit}"] + s[f"torch_{unit}"]
            if total:
                s["fastops_share"] = s[f"fastops_{unit}"] / total
    in_torch.sort(key=lambda r: (r["phase"] != "forward", KINDS.index(r["kind"]), -r["flops"], -r["calls"]))
    report["in_torch"] = in_torch
    return report


def _default_loss(output) -> Tensor:
    """What backward starts from: a transformers-style output's ``loss``, else the sum of every output tensor that
    requires grad."""
    loss = getattr(output, "loss", None)
    if isinstance(loss, Tensor):
        return loss
    leaves = [t for t in tree_flatten(output)[0] if isinstance(t, Tensor) and t.requires_grad]
    if isinstance(output, Tensor) and output.requires_grad:
        leaves = [output]
    if not leaves:
        raise RuntimeError("fastops.coverage: the model's output has no tensor that requires grad; pass loss_fn")
    return sum(t.float().sum() for t in leaves)


def coverage(model: torch.nn.Module, *inputs, loss_fn=None, **kwargs) -> Report:
    """Run ``model(*inputs, **kwargs)`` and a backward once, and report per op kind how many calls and what share of
    the GEMM FLOPs ran on fastops and what stayed in torch (with module and source line). Call it inside
    ``fastops.enable()`` to measure the function mode too. Backward starts from ``loss_fn(output)`` if given, else
    from a transformers-style ``output.loss``, else from the sum of the outputs. The parameters' ``.grad`` are
    restored afterwards; everything else a forward changes (BatchNorm statistics, random state) changes as in any
    forward. Eager mode only (a compiled model's ops are inside its graph)."""
    root = type(model).__name__
    names = {m: f"{root}.{n}" if n else root for n, m in model.named_modules()}
    params = [p for p in model.parameters() if p.requires_grad]
    saved_grads = [p.grad for p in params]
    for p in params:
        p.grad = None
    calls = _Calls(names)
    hooks = (register_module_forward_pre_hook(calls.enter_module),
             register_module_forward_hook(calls.exit_module, always_call=True))
    try:
        with torch.enable_grad(), calls, _Recorder(calls) as recorder:
            output = model(*inputs, **kwargs)
            loss = loss_fn(output) if loss_fn is not None else _default_loss(output)
            loss.backward()
    finally:
        for hook in hooks:
            hook.remove()
        for p, g in zip(params, saved_grads):
            p.grad = g
    return _summary(recorder.rows, root)
