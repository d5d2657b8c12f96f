"""The public functional API: typed, documented wrappers over ``torch.ops.fastops``, with torch.nn.functional's
signatures."""

import torch
from torch import Tensor

_ops = torch.ops.fastops

__all__ = ["bias_act", "geglu", "gelu", "leaky_relu", "linear", "matmul", "relu", "sigmoid", "silu", "swiglu",
           "tanh"]


def _maybe_inplace(x: Tensor, result: Tensor, inplace: bool) -> Tensor:
    # The kernels are out-of-place; `inplace=True` writes the result back into x so callers that rely on x changing
    # (and autograd's checks on in-place use of leaves) behave as with torch.
    return x.copy_(result) if inplace else result


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """max(input, 0) elementwise (NaN propagates). Same contract as :func:`torch.nn.functional.relu`."""
    return _maybe_inplace(input, _ops.relu(input), inplace)


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """x * Phi(x) with the exact erf CDF (``approximate='none'``) or the tanh approximation (``'tanh'``). Same
    contract as :func:`torch.nn.functional.gelu`."""
    return _ops.gelu(input, approximate=approximate)


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    """x * sigmoid(x). Same contract as :func:`torch.nn.functional.silu`."""
    return _maybe_inplace(input, _ops.silu(input), inplace)


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """x if x > 0 else negative_slope * x. Same contract as :func:`torch.nn.functional.leaky_relu`."""
    return _maybe_inplace(input, _ops.leaky_relu(input, negative_slope), inplace)


def sigmoid(input: Tensor) -> Tensor:
    """1 / (1 + exp(-x)). Same contract as :func:`torch.sigmoid`."""
    return _ops.sigmoid(input)


def tanh(input: Tensor) -> Tensor:
    """Hyperbolic tangent. Same contract as :func:`torch.tanh`."""
    return _ops.tanh(input)


def bias_act(x: Tensor, bias: Tensor, act: str) -> Tensor:
    """act(x + bias) in one pass, for x ``[..., N]`` and bias ``[N]`` of x's dtype; act is one of ``relu``,
    ``gelu``, ``gelu_tanh``, ``silu``, ``sigmoid``, ``tanh``. Equals ``F.<act>(x + bias)`` without materialising
    x + bias; the backward returns grad_x and grad_bias from one read of the gradient. The result is contiguous."""
    return _ops.bias_act(x, bias, act)


def swiglu(gate: Tensor, up: Tensor | None = None) -> Tensor:
    """silu(gate) * up. With ``up=None``, ``gate`` is one ``[..., 2H]`` tensor whose halves along the last
    dimension are gate and up (read in place, no copy); the result is ``[..., H]``."""
    return _ops.swiglu.packed(gate) if up is None else _ops.swiglu(gate, up)


def geglu(gate: Tensor, up: Tensor | None = None, approximate: str = "none") -> Tensor:
    """gelu(gate, approximate) * up; ``up=None`` takes the packed ``[..., 2H]`` form as in :func:`swiglu`."""
    if up is None:
        return _ops.geglu.packed(gate, approximate=approximate)
    return _ops.geglu(gate, up, approximate=approximate)
# ---- losses ----

import warnings

from torch.nn import _reduction as _torch_reduction

from .ops.losses import REDUCTIONS as _REDUCTIONS
from .ops.losses import math_dtype as _math_dtype

__all__ += ["binary_cross_entropy_with_logits", "cross_entropy", "huber_loss", "mse_loss", "smooth_l1_loss"]


def _reduction_enum(size_average, reduce, reduction: str) -> int:
    if size_average is not None or reduce is not None:  # torch's deprecated arguments still pick the reduction
        reduction = _torch_reduction.legacy_get_string(size_average, reduce)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction")
    return _REDUCTIONS[reduction]


def _loss_dtype(input: Tensor) -> torch.dtype:
    """torch's output dtype for a loss: the input's, or float32 under autocast (losses are on its fp32 list)."""
    if input.dtype != torch.float64 and torch.is_autocast_enabled(input.device.type):
        return torch.float32
    return input.dtype


