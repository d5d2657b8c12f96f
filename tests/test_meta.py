"""Meta tensors (torch's deferred and meta-device initialisation, FSDP): every functional op runs on them and gives
torch's shape and dtype; a CPU tensor mixed with a meta one raises, as in torch, instead of returning uninitialised
memory."""

import pytest
import torch
import torch.nn.functional as F

import fastops.functional as FF


def _t(*shape, device="cpu", dtype=torch.float32, **kw):
    return torch.randn(*shape, dtype=dtype, **kw).to(device)


# name -> (fastops call, torch call), each taking a device-picking factory: make(shape..., key=...) builds a tensor on
# the device the case asks for that argument.
CASES = {
    "relu": (lambda m: FF.relu(m("x", 4, 5)), lambda m: F.relu(m("x", 4, 5))),
    "gelu": (lambda m: FF.gelu(m("x", 4, 5)), lambda m: F.gelu(m("x", 4, 5))),
    "softmax": (lambda m: FF.softmax(m("x", 4, 5), 0), lambda m: F.softmax(m("x", 4, 5), 0)),
    "log_softmax": (lambda m: FF.log_softmax(m("x", 4, 5), -1, dtype=torch.float64),
                    lambda m: F.log_softmax(m("x", 4, 5), -1, dtype=torch.float64)),
    "bias_act": (lambda m: FF.bias_act(m("x", 4, 5), m("bias", 5), "gelu"), lambda m: F.gelu(m("x", 4, 5) + m("bias", 5))),
    "swiglu": (lambda m: FF.swiglu(m("x", 4, 5), m("up", 4, 5)), lambda m: F.silu(m("x", 4, 5)) * m("up", 4, 5)),
    "matmul": (lambda m: FF.matmul(m("x", 4, 5), m("w", 5, 3)), lambda m: torch.matmul(m("x", 4, 5), m("w", 5, 3))),
    "linear": (lambda m: FF.linear(m("x", 4, 5), m("w", 3, 5), m("bias", 3)),
               lambda m: F.linear(m("x", 4, 5), m("w", 3, 5), m("bias", 3))),
    "mse_loss": (lambda m: FF.mse_loss(m("x", 4, 5), m("target", 4, 5)), lambda m: F.mse_loss(m("x", 4, 5), m("target", 4, 5))),
    "l1_loss": (lambda m: FF.l1_loss(m("x", 4, 5), m("target", 4, 5)), lambda m: F.l1_loss(m("x", 4, 5), m("target", 4, 5))),
    "bce": (lambda m: FF.binary_cross_entropy(m("x", 4, 5), m("target", 4, 5), m("weight", 5), reduction="none"),
            lambda m: F.binary_cross_entropy(m("x", 4, 5), m("target", 4, 5), m("weight", 5), reduction="none")),
    "smooth_l1_loss": (lambda m: FF.smooth_l1_loss(m("x", 4, 5), m("target", 4, 5), reduction="none"),
                       lambda m: F.smooth_l1_loss(m("x", 4, 5), m("target", 4, 5), reduction="none")),
    "huber_loss": (lambda m: FF.huber_loss(m("x", 4, 5), m("target", 4, 5)),
                   lambda m: F.huber_loss(m("x", 4, 5), m("target", 4, 5))),
    "bce_with_logits": (lambda m: FF.binary_cross_entropy_with_logits(m("x", 4, 5), m("target", 4, 5), m("weight", 4, 5)),
                        lambda m: F.binary_cross_entropy_with_logits(m("x", 4, 5), m("target", 4, 5), m("weight", 4, 5))),
    "nll_loss": (lambda m: FF.nll_loss(m("x", 4, 5), m("index", 4), weight=m("weight", 5)),
                 lambda m: F.nll_loss(m("x", 4, 5), m("index", 4), weight=m("weight", 5))),
    "nll_loss_spatial_none": (lambda m: FF.nll_loss(m("x", 2, 5, 3), m("index", 2, 3), reduction="none"),
                              lambda m: F.nll_loss(m("x", 2, 5, 3), m("index", 2, 3), reduction="none")),
    "cross_entropy": (lambda m: FF.cross_entropy(m("x", 4, 5), m("index", 4), weight=m("weight", 5)),
                      lambda m: F.cross_entropy(m("x", 4, 5), m("index", 4), weight=m("weight", 5))),
    "cross_entropy_probabilities": (lambda m: FF.cross_entropy(m("x", 4, 5), m("target", 4, 5), reduction="none"),
                                    lambda m: F.cross_entropy(m("x", 4, 5), m("target", 4, 5), reduction="none")),
}


def _maker(devices: dict, default: str):
    def make(key, *shape):
        device = devices.get(key, default)
        if key == "index":
            return torch.randint(0, shape[-1] + 1, shape).to(device)
        return torch.rand(*shape).to(device)

    return make


@pytest.mark.parametrize("name", CASES)
def test_meta_tensors_give_torch_shape_and_dtype(name):
    fast, native = CASES[name]
    out, expected = fast(_maker({}, "meta")), native(_maker({}, "meta"))
    assert out.device.type == "meta"
    assert out.shape == expected.shape and out.dtype == expected.dtype


# The operand put on the meta device while the others stay on the CPU (the ops with more than one tensor).
MIXED = {"l1_loss": "target", "bce": "weight", "bias_act": "bias", "swiglu": "up", "matmul": "w", "linear": "bias", "mse_loss": "target",
         "smooth_l1_loss": "target", "huber_loss": "target", "bce_with_logits": "weight", "cross_entropy": "weight", "nll_loss": "weight",
         "cross_entropy_probabilities": "target"}


@pytest.mark.parametrize("name", MIXED)
def test_cpu_mixed_with_meta_raises(name):
    fast, _ = CASES[name]
    with pytest.raises(RuntimeError, match="device"):
        fast(_maker({MIXED[name]: "meta"}, "cpu"))
