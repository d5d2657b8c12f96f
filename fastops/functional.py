"""The public functional API: typed, documented wrappers over ``torch.ops.fastops`` with torch.nn.functional's
signatures and semantics. Each is a thin call into one operator (the rules live in C++, next to the kernels), and
each compiles under TorchScript, so that fastops.nn modules script and trace like their torch.nn twins."""

import warnings

import torch
from torch import Tensor
from torch.nn import _reduction as _torch_reduction

from .ops.losses import REDUCTIONS as _REDUCTIONS
from .ops.losses import math_dtype as _math_dtype

__all__ = ["bias_act", "binary_cross_entropy", "binary_cross_entropy_with_logits", "cross_entropy", "geglu", "gelu",
           "huber_loss", "l1_loss", "leaky_relu", "linear", "log_softmax", "matmul", "mse_loss", "nll_loss", "relu",
           "sigmoid", "silu", "smooth_l1_loss", "softmax", "swiglu", "tanh"]

# ---- activations ----


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """max(input, 0) elementwise (NaN propagates). Same contract as :func:`torch.nn.functional.relu`."""
    result = torch.ops.fastops.relu(input)
    # The kernels are out of place; `inplace=True` writes the result back into input, so callers that rely on input
    # changing (and autograd's checks on in-place use of leaves) behave as with torch. relu's backward reads its
    # output, which the copy leaves untouched.
    return input.copy_(result) if inplace else result


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """x * Phi(x) with the exact erf CDF (``approximate='none'``) or the tanh approximation (``'tanh'``). Same
    contract as :func:`torch.nn.functional.gelu`."""
    return torch.ops.fastops.gelu(input, approximate=approximate)


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    """x * sigmoid(x). Same contract as :func:`torch.nn.functional.silu`."""
    if not inplace:
        return torch.ops.fastops.silu(input)
    # silu's backward reads its input, which the in-place write overwrites: it gets a copy (torch's silu_ saves one
    # too), only when a gradient will be needed.
    source = input.clone() if input.requires_grad and torch.is_grad_enabled() else input
    return input.copy_(torch.ops.fastops.silu(source))


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """x if x > 0 else negative_slope * x. Same contract as :func:`torch.nn.functional.leaky_relu`."""
    if not inplace:
        return torch.ops.fastops.leaky_relu(input, negative_slope)
    source = input.clone() if input.requires_grad and torch.is_grad_enabled() else input  # as in silu
    return input.copy_(torch.ops.fastops.leaky_relu(source, negative_slope))


def sigmoid(input: Tensor) -> Tensor:
    """1 / (1 + exp(-x)). Same contract as :func:`torch.sigmoid`."""
    return torch.ops.fastops.sigmoid(input)


def tanh(input: Tensor) -> Tensor:
    """Hyperbolic tangent. Same contract as :func:`torch.tanh`."""
    return torch.ops.fastops.tanh(input)


def bias_act(x: Tensor, bias: Tensor, act: str) -> Tensor:
    """act(x + bias) in one pass, for x ``[..., N]`` and bias ``[N]`` of x's dtype; act is one of ``relu``,
    ``gelu``, ``gelu_tanh``, ``silu``, ``sigmoid``, ``tanh``. Equals ``F.<act>(x + bias)`` without materialising
    x + bias; the backward returns grad_x and grad_bias from one read of the gradient. The result is contiguous."""
    return torch.ops.fastops.bias_act(x, bias, act)


def swiglu(gate: Tensor, up: Tensor | None = None) -> Tensor:
    """silu(gate) * up. With ``up=None``, ``gate`` is one ``[..., 2H]`` tensor whose halves along the last
    dimension are gate and up (read in place, no copy); the result is ``[..., H]``."""
    # One overload packet, resolved by the arguments (TorchScript cannot name an overload: swiglu.packed).
    if up is None:
        return torch.ops.fastops.swiglu(gate)
    return torch.ops.fastops.swiglu(gate, up)


