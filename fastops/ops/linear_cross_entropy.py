"""Fused linear + cross entropy that never holds the whole [N, V] logits: two operators composed of fastops kernels,
and the TorchScript-compatible function that checks the arguments and calls them (``linear_cross_entropy_loss``:
fastops.functional.linear_cross_entropy and fastops.nn.LinearCrossEntropyLoss, eager or scripted, both end there).

'mean' / 'sum' (``fastops::linear_cross_entropy``): the forward computes every gradient, in two passes.
  Pass 1, over chunks of tokens (at most CHUNK_BYTES of logits each): logits = fastops linear (bias in the GEMM's
  epilogue); cross_entropy_forward gives each row's loss, log-sum-exp and target mass; cross_entropy_block_grad_
  overwrites the logits with their gradient (pre-scaled by grad_scale: 1 / total weight for 'mean'), and
  grad_input[chunk] = g . W, one GEMM over the whole vocabulary.
  Pass 2, over blocks of the vocabulary (at most CHUNK_BYTES of logits each, all tokens): the block's logits again,
  their gradient from pass 1's row statistics, grad_weight[block] = g^T . x and grad_bias[block] = the column sums
  of g. When the tokens fit one chunk, pass 1 already holds every gradient row and takes grad_weight / grad_bias
  itself; pass 2 is skipped.
  The backward then only scales the saved gradients by the upstream gradient, out of place, and does nothing at
  all for the usual upstream gradient of exactly 1 (it returns the saved tensors). The saved gradients are never
  written after the forward, so a retained graph's later backward sees what the first one saw.

'none' (``fastops::linear_cross_entropy_rows``): each row's upstream gradient is only known in the backward, which
therefore runs the same two passes (one more logits GEMM than 'mean' / 'sum').

Why pass 2. A weight-gradient element sums over all N tokens. Accumulated over token chunks into grad_weight, it was
rounded to the weight's dtype once per chunk: in bfloat16 that measured 3.1-7.8x torch's error against float64
(64..256 tokens in chunks of 1-7 rows; torch rounds once), now 1.1-1.7x. Keeping the accumulation exact costs
either memory or work. A float32 [V, H] accumulator costs 2 GiB at V=128256, H=4096 (a bfloat16 residual buffer
carrying each chunk's rounding error, 1 GiB, and a GEMM epilogue that writes it); pass 2 costs one more logits GEMM
(4 GEMMs instead of 3, only when the tokens need more than one chunk), writes each weight-gradient block once
instead of reading and writing all of grad_weight once per chunk, and holds one block of logits. Measured peak extra
memory of a forward + backward in bfloat16 on the CPU (torch's allocator events), at 1024 x 512 x 16032 with
CHUNK_BYTES / 64 (the 8192 x 4096 x 128256 headline scaled by 1/8 in every dimension: 16 chunks, 16 blocks):
torch's F.cross_entropy(F.linear(...)) 93.9 MiB; fastops before 33.3 MiB (its backward was also handed
materialised zeros for the op's gradient outputs: one more grad_weight); now 18.7 MiB = the gradients (grad_weight
15.7 + grad_input 1.0) + one chunk (2.0). Scaled by 64: torch 5.87 GiB, fastops 1.17 GiB (5.0x less; grad_weight
alone is 1/6 of torch's peak). Pass 2 relies on the GEMM computing the same logits as pass 1 (see token_chunks).

Higher-order autograd: with grad mode on in the backward (create_graph=True) both ops recompute the loss through
torch's linear and cross_entropy (the full logits, once) and differentiate that, so second derivatives are exact.
"""

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import _reduction as _torch_reduction

from .losses import math_dtype

fastops = torch.ops.fastops

# Bytes of logits one chunk (pass 1) or vocabulary block (pass 2) may hold. 128 MiB: 512 rows of a 128256-word
# bfloat16 vocabulary, which keeps the whole extra memory of the [8192, 4096] x [128256, 4096] case at about 1.2 GiB
# (grad_weight 0.98 + grad_input 0.06 + the chunk 0.12), and a chunk GEMM of 512 x 128256 x 4096 still fills an H100.
CHUNK_BYTES = 128 * 2**20


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def chunk_rows(n: int, num_classes: int, dtype: torch.dtype) -> int:
    """Rows per chunk under CHUNK_BYTES (a multiple of 64 when larger than 64, at least 1)."""
    rows = CHUNK_BYTES // max(1, num_classes * _element_size(dtype))
    if rows > 64:
        rows -= rows % 64
    return max(1, min(n, rows))


