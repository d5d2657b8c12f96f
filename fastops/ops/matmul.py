"""Registrations for the matmul family: fake kernels and autocast (the autograd kernels are C++: csrc/matmul/
matmul_autograd.cpp, every gradient on fastops' own GEMM). matmul_accumulate_ (out += a @ b in place) has no
gradient: it is a building block for ops that compute their gradients themselves, and runs under torch.no_grad().
"""

import torch

from ._layout import check_same_device
from .activations import GEMM_FUSED

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
    check_same_device("matmul", a, b=b)
    return a.new_empty(_matmul_output_shape(a, b))


@torch.library.register_fake("fastops::linear")
def _linear_fake(x, weight, bias=None):
    check_same_device("linear", x, weight=weight, bias=bias)
    torch._check(x.dim() >= 1, lambda: "fastops.linear: x must have at least 1 dim, got a scalar")
    torch._check(weight.dim() == 2, lambda: f"fastops.linear: weight must be 2-D, got {tuple(weight.shape)}")
    torch._check(x.shape[-1] == weight.shape[1],
                 lambda: f"fastops.linear: x's last dim ({x.shape[-1]}) must equal weight's in_features "
                         f"({weight.shape[1]})")
    return x.new_empty([*x.shape[:-1], weight.shape[0]])


@torch.library.register_fake("fastops::linear_act")
def _linear_act_fake(x, weight, bias, act, store_pre):
    torch._check(act in GEMM_FUSED, lambda: f"fastops.linear_act: act must be one of {', '.join(GEMM_FUSED)}; "
                 f"got '{act}'")
    out = _linear_fake(x, weight, bias)
    return out, (torch.empty_like(out) if store_pre else x.new_empty(0))


@torch.library.register_fake("fastops::bias_grad")
def _bias_grad_fake(grad_output):
    torch._check(grad_output.dim() >= 1, lambda: "fastops.bias_grad: grad_output must have at least 1 dim")
    return grad_output.new_empty([grad_output.shape[-1]])


@torch.library.register_fake("fastops::matmul_accumulate_")
def _matmul_accumulate_fake(out, a, b):
    check_same_device("matmul_accumulate_", out, a=a, b=b)
    # Mutates out in place and returns nothing: only the shape rules need checking here.
    torch._check(out.dim() == 2 and a.dim() == 2 and b.dim() == 2,
                 lambda: f"fastops.matmul_accumulate_: out, a and b must be 2-D, got {out.dim()}, {a.dim()} and "
                         f"{b.dim()} dims")
    torch._check(a.shape[1] == b.shape[0],
                 lambda: f"fastops.matmul_accumulate_: a's columns ({a.shape[1]}) must equal b's rows ({b.shape[0]})")
    torch._check(out.shape[0] == a.shape[0] and out.shape[1] == b.shape[1],
                 lambda: f"fastops.matmul_accumulate_: out must have shape [{a.shape[0]}, {b.shape[1]}] (a's rows, "
                         f"b's columns), got {list(out.shape)}")


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
