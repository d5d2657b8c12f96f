"""The public functional API: typed, documented wrappers over ``torch.ops.fastops`` with torch.nn.functional's
signatures and semantics. Each is a thin call into one operator (the rules live in C++, next to the kernels), and
each compiles under TorchScript, so that fastops.nn modules script and trace like their torch.nn twins."""

import warnings

import torch
from torch import Tensor
from torch.nn import _reduction as _torch_reduction

from .ops.activations import GEMM_FUSED

__all__ = ["bias_act", "binary_cross_entropy", "binary_cross_entropy_with_logits", "celu", "cross_entropy", "elu",
           "geglu", "gelu", "glu", "hardsigmoid", "hardswish", "hardtanh", "huber_loss", "kl_div", "l1_loss",
           "leaky_relu", "linear", "log_softmax", "matmul", "mish", "mse_loss", "nll_loss", "relu", "relu6", "selu", "sigmoid",
           "silu", "smooth_l1_loss", "softmax", "softplus", "swiglu", "tanh"]

# ---- activations ----


def _inplace_source(input: Tensor, inplace: bool) -> Tensor:
    """What an activation whose backward reads its input computes from: with ``inplace=True`` and a gradient to come,
    a copy, since the result overwrites input (torch's in-place activations save one too)."""
    if inplace and input.requires_grad and torch.is_grad_enabled():
        return input.clone()
    return input


def _written(input: Tensor, result: Tensor, inplace: bool) -> Tensor:
    """The kernels are out of place; ``inplace=True`` writes the result back into input, so that callers relying on
    input changing (and autograd's checks on in-place use of leaves) behave as with torch."""
    return input.copy_(result) if inplace else result


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """max(input, 0) elementwise (NaN propagates). Same contract as :func:`torch.nn.functional.relu`."""
    # relu's backward reads its output, which the in-place copy leaves untouched: no copy of the input needed.
    return _written(input, torch.ops.fastops.relu(input), inplace)


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """x * Phi(x) with the exact erf CDF (``approximate='none'``) or the tanh approximation (``'tanh'``). Same
    contract as :func:`torch.nn.functional.gelu`."""
    return torch.ops.fastops.gelu(input, approximate=approximate)


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    """x * sigmoid(x). Same contract as :func:`torch.nn.functional.silu`."""
    return _written(input, torch.ops.fastops.silu(_inplace_source(input, inplace)), inplace)


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """x if x > 0 else negative_slope * x. Same contract as :func:`torch.nn.functional.leaky_relu`."""
    return _written(input, torch.ops.fastops.leaky_relu(_inplace_source(input, inplace), negative_slope), inplace)


def sigmoid(input: Tensor) -> Tensor:
    """1 / (1 + exp(-x)). Same contract as :func:`torch.sigmoid`."""
    return torch.ops.fastops.sigmoid(input)


def tanh(input: Tensor) -> Tensor:
    """Hyperbolic tangent. Same contract as :func:`torch.tanh`."""
    return torch.ops.fastops.tanh(input)


def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """x if x > 0 else alpha * (exp(x) - 1). Same contract as :func:`torch.nn.functional.elu`."""
    return _written(input, torch.ops.fastops.elu(_inplace_source(input, inplace), alpha), inplace)


def selu(input: Tensor, inplace: bool = False) -> Tensor:
    """scale * elu(x, alpha) with torch's constants. Same contract as :func:`torch.nn.functional.selu`."""
    # aten's SELU_ALPHA and SELU_SCALE (the literals, since TorchScript reads no module globals).
    result = torch.ops.fastops.elu(_inplace_source(input, inplace), 1.6732632423543772848170429916717,
                                   1.0507009873554804934193349852946)
    return _written(input, result, inplace)


def celu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """max(0, x) + min(0, alpha * (exp(x / alpha) - 1)). Same contract as :func:`torch.nn.functional.celu`."""
    if alpha == 0:
        raise RuntimeError("ZeroDivisionError: alpha cannot be 0 for CELU")  # torch's message
    result = torch.ops.fastops.elu(_inplace_source(input, inplace), alpha, 1.0, 1.0 / alpha)
    return _written(input, result, inplace)


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """log(1 + exp(beta * x)) / beta, and x where beta * x > threshold. Same contract as
    :func:`torch.nn.functional.softplus`."""
    return torch.ops.fastops.softplus(input, beta, threshold)


def mish(input: Tensor, inplace: bool = False) -> Tensor:
    """x * tanh(softplus(x)). Same contract as :func:`torch.nn.functional.mish`."""
    return _written(input, torch.ops.fastops.mish(_inplace_source(input, inplace)), inplace)


