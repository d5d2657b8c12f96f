"""The loss family against torch: accuracy, gradients, registration (opcheck), torch.compile, autocast, bad input."""

import types

import pytest
import torch
import torch.nn.functional as F
from reference import (
    DEVICES,
    FLOAT_DTYPES,
    Sample,
    assert_accurate,
    check_against_torch,
    check_compile_parity,
    check_gradcheck,
    check_opcheck,
    classification_samples,
    elementwise_samples,
    make_tensor,
    requires_cuda,
    to_reference,
)

import fastops
import fastops.functional as FF

ops = torch.ops.fastops
REDUCTIONS = ("none", "mean", "sum")

# The accuracy rule measures torch's error against a float64 evaluation of torch itself, which is zero for float64
# inputs; any other summation order then "fails" by an ulp. float64 results are compared with torch at
# torch.testing.assert_close's default float64 tolerances instead (and carry the gradchecks).
ORACLE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def check_float64_close(fast, native, sample):
    out = fast(*sample.args, **sample.kwargs)
    ref = native(*sample.args, **sample.kwargs)
    torch.testing.assert_close(out, ref, equal_nan=True)
    inputs = [a for a in sample.args if isinstance(a, torch.Tensor) and a.requires_grad]
    if inputs and out.numel():
        up = torch.randn_like(out)
        for g, r in zip(torch.autograd.grad(out, inputs, up), torch.autograd.grad(ref, inputs, up)):
            torch.testing.assert_close(g, r, equal_nan=True)

# ---- cross entropy ----