def geglu(gate: Tensor, up: Tensor | None = None, approximate: str = "none") -> Tensor:
    """gelu(gate, approximate) * up; ``up=None`` takes the packed ``[..., 2H]`` form as in :func:`swiglu`."""
    if up is None:
        return torch.ops.fastops.geglu(gate, approximate=approximate)  # the packed overload, as in swiglu
    return torch.ops.fastops.geglu(gate, up, approximate=approximate)


# ---- softmax ----


def _softmax_dim(name: str, ndim: int, stacklevel: int) -> int:
    """torch.nn.functional's implicit dim (deprecated, with torch's warning): 0 for 0-, 1- and 3-dim input, else 1."""
    warnings.warn(f"Implicit dimension choice for {name} has been deprecated. Change the call to include dim=X as an "
                  "argument.", stacklevel=stacklevel)
    if ndim == 0 or ndim == 1 or ndim == 3:
        return 0
    return 1


def softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: torch.dtype | None = None) -> Tensor:
    """exp(x) / sum(exp(x)) along ``dim`` (any dim; the sum runs in double). Same contract as
    :func:`torch.nn.functional.softmax`: ``dtype`` casts the input first (so integer input works with a floating
    ``dtype``); ``dim=None`` picks torch's deprecated implicit dim with its warning. The result is contiguous."""
    if dim is None:
        dim = _softmax_dim("softmax", input.dim(), _stacklevel)
    if dtype is not None:
        input = input.to(dtype)
    return torch.ops.fastops.softmax(input, dim)


def log_softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3,
                dtype: torch.dtype | None = None) -> Tensor:
    """(x - max) - log(sum(exp(x - max))) along ``dim``. Same contract as :func:`torch.nn.functional.log_softmax`
    (``dtype`` and ``dim=None`` as in :func:`softmax`)."""
    if dim is None:
        dim = _softmax_dim("log_softmax", input.dim(), _stacklevel)
    if dtype is not None:
        input = input.to(dtype)
    return torch.ops.fastops.log_softmax(input, dim)


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
    out = torch.ops.fastops.matmul(a, b)
    if other.dim() == 1:
        out = out.squeeze(-1)
    if input.dim() == 1:
        out = out.squeeze(-2) if other.dim() > 1 else out.squeeze(-1)
    return out


LINEAR_ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu")


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None) -> Tensor:
    """``input @ weight.T + bias`` with :func:`torch.nn.functional.linear`'s contract (a 1-D weight is a single
    output feature, as in torch); the bias add is fused into the GEMM and the weight is read transposed in place.

    ``activation`` (one of ``relu``, ``gelu``, ``gelu_tanh``, ``silu``) applies that activation to the result
    (``fastops::linear_act``): on Hopper inside the GEMM's epilogue, elsewhere through one fused bias + activation
    pass. When autograd records a backward the product before the bias is kept for it, which computes the
    activation's gradient and grad_bias in one pass over the gradient."""
    if weight.dim() == 1:  # torch: input @ weight (+ bias), the feature dim dropped
        if activation is not None:
            raise RuntimeError("fastops.linear: activation= needs a 2-D weight")
        out = matmul(input, weight)
        return out if bias is None else out + bias
    if activation is None:
        return torch.ops.fastops.linear(input, weight, bias)
    if activation not in ["relu", "gelu", "gelu_tanh", "silu"]:  # LINEAR_ACTIVATIONS (TorchScript reads no globals)
        raise ValueError(f"fastops.linear: activation must be one of relu, gelu, gelu_tanh, silu or None, got "
                         f"'{activation}'")
    # store_pre=False: the op keeps the product before the bias by itself whenever autograd records a backward.
    out, _ = torch.ops.fastops.linear_act(input, weight, bias, activation, False)
    return out


# ---- losses ----


def _reduction_enum(size_average: bool | None, reduce: bool | None, reduction: str) -> int:
    if size_average is not None or reduce is not None:  # torch's deprecated arguments still pick the reduction
        reduction = _torch_reduction.legacy_get_string(size_average, reduce)
    return _torch_reduction.get_enum(reduction)


