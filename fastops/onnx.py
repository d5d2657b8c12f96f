"""ONNX export of fastops ops: a translation table for ``torch.onnx.export(..., dynamo=True)`` that lowers each
fastops operator to standard ONNX ops, so the exported graph runs in any ONNX runtime without fastops.

    fastops.onnx.export(model, args, "model.onnx")      # torch.onnx.export with the table added
    torch.onnx.export(model, args, dynamo=True, custom_translation_table=fastops.onnx.translation_table())

Requires ``onnxscript`` (which torch's exporter itself needs). Opset 18 primitives only, so any runtime of the last
years runs the result. Covered: every activation (elu, selu, celu, softplus, mish, hardswish, hardsigmoid,
hardtanh / relu6 and glu included), bias_act, the gated units, softmax / log_softmax, matmul, linear and linear_act
(the forward ops a model's inference graph contains).
"""

from __future__ import annotations

import math

import torch


def translation_table() -> dict:
    """{fastops OpOverload: onnxscript function} for every fastops forward op an inference graph can contain."""
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
    }


def export(model: torch.nn.Module, args: tuple, f=None, **kwargs):
    """torch.onnx.export with dynamo=True and fastops' translation table added (kwargs pass through)."""
    table = dict(translation_table())
    table.update(kwargs.pop("custom_translation_table", {}) or {})
    return torch.onnx.export(model, args, f, dynamo=True, custom_translation_table=table, **kwargs)