@pytest.mark.parametrize("dtype", ORACLE_DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_cross_entropy_matches_torch(dtype, device):
    for sample in classification_samples(device, dtype, requires_grad=True):
        check_against_torch(FF.cross_entropy, F.cross_entropy, sample, grad=True)


@pytest.mark.parametrize("classes", (8, 16, 37))
def test_cross_entropy_soft_target_row_sums_matches_torch(classes):
    """Short rows of probability or smoothed targets (of both signs, as in torch's OpInfo samples) and class weights:
    the row sums q (z - m) cancel against B log s, so they are summed exactly in double at every CPU level. In
    float32 vector math a weighted 8-class probability-target loss of 39.1 (torch's OpInfo sample) erred 4.8e-6, one
    ulp, at the portable level where torch's erred 9.8e-7."""
    gen = torch.Generator().manual_seed(0)
    for trial in range(20):
        logits = make_tensor((4, classes), torch.float32, "cpu", low=-9, high=9, generator=gen)
        weight = make_tensor((classes,), torch.float32, "cpu", low=0.5, high=2, generator=gen)
        soft = make_tensor((4, classes), torch.float32, "cpu", low=-9, high=9, generator=gen)
        index = torch.randint(0, classes, (4,), generator=gen)
        for target, smoothing in ((soft, 0.0), (soft, 0.1), (index, 0.2)):
            for reduction in ("sum", "none"):
                kwargs = {"weight": weight, "reduction": reduction, "label_smoothing": smoothing}
                check_against_torch(FF.cross_entropy, F.cross_entropy, Sample((logits, target), kwargs,
                                                                              f"{trial}-{smoothing}-{reduction}"))


@pytest.mark.parametrize("classes", ((1, 16), (17, 70)), ids=("1-16", "17-70"))
def test_cross_entropy_few_random_rows_matches_torch(classes):
    """Few float32 rows of a few dozen classes, where torch's own error is often tiny, so the accuracy rule is tight:
    float exponentials (an ulp each) summed in float erred 1.1e-7 on one 8-class row where torch erred 8e-9 (1.04x the
    rule's bound, avx2), 1.2e-7 on two 37-class rows (1.3x, the portable level), and a weighted 43-class gradient
    from exp(z - hi) times a rounded row factor erred 2 ulps (1.27x). Random rows, every target kind and reduction:
    the float arithmetic failed these 800 trials at avx512 and avx2."""
    gen = torch.Generator().manual_seed(0)

    def draw(options):
        return options[int(torch.randint(0, len(options), (), generator=gen))]

    for trial in range(800):
        n, c = draw((1, 1, 2, 3, 8, 17, 40)), int(torch.randint(classes[0], classes[1] + 1, (), generator=gen))
        logits = (torch.randn(n, c, generator=gen, dtype=torch.float64) * draw((1, 3, 8, 30))).float().requires_grad_()
        target = torch.randint(0, c, (n,), generator=gen)
        if trial % 5 == 4:
            target[0] = -100
        if trial % 3 == 2:
            target = torch.softmax(torch.randn(n, c, generator=gen, dtype=torch.float64) * 2, 1).float()
        weight = torch.rand(c, generator=gen, dtype=torch.float64).float() + 0.5 if trial % 2 else None
        kwargs = {"weight": weight, "reduction": REDUCTIONS[trial % 3], "label_smoothing": draw((0.0, 0.0, 0.1))}
        check_against_torch(FF.cross_entropy, F.cross_entropy,
                            Sample((logits, target), kwargs, f"trial {trial}: {n}x{c} {kwargs}"), grad=True)


@pytest.mark.parametrize("classes", (2, 7, 9, 10, 15, 17, 33))
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
def test_cross_entropy_short_row_tails_matches_torch(classes, dtype):
    """Rows of every length around the CPU vector widths (8 float lanes at avx2, 16 at avx512): the classes past
    whole vectors go through one padded vector (all of a row shorter than a vector), whose padding must count in
    neither the loss nor the gradient, with every kind of target, smoothing and class weights."""
    gen = torch.Generator().manual_seed(classes)
    logits = make_tensor((64, classes), dtype, "cpu", low=-20, high=20, requires_grad=True, generator=gen)
    weight = make_tensor((classes,), dtype, "cpu", low=0.5, high=2, generator=gen)
    soft = make_tensor((64, classes), dtype, "cpu", low=0, high=1, generator=gen)
    index = torch.randint(0, classes, (64,), generator=gen)
    for target, smoothing, class_weight in ((index, 0.0, None), (index, 0.1, weight), (soft, 0.0, weight),
                                            (soft, 0.2, None)):
        for reduction in ("mean", "none"):
            kwargs = {"weight": class_weight, "reduction": reduction, "label_smoothing": smoothing}
            check_against_torch(FF.cross_entropy, F.cross_entropy,
                                Sample((logits, target), kwargs, f"{target.dtype}-{smoothing}-{reduction}"), grad=True)


@pytest.mark.parametrize("device", DEVICES)
def test_cross_entropy_float64_close_to_torch(device):
    for sample in classification_samples(device, torch.float64, requires_grad=True):
        check_float64_close(FF.cross_entropy, F.cross_entropy, sample)


@pytest.mark.parametrize("device", DEVICES)
def test_cross_entropy_non_default_ignore_index(device):
    for sample in classification_samples(device, torch.float32, requires_grad=True, ignore_index=1):
        check_against_torch(FF.cross_entropy, F.cross_entropy, sample, grad=True)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("device", DEVICES)
def test_cross_entropy_all_ignored_is_torch(reduction, device):
    x = torch.randn(4, 6, device=device, requires_grad=True)
    t = torch.full((4,), -100, device=device)
    w = torch.rand(6, device=device)
    out, ref = FF.cross_entropy(x, t, w, reduction=reduction), F.cross_entropy(x, t, w, reduction=reduction)
    torch.testing.assert_close(out, ref, equal_nan=True)
    g = torch.randn_like(out)
    torch.testing.assert_close(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(ref, x, g)[0], equal_nan=True)


@pytest.mark.parametrize("device", DEVICES)
def test_cross_entropy_extreme_logits(device):
    # Large, tied and -inf logits: the running max keeps exp() finite; a row of one huge logit has zero loss.
    x = torch.tensor([[1e4, 0.0, -1e4], [50.0, 50.0, 50.0], [-float("inf"), 0.0, 1.0], [88.0, -88.0, 3.0]],
                     device=device, requires_grad=True)
    t = torch.tensor([0, 1, 2, 1], device=device)
    for reduction in REDUCTIONS:
        check_against_torch(FF.cross_entropy, F.cross_entropy, Sample((x, t), {"reduction": reduction}, reduction),
                            grad=True)


def test_cross_entropy_gradcheck():
    x = make_tensor((5, 7), torch.float64, "cpu", requires_grad=True)
    index = torch.tensor([0, 6, -100, 3, 3])
    prob = torch.rand(5, 7, dtype=torch.float64).softmax(1)
    w = torch.rand(7, dtype=torch.float64) + 0.5
    for target in (index, prob):
        for reduction in REDUCTIONS:
            kwargs = {"weight": w, "reduction": reduction, "label_smoothing": 0.15}
            check_gradcheck(lambda x, target=target, **kw: FF.cross_entropy(x, target, **kw),
                            Sample((x,), kwargs, reduction))


def test_cross_entropy_gradient_survives_retain_graph():
    x = torch.randn(4, 9, requires_grad=True)
    loss = FF.cross_entropy(x, torch.tensor([1, 2, 3, 4]))
    first = torch.autograd.grad(loss, x, retain_graph=True)[0]
    second = torch.autograd.grad(loss, x)[0]
    torch.testing.assert_close(first, second, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_cross_entropy_opcheck(dtype, device):
    x = make_tensor((6, 13), dtype, device, requires_grad=True)
    index = torch.tensor([0, 12, -100, 5, 5, 1], device=device)
    prob = torch.rand(6, 13, device=device).softmax(1).to(dtype)
    w = torch.rand(13, device=device)
    for target in (index, prob):
        for weight in (None, w):
            check_opcheck(ops.cross_entropy_forward, Sample((x, target, weight, -100, 0.1), {}, ""))
            _, _, lse, mass = ops.cross_entropy_forward(x, target, weight, -100, 0.1)
            rows = torch.rand(6, device=device, dtype=torch.float64)
            check_opcheck(ops.cross_entropy_backward, Sample((rows, x.detach(), target, weight, lse, mass, -100, 0.1),
                                                             {}, ""))
            for reduction in (0, 1, 2):
                check_opcheck(ops.cross_entropy_loss_forward,
                              Sample((x, target, weight, reduction, -100, 0.1, torch.float32), {}, ""))


def test_cross_entropy_retained_graph_with_other_upstream_gradients():
    # The first backward scales the forward's gradient in place by its upstream factor; a later one through the
    # retained graph rescales out of place, and must not see the first factor.
    x = torch.randn(5, 9, requires_grad=True)
    t = torch.tensor([1, 2, -100, 4, 8])
    loss, ref = FF.cross_entropy(x, t), F.cross_entropy(x, t)
    for upstream in (2.5, 1.0, -3.0):
        up = torch.tensor(upstream)
        got = torch.autograd.grad(loss, x, up, retain_graph=True)[0]
        torch.testing.assert_close(got, torch.autograd.grad(ref, x, up, retain_graph=True)[0])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_cross_entropy_forward_grad_in_place(dtype, device):
    # 37 classes: rows start misaligned for 16-byte packs; per-row and single scales; ignored and smoothed rows.
    x = make_tensor((6, 37), dtype, device)
    t = torch.tensor([0, 36, -100, 5, 5, 1], device=device)
    w = torch.rand(37, device=device, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    for scale in (torch.tensor(0.25, dtype=torch.float64, device=device),
                  torch.rand(6, dtype=torch.float64, device=device)):
        scratch = x.clone()
        loss = ops.cross_entropy_forward_grad_(scratch, t, w, -100, 0.1, scale)
        # The scaled forward is the plain one times the scale, row by row, and the gradient the backward's.
        plain, _, lse, mass = ops.cross_entropy_forward(x, t, w, -100, 0.1)
        torch.testing.assert_close(loss, plain * scale)
        grad = ops.cross_entropy_backward(scale.expand(6).contiguous(), x, t, w, lse, mass, -100, 0.1)
        torch.testing.assert_close(scratch, grad)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_cross_entropy_loss_forward_reduces_the_rows(dtype, device):
    # The reduced ops against the row ops they fuse: the loss is the float64 rows' sum (over the summed weight of the
    # rows not ignored for 'mean'), rounded once; the forward_grad's gradient is the in-place kernel's, bit for bit.
    x = make_tensor((6, 37), dtype, device)
    w = torch.rand(37, device=device, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    index = torch.tensor([0, 36, -100, 5, 5, 1], device=device)
    prob = torch.rand(6, 37, device=device).softmax(1).to(dtype)
    # float64: the sums may add in another order than ATen's (one rounding of a double apart).
    exact = {"rtol": 0, "atol": 0} if dtype != torch.float64 else {"rtol": 1e-15, "atol": 0}
    for t in (index, prob):
        rows, row_weight, lse, mass = ops.cross_entropy_forward(x, t, w, -100, 0.1)
        for reduction, expected, divisor in ((0, rows, 1.0), (1, rows.sum() / row_weight.sum(), row_weight.sum()),
                                             (2, rows.sum(), 1.0)):
            loss, lse2, mass2, div = ops.cross_entropy_loss_forward(x, t, w, reduction, -100, 0.1, dtype)
            torch.testing.assert_close(loss, expected.to(dtype), **exact)
            torch.testing.assert_close(div.item(), float(divisor), rtol=1e-15, atol=0)
            torch.testing.assert_close((lse2, mass2), (lse, mass), rtol=0, atol=0)
            if reduction == 0:
                continue
            loss, grad, scale = ops.cross_entropy_loss_forward_grad(x, t, w, reduction, -100, 0.1, dtype)
            torch.testing.assert_close(scale.item(), 1 / float(divisor), rtol=1e-15, atol=0)
            scratch = x.clone()
            scaled_rows = ops.cross_entropy_forward_grad_(scratch, t, w, -100, 0.1, scale)
            torch.testing.assert_close(grad, scratch, rtol=0, atol=0)
            torch.testing.assert_close(loss, scaled_rows.sum().to(dtype), **exact)


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_cross_entropy_forward_grad_opcheck(dtype, device):
    x = make_tensor((6, 13), dtype, device)
    index = torch.tensor([0, 12, -100, 5, 5, 1], device=device)
    prob = torch.rand(6, 13, device=device).softmax(1).to(dtype)
    for target in (index, prob):
        for reduction in (1, 2):
            # Not the test_aot_dispatch checks: they return the gradient output from the compiled graph, which the
            # backward also scales in place, and AOTAutograd rejects a graph output mutated in its backward.
            # fastops.functional.cross_entropy never returns that output; its compiled path is
            # test_cross_entropy_compile_dynamic_backward.
            torch.library.opcheck(ops.cross_entropy_loss_forward_grad,
                                  (x.clone().requires_grad_(), target, None, reduction, -100, 0.0, torch.float32),
                                  test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
        for scale in (torch.tensor(0.5, dtype=torch.float64, device=device),
                      torch.rand(6, dtype=torch.float64, device=device)):
            check_opcheck(ops.cross_entropy_forward_grad_, Sample((x.clone(), target, None, -100, 0.0, scale), {}, ""))


@pytest.mark.parametrize("backend", ("aot_eager", "inductor"))
def test_cross_entropy_compile_dynamic_backward(backend):
    torch._dynamo.reset()
    compiled = torch.compile(lambda x, t: FF.cross_entropy(x, t) * 3, fullgraph=True, dynamic=True, backend=backend)
    for n in (5, 17):
        x = torch.randn(n, 11, requires_grad=True)
        t = torch.randint(0, 11, (n,))
        got = torch.autograd.grad(compiled(x, t), x)[0]
        torch.testing.assert_close(got, torch.autograd.grad(F.cross_entropy(x, t) * 3, x)[0])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_scale_rows_scales_each_row_and_skips_ones(dtype, device):
    exact = {"rtol": 0, "atol": 0} if dtype == torch.float64 else {}  # else one rounding of the float product
    for shape in ((7, 37), (4, 3, 16), (1, 1000), (300, 1)):
        x = make_tensor(shape, dtype, device)
        factor = torch.rand(shape[0], dtype=torch.float64, device=device) * 4 - 2
        factor[::2] = 1.0
        for scale in (factor, factor[:1], torch.tensor(1.0, dtype=torch.float64, device=device)):
            got = x.clone()
            ops.scale_rows_(got, scale)
            view = [-1] + [1] * (x.dim() - 1) if scale.numel() > 1 else []
            want = (x.to(torch.float64) * scale.reshape(view)).to(dtype)
            torch.testing.assert_close(got, want, **exact)
    check_opcheck(ops.scale_rows_, Sample((make_tensor((5, 9), dtype, device),
                                           torch.rand(5, dtype=torch.float64, device=device)), {}, ""))


@pytest.mark.parametrize("device", DEVICES)
def test_cross_entropy_inductor_backward_with_upstream_gradient(device):
    # The compiled backward runs the in-place scale_rows_ on the forward's saved gradient.
    torch._dynamo.reset()
    t = torch.randint(0, 29, (12,), device=device)
    x = make_tensor((12, 29), torch.float32, device, requires_grad=True)
    compiled = torch.compile(lambda x: FF.cross_entropy(x, t, label_smoothing=0.05) * 3, fullgraph=True)
    got = torch.autograd.grad(compiled(x), x)[0]
    want = torch.autograd.grad(F.cross_entropy(x, t, label_smoothing=0.05) * 3, x)[0]
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("device", DEVICES)
def test_cross_entropy_compile_fullgraph_parity(device):
    x = make_tensor((8, 33), torch.float32, device, requires_grad=True)
    t = torch.randint(0, 33, (8,), device=device)
    w = torch.rand(33, device=device)
    x4 = make_tensor((2, 5, 3, 4), torch.float32, device, requires_grad=True)
    t4 = torch.randint(0, 5, (2, 3, 4), device=device)
    check_compile_parity(lambda x: FF.cross_entropy(x, t, w, label_smoothing=0.1), Sample((x,), {}, "2d"),
                         grad=True)
    check_compile_parity(lambda x: FF.cross_entropy(x, t4, reduction="none"), Sample((x4,), {}, "4d"), grad=True)


def test_cross_entropy_compile_inductor_dynamic():
    torch._dynamo.reset()
    compiled = torch.compile(lambda x, t: FF.cross_entropy(x, t) * 2, fullgraph=True, dynamic=True)
    for n in (5, 17, 300):
        x = torch.randn(n, 11)
        t = torch.randint(0, 11, (n,))
        torch.testing.assert_close(compiled(x, t), F.cross_entropy(x, t) * 2)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("device", DEVICES)
def test_cross_entropy_autocast_is_float32_without_an_input_copy(reduction, device):
    x = make_tensor((16, 100), torch.bfloat16, device, requires_grad=True)
    t = torch.randint(0, 100, (16,), device=device)
    dtype = torch.bfloat16 if device == "cpu" else torch.float16
    with torch.autocast(device, dtype=dtype):
        out = FF.cross_entropy(x, t, reduction=reduction)
        native = F.cross_entropy(x, t, reduction=reduction)
    assert out.dtype == native.dtype == torch.float32
    assert_accurate(out, native, F.cross_entropy(to_reference(x), to_reference(t), reduction=reduction))
    grad = torch.autograd.grad(out.sum(), x)[0]
    assert grad.dtype == torch.bfloat16
    torch.testing.assert_close(grad, torch.autograd.grad(native.sum(), x)[0])


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_cross_entropy_cpu_cuda_parity(dtype):
    for sample in classification_samples("cpu", dtype, requires_grad=False):
        on_cuda = [a.cuda() if isinstance(a, torch.Tensor) else a for a in sample.args]
        kw_cuda = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in sample.kwargs.items()}
        cpu_out = FF.cross_entropy(*sample.args, **sample.kwargs)
        torch.testing.assert_close(FF.cross_entropy(*on_cuda, **kw_cuda).cpu(), cpu_out, equal_nan=True,
                                   rtol=4 * torch.finfo(dtype).eps, atol=4 * torch.finfo(dtype).eps)


@requires_cuda
@pytest.mark.cuda
def test_cross_entropy_cuda_large_rows_and_misaligned_logits():
    # C = 50257 (odd, so rows are not 16-byte aligned), and a logits view one element into its storage.
    for c, offset in ((50257, 0), (32000, 1)):
        base = torch.randn(3 * c + offset, device="cuda", dtype=torch.bfloat16)
        x = base[offset:].view(3, c).requires_grad_()
        t = torch.tensor([0, c - 1, 7], device="cuda")
        check_against_torch(FF.cross_entropy, F.cross_entropy, Sample((x, t), {"label_smoothing": 0.1}, str(c)),
                            grad=True)


@requires_cuda
@pytest.mark.cuda
def test_cross_entropy_cuda_memory_is_one_gradient():
    # Forward + backward allocate the logits' gradient and [N]-sized row statistics, nothing else [N, C]-sized.
    x = torch.randn(2048, 32000, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    t = torch.randint(0, 32000, (2048,), device="cuda")
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    (grad,) = torch.autograd.grad(FF.cross_entropy(x, t), x)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    assert extra <= grad.numel() * grad.element_size() + (1 << 20), f"{extra} bytes for a {grad.nbytes}-byte gradient"


# ---- elementwise losses ----

# name -> (fastops functional, torch functional, kwargs beyond reduction, the operator)
POINTWISE = {
    "mse_loss": (FF.mse_loss, F.mse_loss, {}, ops.mse_loss),
    "smooth_l1_loss": (FF.smooth_l1_loss, F.smooth_l1_loss, {"beta": 0.7}, ops.smooth_l1_loss),
    "smooth_l1_loss_beta0": (FF.smooth_l1_loss, F.smooth_l1_loss, {"beta": 0.0}, ops.smooth_l1_loss),
    "huber_loss": (FF.huber_loss, F.huber_loss, {"delta": 1.3}, ops.huber_loss),
    "bce_with_logits": (FF.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits, {},
                        ops.binary_cross_entropy_with_logits),
    "l1_loss": (FF.l1_loss, F.l1_loss, {}, ops.l1_loss),
    "bce": (FF.binary_cross_entropy, F.binary_cross_entropy, {}, ops.binary_cross_entropy),
    "kl_div": (FF.kl_div, F.kl_div, {}, ops.kl_div),
    "kl_div_log_target": (FF.kl_div, F.kl_div, {"log_target": True}, ops.kl_div),
}
# The losses of probabilities, whose input lies in [0, 1].
PROBABILITY_INPUT = ("bce",)
# The losses whose target is probabilities.
PROBABILITY_TARGET = ("bce_with_logits", "bce", "kl_div")


def _probabilities(t: torch.Tensor) -> torch.Tensor:
    """[-4, 4) samples mapped into [0, 1) (layout kept), for the losses of probabilities."""
    return (t.detach() / 8 + 0.5).requires_grad_(t.requires_grad)


def _pointwise_samples(name, device, dtype, reductions=REDUCTIONS):
    kwargs = POINTWISE[name][2]
    for reduction in reductions:
        for sample in elementwise_samples(device, dtype, n_inputs=2, requires_grad=True):
            x, t = sample.args
            if name in PROBABILITY_TARGET:  # in [0.0, 1.0)
                t = _probabilities(t)
            if name == "kl_div":  # off 0, where the target gradient is NaN (torch's too; opcheck compares without NaN)
                t = (t.detach() * 0.9 + 0.05).requires_grad_()
            if name in PROBABILITY_INPUT:
                x = _probabilities(x)
            yield Sample((x, t), dict(kwargs, reduction=reduction), f"{sample.desc}-{reduction}")


@pytest.mark.parametrize("name", POINTWISE)
@pytest.mark.parametrize("dtype", ORACLE_DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_pointwise_loss_matches_torch(name, dtype, device):
    fast, native, _, _ = POINTWISE[name]
    for sample in _pointwise_samples(name, device, dtype):
        check_against_torch(fast, native, sample, grad=True)


@pytest.mark.parametrize("name", POINTWISE)
@pytest.mark.parametrize("device", DEVICES)
def test_pointwise_loss_float64_close_to_torch(name, device):
    fast, native, _, _ = POINTWISE[name]
    for sample in _pointwise_samples(name, device, torch.float64):
        check_float64_close(fast, native, sample)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float32), ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_bce_with_logits_weight_and_pos_weight(reduction, dtype, device):
    x = make_tensor((6, 4, 5), dtype, device, low=-8, high=8, requires_grad=True)
    t = make_tensor((6, 4, 5), dtype, device, low=0, high=1)
    weight = make_tensor((4, 1), dtype, device, low=0.5, high=2)  # broadcasts to input
    pos_weight = make_tensor((5,), dtype, device, low=0.5, high=3)  # one per class of the last dim
    for kwargs in ({"weight": weight}, {"pos_weight": pos_weight}, {"weight": weight, "pos_weight": pos_weight}):
        sample = Sample((x, t), dict(kwargs, reduction=reduction), str(list(kwargs)))
        check_against_torch(FF.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits, sample,
                            grad=True)


@pytest.mark.parametrize("name", ("mse_loss", "smooth_l1_loss", "huber_loss"))
def test_regression_loss_broadcasts_and_warns_like_torch(name):
    fast, native, kwargs, _ = POINTWISE[name]
    x = torch.randn(4, 3, requires_grad=True)
    t = torch.randn(3, requires_grad=True)
    with pytest.warns(UserWarning, match="different to the input size"):
        out = fast(x, t, **kwargs)
    with pytest.warns(UserWarning):
        ref = native(x, t, **kwargs)
    torch.testing.assert_close(out, ref)
    for g, r in zip(torch.autograd.grad(out, (x, t)), torch.autograd.grad(ref, (x, t))):
        torch.testing.assert_close(g, r)


@pytest.mark.parametrize("name", ("mse_loss", "smooth_l1_loss"))
def test_mixed_dtypes_promote_like_torch(name):
    fast, native, kwargs, _ = POINTWISE[name]
    x = torch.randn(5, 3, dtype=torch.bfloat16)
    t = torch.rand(5, 3)
    out, ref = fast(x, t, **kwargs), native(x, t, **kwargs)
    assert out.dtype == ref.dtype
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("name", POINTWISE)
def test_pointwise_gradcheck(name):
    fast = POINTWISE[name][0]
    x = make_tensor((4, 5), torch.float64, "cpu", requires_grad=True)
    # Targets a fixed distance from the inputs keep finite differences off the kinks at |x - t| = beta / delta.
    offset = torch.tensor([-2.0, -0.35, 0.2, 0.5, 3.0], dtype=torch.float64)
    if name in PROBABILITY_INPUT:  # inside (0, 1), away from the ends where finite differences leave the domain
        x = (torch.rand(4, 5, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    probabilities = name in PROBABILITY_TARGET
    t = (x.detach() + offset if not probabilities else torch.rand(4, 5, dtype=torch.float64)).requires_grad_()
    for reduction in REDUCTIONS:
        kwargs = dict(POINTWISE[name][2], reduction=reduction)
        check_gradcheck(fast, Sample((x, t), kwargs, reduction))
    pos_weight = torch.rand(5, dtype=torch.float64) + 0.5
    weight = torch.rand(4, 1, dtype=torch.float64)
    if name == "bce_with_logits":
        check_gradcheck(fast, Sample((x, t), {"weight": weight, "pos_weight": pos_weight}, "weights"))
    if name == "bce":
        check_gradcheck(fast, Sample((x, t), {"weight": weight}, "weight"))


@pytest.mark.parametrize("name", POINTWISE)
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_pointwise_opcheck(name, dtype, device):
    _, _, kwargs, op = POINTWISE[name]
    param = tuple(kwargs.values())
    for i, sample in enumerate(_pointwise_samples(name, device, dtype)):
        if i % 3 or sample.args[0].numel() == 0:  # every third sample: all layouts and reductions, a third the cost
            continue
        x, t = sample.args
        reduction = {"none": 0, "mean": 1, "sum": 2}[sample.kwargs["reduction"]]
        extra = {"bce_with_logits": (None, None, reduction), "bce": (None, reduction)}.get(name, (reduction, *param))
        check_opcheck(op, Sample((x, t, *extra), {}, sample.desc))
    x = make_tensor((3, 4), dtype, device, requires_grad=True)
    t = make_tensor((3, 4), dtype, device, low=0, high=1)
    check_opcheck(ops.binary_cross_entropy_with_logits, Sample((x, t, t + 1, t * 2, 1), {}, "weights"))
    p = make_tensor((3, 4), dtype, device, low=0, high=1, requires_grad=True)
    check_opcheck(ops.binary_cross_entropy, Sample((p, t, t + 1, 1), {}, "weight"))


@pytest.mark.parametrize("name", POINTWISE)
@pytest.mark.parametrize("device", DEVICES)
def test_pointwise_compile_fullgraph_parity(name, device):
    fast, _, kwargs, _ = POINTWISE[name]
    for reduction in REDUCTIONS:
        for layout in ("contiguous", "transposed"):
            low = 0 if name in PROBABILITY_INPUT else -4
            x = make_tensor((33, 65), torch.float32, device, layout=layout, low=low, high=1, requires_grad=True)
            t = make_tensor((33, 65), torch.float32, device, layout=layout, low=0, high=1, requires_grad=True)
            check_compile_parity(lambda x, t, reduction=reduction: fast(x, t, reduction=reduction, **kwargs),
                                 Sample((x, t), {}, layout), grad=True)


@pytest.mark.parametrize("name", POINTWISE)
@pytest.mark.parametrize("device", DEVICES)
def test_pointwise_autocast_runs_in_float32(name, device):
    fast, native, kwargs, _ = POINTWISE[name]
    low, high = (0, 1) if name in PROBABILITY_INPUT else (-4, 4)
    x = make_tensor((8, 9), torch.bfloat16, device, low=low, high=high, requires_grad=True)
    t = make_tensor((8, 9), torch.float32, device, low=0, high=1)
    if name == "bce" and device == "cuda":  # torch refuses it there as unsafe to autocast; so does fastops
        with torch.autocast(device, dtype=torch.bfloat16):
            for fn in (fast, native):
                with pytest.raises(RuntimeError):
                    fn(x, t)
        return
    with torch.autocast(device, dtype=torch.bfloat16):
        out, ref = fast(x, t, **kwargs), native(x, t, **kwargs)
    assert out.dtype == ref.dtype == torch.float32
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(torch.autograd.grad(out, x)[0], torch.autograd.grad(ref, x)[0])


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("name", POINTWISE)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_pointwise_cpu_cuda_parity(name, dtype):
    fast, _, kwargs, _ = POINTWISE[name]
    x = make_tensor((1000, 37), dtype, "cpu", low=0 if name in PROBABILITY_INPUT else -4,
                    high=1 if name in PROBABILITY_INPUT else 4)
    t = make_tensor((1000, 37), dtype, "cpu", low=0, high=1)
    eps = torch.finfo(dtype).eps
    for reduction in REDUCTIONS:
        torch.testing.assert_close(fast(x.cuda(), t.cuda(), reduction=reduction, **kwargs).cpu(),
                                   fast(x, t, reduction=reduction, **kwargs), rtol=8 * eps, atol=8 * eps)


# ---- modules ----

MODULES = [
    (fastops.nn.CrossEntropyLoss, torch.nn.CrossEntropyLoss, {"weight": torch.rand(5) + 0.5, "ignore_index": 2,
                                                                  "label_smoothing": 0.1}),
    (fastops.nn.MSELoss, torch.nn.MSELoss, {"reduction": "sum"}),
    (fastops.nn.SmoothL1Loss, torch.nn.SmoothL1Loss, {"beta": 0.5}),
    (fastops.nn.HuberLoss, torch.nn.HuberLoss, {"delta": 2.0, "reduction": "none"}),
    (fastops.nn.L1Loss, torch.nn.L1Loss, {"reduction": "sum"}),
    (fastops.nn.BCEWithLogitsLoss, torch.nn.BCEWithLogitsLoss, {"weight": torch.rand(5), "pos_weight": torch.rand(5)}),
]


@pytest.mark.parametrize("fast_cls,torch_cls,kwargs", MODULES, ids=lambda m: getattr(m, "__name__", ""))
def test_module_is_drop_in(fast_cls, torch_cls, kwargs):
    fast, native = fast_cls(**kwargs), torch_cls(**kwargs)
    assert fast.state_dict().keys() == native.state_dict().keys()
    assert repr(fast) == repr(native)
    x = torch.randn(7, 5)
    t = torch.randint(0, 5, (7,)) if fast_cls is fastops.nn.CrossEntropyLoss else torch.rand(7, 5)
    torch.testing.assert_close(fast(x, t), native(x, t))


def test_bce_module_is_drop_in():
    for kwargs in ({}, {"weight": torch.rand(5) + 0.5, "reduction": "sum"}, {"reduction": "none"}):
        fast, native = fastops.nn.BCELoss(**kwargs), torch.nn.BCELoss(**kwargs)
        assert isinstance(fast, torch.nn.BCELoss)
        assert fast.state_dict().keys() == native.state_dict().keys() and repr(fast) == repr(native)
        x, t = torch.rand(7, 5), torch.rand(7, 5)
        torch.testing.assert_close(fast(x, t), native(x, t))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float32, torch.float64), ids=str)
def test_weighted_losses_match_torch(reduction, dtype):
    x = make_tensor((6, 5), dtype, "cpu", requires_grad=True)
    t = make_tensor((6, 5), dtype, "cpu", requires_grad=True)
    w = make_tensor((6, 5), dtype, "cpu", low=0.5, high=2)
    check_against_torch(FF.l1_loss, F.l1_loss, Sample((x, t), {"weight": w, "reduction": reduction}, "l1"), grad=True)
    p = _probabilities(x)
    q = _probabilities(t)
    row_weight = make_tensor((5,), dtype, "cpu", low=0.5, high=2)  # broadcasts to the target, as in torch
    check_against_torch(FF.binary_cross_entropy, F.binary_cross_entropy,
                        Sample((p, q), {"weight": row_weight, "reduction": reduction}, "bce"), grad=True)


def test_bce_clamps_logs_like_torch():
    x = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.5], requires_grad=True)
    t = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5], requires_grad=True)
    for reduction in REDUCTIONS:
        out, ref = FF.binary_cross_entropy(x, t, reduction=reduction), F.binary_cross_entropy(x, t, reduction=reduction)
        torch.testing.assert_close(out, ref)
        up = torch.ones_like(out)
        for g, r in zip(torch.autograd.grad(out, (x, t), up), torch.autograd.grad(ref, (x, t), up)):
            torch.testing.assert_close(g, r)


# ---- kl_div: torch.nn.functional's own reductions and argument handling ----


@pytest.mark.parametrize("log_target", (False, True))
@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float32), ids=str)
def test_kl_div_batchmean_and_legacy_reductions_match_torch(dtype, log_target):
    x = make_tensor((6, 5), dtype, "cpu", low=-3, high=0, requires_grad=True)
    t = make_tensor((6, 5), dtype, "cpu", low=0 if not log_target else -3, high=1 if not log_target else 0,
                    requires_grad=True)
    for kwargs in ({"reduction": "batchmean"}, {"size_average": False}, {"reduce": False},
                   {"size_average": True, "reduction": "batchmean"}):
        check_against_torch(FF.kl_div, F.kl_div, Sample((x, t), dict(kwargs, log_target=log_target), str(kwargs)),
                            grad=True)


