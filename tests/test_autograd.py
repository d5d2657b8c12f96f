"""Autograd beyond the first derivative, and the saved state a backward reads: every op differentiates to any order
torch does (gradgradcheck in float64, never silent zeros), a retained graph's later backward sees what the first
saw, in-place variants backpropagate, and gradients reach every argument torch differentiates."""

import functools

import pytest
import torch
import torch.nn.functional as F

import fastops.functional as FF
import fastops.nn as fnn

ops = torch.ops.fastops


def _double(*shape, low=-2.0, high=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=torch.float64) * (high - low) + low).requires_grad_()


def _away_from_kinks(t: torch.Tensor) -> torch.Tensor:
    """|values| >= 0.1, so finite differences never straddle relu's (or a loss's) kink."""
    with torch.no_grad():
        t.copy_(torch.where(t.abs() < 0.1, torch.sign(t) * 0.1 + 0.1 * (t == 0), t))
    return t


# name -> (fastops function, its float64 inputs): every op with a second derivative in torch.
SECOND_ORDER = {
    "relu": (FF.relu, lambda: (_away_from_kinks(_double(3, 5)),)),
    "gelu": (FF.gelu, lambda: (_double(3, 5),)),
    "gelu_tanh": (functools.partial(FF.gelu, approximate="tanh"), lambda: (_double(3, 5),)),
    "silu": (FF.silu, lambda: (_double(3, 5),)),
    "leaky_relu": (functools.partial(FF.leaky_relu, negative_slope=0.2), lambda: (_away_from_kinks(_double(3, 5)),)),
    "sigmoid": (FF.sigmoid, lambda: (_double(3, 5),)),
    "tanh": (FF.tanh, lambda: (_double(3, 5),)),
    "softmax_last": (functools.partial(FF.softmax, dim=-1), lambda: (_double(3, 5),)),
    "softmax_dim0": (functools.partial(FF.softmax, dim=0), lambda: (_double(3, 4, 2),)),
    "log_softmax_last": (functools.partial(FF.log_softmax, dim=1), lambda: (_double(3, 5),)),
    "log_softmax_dim1_of_3": (functools.partial(FF.log_softmax, dim=1), lambda: (_double(2, 4, 3),)),
    "nll_loss_mean_weighted": (lambda x: FF.nll_loss(x, torch.tensor([0, 3, 1]), weight=torch.tensor(
        [0.5, 2.0, 1.0, 1.5], dtype=torch.float64), ignore_index=1), lambda: (_double(3, 4),)),
    "nll_loss_none_spatial": (lambda x: FF.nll_loss(x, torch.tensor([[0, 2], [1, 1]]), reduction="none"),
                              lambda: (_double(2, 3, 2),)),
    "log_softmax_nll_loss_sum": (lambda x: FF.nll_loss(FF.log_softmax(x, 1), torch.tensor([2, 0, 1]), reduction="sum"),
                                 lambda: (_double(3, 4),)),
    "bias_act_gelu": (lambda x, b: FF.bias_act(x, b, "gelu"), lambda: (_double(4, 3), _double(3, seed=1))),
    "bias_act_tanh": (lambda x, b: FF.bias_act(x, b, "tanh"), lambda: (_double(4, 3), _double(3, seed=1))),
    "bias_act_sigmoid": (lambda x, b: FF.bias_act(x, b, "sigmoid"), lambda: (_double(4, 3), _double(3, seed=1))),
    "bias_act_gelu_tanh": (lambda x, b: FF.bias_act(x, b, "gelu_tanh"), lambda: (_double(4, 3), _double(3, seed=1))),
    "bias_act_silu": (lambda x, b: FF.bias_act(x, b, "silu"), lambda: (_double(4, 3), _double(3, seed=1))),
    "swiglu": (FF.swiglu, lambda: (_double(3, 4), _double(3, 4, seed=1))),
    "swiglu_packed": (FF.swiglu, lambda: (_double(3, 8),)),
    "geglu": (FF.geglu, lambda: (_double(3, 4), _double(3, 4, seed=1))),
    "geglu_tanh_packed": (functools.partial(FF.geglu, approximate="tanh"), lambda: (_double(3, 8),)),
    "matmul": (FF.matmul, lambda: (_double(2, 3, 4), _double(4, 5, seed=1))),
    "linear": (FF.linear, lambda: (_double(3, 4), _double(5, 4, seed=1), _double(5, seed=2))),
    "linear_gelu": (lambda x, w, b: FF.linear(x, w, b, activation="gelu"),
                    lambda: (_double(3, 4), _double(5, 4, seed=1), _double(5, seed=2))),
    "linear_silu_no_bias": (lambda x, w: FF.linear(x, w, activation="silu"), lambda: (_double(3, 4), _double(5, 4, seed=1))),
    "mse_loss": (FF.mse_loss, lambda: (_double(3, 4), _double(3, 4, seed=1))),
    "mse_loss_none": (functools.partial(FF.mse_loss, reduction="none"), lambda: (_double(3, 4), _double(3, 4, seed=1))),
    "smooth_l1_loss": (functools.partial(FF.smooth_l1_loss, beta=0.5), lambda: (_double(3, 4), _double(3, 4, seed=1))),
    "huber_loss": (functools.partial(FF.huber_loss, delta=0.7, reduction="sum"),
                   lambda: (_double(3, 4), _double(3, 4, seed=1))),
    "l1_loss": (FF.l1_loss, lambda: (_double(3, 4), _double(3, 4, seed=1))),
    "l1_loss_none": (functools.partial(FF.l1_loss, reduction="none"), lambda: (_double(3, 4), _double(3, 4, seed=1))),
    "bce": (FF.binary_cross_entropy, lambda: (_double(3, 4, low=0.1, high=0.9), _double(3, 4, low=0, high=1, seed=1))),
    "bce_weighted_sum": (lambda x, t: FF.binary_cross_entropy(
        x, t, weight=torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=torch.float64), reduction="sum"),
        lambda: (_double(3, 4, low=0.1, high=0.9), _double(3, 4, low=0, high=1, seed=1))),
    "bce_with_logits": (FF.binary_cross_entropy_with_logits, lambda: (_double(3, 4), _double(3, 4, low=0, high=1, seed=1))),
    "bce_with_logits_pos_weight": (lambda x, t: FF.binary_cross_entropy_with_logits(
        x, t, pos_weight=torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=torch.float64)),
        lambda: (_double(3, 4), _double(3, 4, low=0, high=1, seed=1))),
}

