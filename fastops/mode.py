"""fastops.enable(): run the torch functions a model calls on fastops, with torch's semantics.

A :class:`torch.overrides.TorchFunctionMode` sees every torch-level call (``F.linear``, ``torch.addmm``,
``x.sigmoid()``, ``F.cross_entropy``, ...) before it reaches the dispatcher. The table below maps each torch callable
to the :mod:`fastops.functional` function with the same contract and a *bind* function with the torch callable's
signature: bind returns the fastops call's arguments, or None when fastops does not take these arguments (dtype,
device, layout, tensor subclass, ``out=``, an argument value it has no kernel for), and the call then runs in torch
unchanged. A route is active iff :mod:`fastops.functional` has the function, so ops that land in fastops.functional
later switch on by themselves.

Dynamo traces the mode like any Python code (torch.compile(fullgraph=True) records the fastops ops, no graph break),
and fastops' ops carry their own autocast rules, so routed calls behave under autocast as torch's do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from . import functional

__all__ = ["disable", "enable", "is_enabled", "routes"]

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_AUTOCAST_FLOATS = (torch.float16, torch.bfloat16, torch.float32)  # what autocast casts (float64 keeps its dtype)
# Tensor subclasses that add no behaviour of their own; any other subclass (DTensor, a user's __torch_function__
# subclass, FakeTensor outside dynamo) keeps torch's op so that its own dispatch logic runs.
_PLAIN_TYPES = (Tensor, torch.nn.Parameter)

_ROUTES: dict = {}  # torch callable -> (fastops.functional name, bind, run or None)


def _devices() -> tuple[str, ...]:
    from . import has_cuda_kernels

    return ("cpu", "cuda") if has_cuda_kernels() else ("cpu",)


_DEVICES = _devices()


def _route(name: str, *torch_callables, run=None):
    """Registers bind as the route of each torch callable to fastops.functional.<name> (or to ``run``, which calls
    it, where the call needs more than the function)."""

    def register(bind):
        for fn in torch_callables:
            _ROUTES[fn] = (name, bind, run)
        return bind

    return register


def _ok(t) -> bool:
    """A tensor fastops' kernels take: floating (no complex, integer or quantized dtype), strided (no sparse or
    nested layout), on a device fastops has kernels for."""
    return (isinstance(t, Tensor) and t.dtype in _FLOATS and t.layout == torch.strided and not t.is_nested
            and t.device.type in _DEVICES)


def _ok_optional(t, like: Tensor) -> bool:
    return t is None or (_ok(t) and t.device == like.device)


def _gemm_dtypes_ok(*ts: Tensor) -> bool:
    """torch's GEMMs need one dtype, except under autocast, which casts float16/bfloat16/float32 operands to its
    dtype (fastops' linear and matmul have the same autocast rule)."""
    first = ts[0]
    if all(t.dtype == first.dtype for t in ts):
        return True
    return torch.is_autocast_enabled(first.device.type) and all(t.dtype in _AUTOCAST_FLOATS for t in ts)


def _operands_ok(*ts: Tensor) -> bool:
    first = ts[0]
    return all(_ok(t) and t.device == first.device for t in ts) and _gemm_dtypes_ok(*ts)


# ---- matmul / Linear ----


@_route("linear", F.linear)
def _linear(input, weight, bias=None):
    if not (_operands_ok(input, weight) and _ok_optional(bias, input)) or input.dim() < 1 or weight.dim() != 2:
        return None
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != weight.shape[0] or not _gemm_dtypes_ok(input, bias)):
        return None
    if input.shape[-1] != weight.shape[1]:
        return None
    return (input, weight, bias), {}


