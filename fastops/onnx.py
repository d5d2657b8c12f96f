"""ONNX export of fastops ops: a translation table for ``torch.onnx.export(..., dynamo=True)`` that lowers each
fastops operator to standard ONNX ops, so the exported graph runs in any ONNX runtime without fastops.

    fastops.onnx.export(model, args, "model.onnx")      # torch.onnx.export with the table added
    torch.onnx.export(model, args, dynamo=True, custom_translation_table=fastops.onnx.translation_table())

Requires ``onnxscript`` (which torch's exporter itself needs). Opset 18 primitives only, so any runtime of the last
years runs the result. Covered: every activation (elu, selu, celu, softplus, mish, hardswish, hardsigmoid,
hardtanh / relu6 and glu included), bias_act, the gated units, softmax / log_softmax, matmul, linear and
linear_act, and the losses with every reduction and option: mse_loss, l1_loss, smooth_l1_loss, huber_loss,
binary_cross_entropy (weight), binary_cross_entropy_with_logits (weight, pos_weight), kl_div (log_target), nll_loss
(weight, ignore_index: its composite leaves nll_loss_forward in the graph) and cross_entropy (class indices or
probabilities, weight, ignore_index, label_smoothing: its composite leaves cross_entropy_loss_forward, or
cross_entropy_loss_forward_grad where the logits require grad). The loss lowerings compute
in the inputs' dtype; a class index out of range is the runtime's gather error, not fastops' message.
"""

from __future__ import annotations

import math

import torch