def test_kl_div_zero_dim_batchmean_is_the_sum():
    x, t = torch.tensor(-1.0, requires_grad=True), torch.tensor(0.5, requires_grad=True)
    out, ref = FF.kl_div(x, t, reduction="batchmean"), F.kl_div(x, t, reduction="batchmean")
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(torch.autograd.grad(out, (x, t)), torch.autograd.grad(ref, (x, t)))


def test_kl_div_mean_warns_like_torch():
    x, t = torch.randn(3, 4), torch.rand(3, 4)
    with pytest.warns(UserWarning, match="'batchmean' divides only by the batch size"):
        FF.kl_div(x, t)


def test_kl_div_zero_targets_follow_xlogy():
    # t == 0 contributes 0 to the loss (also against x = -inf: NaN, as torch's 0 * -inf), and its target gradient is
    # torch's NaN (t log t has no derivative there); the input gradient is -t.
    x = torch.tensor([-1.0, -2.0, -float("inf"), 0.3, -0.5], requires_grad=True)
    t = torch.tensor([0.0, 0.5, 0.0, 1.0, -1.0], requires_grad=True)
    for reduction in ("none", "sum"):
        out, ref = FF.kl_div(x, t, reduction=reduction), F.kl_div(x, t, reduction=reduction)
        torch.testing.assert_close(out, ref, equal_nan=True)
        up = torch.ones_like(out)
        for g, r in zip(torch.autograd.grad(out, (x, t), up), torch.autograd.grad(ref, (x, t), up)):
            torch.testing.assert_close(g, r, equal_nan=True)


