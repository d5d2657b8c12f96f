"""ONNX export of fastops ops: a translation table for ``torch.onnx.export(..., dynamo=True)`` that lowers each
fastops operator to standard ONNX ops, so the exported graph runs in any ONNX runtime without fastops.

    torch.onnx.export(model, args, dynamo=True, custom_translation_table=fastops.onnx.translation_table())

Requires ``onnxscript`` (which torch's exporter itself needs).
"""

from __future__ import annotations

import torch


def translation_table() -> dict:
    """{fastops OpOverload: onnxscript function} for every fastops forward op."""
    from onnxscript import opset18 as op

    def relu(x):
        return op.Relu(x)

    fastops = torch.ops.fastops
    return {
        fastops.relu.default: relu,
    }


def export(model: torch.nn.Module, args: tuple, f=None, **kwargs):
    """torch.onnx.export with dynamo=True and fastops' translation table added (kwargs pass through)."""
    table = dict(translation_table())
    table.update(kwargs.pop("custom_translation_table", {}) or {})
    return torch.onnx.export(model, args, f, dynamo=True, custom_translation_table=table, **kwargs)