def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None, size_average: bool | None = None,
                  ignore_index: int = -100, reduce: bool | None = None, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """Softmax cross entropy between logits and class-index or class-probability targets. Same contract as
    :func:`torch.nn.functional.cross_entropy`: input [C], [N, C] or [N, C, d1, ...]; target class indices
    ([], [N] or [N, d1, ...]) or probabilities (input's shape); 'mean' over class indices divides by the summed
    weight of the non-ignored targets (nan when all are ignored, as torch).

    Without autograd (and for 'none' or float64) the forward reads the logits once (per row: max, sum of
    exponentials and the target terms) and the backward recomputes the softmax. For 'mean' / 'sum' with 16/32-bit
    logits that require grad, the forward reads each row twice and writes its gradient too, and the backward only
    scales it: nothing at all for the usual upstream gradient of 1. [N, C, d1, ...] inputs are first permuted to
    rows of C contiguous classes (one copy). Under autocast the loss is float32, as torch's, without an fp32 copy
    of the logits (the kernel reads 16-bit logits and accumulates in float32 either way)."""
    return torch.ops.fastops.cross_entropy_loss(input, target, weight, _reduction_enum(size_average, reduce, reduction),
                                                ignore_index, label_smoothing)


def nll_loss(input: Tensor, target: Tensor, weight: Tensor | None = None, size_average: bool | None = None,
             ignore_index: int = -100, reduce: bool | None = None, reduction: str = "mean") -> Tensor:
    """Negative log likelihood of class-index targets: ``-weight[t] * input[t]`` per row. Same contract as
    :func:`torch.nn.functional.nll_loss`: input [C], [N, C] or [N, C, d1, ...] (read in place, no permute), target
    [], [N] or [N, d1, ...]; 'mean' divides by the summed weight of the non-ignored targets (nan when all are
    ignored, as torch). The rows and their sum are float64, rounded once to the result's dtype."""
    return torch.ops.fastops.nll_loss(input, target, weight, _reduction_enum(size_average, reduce, reduction),
                                      ignore_index)


def _broadcast_operands(input: Tensor, target: Tensor) -> list[Tensor]:
    """torch's handling of mismatched operands in the regression losses: warn, then broadcast."""
    if target.size() != input.size():
        warnings.warn(
            f"Using a target size ({target.size()}) that is different to the input size ({input.size()}). "
            "This will likely lead to incorrect results due to broadcasting. "
            "Please ensure they have the same size.",
            stacklevel=3,
        )
        return torch.broadcast_tensors(input, target)
    return [input, target]


def mse_loss(input: Tensor, target: Tensor, size_average: bool | None = None, reduce: bool | None = None,
             reduction: str = "mean", weight: Tensor | None = None) -> Tensor:
    """Mean squared error. Same contract as :func:`torch.nn.functional.mse_loss` (weight is not supported)."""
    if weight is not None:
        raise NotImplementedError("fastops.functional.mse_loss: weight is not supported")
    red = _reduction_enum(size_average, reduce, reduction)
    operands = _broadcast_operands(input, target)
    return torch.ops.fastops.mse_loss(operands[0], operands[1], red)


def l1_loss(input: Tensor, target: Tensor, size_average: bool | None = None, reduce: bool | None = None,
            reduction: str = "mean", weight: Tensor | None = None) -> Tensor:
    """Mean absolute error. Same contract as :func:`torch.nn.functional.l1_loss`: mismatched shapes warn and
    broadcast; with ``weight`` (input's shape) the elementwise errors are weighted and 'mean' divides by the summed
    weight, as torch's (whose weighted form is the same composite of the unreduced loss)."""
    operands = _broadcast_operands(input, target)
    if weight is not None:
        if weight.size() != input.size():
            raise ValueError("Weights and input must have the same size.")
        weighted = torch.ops.fastops.l1_loss(operands[0], operands[1], 0) * weight
        if reduction == "none":
            return weighted
        if reduction == "sum":
            return torch.sum(weighted)
        if reduction == "mean":
            return torch.sum(weighted) / torch.sum(weight)
        raise ValueError(f"Invalid reduction mode: {reduction}. Expected one of 'none', 'mean', 'sum'.")
    red = _reduction_enum(size_average, reduce, reduction)
    return torch.ops.fastops.l1_loss(operands[0], operands[1], red)