def test_kl_div_broadcasts_and_promotes_like_torch():
    x = torch.randn(4, 3, dtype=torch.bfloat16, requires_grad=True)
    t = torch.rand(3, dtype=torch.float64, requires_grad=True)
    for reduction in ("none", "batchmean", "sum"):
        out, ref = FF.kl_div(x, t, reduction=reduction), F.kl_div(x, t, reduction=reduction)
        assert out.dtype == ref.dtype == torch.float64 and out.shape == ref.shape
        torch.testing.assert_close(out, ref)
        up = torch.randn_like(out)
        for g, r in zip(torch.autograd.grad(out, (x, t), up), torch.autograd.grad(ref, (x, t), up)):
            assert g.dtype == r.dtype and g.shape == r.shape
            torch.testing.assert_close(g, r)


def test_kl_div_module_is_drop_in():
    for kwargs in ({}, {"reduction": "batchmean", "log_target": True}, {"reduction": "none"}):
        fast, native = fastops.nn.KLDivLoss(**kwargs), torch.nn.KLDivLoss(**kwargs)
        assert isinstance(fast, torch.nn.KLDivLoss) and repr(fast) == repr(native)
        x, t = torch.randn(7, 5).log_softmax(1), torch.rand(7, 5)
        torch.testing.assert_close(fast(x, t), native(x, t))


