"""Fused linear + cross entropy that never holds the whole [N, V] logits: two operators composed of fastops kernels.

The tokens are processed in chunks of rows. Per chunk: logits = fastops linear (the GEMM, bias in its epilogue);
the cross-entropy kernel overwrites those logits with their gradient in place (``cross_entropy_forward_grad_``,
pre-scaled by 1 / total weight for 'mean'); then grad_input[chunk] = g . W and grad_weight += g^T . x_chunk (an
accumulating GEMM) and grad_bias += the column sums of g. So the forward produces every gradient, the [N, V]
logits exist one chunk at a time, and the backward only scales the gradients by the upstream gradient in place
(nothing at all for the usual upstream 1), as ``fastops::cross_entropy_forward_grad`` does.

'none' cannot pre-scale: each row's upstream gradient is only known in the backward, which therefore recomputes
the chunks (one more GEMM per chunk), as torch's chunked implementation does.

Under torch.compile the custom op stays one opaque node, but the backward's in-place scaling of the saved gradients
is functionalized: inductor (torch 2.13, CPU output code) keeps each gradient's buffer but copies it onto itself
before scale_rows_, one read and write of grad_weight that eager mode does not spend.

Precision: grad_weight accumulates in the weight's dtype: each chunk's GEMM adds its product to the running sum in
float32 and rounds once, so a 16-bit grad_weight is rounded once per chunk (about sqrt(chunks) half-ulps) instead
of once. That is the price of holding no float32 copy of a [V, H] gradient (2 GiB at V=128256, H=4096).
"""

import torch
from torch import Tensor

from .losses import math_dtype, scale_saved_gradients

fastops = torch.ops.fastops

# Bytes of logits one chunk may hold. 128 MiB: 512 rows of a 128256-word bfloat16 vocabulary, which keeps the whole
# extra memory of the [8192, 4096] x [128256, 4096] case at about 1.16 GiB (grad_weight 0.98 + grad_input 0.06 +
# the chunk 0.12), and a chunk GEMM of 512 x 128256 x 4096 still fills an H100.
CHUNK_BYTES = 128 * 2**20


def chunk_rows(n: int, num_classes: int, dtype: torch.dtype) -> int:
    """Rows per chunk under CHUNK_BYTES (a multiple of 64 when larger than 64, at least 1)."""
    rows = CHUNK_BYTES // max(1, num_classes * torch.empty((), dtype=dtype).element_size())
    if rows > 64:
        rows -= rows % 64
    return max(1, min(n, rows))


def _chunks(n: int, rows: int):
    for start in range(0, n, rows):
        yield start, min(n, start + rows)


@torch.no_grad()
def _forward_and_gradients(input: Tensor, weight: Tensor, target: Tensor, bias: Tensor | None,
                           class_weight: Tensor | None, ignore_index: int, label_smoothing: float, grad_scale: Tensor,
                           rows: int, need: tuple[bool, bool, bool]):
    """Sum over rows of grad_scale * loss_i (float64) and the gradients of that sum for input, weight and bias
    (empty tensors where `need` is False). grad_scale: float64, one element or one per row. Computed gradients are
    results here, not graph nodes (hence no_grad: matmul_accumulate_ refuses to run where autograd would track)."""
    n, v = input.shape[0], weight.shape[0]
    need_input, need_weight, need_bias = need
    grad_input = torch.empty_like(input) if need_input else input.new_empty(0)
    grad_weight = torch.zeros_like(weight) if need_weight else weight.new_empty(0)
    # The bias gradient is a [V] vector: kept in the math type across chunks, rounded once at the end.
    grad_bias_sum = torch.zeros(v, dtype=math_dtype(input.dtype), device=input.device) if need_bias else None
    total = torch.zeros((), dtype=torch.float64, device=input.device)
    per_row = grad_scale.numel() > 1
    for start, stop in _chunks(n, rows):
        x = input[start:stop]
        logits = fastops.linear(x, weight, bias)
        scale = grad_scale[start:stop] if per_row else grad_scale
        total += fastops.cross_entropy_forward_grad_(logits, target[start:stop], class_weight, ignore_index,
                                                     label_smoothing, scale).sum()
        grad_logits = logits  # overwritten in place
        if need_input:
            grad_input[start:stop] = fastops.matmul(grad_logits, weight)
        if need_weight:
            fastops.matmul_accumulate_(grad_weight, grad_logits.mT, x)
        if need_bias:
            grad_bias_sum += fastops.bias_grad(grad_logits)
    grad_bias = grad_bias_sum.to(bias.dtype) if need_bias else input.new_empty(0)
    return total, grad_input, grad_weight, grad_bias