def binary_cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                         size_average: bool | None = None, reduce: bool | None = None,
                         reduction: str = "mean") -> Tensor:
    """Binary cross entropy of probabilities. Same contract as :func:`torch.nn.functional.binary_cross_entropy`:
    input and target of one shape and dtype, values in [0, 1] (the CPU kernel refuses others with torch's message),
    each log clamped at -100; weight broadcasts to the target. Gradients flow to input and target."""
    red = _reduction_enum(size_average, reduce, reduction)
    if target.size() != input.size():
        raise ValueError(f"Using a target size ({target.size()}) that is different to the input size ({input.size()}) "
                         "is deprecated. Please ensure they have the same size.")
    if weight is not None:
        weight = weight.expand(torch.broadcast_shapes(target.size(), weight.size()))
    return torch.ops.fastops.binary_cross_entropy(input, target, weight, red)


def smooth_l1_loss(input: Tensor, target: Tensor, size_average: bool | None = None, reduce: bool | None = None,
                   reduction: str = "mean", beta: float = 1.0) -> Tensor:
    """Smooth L1 loss. Same contract as :func:`torch.nn.functional.smooth_l1_loss`."""
    red = _reduction_enum(size_average, reduce, reduction)
    operands = _broadcast_operands(input, target)
    return torch.ops.fastops.smooth_l1_loss(operands[0], operands[1], red, beta)


def huber_loss(input: Tensor, target: Tensor, reduction: str = "mean", delta: float = 1.0,
               weight: Tensor | None = None) -> Tensor:
    """Huber loss. Same contract as :func:`torch.nn.functional.huber_loss` (weight is not supported)."""
    if weight is not None:
        raise NotImplementedError("fastops.functional.huber_loss: weight is not supported")
    operands = _broadcast_operands(input, target)
    return torch.ops.fastops.huber_loss(operands[0], operands[1], _torch_reduction.get_enum(reduction), delta)


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor, weight: Tensor | None = None,
                                     size_average: bool | None = None, reduce: bool | None = None,
                                     reduction: str = "mean", pos_weight: Tensor | None = None) -> Tensor:
    """Sigmoid + binary cross entropy in one numerically stable step. Same contract as
    :func:`torch.nn.functional.binary_cross_entropy_with_logits`: weight broadcasts to input, pos_weight over
    the classes of the last dimension. Gradients flow to input and target (torch has none for weight and
    pos_weight: they must not require grad)."""
    red = _reduction_enum(size_average, reduce, reduction)
    if target.size() != input.size():
        raise ValueError(f"Target size ({target.size()}) must be the same as input size ({input.size()})")
    # The kernel reads every operand at the input's shape; weights broadcast here (expanded views).
    if weight is not None:
        weight = weight.expand_as(input)
    if pos_weight is not None:
        pos_weight = pos_weight.expand_as(input)
    return torch.ops.fastops.binary_cross_entropy_with_logits(input, target, weight, pos_weight, red)


def _loss_dtype(input: Tensor) -> torch.dtype:
    """torch's output dtype for a loss: the input's, or float32 under autocast (losses are on its fp32 list)."""
    if input.dtype != torch.float64 and torch.is_autocast_enabled(input.device.type):
        return torch.float32
    return input.dtype


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


# ---- fused linear + cross entropy ----

from .ops import linear_cross_entropy as _lce

__all__ += ["linear_cross_entropy"]