# ---- bad input ----

_x = torch.randn(3, 5)
_t = torch.tensor([0, 4, 1])

_p = torch.rand(3, 5)

BAD_INPUTS = [
    (lambda: FF.binary_cross_entropy(_x, _p), RuntimeError, r"all elements of input should be between 0 and 1"),
    (lambda: FF.binary_cross_entropy(_p, _x), RuntimeError, r"all elements of target should be between 0 and 1"),
    (lambda: FF.binary_cross_entropy(_p, _p.double()), RuntimeError, r"Found dtype Double but expected Float"),
    (lambda: FF.binary_cross_entropy(_p, _p[:2]), ValueError,
     r"Using a target size \(torch.Size\(\[2, 5\]\)\) that is different to the input size"),
    (lambda: FF.binary_cross_entropy(_p, _p, weight=torch.ones(4)), RuntimeError,
     r"Attempting to broadcast a dimension of length 4"),
    (lambda: FF.binary_cross_entropy(_p, _p, weight=torch.ones(5, requires_grad=True)), RuntimeError,
     r"'binary_cross_entropy' is not differentiable with respect to argument 'weight'"),
    (lambda: FF.kl_div(_x, _x.long()), RuntimeError, r"kl_div: Integral inputs not supported\."),
    (lambda: FF.kl_div(_x, _x, reduction="avg"), ValueError, r"avg is not a valid value for reduction"),
    (lambda: FF.l1_loss(_x, _x, weight=torch.ones(5)), ValueError, r"Weights and input must have the same size\."),
    (lambda: FF.l1_loss(_x, _x, weight=torch.ones(3, 5), reduction="avg"), ValueError, r"Invalid reduction mode: avg"),
    (lambda: FF.cross_entropy(_x, torch.tensor([0, 5, 1])), IndexError,
     r"fastops\.cross_entropy: target 5 \(row 1\) is out of bounds for 5 classes"),
    (lambda: FF.cross_entropy(_x, torch.tensor([0, -1, 1])), IndexError, r"target -1 \(row 1\) is out of bounds"),
    (lambda: FF.cross_entropy(_x, torch.tensor([0, -100, 1]), ignore_index=3), IndexError, r"target -100"),
    # cross_entropy's argument rules and messages are torch's own (the composite op mirrors aten's LossNLL.cpp).
    (lambda: FF.cross_entropy(_x, torch.tensor([0.0, 1.0, 2.0])), RuntimeError,
     r"expected target dtype to be Long or Byte, but got Float"),
    (lambda: FF.cross_entropy(_x, _t.int()), RuntimeError, r"expected target dtype to be Long or Byte, but got Int"),
    (lambda: FF.cross_entropy(_x, torch.tensor([0, 1])), ValueError,
     r"Expected input batch_size \(3\) to match target batch_size \(2\)"),
    (lambda: FF.cross_entropy(_x, _t, weight=torch.ones(4)), RuntimeError,
     r"weight tensor should be defined either for all 5 classes or no classes but got weight tensor of shape: \[4\]"),
    (lambda: FF.cross_entropy(_x, _t, label_smoothing=1.5), RuntimeError, r"label_smoothing must be between"),
    (lambda: FF.cross_entropy(_x, _t, reduction="avg"), ValueError, r"avg is not a valid value for reduction"),
    (lambda: FF.cross_entropy(_x.long(), _t), RuntimeError, r"input must be float16/bfloat16/float32/float64, got Long"),
    (lambda: ops.cross_entropy_forward(_x, _t, torch.ones(5, dtype=torch.float64), -100, 0.0), RuntimeError,
     r"weight must be Float for Float logits, got Double"),
    (lambda: ops.cross_entropy_backward(torch.ones(2, dtype=torch.float64), _x, _t, None, torch.ones(3),
                                        torch.ones(3), -100, 0.0),
     RuntimeError, r"cross_entropy_backward: grad_rows must have shape \[N\] = \[3\], got \[2\]"),
    (lambda: FF.mse_loss(_t, _t), RuntimeError,
     r"fastops\.mse_loss: input and target must give a float16/bfloat16/float32/float64 result, got Long input"),
    (lambda: FF.cross_entropy(torch.rand(3, 5), torch.rand(3, 5), ignore_index=1), RuntimeError,
     r"ignore_index is not supported for floating point target"),
    (lambda: ops.mse_loss(_x, torch.randn(3, 4), 1), RuntimeError, r"target must have the shape of input \[3, 5\]"),
    (lambda: ops.mse_loss(_x, _x, 3), RuntimeError, r"reduction must be 0 \(none\), 1 \(mean\) or 2 \(sum\)"),
    (lambda: ops.huber_loss(_x, _x, 1, -1.0), RuntimeError, r"huber_loss does not support non-positive values"),
    (lambda: ops.smooth_l1_loss_backward(torch.ones(()), _x, _x, 1, -0.5), RuntimeError,
     r"smooth_l1_loss does not support negative values for beta"),
    (lambda: FF.binary_cross_entropy_with_logits(_x, torch.rand(5)), ValueError,
     r"Target size \(torch.Size\(\[5\]\)\) must be the same as input size"),
    (lambda: FF.binary_cross_entropy_with_logits(_x, _x, pos_weight=torch.ones(4)), RuntimeError, r"expand"),
    (lambda: ops.binary_cross_entropy_with_logits(_x, _x, torch.ones(5), None, 1), RuntimeError,
     r"weight must have the shape of input"),
    (lambda: FF.smooth_l1_loss(_x, _x, beta=-1.0), RuntimeError, r"negative values for beta"),
    (lambda: ops.mse_loss_backward(torch.ones(3), _x, _x, 1), RuntimeError,
     r"grad_output of a reduced loss must be 0-dim"),
]