@_route("linear", torch.addmm, Tensor.addmm)
def _addmm(input, mat1, mat2, *, beta=1, alpha=1, out=None):
    # addmm(b, x, w) = x @ w + b is linear(x, w.T, b) when b is a row of w's columns (GPT-2's Conv1D, torch's
    # own 2-D Linear); fastops reads w.T as a transposed operand in place.
    if out is not None or not _operands_ok(input, mat1, mat2) or mat1.dim() != 2 or mat2.dim() != 2:
        return None
    if input.dim() != 1 or input.shape[0] != mat2.shape[1] or mat1.shape[1] != mat2.shape[0]:
        return None
    if isinstance(beta, Tensor) or isinstance(alpha, Tensor) or beta != 1 or alpha != 1:
        return None
    return (mat1, mat2.mT, input), {}


@_route("matmul", torch.matmul, Tensor.matmul, Tensor.__matmul__)
def _matmul(input, other, *, out=None):
    if out is not None or not _operands_ok(input, other) or input.dim() < 1 or other.dim() < 1:
        return None
    if input.shape[-1] != other.shape[-2 if other.dim() > 1 else 0]:
        return None
    return (input, other), {}


@_route("matmul", torch.mm, Tensor.mm)
def _mm(input, mat2, *, out=None):
    if out is not None or not _operands_ok(input, mat2) or input.dim() != 2 or mat2.dim() != 2:
        return None
    if input.shape[1] != mat2.shape[0]:
        return None
    return (input, mat2), {}


@_route("matmul", torch.bmm, Tensor.bmm)
def _bmm(input, mat2, *, out=None):
    if out is not None or not _operands_ok(input, mat2) or input.dim() != 3 or mat2.dim() != 3:
        return None
    if input.shape[0] != mat2.shape[0] or input.shape[2] != mat2.shape[1]:  # bmm does not broadcast; matmul would
        return None
    return (input, mat2), {}


def _patches_linear(input, weight, bias, rows: int, cols: int):
    # A convolution whose stride is its kernel sees each (kh, kw) patch once: it is linear(patches, weight), the
    # patches being one reshape of the input (a copy: [N, C, H, W] -> [N * H/kh * W/kw, C * kh * kw]). The result
    # comes back as [N, out, H/kh, W/kw] with channels last in memory, as torch's convolution gives for a
    # channels-last input (ViT's next step, flatten(2).transpose(1, 2), is then contiguous).
    unbatched = input.dim() == 3
    x = input.unsqueeze(0) if unbatched else input
    n, c = x.shape[:2]
    out_channels, _, kh, kw = weight.shape
    x = x[:, :, : rows * kh, : cols * kw].reshape(n, c, rows, kh, cols, kw).permute(0, 2, 4, 1, 3, 5)
    y = functional.linear(x.reshape(n * rows * cols, c * kh * kw), weight.reshape(out_channels, c * kh * kw), bias)
    y = y.reshape(n, rows, cols, out_channels).permute(0, 3, 1, 2)
    return y.squeeze(0) if unbatched else y


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


@_route("linear", F.conv2d, run=_patches_linear)
def _conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    # Patch embeddings (ViT, CLIP, ...): stride == kernel, no padding or dilation, one group.
    if not (_operands_ok(input, weight) and _ok_optional(bias, input)) or input.dim() not in (3, 4):
        return None
    if weight.dim() != 4 or groups != 1 or input.shape[-3] != weight.shape[1]:
        return None
    if _pair(stride) != tuple(weight.shape[2:]) or _pair(dilation) != (1, 1) or padding not in (0, (0, 0), "valid"):
        return None
    rows, cols = input.shape[-2] // weight.shape[2], input.shape[-1] // weight.shape[3]
    if rows == 0 or cols == 0:
        return None
    return (input, weight, bias, rows, cols), {}


# ---- activations ----


def _unary(input, **kwargs):
    return ((input,), kwargs) if _ok(input) else None


@_route("relu", F.relu)
def _relu(input, inplace=False):
    return _unary(input, inplace=inplace)


@_route("relu", torch.relu, Tensor.relu)
def _relu_method(input):
    return _unary(input)


@_route("relu", torch.relu_, Tensor.relu_)
def _relu_inplace(input):
    return _unary(input, inplace=True)


@_route("gelu", F.gelu)
def _gelu(input, approximate="none"):
    return _unary(input, approximate=approximate) if approximate in ("none", "tanh") else None


