"""One small case per kernel, for compute-sanitizer (memcheck, racecheck, initcheck): step (c) of gpu_check.sh.

    compute-sanitizer --tool memcheck --error-exitcode 1 python scripts/gpu_sanitize_cases.py [--device cuda]

Running the whole test suite under the sanitizer would take most of a GPU visit (every test's kernels instrumented,
inductor compiling under it), so this script calls each fastops operator once or twice at a small size, forward and
backward: every activation and loss kernel, and every variant of the GEMMs: on Hopper the wgmma kernel with 2-CTA
clusters, without them (FASTOPS_SM90_NO_CLUSTER=1), with direct stores instead of the TMA-store epilogue
(FASTOPS_SM90_DIRECT_STORE=1), 128 x 256 and 128 x 128 tiles, each operand layout, split-K, accumulate, TF32, the
fused activation with its pre-activation copy; the mma.sync kernel (batched, or FASTOPS_NO_SM90=1), the CUDA-core
float32 and float64 kernels, the bias-gradient column sum. Shapes that reach the cluster and 128 x 256 paths are
sized from the device's SM count.

It ends by checking that every fastops operator with a kernel for the device was called on the device (tracked by
a dispatch mode), so a new operator without a case here fails the step instead of going unsanitized. Exit status:
0 when every case ran and coverage is complete. Run with PYTORCH_NO_CUDA_MEMORY_CACHING=1 (gpu_check.sh does), so
that each tensor is its own allocation and memcheck sees an overrun past its end. On the CPU (--device cpu) the
same cases run at the same sizes: CI checks the script itself that way.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import fastops
import fastops.functional as FF
from fastops.bench.core import tf32_allowed
from fastops.ops.activations import ACTIVATIONS

ops = torch.ops.fastops


class OpsSeen(TorchDispatchMode):
    """Records every fastops operator (name.overload) called with a tensor on `device`."""

    def __init__(self, device: str):
        super().__init__()
        self.device, self.ops = device, set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace == "fastops":
            devices = {t.device.type for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
            if self.device in devices:
                name = func._schema.name.split("::", 1)[1]
                self.ops.add(name if func._overloadname == "default" else f"{name}.{func._overloadname}")
        return func(*args, **kwargs)


def ops_with_kernels(device: str) -> set[str]:
    key = "CUDA" if device == "cuda" else "CPU"
    names = set()
    for full in torch._C._dispatch_get_all_op_names():
        if full.startswith("fastops::") and torch._C._dispatch_has_kernel_for_dispatch_key(full, key):
            names.add(full.split("::", 1)[1])
    return names


@contextlib.contextmanager
def env(**variables):
    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update({k: str(v) for k, v in variables.items()})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def fwd_bwd(fn, *inputs):
    """fn(*inputs), then the gradient of every floating input (upstream gradient 2: not the skipped factor 1)."""
    leaves = [x.detach().requires_grad_() if isinstance(x, torch.Tensor) and x.is_floating_point() else x
              for x in inputs]
    out = fn(*leaves)
    grads = torch.autograd.grad(out, [x for x in leaves if isinstance(x, torch.Tensor) and x.requires_grad],
                                torch.full_like(out, 2.0))
    for t in (out, *grads):
        if not torch.isfinite(t).all():
            raise AssertionError("non-finite output")


def cases(d: str, num_sms: int):
    """(name, callable) pairs."""
    bf16, f16, f32 = torch.bfloat16, torch.float16, torch.float32

    def randn(*shape, dtype=f32):
        return torch.randn(*shape, device=d, dtype=dtype)

    out = []
    # Elementwise activations: a vectorised body with a tail (37000 elements), and an input at storage offset 1
    # (not 16-byte aligned: the scalar path), each in bf16 and fp32.
    for row in ACTIVATIONS:
        fn = functools.partial(FF.gelu, approximate="tanh") if row.name == "gelu_tanh" else getattr(FF, row.name)
        for dtype in (bf16, f32):
            out.append((f"{row.name} {dtype}", lambda fn=fn, dtype=dtype: fwd_bwd(fn, randn(1000, 37, dtype=dtype))))
        out.append((f"{row.name} offset", lambda fn=fn: fwd_bwd(fn, randn(37001, dtype=bf16)[1:])))
    out += [
        ("bias_act gelu", lambda: fwd_bwd(lambda x, b: FF.bias_act(x, b, "gelu"), randn(1000, 37, dtype=bf16),
                                           randn(37, dtype=bf16))),
        ("swiglu", lambda: fwd_bwd(FF.swiglu, randn(1000, 37, dtype=bf16), randn(1000, 37, dtype=bf16))),
        ("swiglu packed", lambda: fwd_bwd(FF.swiglu, randn(1000, 74, dtype=bf16))),
        ("geglu", lambda: fwd_bwd(FF.geglu, randn(1000, 37), randn(1000, 37))),
        ("geglu packed", lambda: fwd_bwd(FF.geglu, randn(1000, 74, dtype=bf16))),
        ("glu dim 1", lambda: fwd_bwd(lambda x: FF.glu(x, 1), randn(100, 74, 10, dtype=bf16))),
    ]

    # Losses: cross entropy 'mean' (the forward writes the gradient, the backward scales it), 'none' (the
    # recomputing backward), probability targets; the pointwise losses in both reductions.
    target = torch.randint(0, 1000, (64,), device=d)
    probs = torch.randn(64, 1000, device=d).softmax(-1)
    out += [
        ("cross_entropy mean", lambda: fwd_bwd(lambda x: FF.cross_entropy(x, target, label_smoothing=0.1),
                                               randn(64, 1000, dtype=bf16))),
        ("cross_entropy none", lambda: fwd_bwd(lambda x: FF.cross_entropy(x, target, reduction="none"),
                                               randn(64, 1000, dtype=bf16))),
        ("cross_entropy probs", lambda: fwd_bwd(lambda x: FF.cross_entropy(x, probs), randn(64, 1000))),
        # linear_cross_entropy's building block, called directly: the Python operator's inner calls are not seen
        # by the coverage check's dispatch mode (the kernel also runs in the linear_cross_entropy case below)
        ("cross_entropy_forward_grad_", lambda: ops.cross_entropy_forward_grad_(
            randn(64, 1000, dtype=bf16), target, None, -100, 0.0, torch.full((), 0.5, dtype=torch.float64,
                                                                              device=d))),
        ("cross_entropy_block_grad_", lambda: block_grad(randn(64, 1000, dtype=bf16))),
        ("nll_loss", lambda: fwd_bwd(lambda x: FF.nll_loss(x, target), randn(64, 1000))),
        ("nll_loss weighted", lambda: fwd_bwd(lambda x: FF.nll_loss(x, target, randn(1000).abs(), reduction="none"),
                                              randn(64, 1000))),
        ("binary_cross_entropy", lambda: fwd_bwd(FF.binary_cross_entropy, torch.rand(1000, 37, device=d) * 0.9 + 0.05,
                                                 torch.rand(1000, 37, device=d))),
    ]

    def block_grad(logits):
        # classes 200..455 of 1000, with the row statistics of all of them (linear_cross_entropy's weight gradient)
        _, _, lse, mass = ops.cross_entropy_forward(logits, target, None, -100, 0.0)
        block = logits[:, 200:456].contiguous()
        ops.cross_entropy_block_grad_(block, target, None, lse, mass, torch.full((), 0.5, dtype=torch.float64,
                                                                                device=d), 200, 1000, -100, 0.0)
        assert torch.isfinite(block).all()

    # softmax / log_softmax: a warp per row (1000 wide), a block per row (5000 wide), a thread per column (dim 0).
    for name, fn in (("softmax", FF.softmax), ("log_softmax", FF.log_softmax)):
        for shape, dim in (((64, 1000), -1), ((8, 5000), -1), ((1000, 37), 0)):
            out.append((f"{name} {shape} dim {dim}",
                        lambda fn=fn, shape=shape, dim=dim: fwd_bwd(lambda x: fn(x, dim=dim), randn(*shape, dtype=bf16))))
    for name, fn in (("mse_loss", FF.mse_loss), ("l1_loss", FF.l1_loss), ("smooth_l1_loss", FF.smooth_l1_loss),
                     ("huber_loss", FF.huber_loss), ("bce_with_logits", FF.binary_cross_entropy_with_logits)):
        for reduction in ("mean", "none"):
            out.append((f"{name} {reduction}",
                        lambda fn=fn, reduction=reduction: fwd_bwd(lambda x, t: fn(x, t, reduction=reduction),
                                                                   randn(1000, 37, dtype=bf16),
                                                                   torch.rand(1000, 37, device=d, dtype=bf16))))
    # kl_div's targets stay off 0, where torch's target gradient (and so fastops') is NaN.
    for log_target in (False, True):
        for reduction in ("batchmean", "none"):
            out.append((f"kl_div log_target={log_target} {reduction}",
                        lambda log_target=log_target, reduction=reduction: fwd_bwd(
                            lambda x, t: FF.kl_div(x, t, reduction=reduction, log_target=log_target),
                            randn(1000, 37, dtype=bf16), torch.rand(1000, 37, device=d, dtype=bf16) * 0.9 + 0.05)))
    lce_target = torch.randint(0, 1000, (64,), device=d)
    out.append(("linear_cross_entropy", lambda: fwd_bwd(lambda x, w: FF.linear_cross_entropy(x, w, lce_target),
                                                        randn(64, 96, dtype=bf16) / 8, randn(1000, 96, dtype=bf16))))

    # GEMMs. Hopper tile choice (csrc/matmul/gemm_sm90.cu): 128 x 256 tiles when they fill the SMs, 2-CTA clusters
    # for those with more than one M-block; split-K when 128 x 128 tiles fill fewer than half the SMs.
    wide_n = 256 * ((num_sms + 1) // 2)  # 2 M-blocks x this many 256-column blocks >= the SM count

    def mm(m, n, k, dtype=bf16, a_t=False, b_t=False):
        a = randn(k, m, dtype=dtype).t() if a_t else randn(m, k, dtype=dtype)
        b = randn(n, k, dtype=dtype).t() if b_t else randn(k, n, dtype=dtype)
        return lambda: fwd_bwd(FF.matmul, a, b)

    def linear(m, n, k, dtype=bf16, activation=None):
        x, w, b = randn(m, k, dtype=dtype), randn(n, k, dtype=dtype) / 8, randn(n, dtype=dtype)
        return lambda: fwd_bwd(lambda x, w, b: FF.linear(x, w, b, activation=activation), x, w, b)

    def accumulate(m, n, k):
        def run():
            c, a, b = randn(m, n, dtype=bf16), randn(k, m, dtype=bf16).mT, randn(k, n, dtype=bf16)
            ops.matmul_accumulate_(c, a, b)
            assert torch.isfinite(c).all()
        return run

    gemms = [
        ("clustered 128x256 tiles", mm(256, wide_n, 64)),
        ("128x256 tiles, one M-block", mm(128, 256 * num_sms, 64)),
        ("fp16 128x128 tiles", mm(200, 136, 96, f16)),
        ("A MN-major", mm(200, 136, 96, a_t=True)),
        ("B K-major", mm(200, 136, 96, b_t=True)),
        ("A MN-major, B K-major", mm(200, 136, 96, a_t=True, b_t=True)),
        ("split-K", mm(64, 256, 2048)),
        ("accumulate", accumulate(200, 136, 96)),
        ("accumulate split-K", accumulate(64, 256, 2048)),
        ("linear gelu (fused epilogue, pre-activation copy)", linear(200, 136, 96, activation="gelu")),
        ("clustered linear gelu", linear(256, wide_n, 64, activation="gelu")),
        ("linear + bias grad", linear(200, 136, 96)),
    ]
    tf32_gemms = [("tf32 linear", linear(200, 136, 96, f32)), ("clustered tf32 linear", linear(256, wide_n, 32, f32))]
    for variant, switches in (("", {}), (" [no cluster]", {"FASTOPS_SM90_NO_CLUSTER": 1}),
                              (" [direct store]", {"FASTOPS_SM90_DIRECT_STORE": 1}),
                              (" [mma.sync]", {"FASTOPS_NO_SM90": 1})):
        if variant and d != "cuda":
            continue  # the switches choose among CUDA kernels only
        for name, fn in gemms:
            out.append((name + variant, lambda fn=fn, switches=switches: _with(fn, env(**switches))))
        for name, fn in tf32_gemms:
            out.append((name + variant, lambda fn=fn, switches=switches: _with(fn, env(**switches), tf32_allowed(True))))
    out += [
        ("batched bf16 (mma.sync)", lambda: fwd_bwd(FF.matmul, randn(3, 200, 96, dtype=bf16),
                                                    randn(3, 96, 136, dtype=bf16))),
        ("fp32 CUDA cores", lambda: _with(mm(300, 190, 257, f32), tf32_allowed(False))),
        ("fp64", mm(70, 50, 33, torch.float64)),
    ]
    return out


def _with(fn, *contexts):
    with contextlib.ExitStack() as stack:
        for c in contexts:
            stack.enter_context(c)
        return fn()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    d = args.device
    if d == "cuda" and not fastops.has_cuda_kernels():
        print("this fastops build has no CUDA kernels")
        return 1
    num_sms = torch.cuda.get_device_properties(0).multi_processor_count if d == "cuda" else 8
    print(f"fastops from {os.path.dirname(fastops.__file__)}, torch {torch.__version__}, device {d}"
          + (f" ({torch.cuda.get_device_name()}, {num_sms} SMs)" if d == "cuda" else ""), flush=True)
    torch.manual_seed(0)
    failed = []
    seen = OpsSeen(d)
    for name, fn in cases(d, num_sms):
        t0 = time.perf_counter()
        try:
            with seen:
                fn()
            if d == "cuda":
                torch.cuda.synchronize()
            print(f"ran {name} ({time.perf_counter() - t0:.2f} s)", flush=True)
        except Exception as e:  # noqa: BLE001  (each case runs; the failures are listed at the end)
            failed.append(name)
            print(f"FAILED {name}: {type(e).__name__}: {e}", flush=True)
    missing = sorted(ops_with_kernels(d) - seen.ops)
    print(f"operators with a {d} kernel called on {d}: {len(seen.ops)}; without a case here: {missing or 'none'}")
    if failed:
        print(f"cases that raised: {failed}")
    return 1 if failed or missing else 0


if __name__ == "__main__":
    sys.exit(main())
