"""fastops.coverage: counts and FLOPs per op kind on fastops and in torch, and where what stayed in torch came from."""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

import fastops
from fastops.nn import convert

BATCH, IN, HIDDEN, OUT = 5, 8, 16, 4


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(IN, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, OUT))


X, T = torch.randn(BATCH, IN), torch.randint(0, OUT, (BATCH,))
LINE = {}


def loss_of(out):
    LINE["loss"] = inspect.currentframe().f_lineno + 1
    return F.cross_entropy(out, T)


# Forward: one product per layer; backward: the weight gradient of each layer and the input gradient of the second
# (the input X needs none). 2 FLOPs per multiply-add.
FORWARD_FLOPS = 2 * BATCH * (IN * HIDDEN + HIDDEN * OUT)
BACKWARD_FLOPS = 2 * BATCH * (IN * HIDDEN + 2 * HIDDEN * OUT)


def test_torch_model_is_reported_in_torch_with_its_source():
    model = mlp()
    LINE["model"] = inspect.currentframe().f_lineno + 1
    report = fastops.coverage(model, X, loss_fn=loss_of)
    fwd, bwd = report["forward"], report["backward"]
    assert fwd["gemm"] == {"fastops_calls": 0, "torch_calls": 2, "torch_calls_fastops_has": 2, "fastops_flops": 0,
                           "torch_flops": FORWARD_FLOPS, "fastops_share": 0.0}
    assert bwd["gemm"]["torch_flops"] == BACKWARD_FLOPS and bwd["gemm"]["fastops_calls"] == 0
    assert fwd["activation"]["torch_calls_fastops_has"] == bwd["activation"]["torch_calls_fastops_has"] == 1
    # F.cross_entropy runs as log_softmax + nll_loss in torch: both count as the loss, which fastops has.
    assert fwd["loss"]["torch_calls"] == fwd["loss"]["torch_calls_fastops_has"] == 2
    rows = {(r["phase"], r["op"], r["module"]): r for r in report["in_torch"]}
    here = f"tests/test_coverage.py:{LINE['model']}"
    assert rows[("forward", "aten.addmm", "Sequential.0")]["source"] == here
    assert rows[("forward", "aten.addmm", "Sequential.0")]["function"] == "F.linear"
    assert rows[("forward", "aten.gelu", "Sequential.1")]["function"] == "F.gelu"
    # Backward ops are attributed to the forward call that recorded them.
    assert rows[("backward", "aten.mm", "Sequential.2")]["calls"] == 2
    assert rows[("backward", "aten.gelu_backward", "Sequential.1")]["source"] == here
    loss_row = rows[("backward", "aten.nll_loss_backward", "")]  # loss_fn runs outside the model's modules
    assert loss_row["function"] == "F.cross_entropy" and loss_row["source"] == f"tests/test_coverage.py:{LINE['loss']}"
    text = str(report)
    assert "fastops coverage of Sequential" in text and "aten.addmm (F.linear) x1" in text


def test_converted_model_runs_on_fastops():
    model = convert(mlp())
    with fastops.enable():
        report = fastops.coverage(model, X, loss_fn=loss_of)
    for phase, flops in (("forward", FORWARD_FLOPS), ("backward", BACKWARD_FLOPS)):
        gemm = report[phase]["gemm"]
        assert (gemm["fastops_flops"], gemm["torch_flops"], gemm["fastops_share"]) == (flops, 0, 1.0)
        for kind in ("activation", "loss"):
            # cross_entropy writes its gradient in the forward: for an upstream gradient of 1 its backward runs no op
            least = 0 if (phase, kind) == ("backward", "loss") else 1
            assert report[phase][kind]["fastops_calls"] >= least and report[phase][kind]["torch_calls"] == 0
    assert report["in_torch"] == []


def test_parameter_gradients_are_left_as_they_were():
    model = mlp()
    model(X).sum().backward()
    before = [p.grad.clone() for p in model.parameters()]
    fastops.coverage(model, X)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), before))
    model.zero_grad(set_to_none=True)
    fastops.coverage(model, X)
    assert all(p.grad is None for p in model.parameters())


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.patches, self.conv = nn.Linear(8, 24), nn.Conv2d(3, 8, 4, stride=4), nn.Conv2d(3, 8, 3)

    def forward(self, image):
        x = self.patches(image).flatten(2).transpose(1, 2)  # [B, 4, 8]
        q, k, v = self.qkv(x).unsqueeze(1).chunk(3, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v)
        return {"loss": y.square().mean() + self.conv(image).mean()}


def test_attention_and_convolutions_are_their_own_kinds():
    model = Attention()
    image = torch.randn(2, 3, 8, 8)
    report = fastops.coverage(model, image)  # the default loss: the output's "loss"
    assert report["forward"]["attention"]["torch_flops"] > 0 and report["forward"]["attention"]["fastops_calls"] == 0
    assert report["forward"]["conv"]["torch_calls"] == 2
    with fastops.enable():
        report = fastops.coverage(model, image)
    # The patch convolution (stride == kernel) is a GEMM on fastops; the overlapping 3x3 one stays a convolution.
    assert report["forward"]["conv"]["torch_calls"] == 1 and report["forward"]["gemm"]["fastops_calls"] == 2
    assert report["forward"]["gemm"]["fastops_flops"] == 2 * 2 * 4 * (48 * 8 + 8 * 24)
    assert report["forward"]["attention"]["torch_calls"] >= 1
