"""Registrations for the matmul family: fake kernels, autograd (every gradient on fastops kernels) and autocast.

Gradients: for C = A.B, dA = dC.B^T and dB = A^T.dC run on the same GEMM kernels, the transposes being read
through layout flags (``.mT`` is a view, never a copy). For linear, dX = dY.W, dW = dY^T.X (the token dims folded
into K) and db = fastops.bias_grad(dY), one column reduction. matmul_accumulate_ (out += a @ b in place) has no
gradient: it is a building block for ops that compute their gradients themselves, and runs under torch.no_grad().
"""

import torch

fastops = torch.ops.fastops


def _matmul_output_shape(a: torch.Tensor, b: torch.Tensor) -> list:
    torch._check(a.dim() >= 2 and b.dim() >= 2,
                 lambda: f"fastops.matmul: a and b must have at least 2 dims, got {a.dim()} and {b.dim()}")
    torch._check(a.shape[-1] == b.shape[-2],
                 lambda: f"fastops.matmul: a's last dim ({a.shape[-1]}) must equal b's second-to-last dim "
                         f"({b.shape[-2]})")
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return [*batch, a.shape[-2], b.shape[-1]]


@torch.library.register_fake("fastops::matmul")
def _matmul_fake(a, b):
    return a.new_empty(_matmul_output_shape(a, b))


@torch.library.register_fake("fastops::linear")
def _linear_fake(x, weight, bias=None):
    torch._check(x.dim() >= 1, lambda: "fastops.linear: x must have at least 1 dim, got a scalar")
    torch._check(weight.dim() == 2, lambda: f"fastops.linear: weight must be 2-D, got {tuple(weight.shape)}")
    torch._check(x.shape[-1] == weight.shape[1],
                 lambda: f"fastops.linear: x's last dim ({x.shape[-1]}) must equal weight's in_features "
                         f"({weight.shape[1]})")
    return x.new_empty([*x.shape[:-1], weight.shape[0]])


@torch.library.register_fake("fastops::linear_act")
def _linear_act_fake(x, weight, bias, act, store_pre):
    out = _linear_fake(x, weight, bias)
    return out, (torch.empty_like(out) if store_pre else x.new_empty(0))


@torch.library.register_fake("fastops::bias_grad")
def _bias_grad_fake(grad_output):
    torch._check(grad_output.dim() >= 1, lambda: "fastops.bias_grad: grad_output must have at least 1 dim")
    return grad_output.new_empty([grad_output.shape[-1]])


@torch.library.register_fake("fastops::matmul_accumulate_")
def _matmul_accumulate_fake(out, a, b):
    # Mutates out in place and returns nothing: only the shape rules need checking here.
    torch._check(out.dim() == 2 and a.dim() == 2 and b.dim() == 2,
                 lambda: f"fastops.matmul_accumulate_: out, a and b must be 2-D, got {out.dim()}, {a.dim()} and "
                         f"{b.dim()} dims")
    torch._check(a.shape[1] == b.shape[0],
                 lambda: f"fastops.matmul_accumulate_: a's columns ({a.shape[1]}) must equal b's rows ({b.shape[0]})")
    torch._check(out.shape[0] == a.shape[0] and out.shape[1] == b.shape[1],
                 lambda: f"fastops.matmul_accumulate_: out must have shape [{a.shape[0]}, {b.shape[1]}] (a's rows, "
                         f"b's columns), got {list(out.shape)}")