def hardswish(input: Tensor, inplace: bool = False) -> Tensor:
    """x * relu6(x + 3) / 6. Same contract as :func:`torch.nn.functional.hardswish`."""
    return _written(input, torch.ops.fastops.hardswish(_inplace_source(input, inplace)), inplace)


def hardsigmoid(input: Tensor, inplace: bool = False) -> Tensor:
    """relu6(x + 3) / 6. Same contract as :func:`torch.nn.functional.hardsigmoid`."""
    return _written(input, torch.ops.fastops.hardsigmoid(_inplace_source(input, inplace)), inplace)


def hardtanh(input: Tensor, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> Tensor:
    """x clamped to [min_val, max_val] (NaN propagates). Same contract as :func:`torch.nn.functional.hardtanh`."""
    if min_val > max_val:
        raise ValueError("min_val cannot be greater than max_val")  # torch's check and message
    return _written(input, torch.ops.fastops.hardtanh(_inplace_source(input, inplace), min_val, max_val), inplace)


def relu6(input: Tensor, inplace: bool = False) -> Tensor:
    """min(max(x, 0), 6): hardtanh(x, 0, 6), as in torch. Same contract as :func:`torch.nn.functional.relu6`."""
    return hardtanh(input, 0.0, 6.0, inplace)


def glu(input: Tensor, dim: int = -1) -> Tensor:
    """a * sigmoid(b), a and b the first and second halves of input along ``dim``. Same contract as
    :func:`torch.nn.functional.glu`. The result is contiguous."""
    return torch.ops.fastops.glu(input, dim)


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


# The activations linear() fuses (the table's GEMM-fused rows, fastops/ops/activations.py).
LINEAR_ACTIVATIONS = GEMM_FUSED


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


def kl_div(input: Tensor, target: Tensor, size_average: bool | None = None, reduce: bool | None = None,
           reduction: str = "mean", log_target: bool = False) -> Tensor:
    """Kullback-Leibler divergence of log-probabilities ``input`` from ``target``: ``target * (log(target) - input)``
    (0 where target is 0) or, with ``log_target``, ``exp(target) * (target - input)``. Same contract as
    :func:`torch.nn.functional.kl_div`: ``'batchmean'`` is the sum divided by ``input.size(0)`` (the sum itself for a
    0-dim input), ``'mean'`` divides by the number of elements and warns as torch does; input and target broadcast
    and their dtypes promote. Gradients flow to input and target, to any order."""
    if size_average is not None or reduce is not None:
        red = _torch_reduction.legacy_get_enum(size_average, reduce)
    else:
        # torch.compile traces without the warning (dynamo cannot trace warnings.warn; torch's own kl_div warns once,
        # while the graph is traced).
        if reduction == "mean" and (torch.jit.is_scripting() or not torch.compiler.is_compiling()):
            warnings.warn("reduction: 'mean' divides the total loss by both the batch size and the support size."
                          "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
                          "'mean' will be changed to behave the same as 'batchmean' in the next major release.",
                          stacklevel=2)
        red = _torch_reduction.get_enum("sum" if reduction == "batchmean" else reduction)
    operands = [input, target]
    if target.size() != input.size():  # torch's kl_div broadcasts without a warning
        operands = torch.broadcast_tensors(input, target)
    reduced = torch.ops.fastops.kl_div(operands[0], operands[1], red, log_target)
    if reduction == "batchmean" and input.dim() != 0:
        reduced = reduced / input.size()[0]
    return reduced


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

    The tokens run in chunks of at most ``fastops.ops.linear_cross_entropy.CHUNK_BYTES`` of logits, or as torch's
    ``options`` (a :class:`torch.nn.LinearCrossEntropyOptions`) say, with torch's rules: its batch_chunk_size or
    chunking_method, its acc_dtype (16-bit operands computed in float32 where it resolves to float32), its errors,
    and its warning where it ignores them (any other object with a ``batch_chunk_size`` sets the chunk rows): per chunk the fastops GEMM computes the logits
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
    rows, acc_dtype = _lce.resolve_options(options, input, linear_weight, target, linear_bias, reduction,
                                           ignore_index, label_smoothing)
    dtype = input.dtype
    if acc_dtype is not None:  # torch's chunked path keeps the 16-bit logits in float32: so do these
        input, linear_weight = input.float(), linear_weight.float()
        linear_bias = linear_bias.float() if linear_bias is not None else None
        weight = weight.float() if weight is not None else None
    loss = _lce.linear_cross_entropy_loss(input, linear_weight, target, linear_bias, weight, reduction, ignore_index,
                                          label_smoothing, rows, autocast)
    return loss.to(dtype) if acc_dtype is not None else loss