def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None, size_average=None,
                  ignore_index: int = -100, reduce=None, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """Softmax cross entropy between logits and class-index or class-probability targets. Same contract as
    :func:`torch.nn.functional.cross_entropy`: input [C], [N, C] or [N, C, d1, ...]; target class indices
    ([], [N] or [N, d1, ...]) or probabilities (input's shape); 'mean' over class indices divides by the summed
    weight of the non-ignored targets (nan when all are ignored, as torch).

    Without autograd (and for 'none' or float64) the forward reads the logits once (per row: max, sum of
    exponentials and the target terms) and the backward recomputes the softmax. For 'mean' / 'sum' with 16/32-bit
    logits that require grad, the forward reads each row twice and writes its gradient too, and the backward only
    scales it: nothing at all for the usual upstream gradient of 1, exact for a power of two (loss scaling), one
    more rounding of each gradient element for any other upstream value. [N, C, d1, ...] inputs are first permuted to rows of C contiguous
    classes (one copy, kept for the backward).
    Under autocast the loss is float32, as torch's, without an fp32 copy of the logits (the kernel reads 16-bit
    logits and accumulates in float32 either way)."""
    red = _reduction_enum(size_average, reduce, reduction)
    out_dtype = _loss_dtype(input)
    prob = target.is_floating_point()
    unbatched = input.dim() == 1
    if unbatched:
        input, target = input.unsqueeze(0), target.unsqueeze(0)
    if input.dim() < 2:
        raise ValueError(f"cross_entropy: input must have a class dimension, got shape {tuple(input.shape)}")
    c = input.shape[1]
    batch_shape = input.shape[:1] + input.shape[2:]
    if prob and ignore_index != -100:
        raise RuntimeError("ignore_index is not supported for floating point target")
    if prob and target.shape != input.shape:
        raise RuntimeError(f"cross_entropy: a floating-point target holds class probabilities and must have input's "
                           f"shape {list(input.shape)}, got {list(target.shape)}; class-index targets must be int64")
    if not prob and target.shape != batch_shape:
        raise ValueError(f"cross_entropy: class-index target must have shape {tuple(batch_shape)} for input of shape "
                         f"{tuple(input.shape)}, got {tuple(target.shape)}")
    logits = input.movedim(1, -1).reshape(-1, c) if input.dim() > 2 else input
    if prob:
        target = target.movedim(1, -1).reshape(-1, c) if target.dim() > 2 else target
        if target.dtype != input.dtype and out_dtype != input.dtype:  # autocast: torch would cast both to fp32
            target = target.to(input.dtype)
    else:
        target = target.reshape(-1)
        if target.dtype == torch.uint8:  # torch accepts Byte class indices too
            target = target.long()
    if weight is not None:
        weight = weight.to(_math_dtype(input.dtype))
    if (red != _REDUCTIONS["none"] and torch.is_grad_enabled() and logits.requires_grad and logits.shape[0] > 0
            and logits.dtype != torch.float64):
        # The forward writes the gradient too (see fastops/ops/losses.py): its rows come pre-divided by 'mean''s
        # total weight, so that the gradient is final when the upstream gradient is 1 (or any power of two: the
        # scaling is then exact). float64, the dtype of gradchecks rather than of speed, keeps one rounding for
        # every upstream gradient through the recomputing backward.
        grad_scale = _cross_entropy_grad_scale(red, target, weight, ignore_index, c)
        loss, _ = _ops.cross_entropy_forward_grad(logits, target, weight, ignore_index, label_smoothing, grad_scale)
        return loss.sum().to(out_dtype)
    # 'none' recomputes the softmax in its backward: each row's upstream gradient is only known there.
    loss, row_weight, _, _ = _ops.cross_entropy_forward(logits, target, weight, ignore_index, label_smoothing)
    if red == _REDUCTIONS["none"]:
        return loss.reshape(() if unbatched else batch_shape).to(out_dtype)
    # The row losses and weights are float64: their sum adds no rounding before the one to out_dtype.
    total = loss.sum()
    if red == _REDUCTIONS["mean"]:
        total = total / row_weight.sum()
    return total.to(out_dtype)


def _cross_entropy_grad_scale(red: int, target: Tensor, weight: Tensor | None, ignore_index: int, c: int) -> Tensor:
    """The row scale of a forward that writes its gradient (float64, 0-dim): 1 / the total weight for 'mean', else
    1, so that the gradient is final for an upstream gradient of 1."""
    if red == _REDUCTIONS["mean"]:
        return 1.0 / _cross_entropy_total_weight(target, weight, ignore_index, c)
    return torch.ones((), dtype=torch.float64, device=target.device)