def vocabulary_block(n: int, num_classes: int, dtype: torch.dtype) -> int:
    """Classes per pass-2 block under CHUNK_BYTES for n tokens: a multiple of 64 and at least 64 (below that the
    GEMMs starve), at most num_classes."""
    cols = max(64, CHUNK_BYTES // max(1, n * _element_size(dtype)))
    return min(num_classes, cols - cols % 64)


def _spans(n: int, step: int):
    for start in range(0, n, step):
        yield start, min(n, start + step)


def token_chunks(n: int, rows: int, for_pass_2: bool) -> list[tuple[int, int]]:
    """The (start, stop) rows of pass 1's chunks. Pass 2 softmaxes its logits with pass 1's log-sum-exp, so both must
    compute the very same logits: fastops' GEMM sums each output element in one order whatever the number of rows,
    except on the CPU for a single row (its vector-matrix path sums in lanes: measured different in the last bit of
    float32 logits, e.g. 2 tokens x 16 features x 1 class, where torch's gradient is exactly 0). So when pass 2 will
    run, no chunk has a single row: at least 2 rows each, and a single last row joins the chunk before it."""
    if for_pass_2:
        rows = max(rows, 2)
    chunks = list(_spans(n, rows))
    if for_pass_2 and len(chunks) > 1 and chunks[-1][1] - chunks[-1][0] == 1:
        chunks[-2:] = [(chunks[-2][0], n)]
    return chunks


def _dense(t: Tensor) -> Tensor:
    """t itself when the GEMMs read it in place (row- or column-major), else one contiguous copy, so that a sliced
    operand is copied once, not once per chunk and block."""
    return t if t.is_contiguous() or t.mT.is_contiguous() else t.contiguous()


@torch.no_grad()
def _forward_and_gradients(input: Tensor, weight: Tensor, target: Tensor, bias: Tensor | None,
                           class_weight: Tensor | None, ignore_index: int, label_smoothing: float, grad_scale: Tensor,
                           rows: int, needs: list[bool]):
    """Sum over rows of grad_scale * loss_i (float64) and its gradients for input, weight, bias, target and
    class_weight (empty tensors where `needs` is False). grad_scale: float64, one element or one per row. The two
    passes of the file comment; computed gradients are results here, not graph nodes (hence no_grad:
    matmul_accumulate_ refuses to run where autograd would track)."""
    need_input, need_weight, need_bias, need_target, need_class_weight = needs
    input, weight = _dense(input), _dense(weight)
    n, v = input.shape[0], weight.shape[0]
    chunks = token_chunks(n, rows or chunk_rows(n, v, input.dtype), need_weight or need_bias)
    math = math_dtype(input.dtype)
    per_row = grad_scale.numel() > 1
    one_chunk = len(chunks) == 1
    two_pass = not one_chunk and (need_weight or need_bias)
    # Outputs not asked for are empty (each its own: a custom operator's outputs may not alias).
    grad_input = torch.empty(input.shape, dtype=input.dtype, device=input.device) if need_input else input.new_empty(0)
    grad_weight, grad_bias = input.new_empty(0), input.new_empty(0)
    grad_target = torch.empty_like(target, memory_format=torch.contiguous_format) if need_target else input.new_empty(0)
    # The class weights' gradient is a [V] vector: summed over chunks in float64, rounded once at the end.
    grad_class_weight = (torch.zeros(v, dtype=torch.float64, device=input.device) if need_class_weight
                         else input.new_empty(0))
    if two_pass:
        row_lse = torch.empty(n, dtype=torch.float64, device=input.device)
        row_mass = torch.empty(n, dtype=math, device=input.device)
    total = torch.zeros((), dtype=torch.float64, device=input.device)
    # Each chunk and block lives in its own call, so that its logits are freed before the next ones are allocated.
    for start, stop in chunks:
        scale = grad_scale[start:stop] if per_row else grad_scale
        loss, chunk_weight, chunk_bias = _token_chunk(
            input[start:stop], weight, target[start:stop], bias, class_weight, ignore_index, label_smoothing, scale,
            math, row_lse[start:stop] if two_pass else None, row_mass[start:stop] if two_pass else None,
            grad_input[start:stop] if need_input else None, grad_target[start:stop] if need_target else None,
            grad_class_weight if need_class_weight else None, one_chunk and need_weight, one_chunk and need_bias)
        total += loss
        if one_chunk:  # this chunk's gradient rows are all of them: the weight gradient is one GEMM over all tokens
            grad_weight = chunk_weight if need_weight else grad_weight
            grad_bias = chunk_bias if need_bias else grad_bias
    if two_pass:
        if need_weight:
            grad_weight = torch.zeros(weight.shape, dtype=weight.dtype, device=weight.device)
        if need_bias:
            grad_bias = torch.empty(v, dtype=bias.dtype, device=bias.device)
        for start, stop in _spans(v, vocabulary_block(n, v, input.dtype)):
            _vocabulary_block(input, weight, target, bias, class_weight, ignore_index, label_smoothing, grad_scale,
                              row_lse, row_mass, start, stop, v, grad_weight if need_weight else None,
                              grad_bias if need_bias else None)
    if need_class_weight:
        grad_class_weight = grad_class_weight.to(class_weight.dtype)
    return total, grad_input, grad_weight, grad_bias, grad_target, grad_class_weight


def _token_chunk(x: Tensor, weight: Tensor, target: Tensor, bias: Tensor | None, class_weight: Tensor | None,
                 ignore_index: int, label_smoothing: float, scale: Tensor, math: torch.dtype, row_lse: Tensor | None,
                 row_mass: Tensor | None, grad_input: Tensor | None, grad_target: Tensor | None,
                 grad_class_weight: Tensor | None, want_weight: bool, want_bias: bool):
    """Pass 1 for one chunk of tokens: returns sum_i scale_i loss_i and, when asked (the chunk holds every token),
    the weight and bias gradients; writes the chunk's rows of grad_input / grad_target and its row statistics
    (row_lse, row_mass) where given, and adds to grad_class_weight."""
    v = weight.shape[0]
    logits = fastops.linear(x, weight, bias)
    loss, _, lse, mass = fastops.cross_entropy_forward(logits, target, class_weight, ignore_index, label_smoothing)
    if row_lse is not None:
        row_lse.copy_(lse)
        row_mass.copy_(mass)
    if grad_target is not None or grad_class_weight is not None:
        _probability_gradients(logits, target, class_weight, lse, scale, label_smoothing, v, math, grad_target,
                               grad_class_weight)
    grad_weight = grad_bias = None
    if grad_input is not None or want_weight or want_bias:
        fastops.cross_entropy_block_grad_(logits, target, class_weight, lse, mass, scale, 0, v, ignore_index,
                                          label_smoothing)
        grad_logits = logits  # overwritten in place
        if grad_input is not None:
            grad_input.copy_(_input_gradient(grad_logits, weight))
        if want_weight:
            grad_weight = fastops.matmul(grad_logits.mT, x)
        if want_bias:
            grad_bias = fastops.bias_grad(grad_logits)
    return (loss * scale).sum(), grad_weight, grad_bias


def _input_gradient(grad_logits: Tensor, weight: Tensor) -> Tensor:
    """grad_logits @ weight. Each row of grad_logits sums to zero (softmax times the target mass, minus the target),
    so the product cancels, and a float32 GEMM's rounding of its partial sums became the whole error: 1% of random
    small float32 cases (the property test's shapes) failed the accuracy rule at avx2, e.g. 2 tokens x 31 classes ->
    16 features erred 2.35e-7 against torch's (MKL's) 5.8e-8. float32 is summed in float64, a vocabulary block at a
    time (no float64 copy of the whole weight), and rounded once by the caller's copy."""
    if grad_logits.dtype != torch.float32:
        return fastops.matmul(grad_logits, weight)
    n, v = grad_logits.shape
    total = None
    for start, stop in _spans(v, vocabulary_block(n, v, torch.float64)):
        part = fastops.matmul(grad_logits[:, start:stop].double(), weight[start:stop].double())
        total = part if total is None else total.add_(part)
    return total


def _vocabulary_block(input: Tensor, weight: Tensor, target: Tensor, bias: Tensor | None,
                      class_weight: Tensor | None, ignore_index: int, label_smoothing: float, grad_scale: Tensor,
                      row_lse: Tensor, row_mass: Tensor, start: int, stop: int, num_classes: int,
                      grad_weight: Tensor | None, grad_bias: Tensor | None) -> None:
    """Pass 2 for classes start .. stop - 1 over all tokens: their logits, their gradient from the row statistics
    of pass 1, and grad_weight / grad_bias of those classes from one GEMM / column sum over all tokens."""
    logits = fastops.linear(input, weight[start:stop], bias[start:stop] if bias is not None else None)
    fastops.cross_entropy_block_grad_(logits, target[:, start:stop] if target.is_floating_point() else target,
                                      class_weight[start:stop] if class_weight is not None else None, row_lse,
                                      row_mass, grad_scale, start, num_classes, ignore_index, label_smoothing)
    if grad_weight is not None:  # onto zeros: the product rounded once
        fastops.matmul_accumulate_(grad_weight[start:stop], logits.mT, input)
    if grad_bias is not None:
        grad_bias[start:stop] = fastops.bias_grad(logits)


def _probability_gradients(logits: Tensor, target: Tensor, class_weight: Tensor | None, lse: Tensor, scale: Tensor,
                           label_smoothing: float, num_classes: int, math: torch.dtype, grad_target: Tensor | None,
                           grad_class_weight: Tensor | None) -> None:
    """With probability targets, loss_i = sum_c w_c ((1 - eps) t_ic + eps / V) (lse_i - z_ic), so that
    d loss_i / d t_ic = w_c (1 - eps) (lse_i - z_ic) and d loss_i / d w_c = ((1 - eps) t_ic + eps / V) (lse_i - z_ic);
    for one chunk of rows, times the rows' scale: written into grad_target, added to grad_class_weight (float64).
    Computed in the math type from the logits before they are overwritten (only when those gradients are asked
    for: torch's ops on one chunk-sized temporary)."""
    neg_log_p = lse.to(math).unsqueeze(1) - logits.to(math)
    row_scale = scale.to(math).reshape(-1, 1)
    if grad_target is not None:
        g = neg_log_p * (row_scale * (1.0 - label_smoothing))
        if class_weight is not None:
            g = g * class_weight
        grad_target.copy_(g)
    if grad_class_weight is not None:
        q = target.to(math) * (1.0 - label_smoothing) + label_smoothing / num_classes
        grad_class_weight += (q * neg_log_p * row_scale).sum(0, dtype=torch.float64)


def _differentiable_gradients(ctx, row_scale: Tensor) -> list:
    """The gradients of sum_i row_scale[i] * loss_i for the inputs that need one, as graph nodes (create_graph=True):
    the loss recomputed through torch's linear and cross_entropy, which torch differentiates to any order, so the
    gradients' own gradients (and row_scale's, the upstream gradient's) are exact. Holds the [N, V] logits once; only
    higher-order autograd takes this path."""
    input, weight, target, bias, class_weight = ctx.saved_tensors[:5]
    math = math_dtype(input.dtype)
    logits = F.linear(input, weight, bias).to(math)
    rows = F.cross_entropy(logits, target.to(math) if target.is_floating_point() else target, weight=class_weight,
                           ignore_index=ctx.ignore_index, reduction="none", label_smoothing=ctx.label_smoothing)
    operands = (input, weight, target, bias, class_weight)
    wanted = [i for i in range(5) if ctx.needs_input_grad[i]]
    grads = torch.autograd.grad((rows.to(torch.float64) * row_scale).sum(), [operands[i] for i in wanted],
                                create_graph=True, allow_unused=True)
    out = [None] * 5
    for i, g in zip(wanted, grads):
        out[i] = g
    return out


def _is_traced(t: Tensor) -> bool:
    """Whether t is a tracing stand-in without values (torch.compile's fake / functional tensors)."""
    return torch._subclasses.fake_tensor.is_fake(t)


# ---- 'mean' / 'sum': the forward computes the gradients ----

# needs: which gradients to compute, in the order of the outputs: input, weight, bias, target, class_weight.
@torch.library.custom_op("fastops::linear_cross_entropy", mutates_args=())
def linear_cross_entropy(input: Tensor, weight: Tensor, target: Tensor, bias: Tensor | None,
                         class_weight: Tensor | None, ignore_index: int, label_smoothing: float, grad_scale: Tensor,
                         rows: int, needs: list[bool]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Sum over rows of grad_scale * cross_entropy(linear(input, weight, bias)[i], target[i]) (float64, 0-dim) and
    its gradients for input, weight, bias, target and class_weight (empty where not needed), `rows` rows of logits
    at a time (0: as many as CHUNK_BYTES holds). input [N, H], weight [V, H], bias [V] share one dtype; target int64 [N] or probabilities [N, V] of
    input's dtype; class_weight [V] in the math type; grad_scale float64 (one element)."""
    return _forward_and_gradients(input, weight, target, bias, class_weight, ignore_index, label_smoothing,
                                  grad_scale, rows, needs)


@linear_cross_entropy.register_fake
def _linear_cross_entropy_fake(input, weight, target, bias, class_weight, ignore_index, label_smoothing, grad_scale,
                               rows, needs):
    grads = [t.new_empty(t.shape) if need else input.new_empty(0)
             for t, need in zip((input, weight, bias, target, class_weight), needs)]
    return (input.new_empty((), dtype=torch.float64), *grads)


def _linear_cross_entropy_setup(ctx, inputs, output):
    input, weight, target, bias, class_weight, ctx.ignore_index, ctx.label_smoothing, grad_scale, _, _ = inputs
    grads = output[1:]
    # The backward gets None, not materialised zeros, for the gradient outputs (nothing flows into them): zeros
    # would cost one more [V, H] buffer.
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(*grads)
    ctx.save_for_backward(input, weight, target, bias, class_weight, grad_scale, *grads)


def _linear_cross_entropy_backward(ctx, grad_loss, *_):
    if grad_loss is None:  # an undefined gradient (gradcheck's check_undefined_grad hands one)
        return (None,) * 10
    if torch.is_grad_enabled():
        grads = _differentiable_gradients(ctx, ctx.saved_tensors[5] * grad_loss)
    else:
        # Saved in output order (input, weight, bias, target, class_weight); returned in argument order.
        g_input, g_weight, g_bias, g_target, g_class_weight = _scaled(ctx.saved_tensors[6:], grad_loss)
        grads = [g_input, g_weight, g_target, g_bias, g_class_weight]
    grads = [g if ctx.needs_input_grad[i] else None for i, g in enumerate(grads)]
    return (*grads, None, None, None, None, None)


def _scaled(grads, factor: Tensor) -> list:
    """The gradients times the upstream `factor`, never writing the saved ones. The usual factor of exactly 1
    returns them as they are (no work: autograd hands them on or takes them as .grad); any other factor scales out
    of place, each element rounded once. Checking for 1 reads the factor on the host (a sync on CUDA, when the
    forward's work is queued anyway); under torch.compile, where it has no value yet, the product is always taken
    (the compiled graph fuses it into one pass, as the clone that inductor made of a mutated input cost before)."""
    if _is_traced(factor):
        return [g if g.numel() == 0 else (g.to(math_dtype(g.dtype)) * factor.to(math_dtype(g.dtype))).to(g.dtype)
                for g in grads]
    f = factor.item()
    if f == 1.0:
        return list(grads)
    # A Python number: the CPU and CUDA kernels multiply 16-bit tensors in float32 and round once.
    return [g * f for g in grads]


linear_cross_entropy.register_autograd(_linear_cross_entropy_backward, setup_context=_linear_cross_entropy_setup)


# ---- 'none': the backward recomputes ----


@torch.library.custom_op("fastops::linear_cross_entropy_rows", mutates_args=())
def linear_cross_entropy_rows(input: Tensor, weight: Tensor, target: Tensor, bias: Tensor | None,
                              class_weight: Tensor | None, ignore_index: int, label_smoothing: float,
                              rows: int) -> Tensor:
    """cross_entropy(linear(input, weight, bias)[i], target[i]) for every row i (float64 [N]), `rows` rows of logits
    at a time (0: as many as CHUNK_BYTES holds)."""
    parts = []
    for start, stop in _spans(input.shape[0], rows or chunk_rows(input.shape[0], weight.shape[0], input.dtype)):
        logits = fastops.linear(input[start:stop], weight, bias)
        loss, _, _, _ = fastops.cross_entropy_forward(logits, target[start:stop], class_weight, ignore_index,
                                                      label_smoothing)
        parts.append(loss)
    return torch.cat(parts) if parts else input.new_empty(0, dtype=torch.float64)


@linear_cross_entropy_rows.register_fake
def _linear_cross_entropy_rows_fake(input, weight, target, bias, class_weight, ignore_index, label_smoothing, rows):
    return input.new_empty((input.shape[0],), dtype=torch.float64)


def _linear_cross_entropy_rows_setup(ctx, inputs, output):
    input, weight, target, bias, class_weight, ctx.ignore_index, ctx.label_smoothing, ctx.rows = inputs
    ctx.save_for_backward(input, weight, target, bias, class_weight)


def _linear_cross_entropy_rows_backward(ctx, grad_rows):
    if torch.is_grad_enabled():
        grads = _differentiable_gradients(ctx, grad_rows.to(torch.float64))
        return (*grads, None, None, None)
    input, weight, target, bias, class_weight = ctx.saved_tensors
    need = ctx.needs_input_grad
    _, g_input, g_weight, g_bias, g_target, g_class_weight = _forward_and_gradients(
        input, weight, target, bias, class_weight, ctx.ignore_index, ctx.label_smoothing,
        grad_rows.to(torch.float64).contiguous(), ctx.rows,
        [need[0], need[1], bias is not None and need[3], need[2], class_weight is not None and need[4]])
    grads = [g if n else None for g, n in zip((g_input, g_weight, g_target, g_bias, g_class_weight), need[:5])]
    return (*grads, None, None, None)


linear_cross_entropy_rows.register_autograd(_linear_cross_entropy_rows_backward,
                                            setup_context=_linear_cross_entropy_rows_setup)


@torch.library.register_fake("fastops::cross_entropy_block_grad_")
def _cross_entropy_block_grad_fake(logits, target, weight, lse, target_mass, grad_scale, class_start, num_classes,
                                   ignore_index, label_smoothing):
    return None


# ---- the argument rules and the choice of operator (TorchScript-compatible) ----


def _shape(shape: list[int]) -> str:
    """A shape as Python prints a tuple, "(3,)" or "(2, 4)", also under TorchScript (torch's messages use it)."""
    if len(shape) == 1:
        return "(" + str(shape[0]) + ",)"
    return "(" + ", ".join([str(s) for s in shape]) + ")"


def _total_weight(target: Tensor, weight: Tensor | None, ignore_index: int, num_classes: int) -> Tensor:
    """The divisor of 'mean' (float64, 0-dim): the summed class weight of the rows not ignored (the row count for
    probability targets). An out-of-range class counts here as class 0 and is raised by the kernel."""
    if target.is_floating_point():  # counted by a tensor op, so that a trace follows the batch size
        return torch.ones_like(target[:, 0], dtype=torch.float64).sum()
    kept = target != ignore_index
    if weight is None:
        return kept.sum(dtype=torch.float64)
    in_range = kept & (target >= 0) & (target < num_classes)
    row_weight = weight.detach().to(torch.float64)[torch.where(in_range, target, torch.zeros_like(target))]
    return torch.where(kept, row_weight, torch.zeros_like(row_weight)).sum()


def _scalar_type_name(dtype: torch.dtype) -> str:
    """c10's ScalarType name, which torch's C++ messages print, of a dtype a target can wrongly have (if-chain, not
    a dict: TorchScript compiles this function)."""
    if dtype == torch.int64:
        return "Long"
    if dtype == torch.int32:
        return "Int"
    if dtype == torch.int16:
        return "Short"
    if dtype == torch.int8:
        return "Char"
    if dtype == torch.uint8:
        return "Byte"
    if dtype == torch.bool:
        return "Bool"
    return str(dtype)


def _check_target(target: Tensor, batch: int, unbatched: bool) -> Tensor:
    """torch's rules for class-index targets (nll_loss_nd's, checked in its order: the batch sizes first, then the
    target's rank); returns them as int64 [N]."""
    if not unbatched and target.dim() >= 1 and target.shape[0] != batch:
        raise ValueError("fastops.linear_cross_entropy: Expected input batch_size (" + str(batch)
                         + ") to match target batch_size (" + str(target.shape[0]) + ").")
    if target.dim() > 1:
        raise RuntimeError("fastops.linear_cross_entropy: 0D or 1D target tensor expected, multi-target not "
                           "supported; target has shape " + _shape(target.shape))
    if unbatched:
        if target.dim() == 1 and target.shape[0] != 1:
            raise ValueError("fastops.linear_cross_entropy: for 1D input, 1D target must have size 1, but got "
                             "target size: " + str(target.shape[0]))
    elif target.dim() == 0 or target.shape[0] != batch:
        got = 0 if target.dim() == 0 else target.shape[0]
        raise ValueError("fastops.linear_cross_entropy: Expected input batch_size (" + str(batch)
                         + ") to match target batch_size (" + str(got) + ").")
    if target.dtype != torch.int64 and target.dtype != torch.uint8:
        raise RuntimeError("fastops.linear_cross_entropy: expected target dtype to be Long or Byte (class indices), "
                           "but got " + str(target.dtype))
    return target.reshape(-1).long()


def resolve_options(options, input: Tensor, linear_weight: Tensor, target: Tensor, linear_bias: Tensor | None,
                    reduction: str, ignore_index: int | None, label_smoothing: float):
    """(rows per chunk or None, float32 or None) from torch's LinearCrossEntropyOptions, as
    torch.nn.functional.linear_cross_entropy reads them (torch 2.13): ignored with torch's warning where its chunked
    path does not apply, resolved by torch's own ``_adjust`` (chunk size, "auto" policies, its ValueErrors), and
    refused as torch refuses an acc_dtype other than the input's or float32 with 16-bit inputs. float32 is returned
    where acc_dtype differs from the input's dtype: torch then computes the logits and gradients in float32 and
    rounds only its results (the loss keeps the input's dtype). Any other options object sets the chunk rows from its
    batch_chunk_size. Operands that break torch's shape rules return (None, None): linear_cross_entropy_loss raises
    torch's error for them, as torch does before it reads the options."""
    if options is None:
        return None, None
    if not hasattr(options, "_adjust"):
        return getattr(options, "batch_chunk_size", None), None
    if (input.dim() < 1 or input.dim() > 2 or linear_weight.dim() < 2 or input.shape[-1] != linear_weight.shape[-1]
            or (linear_bias is not None and linear_bias.shape != linear_weight.shape[:-1])
            or (len(linear_weight.shape) > 2 and input.dim() == 1)
            or (ignore_index is not None and target.shape == input.shape[:-1] + linear_weight.shape[:-1])):
        return None, None
    out_features = tuple(linear_weight.shape[1:-1])
    if (out_features or reduction not in ("mean", "sum", "none") or label_smoothing != 0.0
            or target.dtype != torch.int64 or torch.jit.is_tracing()):
        warnings.warn(
            "linear_cross_entropy: ``options`` ignored; chunked path needs reduction in {'mean','sum','none'}, "
            "label_smoothing == 0, target.dtype == int64, out_features == (). Got "
            f"reduction={reduction!r}, label_smoothing={label_smoothing}, target.dtype={target.dtype}, "
            f"out_features={out_features}, tracing={torch.jit.is_tracing()}, linear_bias.shape="
            f"{tuple(linear_bias.shape) if linear_bias is not None else None}.", stacklevel=3)
        return None, None
    dtype = input.dtype
    resolved = options._adjust(num_batches=input.shape[0] if input.dim() == 2 else 1, in_features=input.shape[-1],
                               num_classes=linear_weight.shape[0], dtype=dtype, device=input.device)
    acc_dtype = resolved.acc_dtype
    if dtype != acc_dtype and not (dtype in (torch.float16, torch.bfloat16) and acc_dtype == torch.float32):
        raise RuntimeError("linear_cross_entropy supports float32 acc_dtype with float16/bfloat16 inputs, but got "
                           f"{acc_dtype} acc_dtype and {dtype} inputs.")
    return resolved.batch_chunk_size, (torch.float32 if acc_dtype != dtype else None)


def linear_cross_entropy_loss(input: Tensor, linear_weight: Tensor, target: Tensor, linear_bias: Tensor | None,
                              weight: Tensor | None, reduction: str, ignore_index: int | None,
                              label_smoothing: float, batch_chunk_size: int | None, autocast: bool) -> Tensor:
    """:func:`torch.nn.functional.linear_cross_entropy` on fastops' operators (see
    fastops.functional.linear_cross_entropy). ``autocast``: the caller has already cast input, linear_weight and
    linear_bias to the autocast dtype, and the loss is float32 as torch's under autocast. TorchScript compiles this
    function (the module's scripted forward calls it)."""
    if reduction != "none" and reduction != "mean" and reduction != "sum":
        raise ValueError(reduction + " is not a valid value for reduction")
    if input.dim() < 1 or input.dim() > 2:
        raise RuntimeError("expected input with dimensionality 1 or 2, got " + str(input.dim()))
    if linear_weight.dim() < 2:
        raise RuntimeError("expected linear_weight with dimensionality at least 2, got " + str(linear_weight.dim()))
    in_features = input.shape[-1]
    if in_features != linear_weight.shape[-1]:
        raise RuntimeError("expected equal input and linear_weight last dimensions (in_features), got "
                           + str(in_features) + " and " + str(linear_weight.shape[-1]) + ", respectively")
    num_classes = linear_weight.shape[0]
    out_features = linear_weight.shape[1:-1]
    if linear_bias is not None and linear_bias.shape != linear_weight.shape[:-1]:
        raise RuntimeError("expected linear_bias shape " + _shape(linear_weight.shape[:-1]) + ", got "
                           + _shape(linear_bias.shape))
    unbatched = input.dim() == 1
    if len(out_features) > 0 and unbatched:
        raise RuntimeError("K-dimensional loss defined by linear_weight shape " + _shape(linear_weight.shape)
                           + " requires batched input, (N, " + str(in_features) + "), got unbatched input with shape "
                           + _shape(input.shape))
    for name, t in (("linear_weight", linear_weight), ("target", target), ("linear_bias", linear_bias),
                    ("weight", weight)):
        if t is not None and t.device != input.device:
            raise RuntimeError("fastops.linear_cross_entropy: " + name + " is on device " + str(t.device)
                               + ", but input is on " + str(input.device))
    logits_shape = input.shape[:-1] + linear_weight.shape[:-1]
    probabilities = target.shape == logits_shape
    if probabilities and ignore_index is not None:
        raise RuntimeError("ignore_index cannot be specified when target contains probabilities")
    index = -100 if ignore_index is None else ignore_index
    out_dtype = torch.float32 if autocast else input.dtype
    if len(out_features) > 0 or (not unbatched and input.shape[0] == 0):
        # Unfused, as torch's own linear_cross_entropy runs these: the logits of a K-dimensional weight are softmaxed
        # per position, and an empty batch has no logits to hold. fastops' cross_entropy rather than torch's: its row
        # sums are exact in double, where torch's float32 loss of exact logits erred one ulp (6.8e-6 of 71.1, a
        # K-dimensional sample of torch's OpInfo data) and passed only by its GEMM's errors cancelling its own.
        if len(out_features) > 0:
            warnings.warn("fastops.linear_cross_entropy: a K-dimensional linear_weight runs unfused (linear, "
                                "then cross_entropy)")
        logits = fastops.linear(input, linear_weight.reshape(-1, in_features),
                                None if linear_bias is None else linear_bias.reshape(-1)).reshape(logits_shape)
        return fastops.cross_entropy_loss(logits, target, weight, _torch_reduction.get_enum(reduction), index,
                                          label_smoothing)
    if probabilities:
        if not target.is_floating_point():
            # torch's message (its cross_entropy's), for a target of the logits' shape
            raise RuntimeError("fastops.linear_cross_entropy: Expected floating point type for target with class "
                               "probabilities, got " + _scalar_type_name(target.dtype))
        # torch's loss for probabilities is a product of the log-probabilities, target and weight: its dtype is
        # promoted from theirs. The kernel reads the target in the logits' dtype.
        out_dtype = torch.promote_types(out_dtype, target.dtype)
        if weight is not None:
            out_dtype = torch.promote_types(out_dtype, weight.dtype)
        target = target.to(input.dtype).reshape(-1, num_classes)
    else:
        target = _check_target(target, input.shape[0], unbatched)
    if weight is not None:
        if weight.dim() != 1 or weight.shape[0] != num_classes:
            raise RuntimeError("fastops.linear_cross_entropy: weight tensor should be defined either for all "
                               + str(num_classes) + " classes or no classes but got weight tensor of shape: "
                               + str(list(weight.shape)))
        if not probabilities:
            # nll_loss's rules: the class weights have the logits' dtype (float32 under autocast, which casts 16-bit
            # weights too) and are not differentiable.
            autocast_cast = autocast and (weight.dtype == torch.float16 or weight.dtype == torch.bfloat16)
            if weight.dtype != out_dtype and not autocast_cast:
                raise RuntimeError("fastops.linear_cross_entropy: weight must have the logits' dtype "
                                   + str(out_dtype) + " with class-index targets (as torch's nll_loss), got "
                                   + str(weight.dtype))
            if weight.requires_grad and torch.is_grad_enabled():
                raise RuntimeError("fastops.linear_cross_entropy: weight requires grad, but with class-index targets "
                                   "the loss is not differentiable with respect to the class weights (as torch's "
                                   "nll_loss)")
        weight = weight.to(math_dtype(input.dtype))
    x = input.unsqueeze(0) if unbatched else input
    rows = 0 if batch_chunk_size is None else batch_chunk_size
    if reduction == "mean":  # a constant of the graph (_total_weight reads the class weights detached)
        grad_scale = 1.0 / _total_weight(target, weight, index, num_classes)
    else:
        grad_scale = torch.ones((), dtype=torch.float64, device=input.device)
    if reduction == "none" or torch.jit.is_tracing():
        # A trace records the operators it sees but not which gradients the forward computed for whom, so traced
        # models take the operator whose backward recomputes (one more logits GEMM) and train wherever they run.
        loss = torch.ops.fastops.linear_cross_entropy_rows(x, linear_weight, target, linear_bias, weight, index,
                                                           label_smoothing, rows)
        if reduction == "none":
            return loss.reshape(input.shape[:-1]).to(out_dtype)
        return (loss * grad_scale).sum().to(out_dtype)
    grad = torch.is_grad_enabled()
    needs = [grad and x.requires_grad, grad and linear_weight.requires_grad,
             grad and linear_bias is not None and linear_bias.requires_grad,
             grad and probabilities and target.requires_grad, grad and weight is not None and weight.requires_grad]
    loss = torch.ops.fastops.linear_cross_entropy(x, linear_weight, target, linear_bias, weight, index,
                                                  label_smoothing, grad_scale, rows, needs)[0]
    return loss.to(out_dtype)