# Cross entropy in float32 and float64 (float32 takes the forward that writes its gradient), checked against torch's
# own second derivative since gradgradcheck needs float64.
CROSS_ENTROPY_CASES = {
    "index_mean": {},
    "index_sum_weighted": {"reduction": "sum", "weight": "weight"},
    "index_none_smoothed": {"reduction": "none", "label_smoothing": 0.2},
    "index_ignored": {"ignore_index": 1},
    "probabilities": {"probabilities": True},
    "probabilities_smoothed_weighted": {"probabilities": True, "label_smoothing": 0.1, "weight": "weight"},
}


@pytest.mark.parametrize("name", SECOND_ORDER)
def test_gradgradcheck(name):
    fn, make = SECOND_ORDER[name]
    inputs = make()
    assert torch.autograd.gradgradcheck(fn, inputs, eps=1e-6, atol=1e-5)


def _cross_entropy_case(case: dict, dtype):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, generator=g, dtype=dtype, requires_grad=True)
    if case.get("probabilities"):
        target = torch.rand(5, 4, generator=g, dtype=dtype).softmax(1).requires_grad_()
    else:
        target = torch.randint(0, 4, (5,), generator=g)
    kwargs = {k: v for k, v in case.items() if k != "probabilities"}
    if kwargs.get("weight") == "weight":
        kwargs["weight"] = torch.rand(4, generator=g, dtype=dtype) + 0.5
    return logits, target, kwargs


@pytest.mark.parametrize("case", CROSS_ENTROPY_CASES)
def test_cross_entropy_gradgradcheck(case):
    logits, target, kwargs = _cross_entropy_case(CROSS_ENTROPY_CASES[case], torch.float64)
    inputs = (logits, target) if target.is_floating_point() else (logits,)

    def fn(*args):
        return FF.cross_entropy(args[0], args[1] if len(args) > 1 else target, **kwargs)

    assert torch.autograd.gradgradcheck(fn, inputs, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("dtype", (torch.float32, torch.float64), ids=str)
@pytest.mark.parametrize("case", CROSS_ENTROPY_CASES)
def test_cross_entropy_second_derivative_matches_torch(case, dtype):
    # A gradient penalty: d/dlogits of |d loss / d logits|^2 (and of the target, for probabilities).
    results = []
    for fn in (FF.cross_entropy, F.cross_entropy):
        logits, target, kwargs = _cross_entropy_case(CROSS_ENTROPY_CASES[case], dtype)
        inputs = [logits] + ([target] if target.is_floating_point() else [])
        loss = fn(logits, target, **kwargs)
        (grad,) = torch.autograd.grad(loss.sum(), logits, create_graph=True)
        results.append(torch.autograd.grad(grad.pow(2).sum(), inputs))
    for ours, theirs in zip(*results):
        assert ours.abs().max() > 0  # never the silent zeros of a missing second derivative
        torch.testing.assert_close(ours, theirs)


def test_second_derivative_is_never_silently_zero():
    # The repro: tanh's gradient penalty came back as zeros.
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(FF.tanh(x).sum(), x, create_graph=True)
    (ours,) = torch.autograd.grad(g.pow(2).sum(), x)
    (g,) = torch.autograd.grad(torch.tanh(x).sum(), x, create_graph=True)
    (theirs,) = torch.autograd.grad(g.pow(2).sum(), x)
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("reduction", ("mean", "sum"))
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16, torch.float64), ids=str)
def test_retained_graph_sees_the_same_gradient_whatever_the_factors(reduction, dtype):
    x = torch.randn(6, 5, dtype=dtype, requires_grad=True)
    t = torch.randint(0, 5, (6,))
    (first,) = torch.autograd.grad(FF.cross_entropy(x, t, reduction=reduction), x)
    torch.testing.assert_close(first, torch.autograd.grad(F.cross_entropy(x, t, reduction=reduction), x)[0])
    loss = FF.cross_entropy(x, t, reduction=reduction)
    # The repro: a factor of 0 first (then 1/0 on the next backward) turned the gradient into NaN.
    # 16/32-bit: the forward wrote the gradient, later backwards scale it (one rounding); float64 recomputes it
    # from the logits for each factor (one rounding of its own).
    exact = {"atol": 0, "rtol": 0} if dtype != torch.float64 else {}
    for factor in (0.0, 3.0, 1.0, 0.5):
        (grad,) = torch.autograd.grad(loss, x, torch.tensor(factor, dtype=loss.dtype), retain_graph=True)
        torch.testing.assert_close(grad, (first.double() * factor).to(dtype), **exact)
    (grad,) = torch.autograd.grad(loss, x)  # the last backward may scale in place: still the same gradient
    torch.testing.assert_close(grad, first, atol=0, rtol=0)