def _cross_entropy_total_weight(target: Tensor, weight: Tensor | None, ignore_index: int, c: int) -> Tensor:
    """The divisor of 'mean' (float64, 0-dim): the summed class weight of the rows not ignored (the row count for
    probability targets). N-length work; an out-of-range class counts here as class 0 and is raised by the kernel."""
    if target.is_floating_point():
        return torch.tensor(float(target.shape[0]), dtype=torch.float64, device=target.device)
    kept = target != ignore_index
    if weight is None:
        return kept.sum(dtype=torch.float64)
    row_weight = weight.to(torch.float64)[torch.where(kept & (target >= 0) & (target < c), target, 0)]
    return torch.where(kept, row_weight, 0.0).sum()


def _operand_dtype(input: Tensor, target: Tensor, promote: bool = True) -> torch.dtype | None:
    """The dtype both operands are cast to: none under autocast (its rule casts them to float32), else the promoted
    dtype (or input's, as torch's huber_loss does)."""
    if torch.is_autocast_enabled(input.device.type):
        return None
    return torch.promote_types(input.dtype, target.dtype) if promote else input.dtype


def _broadcast_pair(input: Tensor, target: Tensor, promote: bool) -> tuple[Tensor, Tensor]:
    """torch's handling of mismatched operands in the regression losses: warn and broadcast; then one dtype."""
    if target.shape != input.shape:
        warnings.warn(
            f"Using a target size ({target.size()}) that is different to the input size ({input.size()}). "
            "This will likely lead to incorrect results due to broadcasting. "
            "Please ensure they have the same size.",
            stacklevel=3,
        )
        input, target = torch.broadcast_tensors(input, target)
    dtype = _operand_dtype(input, target, promote)
    return (input, target) if dtype is None else (input.to(dtype), target.to(dtype))


def mse_loss(input: Tensor, target: Tensor, size_average=None, reduce=None, reduction: str = "mean",
             weight: Tensor | None = None) -> Tensor:
    """Mean squared error. Same contract as :func:`torch.nn.functional.mse_loss` (weight is not supported)."""
    if weight is not None:
        raise NotImplementedError("fastops.functional.mse_loss: weight is not supported")
    red = _reduction_enum(size_average, reduce, reduction)
    input, target = _broadcast_pair(input, target, promote=True)
    return _ops.mse_loss(input, target, red)


def smooth_l1_loss(input: Tensor, target: Tensor, size_average=None, reduce=None, reduction: str = "mean",
                   beta: float = 1.0) -> Tensor:
    """Smooth L1 loss. Same contract as :func:`torch.nn.functional.smooth_l1_loss`."""
    if beta < 0:
        raise RuntimeError("smooth_l1_loss does not support negative values for beta.")
    red = _reduction_enum(size_average, reduce, reduction)
    input, target = _broadcast_pair(input, target, promote=True)
    return _ops.smooth_l1_loss(input, target, red, beta)


def huber_loss(input: Tensor, target: Tensor, reduction: str = "mean", delta: float = 1.0,
               weight: Tensor | None = None) -> Tensor:
    """Huber loss. Same contract as :func:`torch.nn.functional.huber_loss` (weight is not supported)."""
    if weight is not None:
        raise NotImplementedError("fastops.functional.huber_loss: weight is not supported")
    if delta <= 0:
        raise RuntimeError("huber_loss does not support non-positive values for delta.")
    red = _reduction_enum(None, None, reduction)
    input, target = _broadcast_pair(input, target, promote=False)
    return _ops.huber_loss(input, target, red, delta)


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor, weight: Tensor | None = None,
                                     size_average=None, reduce=None, reduction: str = "mean",
                                     pos_weight: Tensor | None = None) -> Tensor:
    """Sigmoid + binary cross entropy in one numerically stable step. Same contract as
    :func:`torch.nn.functional.binary_cross_entropy_with_logits`: weight broadcasts to input, pos_weight over
    the classes of the last dimension. Gradients flow to input and target (not to weight / pos_weight)."""
    red = _reduction_enum(size_average, reduce, reduction)
    if target.shape != input.shape:
        raise ValueError(f"Target size ({target.size()}) must be the same as input size ({input.size()})")
    for name, t in (("weight", weight), ("pos_weight", pos_weight)):
        if t is not None and t.requires_grad:
            raise NotImplementedError(f"fastops.functional.binary_cross_entropy_with_logits: no gradient for {name}")
    dtype = _operand_dtype(input, target)
    if dtype is not None:
        input, target = input.to(dtype), target.to(dtype)
        weight = weight.to(dtype) if weight is not None else None
        pos_weight = pos_weight.to(dtype) if pos_weight is not None else None
    # The kernel reads every operand at the input's shape; weights broadcast here (expand, materialised once).
    weight = weight.expand_as(input) if weight is not None else None
    pos_weight = pos_weight.expand_as(input) if pos_weight is not None else None
    return _ops.binary_cross_entropy_with_logits(input, target, weight, pos_weight, red)


