"""The shared test oracle: sample inputs, the float64 accuracy rule, and the checks every op family reuses
(gradcheck, opcheck, torch.compile parity). The benchmarks import the same input makers.

Accuracy rule (flash-attention's): with `ref` the op evaluated in float64 on the same inputs,
    max|fastops - ref| <= 2 * max|torch - ref| + floor(dtype)
where `torch` is the native op at the same precision, and `floor` is half a unit in the last place at
max(1, max|ref|) — it only matters where torch is exact or lucky (relu, copies, a correctly rounded sum), and then
allows at most one rounding of the largest result. In float64 the reference is torch itself, so torch's error is
taken as at least one ulp of max|ref| (see assert_accurate).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence

import pytest
import torch

import fastops

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Shapes that shake out edge handling: scalars, odd lengths (tails that do not fill a vector), one element past a
# power of two, a 3-D block, and empty tensors.
ELEMENTWISE_SHAPES = ((), (1,), (7,), (127,), (4097,), (3, 5, 7), (33, 65), (0,), (2, 0, 3))

# Layouts an elementwise op must accept; the kernels see flat memory, so each probes a different code path.
LAYOUTS = ("contiguous", "transposed", "sliced", "offset1", "expanded")


def cuda_ready() -> bool:
    return torch.cuda.is_available() and fastops.has_cuda_kernels()


requires_cuda = pytest.mark.skipif(not cuda_ready(), reason="needs a CUDA GPU and a fastops build with CUDA kernels")

# Parametrize over this to run a test on every backend; the CUDA cases show as skipped on CPU-only machines.
DEVICES = ("cpu", pytest.param("cuda", marks=[requires_cuda, pytest.mark.cuda]))


def floor(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


@dataclasses.dataclass
class Sample:
    """Positional tensor arguments plus a readable id for test names and failure messages."""

    args: tuple
    kwargs: dict
    desc: str

    def __repr__(self) -> str:
        return self.desc


def make_tensor(shape: Sequence[int], dtype: torch.dtype, device: str, *, layout: str = "contiguous",
                low: float = -4.0, high: float = 4.0, requires_grad: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """A random tensor of `shape` whose memory has the requested layout (values uniform in [low, high))."""
    shape = tuple(shape)

    def rand(s):
        t = torch.rand(s, dtype=torch.float64, generator=generator) * (high - low) + low
        return t.to(device=device, dtype=dtype)

    if layout == "contiguous" or len(shape) == 0:
        t = rand(shape)
    elif layout == "transposed":  # dense, but not contiguous: reversed dims
        t = rand(shape[::-1]).permute(*reversed(range(len(shape))))
    elif layout == "sliced":  # every other element of the last dim: not dense
        t = rand(shape[:-1] + (shape[-1] * 2,))[..., ::2]
    elif layout == "offset1":  # contiguous, but one element into its storage: breaks 16-byte alignment
        n = 1
        for s in shape:
            n *= s
        t = rand((n + 1,))[1:].view(shape)
    elif layout == "mT":  # the last two dims swapped in memory: column-major matrices (a transposed operand)
        t = rand(shape[:-2] + (shape[-1], shape[-2])).mT if len(shape) >= 2 else rand(shape)
    elif layout == "expanded":  # stride 0 along the first dim: overlapping memory
        t = rand((1,) + shape[1:]).expand(shape)
    else:
        raise ValueError(f"unknown layout {layout}")
    return t.requires_grad_(requires_grad) if requires_grad else t


def elementwise_samples(device: str, dtype: torch.dtype, *, n_inputs: int = 1, requires_grad: bool = False,
                        low: float = -4.0, high: float = 4.0) -> Iterator[Sample]:
    """Every shape x layout for an op taking `n_inputs` same-shaped tensors (all in the same layout)."""
    gen = torch.Generator().manual_seed(0)
    for shape in ELEMENTWISE_SHAPES:
        for layout in LAYOUTS:
            if len(shape) == 0 and layout != "contiguous":
                continue
            args = tuple(
                make_tensor(shape, dtype, device, layout=layout, low=low, high=high, requires_grad=requires_grad,
                            generator=gen)
                for _ in range(n_inputs)
            )
            yield Sample(args, {}, f"{tuple(shape)}-{layout}")


def classification_samples(device: str, dtype: torch.dtype, *, requires_grad: bool = False,
                           ignore_index: int = -100) -> Iterator[Sample]:
    """Samples for a loss over logits with a class dimension (dim 1): args (input, target), kwargs weight /
    ignore_index / reduction / label_smoothing. Covers [N, C] with odd C (vector tails) and a long row, unbatched
    [C], [N, C, d1, d2], an empty batch, class-index targets with about a quarter of them ignored, probability
    targets, class weights (in input's dtype, as torch requires) and every reduction."""
    gen = torch.Generator().manual_seed(0)
    shapes = ((1, 1), (7, 5), (9, 1003), (5,), (4, 6, 3, 2), (0, 7))
    configs = ((False, 0.0, "mean"), (True, 0.0, "mean"), (False, 0.1, "none"), (True, 0.2, "sum"),
               (True, 0.1, "none"), (False, 0.0, "sum"))
    for shape in shapes:
        c = shape[0] if len(shape) == 1 else shape[1]
        batch = () if len(shape) == 1 else shape[:1] + shape[2:]
        for prob in (False, True) if ignore_index == -100 else (False,):  # torch: no ignore_index with probabilities
            for weighted, smoothing, reduction in configs:
                logits = make_tensor(shape, dtype, device, requires_grad=requires_grad, generator=gen)
                if prob:
                    target = torch.rand(shape, generator=gen, dtype=torch.float64).softmax(0 if len(shape) == 1 else 1)
                    target = target.to(device=device, dtype=dtype)
                else:
                    target = torch.randint(0, c, batch, generator=gen)
                    target = torch.where(torch.rand(batch, generator=gen) < 0.25, ignore_index, target).to(device)
                weight = (torch.rand(c, generator=gen, dtype=torch.float64) + 0.5).to(device, dtype) if weighted else None
                kwargs = {"weight": weight, "ignore_index": ignore_index, "reduction": reduction,
                          "label_smoothing": smoothing}
                desc = (f"{shape}-{'prob' if prob else 'index'}-{'w' if weighted else 'nw'}-ls{smoothing}-"
                        f"{reduction}")
                yield Sample((logits, target), kwargs, desc)


# (batch dims of a, batch dims of b, m, k, n): a (*batch_a, m, k) times b (*batch_b, k, n). Degenerate sizes (1, K=1,
# primes, empty, K=0), batches that broadcast either way, and one medium problem that crosses the CPU kernel's cache
# blocks in every dim (row blocks, K slices, column panels).
MATMUL_SHAPES = (
    ((), (), 1, 1, 1),
    ((), (), 1, 37, 53),
    ((), (), 29, 1, 31),
    ((), (), 13, 17, 19),
    ((), (), 67, 300, 45),
    ((3,), (3,), 5, 7, 9),
    ((2, 3), (), 4, 6, 5),
    ((), (2,), 4, 6, 5),
    ((2, 1), (1, 3), 3, 4, 5),
    ((), (), 0, 4, 3),
    ((), (), 3, 0, 4),
    ((2,), (2,), 3, 4, 0),
)
MATMUL_MEDIUM_SHAPE = ((), (), 150, 520, 2100)

# Operand layouts for (a, b): row-major, column-major (transposed views), gaps, and a misaligned start.
MATMUL_LAYOUTS = (("contiguous", "contiguous"), ("mT", "contiguous"), ("contiguous", "mT"), ("mT", "mT"),
                  ("sliced", "offset1"))


def matmul_samples(device: str, dtype: torch.dtype, *, requires_grad: bool = False, shapes=MATMUL_SHAPES,
                   layouts=MATMUL_LAYOUTS, low: float = -4.0, high: float = 4.0) -> Iterator[Sample]:
    """(a, b) operand pairs for a matrix product: every shape x layout pair."""
    gen = torch.Generator().manual_seed(0)
    for batch_a, batch_b, m, k, n in shapes:
        for layout_a, layout_b in layouts:
            a = make_tensor(batch_a + (m, k), dtype, device, layout=layout_a, low=low, high=high,
                            requires_grad=requires_grad, generator=gen)
            b = make_tensor(batch_b + (k, n), dtype, device, layout=layout_b, low=low, high=high,
                            requires_grad=requires_grad, generator=gen)
            yield Sample((a, b), {}, f"{batch_a + (m, k)}x{batch_b + (k, n)}-{layout_a}-{layout_b}")


def to_reference(x):
    """float64 contiguous CPU copy of a floating tensor (the precision the oracle computes in); other tensors (class
    indices) move to the CPU; other values pass through (but for an accumulation dtype, see below). Contiguous, so the reference takes torch's canonical
    (vectorised) path whatever the sample's layout."""
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return x.detach().to(device="cpu", dtype=torch.float64).contiguous()
    if isinstance(x, torch.Tensor):
        return x.cpu()
    if dataclasses.is_dataclass(x) and getattr(x, "acc_dtype", None) is not None:
        # torch's LinearCrossEntropyOptions: acc_dtype is the precision of a 16-bit evaluation (float32), which the
        # float64 reference replaces by float64 (torch refuses float32 accumulation for float64 inputs).
        return dataclasses.replace(x, acc_dtype=None)
    return x


def max_error(out: torch.Tensor, ref: torch.Tensor, *, special_values_must_match: bool = True,
              skip: torch.Tensor | None = None) -> float:
    """max |out - ref| over the entries where the reference is finite (and `skip` is not set). fastops' NaN/Inf
    positions must agree with the reference exactly; torch's own result (special_values_must_match=False) is only
    measured, since torch itself departs from float64 there in places (its float32 CPU gelu(inf) is NaN)."""
    out = out.detach().to(device="cpu", dtype=torch.float64)
    ref = ref.detach().to(device="cpu", dtype=torch.float64)
    assert out.shape == ref.shape, f"shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    keep = torch.ones_like(ref, dtype=torch.bool) if skip is None else ~skip
    finite = torch.isfinite(ref) & keep
    if special_values_must_match:
        assert torch.equal(torch.isnan(out) & keep, torch.isnan(ref) & keep), "NaN positions differ from the reference"
        infinite = ~torch.isfinite(ref) & ~torch.isnan(ref) & keep
        assert torch.equal(out[infinite], ref[infinite]), "Inf mismatch"
    else:
        finite &= torch.isfinite(out)
    if not finite.any():
        return 0.0
    return (out[finite] - ref[finite]).abs().max().item()


def same_special_values(out: torch.Tensor, native: torch.Tensor) -> torch.Tensor:
    """Where fastops and torch give the same NaN or Inf: both overflowed the dtype (a 16-bit sum past 65504) or both
    made the same NaN. The float64 reference is finite there, but fastops cannot be asked to beat the dtype."""
    out, native = out.detach().cpu(), native.detach().cpu()
    return (~torch.isfinite(out)) & ((out == native) | (torch.isnan(out) & torch.isnan(native)))


def _max_abs_finite(t: torch.Tensor) -> float:
    t = t.detach().to(device="cpu", dtype=torch.float64)
    t = t[torch.isfinite(t)]
    return t.abs().max().item() if t.numel() else 0.0


def assert_accurate(out: torch.Tensor, native: torch.Tensor, ref: torch.Tensor, what: str = "output",
                    float64_sensitivity: float = 0.0, native_second: torch.Tensor | None = None) -> None:
    """The accuracy rule: fastops' error against float64 is at most twice torch's own, plus the dtype floor.
    `native_second`: torch's result by a second evaluation of the same math at the same precision (see
    torch_cross_entropy_of_fastops_logits); torch's error is then the larger of the two."""
    assert out.dtype == native.dtype, f"{what}: dtype {out.dtype} != torch's {native.dtype}"
    both_special = same_special_values(out, native)
    err = max_error(out, ref, skip=both_special)
    native_err = max_error(native, ref, special_values_must_match=False)
    if native_second is not None:
        native_err = max(native_err, max_error(native_second, ref, special_values_must_match=False))
    if out.dtype == torch.float64:
        # In float64 the reference *is* torch's op, so torch's measured error is 0 by construction and the rule would
        # demand bitwise equality. Count torch's error as what float64 math can promise instead: one ulp (the bound of
        # its Sleef u10 / libm functions) of the largest reference value, or, where larger, the change of torch's
        # result when every input moves by one ulp (float64_sensitivity: the error any backward-stable float64
        # evaluation has, e.g. a weighted mean of 25 terms measured 14 ulps off the exact value in torch).
        native_err = max(native_err, torch.finfo(torch.float64).eps * _max_abs_finite(ref), float64_sensitivity)
    # The floor allows one rounding of the result: half an ulp at 1.0, or at the largest output where that is larger
    # (a correctly rounded reduction such as a bias gradient in bfloat16 can miss by that much where torch got lucky).
    bound = 2 * native_err + floor(out.dtype) * max(1.0, _max_abs_finite(ref))
    assert err <= bound, f"{what}: error {err:.3g} > 2 x torch's {native_err:.3g} + floor ({bound:.3g})"


def perturbed(x, generator: torch.Generator):
    """A float64 tensor with every element moved by one ulp up or down at random (other values unchanged): the
    input rounding any float64 evaluation of an op can be charged with."""
    if not (isinstance(x, torch.Tensor) and x.dtype == torch.float64):
        return x
    sign = torch.randint(0, 2, x.shape, generator=generator, dtype=torch.float64) * 2 - 1
    eps = torch.finfo(torch.float64).eps
    v = x.detach()
    moved = v * (1 + sign * eps)
    # An element moved outside the range the tensor already spans moves the other way instead, so the moved inputs
    # stay in the op's domain wherever the sample's are: binary_cross_entropy's targets of exactly 1.0 (BCELoss's
    # module inputs) moved up to 1 + 2^-52 made torch itself refuse them ("all elements of target should be between
    # 0 and 1").
    if v.numel():
        outside = (moved > v.max()) | (moved < v.min())
        moved = torch.where(outside, v * (1 - sign * eps), moved)
    return moved.requires_grad_(x.requires_grad)


def scalar_condition_bound(torch_fn: Callable, ref_args: tuple, ref_kwargs: dict) -> float:
    """For an op with one float64 output value (a reduced loss): how far torch's float64 result moves when every
    float64 input moves by one ulp in the direction that moves the result most (sign of its gradient), i.e. the
    first-order bound eps * sum |df/dx_i x_i| on the error of any backward-stable float64 evaluation. A random
    one-ulp move underestimates it where terms cancel: a weighted mean of 25 BCE terms of size ~200 moved by 1.1e-15
    at random while torch's own float64 result was 4.7e-15 off the exact (200-bit) value. 0.0 where torch cannot
    differentiate the op."""
    leaves = {i: a.detach().requires_grad_() for i, a in enumerate(ref_args)
              if isinstance(a, torch.Tensor) and a.dtype == torch.float64}
    if not leaves:
        return 0.0
    with torch.enable_grad():
        args = tuple(leaves.get(i, a) for i, a in enumerate(ref_args))
        try:
            value = torch_fn(*args, **ref_kwargs)
            grads = torch.autograd.grad(value, list(leaves.values()), allow_unused=True)
        except RuntimeError:
            return 0.0
    eps = torch.finfo(torch.float64).eps
    grad_of = dict(zip(leaves, grads))
    moved = tuple(a.detach() * (1 + eps * torch.sign(grad_of[i]) * torch.sign(a.detach()))
                  if grad_of.get(i) is not None else a for i, a in enumerate(args))
    with torch.no_grad():
        return (torch_fn(*moved, **ref_kwargs).double() - value.detach().double()).abs().item()


def torch_cross_entropy_of_fastops_logits(input, linear_weight, target, linear_bias=None, weight=None,
                                          reduction="mean", ignore_index=None, label_smoothing=0.0, options=None):
    """torch's linear_cross_entropy as torch defines it (cross_entropy of the linear layer's logits), over the logits
    fastops.linear gives (whose own accuracy linear's samples check): a second torch evaluation of a
    linear_cross_entropy, for the rule's estimate of torch's error (reference.assert_accurate's native_second).

    Why: the float32 loss and gradients carry the logits' rounding, amplified through the softmax, so their error
    depends on how the GEMM happened to round. Where torch's GEMM sums in another order than fastops' (ATen and MKL
    at the AVX2 and portable levels), the two errors are independent draws of the same size, and one 8 x 8 sample
    decides the rule by luck: over 500 random 8 x 8 x 8 problems at the AVX2 level fastops' input gradient erred
    1.94e-6 on average and torch's 1.93e-6, yet 36 failed the rule; the exact gradient of correctly rounded logits
    erred 9.9e-7 where torch's luckier logits gave 2.5e-7 (one of torch's OpInfo samples). `options` is torch's
    chunking choice, which does not change this math. The same holds in float64, where the reference is torch's own
    float64 result: at the portable level fastops' GEMM rounds each product apart (no FMA), while MKL on an AMD EPYC
    ignores MKL_ENABLE_INSTRUCTIONS and keeps its FMA kernels, and the input gradient of one of torch's OpInfo samples
    erred 1.11e-15 against a bound of 1.07e-15 that counted only torch's one ulp."""
    in_features = linear_weight.shape[-1]
    logits = fastops.linear(input, linear_weight.reshape(-1, in_features),
                            None if linear_bias is None else linear_bias.reshape(-1))
    logits = logits.reshape(input.shape[:-1] + linear_weight.shape[:-1])
    return torch.nn.functional.cross_entropy(logits, target, weight, ignore_index=-100 if ignore_index is None
                                             else ignore_index, reduction=reduction, label_smoothing=label_smoothing)


def check_against_torch(fast_fn: Callable, torch_fn: Callable, sample: Sample, *, grad: bool = False,
                        torch_second: Callable | None = None) -> None:
    """Forward (and, with grad=True, every input gradient for a random upstream gradient) of fast_fn vs torch_fn,
    under the accuracy rule with torch_fn in float64 as the reference. `torch_second`: a second torch evaluation of
    the same math (see torch_cross_entropy_of_fastops_logits), counted in torch's error."""
    args = sample.args
    out = fast_fn(*args, **sample.kwargs)
    native = torch_fn(*args, **sample.kwargs)
    second = torch_second(*args, **sample.kwargs) if torch_second is not None else None
    ref_args = tuple(to_reference(a).requires_grad_(grad and a.requires_grad) if isinstance(a, torch.Tensor)
                     and a.is_floating_point() else to_reference(a) for a in args)
    ref_kwargs = {k: to_reference(v) for k, v in sample.kwargs.items()}
    ref = torch_fn(*ref_args, **ref_kwargs)
    sensitive = out.dtype == torch.float64  # float64: the reference is torch itself, see assert_accurate
    if sensitive:
        gen = torch.Generator().manual_seed(2)
        moved_args = tuple(perturbed(a, gen) for a in ref_args)
        moved = torch_fn(*moved_args, **{k: perturbed(v, gen) for k, v in ref_kwargs.items()})
    sensitivity = 0.0
    if sensitive:
        sensitivity = max_error(moved, ref, special_values_must_match=False)
        if ref.numel() == 1 and torch.isfinite(ref).all():
            sensitivity = max(sensitivity, scalar_condition_bound(torch_fn, ref_args, ref_kwargs))
    assert_accurate(out, native, ref, float64_sensitivity=sensitivity, native_second=second)
    if not grad:
        return
    assert out.shape == native.shape
    # The upstream gradient is rounded to the output dtype first, so all three backward passes see the same input.
    upstream = torch.randn(ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    upstream = upstream.to(out.dtype).to(torch.float64)
    differentiable = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]
    inputs = [args[i] for i in differentiable]
    g_fast = torch.autograd.grad(out, inputs, upstream.to(out), allow_unused=True)
    g_native = torch.autograd.grad(native, inputs, upstream.to(native), allow_unused=True)
    g_second = (torch.autograd.grad(second, inputs, upstream.to(second), allow_unused=True) if second is not None
                else [None] * len(inputs))
    # The reference sees the upstream gradient the ops saw (rounded to their output dtype), like every other input.
    g_ref = torch.autograd.grad(ref, [ref_args[i] for i in differentiable], upstream.to(out.dtype).double(),
                                allow_unused=True)
    g_moved = (torch.autograd.grad(moved, [moved_args[i] for i in differentiable], upstream, allow_unused=True)
               if sensitive else g_ref)
    for i, gf, gn, gr, gm, gt in zip(differentiable, g_fast, g_native, g_ref, g_moved, g_second):
        assert (gf is None) == (gn is None), f"grad of argument {i}: present in one of fastops and torch only"
        if gf is None:
            continue
        assert_accurate(gf, gn, gr, what=f"grad of argument {i}",
                        float64_sensitivity=max_error(gm, gr, special_values_must_match=False)
                        if sensitive and gm is not None else 0.0, native_second=gt)


def check_gradcheck(fn: Callable, sample: Sample) -> None:
    """torch.autograd.gradcheck in float64 (the sample must be float64 with requires_grad set)."""
    assert torch.autograd.gradcheck(lambda *a: fn(*a, **sample.kwargs), sample.args, eps=1e-6, atol=1e-5)


def check_opcheck(op, sample: Sample) -> None:
    """torch.library.opcheck: schema, fake kernel, autograd registration and dispatch consistency."""
    torch.library.opcheck(op, sample.args, sample.kwargs)


def check_compile_parity(fn: Callable, sample: Sample, *, backend: str = "aot_eager", grad: bool = False) -> None:
    """torch.compile(fullgraph=True) gives eager's outputs (and gradients) exactly: same kernels either way."""
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend=backend)
    eager_out = fn(*sample.args, **sample.kwargs)
    compiled_out = compiled(*sample.args, **sample.kwargs)
    torch.testing.assert_close(compiled_out, eager_out, rtol=0, atol=0)
    assert compiled_out.stride() == eager_out.stride() or compiled_out.numel() <= 1
    if grad:
        inputs = [a for a in sample.args if isinstance(a, torch.Tensor) and a.requires_grad]
        up = torch.randn_like(eager_out)
        g_eager = torch.autograd.grad(eager_out, inputs, up)
        g_compiled = torch.autograd.grad(compiled_out, inputs, up)
        for ge, gc in zip(g_eager, g_compiled):
            torch.testing.assert_close(gc, ge, rtol=0, atol=0)
