"""Smoke test of an installed fastops: a few calls per kernel family against torch, forward and backward, in seconds.

    python scripts/gpu_smoke.py [--device cuda|cpu]

Step (a) of scripts/gpu_check.sh: the first thing a GPU visit runs, so that a broken kernel family shows up in the
first minute and by name, before the test suite. Each check computes the op with fastops and with torch on the same
inputs and a float64 reference, and passes when fastops' relative error (||out - ref|| / ||ref||, outputs and
input gradients) is at most 2x torch's own plus a floor: the accuracy rule of the test suite, loosely. Every check
runs even when an earlier one failed; a check that hangs (a kernel that never finishes) dumps its stack after
--hang-s seconds and ends the run. On the CPU (--device cpu: the dry run and CI) the same checks run at smaller sizes.
Exit status: the number of failed checks (0: all passed).
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import sys
import time

import torch
import torch.nn.functional as F

import fastops
import fastops.functional as FF
from fastops.bench.core import tf32_allowed

FLOOR = {torch.float32: 1e-6, torch.bfloat16: 4e-3, torch.float16: 5e-4}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.detach().double(), ref.detach().double()
    if not torch.isfinite(out).all():
        return float("inf")
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


def compare(fast, native, inputs, *, floor: float, backward: bool = True, grad_inputs: int | None = None) -> str:
    """Runs fast and native on inputs (and on float64 copies for the reference); raises AssertionError with the
    errors when fastops is outside the rule. The first `grad_inputs` inputs (default: all floating ones) get
    gradients. Returns a one-line account of the worst error."""
    low = next(a.dtype for a in inputs if isinstance(a, torch.Tensor) and a.is_floating_point())

    def run(fn, args):
        args = [a.detach().clone().requires_grad_(backward and a.is_floating_point()
                                                  and (grad_inputs is None or i < grad_inputs))
                if isinstance(a, torch.Tensor) else a for i, a in enumerate(args)]
        out = fn(*args)
        grads = []
        if backward:
            leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
            # The same upstream gradient for all three runs: drawn once, rounded to the inputs' dtype.
            gen = torch.Generator().manual_seed(1)
            g = torch.ones(()) if out.dim() == 0 else torch.randn(out.shape, generator=gen)
            g = g.to(low).to(device=out.device, dtype=out.dtype)
            grads = list(torch.autograd.grad(out, leaves, g))
        return [out, *grads]

    reference = run(native, [a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                             for a in inputs])
    mine, theirs = run(fast, inputs), run(native, inputs)
    worst = ""
    worst_ratio = -1.0
    for i, (m, t, r) in enumerate(zip(mine, theirs, reference)):
        if m.shape != r.shape:
            raise AssertionError(f"output {i}: shape {tuple(m.shape)}, torch gives {tuple(r.shape)}")
        em, et = rel_err(m, r), rel_err(t, r)
        bound = 2 * et + floor
        what = "out" if i == 0 else f"grad{i - 1}"
        if not em <= bound:
            raise AssertionError(f"{what}: fastops error {em:.3g} > 2 x torch's {et:.3g} + {floor:g}")
        if em / bound > worst_ratio:
            worst_ratio, worst = em / bound, f"{what} err {em:.2g} (torch {et:.2g})"
    return worst


def checks(device: str, small: bool):
    """name -> zero-argument callable returning a short account or raising. Sizes: a few MB on the GPU (each kernel
    still runs several blocks, the Hopper GEMM its clustered, TMA-store and split-K variants), less on the CPU."""
    d = device

    def randn(*shape, dtype=torch.float32):
        return torch.randn(*shape, device=d, dtype=dtype)

    n = 1 << 14 if small else (1 << 22) + 5  # + 5: a tail past the last 16-byte pack
    bf16, f16, f32 = torch.bfloat16, torch.float16, torch.float32
    s = 8 if small else 1  # size divisor on the CPU
    out = {}

    def activations():
        notes = []
        for name, fast, native in (
                ("relu", FF.relu, F.relu), ("gelu", FF.gelu, F.gelu),
                ("gelu_tanh", lambda x: FF.gelu(x, approximate="tanh"), lambda x: F.gelu(x, approximate="tanh")),
                ("silu", FF.silu, F.silu), ("leaky_relu", FF.leaky_relu, F.leaky_relu),
                ("sigmoid", FF.sigmoid, torch.sigmoid), ("tanh", FF.tanh, torch.tanh)):
            for dtype in (bf16, f32):
                notes.append(f"{name} {str(dtype)[6:]}: " + compare(fast, native, [randn(n, dtype=dtype)],
                                                                    floor=FLOOR[dtype]))
        return f"{len(notes)} op/dtype pairs; last {notes[-1]}"

    def fused():
        rows, cols = 1000 // s, 4096 // s + 3
        x, b = randn(rows, cols, dtype=bf16), randn(cols, dtype=bf16)
        a = compare(lambda x, b: FF.bias_act(x, b, "gelu"), lambda x, b: F.gelu(x + b), [x, b], floor=FLOOR[bf16])
        g, u = randn(rows, cols, dtype=bf16), randn(rows, cols, dtype=bf16)
        c = compare(FF.swiglu, lambda g, u: F.silu(g) * u, [g, u], floor=FLOOR[bf16])
        e = compare(FF.geglu, lambda g, u: F.gelu(g) * u, [g, u], floor=FLOOR[bf16])
        return f"bias_act gelu {a}; swiglu {c}; geglu {e}"

    def matmul_hopper():
        # 4096 x 4096 outputs: 128 x 256 tiles >= the SM count, so 2-CTA clusters and the TMA-store epilogue run.
        m = 4096 // s
        a, b = randn(m, 512 // s, dtype=bf16), randn(512 // s, m, dtype=bf16)
        return compare(FF.matmul, torch.matmul, [a, b], floor=FLOOR[bf16])

    def matmul_variants():
        notes = []
        # fp16, 128 x 128 tiles (few outputs), odd N: a partial last tile
        notes.append("f16 " + compare(FF.matmul, torch.matmul,
                                      [randn(384 // s, 1024 // s, dtype=f16), randn(1024 // s, 1000 // s, dtype=f16)],
                                      floor=FLOOR[f16]))
        # decode-like: few output tiles, long K -> split-K
        notes.append("split-K " + compare(FF.matmul, torch.matmul,
                                          [randn(64, 4096 // s, dtype=bf16), randn(4096 // s, 1024 // s, dtype=bf16)],
                                          floor=FLOOR[bf16]))
        # batched: the mma.sync kernel
        notes.append("batched " + compare(FF.matmul, torch.matmul,
                                          [randn(3, 200, 96, dtype=bf16), randn(3, 96, 136, dtype=bf16)],
                                          floor=FLOOR[bf16]))
        # float32 without TF32: the CUDA-core kernel
        with tf32_allowed(False):
            notes.append("fp32 " + compare(FF.matmul, torch.matmul, [randn(300, 257), randn(257, 190)],
                                           floor=FLOOR[f32]))
        return "; ".join(notes)

    def linear_tf32_and_act():
        notes = []
        x, w, b = randn(512 // s, 1024 // s), randn(2048 // s, 1024 // s), randn(2048 // s)
        with tf32_allowed(True):  # Linear's forward in float32 under TF32: the TF32 wgmma on Hopper
            notes.append("tf32 linear " + compare(FF.linear, F.linear, [x, w, b], floor=3e-3, backward=False))
        xb, wb, bb = (t.to(bf16) for t in (x, w, b))
        notes.append("linear gelu " + compare(lambda x, w, b: FF.linear(x, w, b, activation="gelu"),
                                              lambda x, w, b: F.gelu(F.linear(x, w, b)), [xb, wb, bb],
                                              floor=FLOOR[bf16]))
        return "; ".join(notes)

    def losses():
        notes = []
        logits, t = randn(512 // s, 32000 // s + 7, dtype=bf16), None
        t = torch.randint(0, logits.shape[1], (logits.shape[0],), device=d)
        notes.append("cross_entropy " + compare(lambda x: FF.cross_entropy(x, t, label_smoothing=0.1),
                                                lambda x: F.cross_entropy(x, t, label_smoothing=0.1), [logits],
                                                floor=FLOOR[bf16]))
        x, y = randn(n, dtype=bf16), randn(n, dtype=bf16)
        for name, fast, native in (("mse", FF.mse_loss, F.mse_loss), ("smooth_l1", FF.smooth_l1_loss, F.smooth_l1_loss),
                                   ("huber", FF.huber_loss, F.huber_loss),
                                   ("bce_logits", FF.binary_cross_entropy_with_logits,
                                    F.binary_cross_entropy_with_logits)):
            target = y if name != "bce_logits" else torch.rand(n, device=d).to(bf16)
            notes.append(f"{name} " + compare(fast, native, [x, target], floor=FLOOR[bf16], grad_inputs=1))
        return "; ".join(notes)

    def linear_cross_entropy():
        x, w = randn(256 // s, 512 // s, dtype=bf16) / 8, randn(8000 // s, 512 // s, dtype=bf16)
        t = torch.randint(0, w.shape[0], (x.shape[0],), device=d)
        return compare(lambda x, w: FF.linear_cross_entropy(x, w, t), lambda x, w: F.cross_entropy(F.linear(x, w), t),
                       [x, w], floor=FLOOR[bf16])

    # The GEMM checks last: a hang there (a new Hopper kernel's first run) must not hide the other families.
    for fn in (activations, fused, losses, matmul_hopper, matmul_variants, linear_tf32_and_act, linear_cross_entropy):
        out[fn.__name__] = fn
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--hang-s", type=float, default=None,
                        help="a check running this long counts as hung (default 30 on CUDA, 120 on the CPU)")
    args = parser.parse_args(argv)
    hang_s = args.hang_s or (30.0 if args.device == "cuda" else 120.0)
    print(f"fastops {fastops.__version__} from {os.path.dirname(fastops.__file__)}; torch {torch.__version__} "
          f"(CUDA {torch.version.cuda}); CUDA kernels built: {fastops.has_cuda_kernels()}; CPU level "
          f"{fastops.cpu_capability()}", flush=True)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            print("FAIL no CUDA device visible to torch")
            return 1
        if not fastops.has_cuda_kernels():
            print("FAIL this fastops build has no CUDA kernels")
            return 1
        print(f"device: {torch.cuda.get_device_name()} (sm_{''.join(map(str, torch.cuda.get_device_capability()))})",
              flush=True)
    failed = 0
    todo = checks(args.device, small=args.device != "cuda")
    for name, check in todo.items():
        torch.manual_seed(0)
        t0 = time.perf_counter()
        # A check still running after --hang-s (a kernel that never finishes) dumps every thread's stack and ends
        # the process: the step then fails in seconds instead of waiting for its box.
        faulthandler.dump_traceback_later(hang_s, exit=True)
        try:
            note = check()
            if args.device == "cuda":
                torch.cuda.synchronize()
            print(f"PASS {name} ({time.perf_counter() - t0:.1f} s): {note}", flush=True)
        except Exception as e:  # noqa: BLE001  (every family runs; the failure is reported by name)
            failed += 1
            print(f"FAIL {name} ({time.perf_counter() - t0:.1f} s): {type(e).__name__}: {e}", flush=True)
        finally:
            faulthandler.cancel_dump_traceback_later()
    print(f"smoke: {len(todo) - failed} passed, {failed} failed")
    return min(failed, 100)


if __name__ == "__main__":
    sys.exit(main())