def translation_table() -> dict:
    """{fastops OpOverload: onnxscript function} for every fastops forward op an inference graph can contain."""
    import onnx
    import onnx_ir
    from onnxscript import opset18 as op

    def relu(x):
        return op.Relu(x)

    def gelu(x, approximate: str = "none"):
        if approximate == "tanh":
            inner = op.Mul(op.Add(x, op.Mul(op.Mul(op.Mul(x, x), x), 0.044715)), math.sqrt(2.0 / math.pi))
            return op.Mul(op.Mul(x, 0.5), op.Add(op.Tanh(inner), 1.0))
        return op.Mul(op.Mul(x, 0.5), op.Add(op.Erf(op.Mul(x, math.sqrt(0.5))), 1.0))

    def silu(x):
        return op.Mul(x, op.Sigmoid(x))

    def leaky_relu(x, negative_slope: float = 0.01):
        return op.LeakyRelu(x, alpha=negative_slope)

    def sigmoid(x):
        return op.Sigmoid(x)

    def tanh(x):
        return op.Tanh(x)

    def elu(x, alpha: float = 1.0, scale: float = 1.0, input_scale: float = 1.0):
        negative = op.Mul(op.Sub(op.Exp(op.Mul(x, input_scale)), 1.0), alpha * scale)
        return op.Where(op.Greater(x, 0.0), op.Mul(x, scale), negative)

    def softplus(x, beta: float = 1.0, threshold: float = 20.0):
        scaled = op.Mul(x, beta)
        return op.Where(op.Greater(scaled, threshold), x, op.Div(op.Softplus(scaled), beta))

    def mish(x):
        return op.Mul(x, op.Tanh(op.Softplus(x)))

    def hardswish(x):
        return op.HardSwish(x)

    def hardsigmoid(x):
        return op.HardSigmoid(x, alpha=1.0 / 6.0, beta=0.5)

    def hardtanh(x, min_val: float = -1.0, max_val: float = 1.0):
        return op.Clip(x, op.CastLike(min_val, x), op.CastLike(max_val, x))

    def glu(x, dim: int = -1):
        a, b = op.Split(x, axis=dim, num_outputs=2)
        return op.Mul(a, op.Sigmoid(b))

    activations = {"relu": relu, "gelu": gelu, "gelu_tanh": lambda x: gelu(x, "tanh"), "silu": silu,
                   "sigmoid": sigmoid, "tanh": tanh}

    def bias_act(x, bias, act: str):
        return activations[act](op.Add(x, bias))

    def halves(x):
        gate, up = op.Split(x, axis=-1, num_outputs=2)
        return gate, up

    def swiglu(gate, up):
        return op.Mul(silu(gate), up)

    def swiglu_packed(x):
        return swiglu(*halves(x))

    def geglu(gate, up, approximate: str = "none"):
        return op.Mul(gelu(gate, approximate), up)

    def geglu_packed(x, approximate: str = "none"):
        gate, up = halves(x)
        return geglu(gate, up, approximate)

    def softmax(x, dim: int):
        return op.Softmax(x, axis=dim)

    def log_softmax(x, dim: int):
        return op.LogSoftmax(x, axis=dim)

    def matmul(a, b):
        return op.MatMul(a, b)

    def linear(x, weight, bias=None):
        y = op.MatMul(x, op.Transpose(weight, perm=[1, 0]))
        return y if bias is None else op.Add(y, bias)

    def linear_act(x, weight, bias, act: str, store_pre: bool):
        # (out, pre): an inference graph never reads pre; it is the product before the bias either way.
        y = linear(x, weight)
        return activations[act](y if bias is None else op.Add(y, bias)), y

    # ---- losses (reduction: 0 none, 1 mean, 2 sum) ----

    def reduce(v, reduction: int):
        if reduction == 1:
            return op.ReduceMean(v, keepdims=0)
        if reduction == 2:
            return op.ReduceSum(v, keepdims=0)
        return v

    def mse_loss(x, t, reduction: int = 1):
        d = op.Sub(x, t)
        return reduce(op.Mul(d, d), reduction)

    def l1_loss(x, t, reduction: int = 1):
        return reduce(op.Abs(op.Sub(x, t)), reduction)

    def smooth_l1_loss(x, t, reduction: int = 1, beta: float = 1.0):
        d = op.Sub(x, t)
        ad = op.Abs(d)
        if beta == 0.0:  # torch: the L1 loss
            return reduce(ad, reduction)
        quadratic = op.Div(op.Mul(op.Mul(d, d), 0.5), beta)
        return reduce(op.Where(op.Less(ad, beta), quadratic, op.Sub(ad, 0.5 * beta)), reduction)

    def huber_loss(x, t, reduction: int = 1, delta: float = 1.0):
        d = op.Sub(x, t)
        ad = op.Abs(d)
        linear_part = op.Mul(op.Sub(ad, 0.5 * delta), delta)
        return reduce(op.Where(op.Less(ad, delta), op.Mul(op.Mul(d, d), 0.5), linear_part), reduction)

    def weighted(v, weight):
        return v if weight is None else op.Mul(v, weight)

    def binary_cross_entropy(x, t, weight=None, reduction: int = 1):
        # (t - 1) max(log(1 - x), -100) - t max(log(x), -100), torch's clamped form
        log_x = op.Max(op.Log(x), -100.0)
        log_1mx = op.Max(op.Log(op.Sub(1.0, x)), -100.0)
        loss = op.Sub(op.Mul(op.Sub(t, 1.0), log_1mx), op.Mul(t, log_x))
        return reduce(weighted(loss, weight), reduction)

    def binary_cross_entropy_with_logits(x, t, weight=None, pos_weight=None, reduction: int = 1):
        # (1 - t) x + (1 + (pw - 1) t) softplus(-x), softplus(-x) = log(1 + exp(-|x|)) + max(-x, 0)
        softplus_neg = op.Add(op.Log(op.Add(op.Exp(op.Neg(op.Abs(x))), 1.0)), op.Max(op.Neg(x), 0.0))
        coef = softplus_neg if pos_weight is None else op.Mul(
            op.Add(op.Mul(op.Sub(pos_weight, 1.0), t), 1.0), softplus_neg)
        loss = op.Add(op.Mul(op.Sub(1.0, t), x), coef)
        return reduce(weighted(loss, weight), reduction)

    def kl_div(x, t, reduction: int = 1, log_target: bool = False):
        if log_target:
            loss = op.Mul(op.Exp(t), op.Sub(t, x))
        else:  # xlogy(t, t) - t x: 0 where t == 0
            xlogy = op.Where(op.Equal(t, 0.0), 0.0, op.Mul(t, op.Log(t)))
            loss = op.Sub(xlogy, op.Mul(t, x))
        return reduce(loss, reduction)

    def as_double(v):
        return op.Cast(v, to=onnx.TensorProto.DOUBLE)

    def ints(*values):
        return op.Constant(value_ints=list(values))

    def nll_loss_forward(input, target, weight, ignore_index: int):
        # input [C] / [N, C] / [N, C, d...] read as [outer, C, inner]; target: the outer * inner classes (any shape,
        # read flat), one loss and weight per class, float64.
        target = op.Reshape(target, ints(-1))
        if len(input.shape) == 1:
            rows = op.Reshape(input, ints(1, -1, 1))
        else:
            rows = op.Reshape(input, op.Concat(op.Shape(input, start=0, end=2), ints(-1), axis=0))
        kept = op.Not(op.Equal(target, ignore_index))
        safe = op.Where(kept, target, op.CastLike(0, target))
        index = op.Reshape(safe, op.Concat(op.Shape(rows, start=0, end=1), ints(1, -1), axis=0))
        picked = op.Reshape(op.GatherElements(rows, index, axis=1), ints(-1))
        picked = as_double(picked)
        w = as_double(op.Gather(weight, safe)) if weight is not None else op.CastLike(1.0, picked)
        row_weight = op.Where(kept, w, op.CastLike(0.0, picked))
        return op.Neg(op.Mul(picked, row_weight)), row_weight

    def target_is_probability(target) -> bool:
        return target.dtype not in (onnx_ir.DataType.INT64, onnx_ir.DataType.UINT8)

    def index_kept(target, ignore_index: int):
        """(whether each row's class counts, the class with 0 for ignored rows)."""
        kept = op.Not(op.Equal(target, ignore_index))
        return kept, op.Where(kept, target, op.CastLike(0, target))

    def target_distribution(logits, target, weight, ignore_index: int, label_smoothing: float):
        """q [N, C]: the (smoothed, weighted) target's weight on each class, 0 on ignored rows (losses_cpu.cpp)."""
        classes = op.Shape(logits, start=1, end=2)
        spread = op.Div(label_smoothing, op.CastLike(classes, logits))  # eps / C
        if target_is_probability(target):
            q = op.Add(op.Mul(target, 1.0 - label_smoothing), spread)
        else:
            kept, safe = index_kept(target, ignore_index)
            one_hot = op.OneHot(safe, classes, op.CastLike(op.Constant(value_floats=[0.0, 1.0]), logits), axis=-1)
            q = op.Mul(op.Add(op.Mul(one_hot, 1.0 - label_smoothing), spread),
                       op.CastLike(op.Unsqueeze(kept, ints(1)), logits))
        return q if weight is None else op.Mul(q, op.Unsqueeze(op.CastLike(weight, logits), ints(0)))

    def cross_entropy_rows(logits, target, weight, ignore_index: int, label_smoothing: float):
        """(loss, row_weight, lse, target_mass, q) of the rows, in the logits' dtype: loss = -sum_j q_j log p_j,
        target_mass = sum_j q_j, row_weight = w[target] (0 ignored; 1 for probabilities)."""
        q = target_distribution(logits, target, weight, ignore_index, label_smoothing)
        loss = op.Neg(op.ReduceSum(op.Mul(q, op.LogSoftmax(logits, axis=1)), ints(1), keepdims=0))
        lse = op.ReduceLogSumExp(logits, ints(1), keepdims=0)
        mass = op.ReduceSum(q, ints(1), keepdims=0)
        one = op.Expand(op.CastLike(1.0, loss), op.Shape(loss))
        if target_is_probability(target):
            return loss, one, lse, mass, q
        kept, safe = index_kept(target, ignore_index)
        w_y = one if weight is None else op.CastLike(op.Gather(weight, safe), loss)
        zero = op.CastLike(0.0, loss)
        return loss, op.Where(kept, w_y, zero), op.Where(kept, lse, zero), mass, q

    def math_type(v):  # float32, or float64 for float64 logits (fastops' loss_math_type)
        return op.Cast(v, to=onnx.TensorProto.DOUBLE if v.dtype == onnx_ir.DataType.DOUBLE else onnx.TensorProto.FLOAT)

    def cross_entropy_forward(logits, target, weight, ignore_index: int, label_smoothing: float):
        loss, row_weight, lse, mass, _ = cross_entropy_rows(logits, target, weight, ignore_index, label_smoothing)
        return as_double(loss), as_double(row_weight), as_double(lse), math_type(mass)

    def cross_entropy_loss_forward(logits, target, weight, reduction: int, ignore_index: int, label_smoothing: float,
                                   dtype: int):
        # (loss reduced and cast to dtype, lse, target mass, 'mean''s divisor: the summed row weight; 1 otherwise)
        loss, row_weight, lse, mass, _ = cross_entropy_rows(logits, target, weight, ignore_index, label_smoothing)
        loss = as_double(loss)
        divisor = op.ReduceSum(as_double(row_weight), keepdims=0) if reduction == 1 else op.CastLike(1.0, loss)
        if reduction != 0:
            loss = op.Div(op.ReduceSum(loss, keepdims=0), divisor)
        return op.Cast(loss, to=dtype), as_double(lse), math_type(mass), divisor

    def cross_entropy_loss_forward_grad(logits, target, weight, reduction: int, ignore_index: int,
                                        label_smoothing: float, dtype: int):
        # (the reduced loss, its gradient d loss / d logits, and the gradient's scale: 1 / divisor for 'mean', else 1)
        loss, row_weight, _, mass, q = cross_entropy_rows(logits, target, weight, ignore_index, label_smoothing)
        total = op.ReduceSum(as_double(loss), keepdims=0)
        one = op.CastLike(1.0, total)
        scale = op.Div(one, op.ReduceSum(as_double(row_weight), keepdims=0)) if reduction == 1 else one
        grad = op.Mul(op.Sub(op.Mul(op.Unsqueeze(mass, ints(1)), op.Softmax(logits, axis=1)), q),
                      op.CastLike(scale, logits))
        return op.Cast(op.Mul(total, scale), to=dtype), grad, scale

    fastops = torch.ops.fastops
    return {
        fastops.relu.default: relu,
        fastops.gelu.default: gelu,
        fastops.silu.default: silu,
        fastops.leaky_relu.default: leaky_relu,
        fastops.sigmoid.default: sigmoid,
        fastops.tanh.default: tanh,
        fastops.elu.default: elu,
        fastops.softplus.default: softplus,
        fastops.mish.default: mish,
        fastops.hardswish.default: hardswish,
        fastops.hardsigmoid.default: hardsigmoid,
        fastops.hardtanh.default: hardtanh,
        fastops.glu.default: glu,
        fastops.bias_act.default: bias_act,
        fastops.swiglu.default: swiglu,
        fastops.swiglu.packed: swiglu_packed,
        fastops.geglu.default: geglu,
        fastops.geglu.packed: geglu_packed,
        fastops.softmax.default: softmax,
        fastops.log_softmax.default: log_softmax,
        fastops.matmul.default: matmul,
        fastops.linear.default: linear,
        fastops.linear_act.default: linear_act,
        fastops.mse_loss.default: mse_loss,
        fastops.l1_loss.default: l1_loss,
        fastops.smooth_l1_loss.default: smooth_l1_loss,
        fastops.huber_loss.default: huber_loss,
        fastops.binary_cross_entropy.default: binary_cross_entropy,
        fastops.binary_cross_entropy_with_logits.default: binary_cross_entropy_with_logits,
        fastops.kl_div.default: kl_div,
        fastops.nll_loss_forward.default: nll_loss_forward,
        fastops.cross_entropy_forward.default: cross_entropy_forward,
        fastops.cross_entropy_loss_forward.default: cross_entropy_loss_forward,
        fastops.cross_entropy_loss_forward_grad.default: cross_entropy_loss_forward_grad,
    }


def export(model: torch.nn.Module, args: tuple, f=None, **kwargs):
    """torch.onnx.export with dynamo=True and fastops' translation table added (kwargs pass through)."""
    table = dict(translation_table())
    table.update(kwargs.pop("custom_translation_table", {}) or {})
    return torch.onnx.export(model, args, f, dynamo=True, custom_translation_table=table, **kwargs)