@pytest.mark.parametrize("call,error,message", BAD_INPUTS)
def test_bad_input_raises_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


@requires_cuda
@pytest.mark.cuda
def test_cuda_bad_target_poisons_then_raises_without_killing_the_process():
    # No host sync in the call: the out-of-range row's loss is NaN at once, and the recorded error is raised by the
    # next cross-entropy call once the GPU has run the bad one (docs/errors.md).
    x = torch.randn(4, 1000, device="cuda")
    good = torch.tensor([0, 1, 2, 3], device="cuda")
    loss = FF.cross_entropy(x, torch.tensor([0, 1, 1000, 2], device="cuda"), reduction="none")
    torch.cuda.synchronize()  # the context survives: no device-side assert
    assert torch.isnan(loss[2]) and torch.isfinite(loss[[0, 1, 3]]).all()
    with pytest.raises(IndexError, match=r"target 1000 \(row 2\) is out of bounds for 1000 classes"):
        FF.cross_entropy(x, good)
    # Raised once; the next calls are clean, and a mean over a bad row is NaN, never a plausible number.
    torch.testing.assert_close(FF.cross_entropy(x, good), F.cross_entropy(x, good))
    x.requires_grad_()
    mean = FF.cross_entropy(x, torch.tensor([0, -5, 1, 2], device="cuda"))
    mean.backward()
    torch.cuda.synchronize()
    assert torch.isnan(mean) and torch.isnan(x.grad[1]).all()
    with pytest.raises(IndexError, match=r"target -5 \(row 1\) is out of bounds"):
        FF.cross_entropy(x.detach(), good)