def linear_cross_entropy(input: Tensor, linear_weight: Tensor, target: Tensor, *, linear_bias: Tensor | None = None,
                         weight: Tensor | None = None, reduction: str = "mean", ignore_index: int | None = None,
                         label_smoothing: float = 0.0, options=None) -> Tensor:
    """``cross_entropy(linear(input, linear_weight, linear_bias), target, ...)`` without ever holding the [N, C]
    logits: :func:`torch.nn.functional.linear_cross_entropy`'s contract (torch >= 2.13), on any torch fastops
    supports. input (in_features) or (N, in_features); linear_weight (C, in_features); target class indices
    () / (N) or probabilities of the logits' shape; ``ignore_index=None`` means -100 for class indices.

    The tokens run in chunks of at most ``fastops.ops.linear_cross_entropy.CHUNK_BYTES`` of logits (or
    ``options.batch_chunk_size`` rows when torch's options say so): per chunk the fastops GEMM computes the logits
    and the cross-entropy kernel overwrites them with their gradient, which two GEMMs turn into the input and
    weight gradients, so the forward computes every gradient and the backward only scales them. A K-dimensional
    linear_weight (C, d1, ..., in_features) runs unfused, as torch does."""
    red = _reduction_enum(None, None, reduction)
    if input.dim() not in (1, 2):
        raise RuntimeError(f"expected input with dimensionality 1 or 2, got {input.dim()}")
    if linear_weight.dim() < 2:
        raise RuntimeError(f"expected linear_weight with dimensionality at least 2, got {linear_weight.dim()}")
    in_features, num_classes = input.shape[-1], linear_weight.shape[0]
    if in_features != linear_weight.shape[-1]:
        raise RuntimeError("expected equal input and linear_weight last dimensions (in_features), "
                           f"got {in_features} and {linear_weight.shape[-1]}, respectively")
    out_features = tuple(linear_weight.shape[1:-1])
    if linear_bias is not None and tuple(linear_bias.shape) != (num_classes, *out_features):
        raise RuntimeError(f"expected linear_bias shape {(num_classes, *out_features)}, "
                           f"got {tuple(linear_bias.shape)}")
    if out_features and input.dim() == 1:
        raise RuntimeError(f"K-dimensional loss defined by linear_weight shape {tuple(linear_weight.shape)} requires"
                           f" batched input, (N, {in_features}), got unbatched input with shape {tuple(input.shape)}")
    logits_shape = (*input.shape[:-1], num_classes, *out_features)
    probabilities = tuple(target.shape) == logits_shape
    if probabilities and ignore_index is not None:
        raise RuntimeError("ignore_index cannot be specified when target contains probabilities")
    ignore_index = -100 if ignore_index is None else ignore_index
    if out_features or input.shape[:-1].numel() == 0:
        if out_features:
            warnings.warn("fastops.linear_cross_entropy: a K-dimensional linear_weight runs unfused (linear, then "
                          "cross_entropy)", stacklevel=2)
        weight2d = linear_weight.reshape(-1, in_features)
        bias1d = linear_bias.reshape(-1) if linear_bias is not None else None
        logits = linear(input, weight2d, bias1d).reshape(logits_shape)
        return cross_entropy(logits, target, weight, ignore_index=ignore_index, reduction=reduction,
                             label_smoothing=label_smoothing)
    out_dtype = _loss_dtype(input)
    device_type = input.device.type
    if torch.is_autocast_enabled(device_type):  # the GEMMs in the autocast dtype, the loss in float32, as torch's
        dtype = torch.get_autocast_dtype(device_type)
        input, linear_weight = input.to(dtype), linear_weight.to(dtype)
        linear_bias = linear_bias.to(dtype) if linear_bias is not None else None
    unbatched = input.dim() == 1
    if unbatched:
        input, target = input.unsqueeze(0), target.unsqueeze(0)
    if probabilities:
        target = target.to(input.dtype)
    if weight is not None:
        weight = weight.to(_math_dtype(input.dtype))
    rows = getattr(options, "batch_chunk_size", None) or _lce.chunk_rows(input.shape[0], num_classes, input.dtype)
    args = (input, linear_weight, target, linear_bias, weight, ignore_index, label_smoothing)
    if red == _REDUCTIONS["none"]:
        loss = _lce.linear_cross_entropy_rows(*args, rows)
        return (loss.reshape(()) if unbatched else loss).to(out_dtype)
    grad = torch.is_grad_enabled()
    grad_scale = _cross_entropy_grad_scale(red, target, weight, ignore_index, num_classes)
    loss, _, _, _ = _lce.linear_cross_entropy(*args, grad_scale, rows, grad and input.requires_grad,
                                              grad and linear_weight.requires_grad,
                                              grad and linear_bias is not None and linear_bias.requires_grad)
    return loss.to(out_dtype)