@pytest.mark.parametrize("reduction", ("mean", "sum", "none"))
def test_probability_targets_get_torch_gradient(reduction):
    g = torch.Generator().manual_seed(3)
    grads = []
    for fn in (FF.cross_entropy, F.cross_entropy):
        x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1), requires_grad=True)
        t = torch.rand(4, 6, generator=torch.Generator().manual_seed(2)).softmax(1).requires_grad_()
        w = torch.rand(6, generator=torch.Generator().manual_seed(4)) + 0.5
        loss = fn(x, t, weight=w, label_smoothing=0.1, reduction=reduction)
        up = torch.randn(loss.shape, generator=g.manual_seed(5))
        grads.append(torch.autograd.grad(loss, (x, t), up))
    for ours, theirs in zip(*grads):
        torch.testing.assert_close(ours, theirs)


def test_probability_target_class_weight_gets_torch_gradient():
    grads = []
    for fn in (FF.cross_entropy, F.cross_entropy):
        x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
        t = torch.rand(4, 6, generator=torch.Generator().manual_seed(2)).softmax(1)
        w = (torch.rand(6, generator=torch.Generator().manual_seed(4)) + 0.5).requires_grad_()
        grads.append(torch.autograd.grad(fn(x, t, weight=w), w)[0])
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("fn", (FF.cross_entropy, F.cross_entropy), ids=("fastops", "torch"))
def test_class_weight_requiring_grad_is_refused_for_class_indices(fn):
    w = torch.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="not differentiable with respect to argument 'weight'"):
        fn(torch.randn(2, 3), torch.tensor([0, 1]), weight=w)


@pytest.mark.parametrize("name", ("silu", "leaky_relu", "relu"))
@pytest.mark.parametrize("negative_slope", (0.2, -0.5))
def test_inplace_activation_backpropagates(name, negative_slope):
    kwargs = {"negative_slope": negative_slope} if name == "leaky_relu" else {}
    results = []
    for fn in (getattr(FF, name), getattr(F, name)):
        x = torch.randn(4, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
        h = x * 2  # a non-leaf, as inside a model
        out = fn(h, inplace=True, **kwargs)
        assert out is h
        if name == "leaky_relu" and negative_slope < 0 and fn is F.leaky_relu:
            continue  # torch refuses the in-place backward with a negative slope; fastops computes it
        (g,) = torch.autograd.grad(out.sum(), x)
        results.append((out.detach(), g))
    expected_out = getattr(F, name)(torch.randn(4, 5, generator=torch.Generator().manual_seed(0)) * 2, **kwargs)
    torch.testing.assert_close(results[0][0], expected_out)
    if len(results) == 2:
        torch.testing.assert_close(results[0][1], results[1][1])


@pytest.mark.parametrize("name", ("silu", "relu", "leaky_relu"))
def test_inplace_module_on_a_leaf_requiring_grad_raises_like_torch(name):
    module = getattr(fnn, {"silu": "SiLU", "relu": "ReLU", "leaky_relu": "LeakyReLU"}[name])(inplace=True)
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad"):
        module(torch.randn(3, requires_grad=True))


def test_linear_act_traced_under_no_grad_still_trains():
    # A forward run without autograd keeps no pre-activation; the backward recomputes it rather than refusing.
    layer = fnn.LinearAct(4, 3, activation="gelu")
    x = torch.randn(2, 4)
    with torch.no_grad():
        traced = torch.jit.trace(layer, (x,))
    out = traced(x)
    out.sum().backward()
    reference = torch.nn.Linear(4, 3)
    reference.load_state_dict(layer.state_dict())
    F.gelu(reference(x)).sum().backward()
    torch.testing.assert_close(layer.weight.grad, reference.weight.grad)