# ---- matmul ----


def matmul(input: Tensor, other: Tensor) -> Tensor:
    """Matrix product with :func:`torch.matmul`'s contract: 1-D operands are promoted to a row (input) or a column
    (other) and the added dim is removed again; batch dims broadcast. float32 on CUDA uses TF32 tensor cores iff
    ``torch.backends.cuda.matmul.allow_tf32`` (i.e. ``torch.get_float32_matmul_precision() != 'highest'``)."""
    if input.dim() == 0 or other.dim() == 0:
        raise RuntimeError(f"both arguments to matmul need to be at least 1D, but they are {input.dim()}D and "
                           f"{other.dim()}D")
    a = input.unsqueeze(0) if input.dim() == 1 else input
    b = other.unsqueeze(-1) if other.dim() == 1 else other
    out = _ops.matmul(a, b)
    if other.dim() == 1:
        out = out.squeeze(-1)
    if input.dim() == 1:
        out = out.squeeze(-2) if other.dim() > 1 else out.squeeze(-1)
    return out


LINEAR_ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu")


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None) -> Tensor:
    """``input @ weight.T + bias`` with :func:`torch.nn.functional.linear`'s contract; the bias add is fused into the
    GEMM and the weight is read transposed in place.

    ``activation`` (one of ``relu``, ``gelu``, ``gelu_tanh``, ``silu``) applies that activation to the result
    (``fastops::linear_act``): on Hopper inside the GEMM's epilogue, elsewhere through one fused bias + activation
    pass. When a gradient is needed the product before the bias is kept for the backward, which computes the
    activation's gradient and grad_bias in one pass over the gradient."""
    if activation is None:
        return _ops.linear(input, weight, bias)
    if activation not in LINEAR_ACTIVATIONS:
        raise ValueError(f"fastops.linear: activation must be one of {', '.join(LINEAR_ACTIVATIONS)} or None, "
                         f"got {activation!r}")
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (input, weight, bias))
    out, _ = _ops.linear_act(input, weight, bias, activation, needs_grad)
    return out


# ---- fused linear + cross entropy ----

from .ops import linear_cross_entropy as _lce

__all__ += ["linear_cross_entropy"]


def linear_cross_entropy(input: Tensor, linear_weight: Tensor, target: Tensor, *, linear_bias: Tensor | None = None,
                         weight: Tensor | None = None, reduction: str = "mean", ignore_index: int | None = None,
                         label_smoothing: float = 0.0, options=None) -> Tensor:
    """``cross_entropy(linear(input, linear_weight, linear_bias), target, ...)`` without ever holding the [N, C]
    logits: :func:`torch.nn.functional.linear_cross_entropy`'s contract (torch >= 2.13), on any torch fastops
    supports. input (in_features) or (N, in_features); linear_weight (C, in_features); target class indices
    () / (N) or probabilities of the logits' shape; ``ignore_index=None`` means -100 for class indices. Gradients
    flow to input, linear_weight, linear_bias, probability targets and (with probability targets) the class weights,
    to any order; bad arguments raise what torch raises.

    The tokens run in chunks of at most ``fastops.ops.linear_cross_entropy.CHUNK_BYTES`` of logits (or
    ``options.batch_chunk_size`` rows when torch's options say so): per chunk the fastops GEMM computes the logits
    and the cross-entropy kernel overwrites them with their gradient, which a GEMM turns into the input gradient;
    the weight gradient comes from one GEMM over all tokens per vocabulary block (see
    fastops/ops/linear_cross_entropy.py). So the forward computes every gradient and the backward only scales them.
    A K-dimensional linear_weight (C, d1, ..., in_features) or an empty batch runs unfused, as torch does."""
    # Autocast casts float32 / 16-bit operands (a float64 input stays float64, as in torch).
    autocast = (input.device.type != "meta" and input.dtype != torch.float64
                and torch.is_autocast_enabled(input.device.type))
    if autocast:  # the GEMMs in the autocast dtype, the loss in float32, as torch's
        dtype = torch.get_autocast_dtype(input.device.type)
        input, linear_weight = input.to(dtype), linear_weight.to(dtype)
        linear_bias = linear_bias.to(dtype) if linear_bias is not None else None
    rows = getattr(options, "batch_chunk_size", None)
    return _lce.linear_cross_entropy_loss(input, linear_weight, target, linear_bias, weight, reduction, ignore_index,
                                          label_smoothing, rows, autocast)