def test_bce_cuda_autocast_refuses_with_torchs_message():
    # The AutocastCUDA kernel, reached directly (no GPU needed): torch bans binary_cross_entropy under CUDA autocast.
    p = torch.rand(3, 4)
    keys = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCUDA)
    with pytest.raises(RuntimeError, match=r"binary_cross_entropy and torch\.nn\.BCELoss are unsafe to autocast"):
        ops.binary_cross_entropy.default.redispatch(keys, p, p, None, 1)


@requires_cuda
@pytest.mark.cuda
def test_cuda_bce_out_of_range_input_poisons_then_raises():
    # torch asserts in its CUDA kernel (killing the context); fastops gives the element a NaN loss and raises at the
    # next recording call once the GPU has run the bad one, without a host sync.
    p = torch.rand(4, 5, device="cuda")
    bad = p.clone()
    bad[1, 2] = 1.5
    torch.cuda._sleep(10**7)  # the GPU is still busy when the bad calls return: they raise nothing themselves
    loss = FF.binary_cross_entropy(bad, p, reduction="none")
    torch.cuda.synchronize()
    assert torch.isnan(loss[1, 2]) and torch.isfinite(loss[0]).all()
    with pytest.raises(RuntimeError, match=r"all elements of input should be between 0 and 1, got 1\.5"):
        FF.binary_cross_entropy(p, p)
    torch.testing.assert_close(FF.binary_cross_entropy(p, p), F.binary_cross_entropy(p, p))
    torch.cuda._sleep(10**7)
    assert torch.isnan(FF.binary_cross_entropy(bad, p))  # a mean over a bad element is never plausible
    torch.cuda.synchronize()
    with pytest.raises(RuntimeError, match=r"between 0 and 1"):
        FF.binary_cross_entropy(p, p)


@requires_cuda
@pytest.mark.cuda
def test_cuda_training_step_never_waits_for_the_gpu():
    # In sync-debug mode "error" torch raises on any synchronising call: cross entropy (forward and backward) and
    # the chunked linear_cross_entropy must queue all their kernels without one.
    x = torch.randn(300, 64, device="cuda", requires_grad=True)
    w = torch.randn(1000, 64, device="cuda", requires_grad=True)
    t = torch.randint(0, 1000, (300,), device="cuda")
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        FF.cross_entropy(x @ w.t(), t).backward()
        FF.nll_loss((x @ w.t()).log_softmax(1), t).backward()
        FF.binary_cross_entropy((x @ w.t()).sigmoid(), torch.rand(300, 1000, device="cuda")).backward()
        FF.linear_cross_entropy(x, w, t, options=types.SimpleNamespace(batch_chunk_size=128)).backward()
    finally:
        torch.cuda.set_sync_debug_mode(previous)