@_route("silu", F.silu)
def _silu(input, inplace=False):
    return _unary(input, inplace=inplace)


@_route("leaky_relu", F.leaky_relu)
def _leaky_relu(input, negative_slope=0.01, inplace=False):
    return _unary(input, negative_slope=negative_slope, inplace=inplace)


@_route("sigmoid", torch.sigmoid, Tensor.sigmoid, torch.special.expit)
def _sigmoid(input, *, out=None):
    return _unary(input) if out is None else None


@_route("tanh", torch.tanh, Tensor.tanh)
def _tanh(input, *, out=None):
    return _unary(input) if out is None else None


def _softmax_like(input, dim, dtype):
    # dim=None is torch's deprecated implicit choice (it warns and guesses): left to torch. A named dim too.
    if not isinstance(dim, int) or not _ok(input) or (dtype is not None and dtype not in _FLOATS):
        return None
    return (input, dim), {"dtype": dtype}


@_route("softmax", F.softmax)
def _softmax(input, dim=None, _stacklevel=3, dtype=None):
    return _softmax_like(input, dim, dtype)


@_route("softmax", torch.softmax, Tensor.softmax)
def _softmax_method(input, dim, dtype=None):
    return _softmax_like(input, dim, dtype)


@_route("log_softmax", F.log_softmax)
def _log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    return _softmax_like(input, dim, dtype)


@_route("log_softmax", torch.log_softmax, Tensor.log_softmax)
def _log_softmax_method(input, dim, dtype=None):
    return _softmax_like(input, dim, dtype)


@_route("elu", F.elu)
def _elu(input, alpha=1.0, inplace=False):
    return _unary(input, alpha=alpha, inplace=inplace)


@_route("softplus", F.softplus)
def _softplus(input, beta=1, threshold=20):
    return _unary(input, beta=beta, threshold=threshold)


@_route("hardtanh", F.hardtanh)
def _hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
    return _unary(input, min_val=min_val, max_val=max_val, inplace=inplace)


def _inplace_unary(name: str, fn) -> None:
    def bind(input, inplace=False):
        return _unary(input, inplace=inplace)

    _route(name, fn)(bind)


for _name in ("selu", "mish", "hardswish", "hardsigmoid", "relu6"):
    _inplace_unary(_name, getattr(F, _name))


@_route("glu", F.glu)
def _glu(input, dim=-1):
    return _unary(input, dim=dim)


# ---- losses ----


def _loss_operands_ok(input, target, *optional) -> bool:
    return _ok(input) and _ok(target) and target.device == input.device and all(
        _ok_optional(t, input) for t in optional)


def _index_target_ok(input, target, dtypes=(torch.int64,)) -> bool:
    return (isinstance(target, Tensor) and target.dtype in dtypes and target.layout == torch.strided
            and target.device == input.device)


def _class_target_ok(input, target) -> bool:
    """Class indices (int64, or uint8, which cross_entropy also takes) or probabilities, on input's device."""
    return _index_target_ok(input, target, (torch.int64, torch.uint8)) or (
        _ok(target) and target.device == input.device)


@_route("cross_entropy", F.cross_entropy)
def _cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
                   label_smoothing=0.0):
    if not (_ok(input) and _class_target_ok(input, target) and _ok_optional(weight, input)):
        return None
    return (input, target, weight, size_average, ignore_index, reduce, reduction, label_smoothing), {}


@_route("nll_loss", F.nll_loss)
def _nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
    if not (_ok(input) and _ok_optional(weight, input) and _index_target_ok(input, target)):
        return None
    return (input, target, weight, size_average, ignore_index, reduce, reduction), {}


def _regression(input, target, size_average, reduce, reduction, weight):
    # torch 2.13's per-element `weight` of mse_loss / l1_loss / huber_loss has no fastops kernel.
    if weight is not None or not _loss_operands_ok(input, target):
        return None
    return (input, target, size_average, reduce, reduction), {}