def _save_operands(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _split_batch(operand: torch.Tensor, batch) -> tuple[list, list]:
    """Output batch dims split into those the operand has (kept) and those it was broadcast over (reduced)."""
    own = [1] * (len(batch) - (operand.dim() - 2)) + list(operand.shape[:-2])
    kept = [d for d in range(len(batch)) if not (own[d] == 1 and batch[d] != 1)]
    reduced = [d for d in range(len(batch)) if own[d] == 1 and batch[d] != 1]
    return kept, reduced


def _prod(sizes) -> int:
    n = 1
    for s in sizes:
        n *= s
    return n


def _matmul_grad(ctx, grad):
    # The gradient of a broadcast operand sums over the batch dims it was broadcast along. Those dims are folded
    # into the product's K (permute + reshape), so the sum happens inside one fp32-accumulating GEMM: one rounding,
    # like torch, instead of a batch of rounded products summed afterwards.
    a, b = ctx.saved_tensors
    batch = grad.shape[:-2]
    nb = len(batch)
    m_dim, n_dim = nb, nb + 1
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    grad_a = grad_b = None
    if ctx.needs_input_grad[0]:
        kept, reduced = _split_batch(a, batch)
        kept_sizes = [batch[d] for d in kept]
        folded = _prod([batch[d] for d in reduced]) * n
        g = grad.permute(*kept, m_dim, *reduced, n_dim).reshape(*kept_sizes, m, folded)
        bt = b.expand(*batch, k, n).permute(*kept, *reduced, n_dim, m_dim).reshape(*kept_sizes, folded, k)
        grad_a = fastops.matmul(g, bt).reshape(a.shape)
    if ctx.needs_input_grad[1]:
        kept, reduced = _split_batch(b, batch)
        kept_sizes = [batch[d] for d in kept]
        folded = _prod([batch[d] for d in reduced]) * m
        at = a.expand(*batch, m, k).permute(*kept, n_dim, *reduced, m_dim).reshape(*kept_sizes, k, folded)
        g = grad.permute(*kept, *reduced, m_dim, n_dim).reshape(*kept_sizes, folded, n)
        grad_b = fastops.matmul(at, g).reshape(b.shape)
    return grad_a, grad_b


torch.library.register_autograd("fastops::matmul", _matmul_grad, setup_context=_save_operands)


def _linear_operand_grads(ctx, grad, x, weight):
    """(dX, dW) of y = x . weight^T for the gradient `grad` of y, each None unless ctx needs it."""
    out_features, in_features = weight.shape
    rows = _prod(x.shape[:-1])  # explicit: reshape(-1, n) is ambiguous when a size is 0
    grad_rows = grad.reshape(rows, out_features)
    grad_x = fastops.matmul(grad_rows, weight).reshape(x.shape) if ctx.needs_input_grad[0] else None
    grad_weight = fastops.matmul(grad_rows.mT, x.reshape(rows, in_features)) if ctx.needs_input_grad[1] else None
    return grad_x, grad_weight


def _linear_grad(ctx, grad):
    x, weight = ctx.saved_tensors
    grad_x, grad_weight = _linear_operand_grads(ctx, grad, x, weight)
    grad_bias = None
    if len(ctx.needs_input_grad) > 2 and ctx.needs_input_grad[2]:  # bias was passed and needs a gradient
        grad_bias = fastops.bias_grad(grad)
    return grad_x, grad_weight, grad_bias


def _save_linear(ctx, inputs, output):
    x, weight = inputs[:2]
    ctx.save_for_backward(x, weight)


torch.library.register_autograd("fastops::linear", _linear_grad, setup_context=_save_linear)


def _save_linear_act(ctx, inputs, output):
    x, weight, bias, ctx.act, store_pre = inputs
    _, pre = output
    ctx.mark_non_differentiable(pre)
    ctx.store_pre = store_pre
    ctx.has_bias = bias is not None
    ctx.save_for_backward(x, weight, pre, bias)


def _linear_act_grad(ctx, grad, _grad_pre):
    # act'(pre + bias) and the bias gradient in one pass over grad (bias_act_backward), then linear's two GEMMs.
    x, weight, pre, bias = ctx.saved_tensors
    if not ctx.store_pre:
        raise RuntimeError("fastops.linear_act: the backward needs the pre-activation: call with store_pre=True")
    grad_pre, grad_bias = fastops.bias_act_backward(grad, pre, bias if ctx.has_bias else None, ctx.act)
    grad_x, grad_weight = _linear_operand_grads(ctx, grad_pre, x, weight)
    return grad_x, grad_weight, grad_bias if ctx.has_bias and ctx.needs_input_grad[2] else None, None, None


torch.library.register_autograd("fastops::linear_act", _linear_act_grad, setup_context=_save_linear_act)


def _save_shape(ctx, inputs, output):
    ctx.shape = inputs[0].shape


def _bias_grad_grad(ctx, grad):
    # d(sum over rows)/d(input) broadcasts the gradient back over the rows: a view, no kernel needed. This makes
    # linear twice differentiable.
    return grad.expand(ctx.shape)


torch.library.register_autograd("fastops::bias_grad", _bias_grad_grad, setup_context=_save_shape)


# Autocast: matmul and linear run in the *current* autocast dtype (torch.get_autocast_dtype), like torch's mm and
# linear. torch.library.register_autocast fixes one dtype when it is registered, so the same mechanism is written
# out here with the dtype looked up per call: cast eligible inputs, then redispatch below the autocast key.
_lib = torch.library.Library("fastops", "IMPL")


def _autocast_cast(value, dtype):
    # torch's autocast casts float32/float16/bfloat16 tensors only (float64 keeps its precision).
    if isinstance(value, torch.Tensor) and value.dtype in (torch.float32, torch.float16, torch.bfloat16):
        return value.to(dtype)
    return value


def _register_autocast(name: str, device_type: str) -> None:
    op = getattr(fastops, name).default
    key_name = "Autocast" + torch._C._dispatch_key_for_device(device_type)
    key = getattr(torch._C.DispatchKey, key_name)

    def run(*args):
        dtype = torch.get_autocast_dtype(device_type)
        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(key)):
            return op(*(_autocast_cast(a, dtype) for a in args))

    # The Python-kernel table serves tracing (torch.compile); the library kernel serves eager dispatch.
    if op.has_kernel_for_dispatch_key(key):
        op.py_kernels.pop(key)
    op.py_impl(key)(run)
    _lib.impl(name, lambda _keyset, *args: run(*args), key_name, with_keyset=True)


for _name in ("matmul", "linear", "linear_act"):
    for _device in ("cpu", "cuda"):
        _register_autocast(_name, _device)


# matmul_accumulate_ has no derivative formula: it is a building block for ops that compute their gradients
# themselves. Its Autograd kernel refuses to run where autograd would have to record it (grad mode on and an argument
# that requires grad) rather than silently leave the product out of the graph, and its ADInplaceOrView kernel bumps
# out's version counter, as every in-place op does, so autograd notices if out was saved for a backward pass.
_accumulate = fastops.matmul_accumulate_.default


def _accumulate_autograd(keyset, out, a, b):
    if torch.is_grad_enabled() and (out.requires_grad or a.requires_grad or b.requires_grad):
        raise RuntimeError("fastops.matmul_accumulate_ has no autograd formula: call it under torch.no_grad() "
                           "(an argument requires grad and grad mode is on)")
    with torch._C._AutoDispatchBelowAutograd():
        return _accumulate.redispatch(keyset & torch._C._after_autograd_keyset, out, a, b)


def _accumulate_bump_version(keyset, out, a, b):
    torch.autograd.graph.increment_version(out)
    with torch._C._AutoDispatchBelowADInplaceOrView():
        return _accumulate.redispatch(keyset & torch._C._after_ADInplaceOrView_keyset, out, a, b)


_lib.impl("matmul_accumulate_", _accumulate_autograd, "Autograd", with_keyset=True)
_lib.impl("matmul_accumulate_", _accumulate_bump_version, "ADInplaceOrView", with_keyset=True)