def _loss_rows(input, weight, target, bias, class_weight, ignore_index, label_smoothing, rows):
    """The per-row losses (float64 [N]) without gradients: one chunk of logits at a time."""
    parts = []
    for start, stop in _chunks(input.shape[0], rows):
        logits = fastops.linear(input[start:stop], weight, bias)
        loss, _, _, _ = fastops.cross_entropy_forward(logits, target[start:stop], class_weight, ignore_index,
                                                      label_smoothing)
        parts.append(loss)
    return torch.cat(parts) if parts else input.new_empty(0, dtype=torch.float64)


def _empty_or_like(t: Tensor, needed: bool) -> Tensor:
    return t.new_empty(t.shape) if needed else t.new_empty(0)


# ---- 'mean' / 'sum': the forward computes the gradients ----


@torch.library.custom_op("fastops::linear_cross_entropy", mutates_args=())
def linear_cross_entropy(input: Tensor, weight: Tensor, target: Tensor, bias: Tensor | None,
                         class_weight: Tensor | None, ignore_index: int, label_smoothing: float, grad_scale: Tensor,
                         rows: int, need_input: bool, need_weight: bool,
                         need_bias: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sum over rows of grad_scale * cross_entropy(linear(input, weight, bias)[i], target[i]) (float64, 0-dim) and
    its gradients for input, weight and bias (empty where not needed), `rows` rows of logits at a time.
    input [N, H], weight [V, H], bias [V] share one dtype; target int64 [N]; grad_scale float64 (one element)."""
    return _forward_and_gradients(input, weight, target, bias, class_weight, ignore_index, label_smoothing,
                                  grad_scale, rows, (need_input, need_weight, need_bias))


@linear_cross_entropy.register_fake
def _linear_cross_entropy_fake(input, weight, target, bias, class_weight, ignore_index, label_smoothing, grad_scale,
                               rows, need_input, need_weight, need_bias):
    return (input.new_empty((), dtype=torch.float64), _empty_or_like(input, need_input),
            _empty_or_like(weight, need_weight),
            _empty_or_like(bias, need_bias) if bias is not None else input.new_empty(0))


def _linear_cross_entropy_setup(ctx, inputs, output):
    _, grad_input, grad_weight, grad_bias = output
    ctx.mark_non_differentiable(grad_input, grad_weight, grad_bias)
    ctx.save_for_backward(grad_input, grad_weight, grad_bias)
    ctx.needs = inputs[9:12]
    ctx.applied_factor = None


def _linear_cross_entropy_backward(ctx, grad_loss, *_):
    needed = [g for g, need in zip(ctx.saved_tensors, ctx.needs) if need]
    scaled = iter(scale_saved_gradients(ctx, needed, grad_loss.to(torch.float64).reshape(1)))
    grads = [next(scaled) if need else None for need in ctx.needs]
    return grads[0], grads[1], None, grads[2], None, None, None, None, None, None, None, None


linear_cross_entropy.register_autograd(_linear_cross_entropy_backward, setup_context=_linear_cross_entropy_setup)


# ---- 'none': the backward recomputes ----


@torch.library.custom_op("fastops::linear_cross_entropy_rows", mutates_args=())
def linear_cross_entropy_rows(input: Tensor, weight: Tensor, target: Tensor, bias: Tensor | None,
                              class_weight: Tensor | None, ignore_index: int, label_smoothing: float,
                              rows: int) -> Tensor:
    """cross_entropy(linear(input, weight, bias)[i], target[i]) for every row i (float64 [N]), chunked."""
    return _loss_rows(input, weight, target, bias, class_weight, ignore_index, label_smoothing, rows)


@linear_cross_entropy_rows.register_fake
def _linear_cross_entropy_rows_fake(input, weight, target, bias, class_weight, ignore_index, label_smoothing, rows):
    return input.new_empty((input.shape[0],), dtype=torch.float64)


def _linear_cross_entropy_rows_setup(ctx, inputs, output):
    input, weight, target, bias, class_weight, ctx.ignore_index, ctx.label_smoothing, ctx.rows = inputs
    ctx.has_bias = bias is not None
    ctx.save_for_backward(input, weight, target, bias, class_weight)


def _linear_cross_entropy_rows_backward(ctx, grad_rows):
    input, weight, target, bias, class_weight = ctx.saved_tensors
    need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[3])
    _, grad_input, grad_weight, grad_bias = _forward_and_gradients(
        input, weight, target, bias, class_weight, ctx.ignore_index, ctx.label_smoothing,
        grad_rows.to(torch.float64).contiguous(), ctx.rows, need)
    grads = [g if n else None for g, n in zip((grad_input, grad_weight, grad_bias), need)]
    return grads[0], grads[1], None, grads[2], None, None, None, None


linear_cross_entropy_rows.register_autograd(_linear_cross_entropy_rows_backward,
                                            setup_context=_linear_cross_entropy_rows_setup)


@torch.library.register_fake("fastops::cross_entropy_block_grad_")
def _cross_entropy_block_grad_fake(logits, target, weight, lse, target_mass, grad_scale, class_start, num_classes,
                                   ignore_index, label_smoothing):
    return None
