"""TorchScript, the deployment path the PyTorch books teach first: every fastops.nn module scripts and traces; a
scripted and a traced model, saved to a file, load in a fresh process that only imports fastops, give the same
outputs and train (gradients equal to the same model in torch.nn)."""

import os
import subprocess
import sys
import tempfile

import pytest
import torch
from torch import nn

import fastops.nn as fnn


class WithLoss(nn.Module):
    """A model whose forward returns the loss of a layer's output, so a loss module is exported with its layer."""

    def __init__(self, layer: nn.Module, loss: nn.Module) -> None:
        super().__init__()
        self.layer = layer
        self.loss = loss

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(self.layer(x), target)


class LinearGELU(nn.Linear):
    """torch.nn's LinearAct: the same parameters and state_dict keys."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return nn.functional.gelu(super().forward(input))


def _class_target(n=6, c=5):
    return torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(1))


def _prob_target(n=6, c=5):
    return torch.rand(n, c, generator=torch.Generator().manual_seed(1))


# name -> (fastops model, torch twin, example inputs). Built per test (fresh parameters, same seed both sides).
def _cases():
    x = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))

    def act(f, t):
        return (nn.Sequential(fnn.Linear(8, 5), f), nn.Sequential(nn.Linear(8, 5), t), (x,))

    def loss(f, t, target):
        return (WithLoss(fnn.Linear(8, 5), f), WithLoss(nn.Linear(8, 5), t), (x, target))

    return {
        "Linear": (fnn.Linear(8, 5), nn.Linear(8, 5), (x,)),
        "LinearAct": (fnn.LinearAct(8, 5, activation="gelu"), LinearGELU(8, 5), (x,)),
        "ReLU": act(fnn.ReLU(), nn.ReLU()),
        "GELU": act(fnn.GELU("tanh"), nn.GELU("tanh")),
        "SiLU": act(fnn.SiLU(), nn.SiLU()),
        "LeakyReLU": act(fnn.LeakyReLU(0.2), nn.LeakyReLU(0.2)),
        "Sigmoid": act(fnn.Sigmoid(), nn.Sigmoid()),
        "Tanh": act(fnn.Tanh(), nn.Tanh()),
        "Softmax": act(fnn.Softmax(dim=1), nn.Softmax(dim=1)),
        "LogSoftmax": act(fnn.LogSoftmax(dim=-1), nn.LogSoftmax(dim=-1)),
        "SwiGLU": (nn.Sequential(fnn.Linear(8, 10), fnn.SwiGLU()), None, (x,)),
        "GeGLU": (nn.Sequential(fnn.Linear(8, 10), fnn.GeGLU()), None, (x,)),
        "CrossEntropyLoss": loss(fnn.CrossEntropyLoss(label_smoothing=0.1), nn.CrossEntropyLoss(label_smoothing=0.1),
                                 _class_target()),
        "CrossEntropyLoss_probabilities": loss(fnn.CrossEntropyLoss(), nn.CrossEntropyLoss(), _prob_target()),
        "NLLLoss": (WithLoss(nn.Sequential(fnn.Linear(8, 5), fnn.LogSoftmax(dim=1)), fnn.NLLLoss(ignore_index=2)),
                    WithLoss(nn.Sequential(nn.Linear(8, 5), nn.LogSoftmax(dim=1)), nn.NLLLoss(ignore_index=2)),
                    (x, _class_target())),
        "MSELoss": loss(fnn.MSELoss(), nn.MSELoss(), _prob_target()),
        "L1Loss": loss(fnn.L1Loss(), nn.L1Loss(), _prob_target()),
        "BCELoss": (WithLoss(nn.Sequential(fnn.Linear(8, 5), fnn.Sigmoid()), fnn.BCELoss(weight=torch.rand(5))),
                    WithLoss(nn.Sequential(nn.Linear(8, 5), nn.Sigmoid()), nn.BCELoss(weight=torch.rand(5))),
                    (x, _prob_target())),
        "SmoothL1Loss": loss(fnn.SmoothL1Loss(beta=0.5), nn.SmoothL1Loss(beta=0.5), _prob_target()),
        "HuberLoss": loss(fnn.HuberLoss(delta=0.5), nn.HuberLoss(delta=0.5), _prob_target()),
        "LinearCrossEntropyLoss": (fnn.LinearCrossEntropyLoss(8, 5, bias=True, label_smoothing=0.1),
                                   nn.LinearCrossEntropyLoss(8, 5, bias=True, label_smoothing=0.1),
                                   (x, _class_target())),
        "BCEWithLogitsLoss": loss(fnn.BCEWithLogitsLoss(pos_weight=torch.full((5,), 2.0)),
                                  nn.BCEWithLogitsLoss(pos_weight=torch.full((5,), 2.0)), _prob_target()),
    }


CASES = list(_cases())


def _build(name):
    torch.manual_seed(0)
    fast, _, inputs = _cases()[name]
    torch.manual_seed(0)
    native = _cases()[name][1]
    if native is not None:
        native.load_state_dict(fast.state_dict())
    return fast, native, inputs


def _outputs_and_grads(model, inputs):
    out = model(*inputs)
    out.sum().backward()
    return out.detach(), [p.grad.clone() for p in model.parameters()]


def _export(name, export):
    fast, native, inputs = _build(name)
    exported = torch.jit.script(fast) if export == "script" else torch.jit.trace(fast, inputs)
    return exported, fast, native, inputs


@pytest.mark.parametrize("export", ("script", "trace"))
@pytest.mark.parametrize("name", CASES)
def test_exported_module_matches_eager_and_torch(name, export):
    exported, fast, native, inputs = _export(name, export)
    out, grads = _outputs_and_grads(exported, inputs)
    torch.testing.assert_close(out, fast(*inputs).detach(), rtol=0, atol=0)
    if native is not None:
        native_out, native_grads = _outputs_and_grads(native, inputs)
        torch.testing.assert_close(out, native_out)
        for g, n in zip(grads, native_grads):
            torch.testing.assert_close(g, n)


FRESH_PROCESS = """
import sys, torch, fastops
for model_path, data_path in zip(sys.argv[1::2], sys.argv[2::2]):
    model = torch.jit.load(model_path)
    data = torch.load(data_path)
    out = model(*data["inputs"])
    torch.testing.assert_close(out, data["out"], rtol=0, atol=0, msg=model_path)
    out.sum().backward()
    for p, g in zip(model.parameters(), data["grads"]):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0, msg=model_path)
print("ok")
"""


def test_saved_modules_load_and_train_in_a_fresh_process():
    # One process loads every saved model (a process per model would cost an import of torch each).
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for name in CASES:
            for export in ("script", "trace"):
                exported, _, _, inputs = _export(name, export)
                out, grads = _outputs_and_grads(exported, inputs)
                model_path = os.path.join(tmp, f"{name}-{export}.pt")
                data_path = os.path.join(tmp, f"{name}-{export}-data.pt")
                exported.save(model_path)
                torch.save({"inputs": inputs, "out": out, "grads": grads}, data_path)
                paths += [model_path, data_path]
        result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, *paths], capture_output=True, text=True,
                                timeout=300, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