@_route("mse_loss", F.mse_loss)
def _mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    return _regression(input, target, size_average, reduce, reduction, weight)


@_route("l1_loss", F.l1_loss)
def _l1_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    return _regression(input, target, size_average, reduce, reduction, weight)


@_route("smooth_l1_loss", F.smooth_l1_loss)
def _smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    if not _loss_operands_ok(input, target):
        return None
    return (input, target, size_average, reduce, reduction, beta), {}


@_route("huber_loss", F.huber_loss)
def _huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    if weight is not None or not _loss_operands_ok(input, target):
        return None
    return (input, target, reduction, delta), {}


@_route("binary_cross_entropy_with_logits", F.binary_cross_entropy_with_logits)
def _bce_with_logits(input, target, weight=None, size_average=None, reduce=None, reduction="mean", pos_weight=None):
    # fastops computes no gradient for weight / pos_weight: a call that needs one stays in torch.
    if not _loss_operands_ok(input, target, weight, pos_weight):
        return None
    if any(t is not None and t.requires_grad for t in (weight, pos_weight)):
        return None
    return (input, target, weight, size_average, reduce, reduction, pos_weight), {}


@_route("binary_cross_entropy", F.binary_cross_entropy)
def _bce(input, target, weight=None, size_average=None, reduce=None, reduction="mean"):
    if not _loss_operands_ok(input, target, weight):
        return None
    return (input, target, weight, size_average, reduce, reduction), {}


@_route("kl_div", F.kl_div)
def _kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    if not _loss_operands_ok(input, target):
        return None
    return (input, target, size_average, reduce, reduction, log_target), {}


# The routes whose fastops function exists: torch callable -> (what runs, bind).
_ACTIVE = {torch_fn: (run or getattr(functional, name), bind) for torch_fn, (name, bind, run) in _ROUTES.items()
           if hasattr(functional, name)}


def routes() -> dict:
    """torch callable -> name of the fastops.functional function it runs on under :func:`enable` (active routes
    only)."""
    return {torch_fn: name for torch_fn, (name, _, _) in _ROUTES.items() if torch_fn in _ACTIVE}


class FastopsMode(TorchFunctionMode):
    """The function mode behind :func:`enable`."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        # Every torch call of the thread lands here (Tensor.shape included): the unrouted ones leave at once.
        route = _ACTIVE.get(func)
        if route is None:
            return func(*args, **kwargs) if kwargs else func(*args)
        kwargs = kwargs or {}
        if all(t in _PLAIN_TYPES for t in types):
            fn, bind = route
            call = bind(*args, **kwargs)
            if call is not None:
                return fn(*call[0], **call[1])
        return func(*args, **kwargs)


def _stack() -> list:
    return torch.overrides._get_current_function_mode_stack()


def is_enabled() -> bool:
    """True when torch functions called in this thread run on fastops (inside :func:`enable`)."""
    return any(isinstance(m, FastopsMode) for m in _stack())


class enable:
    """Route the torch functions called in this thread to fastops: ``fastops.enable()`` switches it on until
    :func:`disable`; ``with fastops.enable(): ...`` switches it on for the block (and back off after it, unless it was
    on before). See the module docstring for what is routed and when a call stays in torch."""

    def __init__(self) -> None:
        self._mode = None
        if not is_enabled():
            self._mode = FastopsMode()
            self._mode.__enter__()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self._mode is not None:
            _remove(self._mode)
            self._mode = None


def _remove(mode: FastopsMode) -> None:
    # torch's mode stack only pops from the top: modes pushed after this one are set aside and pushed back.
    above = []
    while _stack() and _stack()[-1] is not mode:
        above.append(torch._C._pop_torch_function_stack())
    if _stack():
        torch._C._pop_torch_function_stack()
    for m in reversed(above):
        torch._C._push_on_torch_function_stack(m)


def disable() -> None:
    """Switch :func:`enable` off in this thread (a no-op when it is off)."""
    for m in [m for m in _stack() if isinstance(m, FastopsMode)]:
        _remove(m)
