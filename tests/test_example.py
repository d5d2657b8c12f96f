"""The training example (examples/train_digits.py) as a test: the fastops MLP learns the digits, and its loss curve
matches the torch.nn twin's under the accuracy rule (both float32 curves measured against a float64 run)."""

import os
import sys

import torch
from reference import assert_accurate
from torch import nn

import fastops.nn as fnn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
import train_digits

EPOCHS = 20


def test_fastops_mlp_trains_like_torch():
    losses, accuracy = train_digits.train(fnn, epochs=EPOCHS, device="cpu")
    torch_losses, torch_accuracy = train_digits.train(nn, epochs=EPOCHS, device="cpu")
    ref_losses, _ = train_digits.train(nn, epochs=EPOCHS, device="cpu", dtype=torch.float64)
    assert accuracy >= 0.95, f"test accuracy {accuracy:.3f}"
    assert abs(accuracy - torch_accuracy) <= 0.01
    assert_accurate(torch.tensor(losses), torch.tensor(torch_losses), torch.tensor(ref_losses, dtype=torch.float64),
                    what="loss curve")


def test_model_is_built_from_fastops_modules():
    model = train_digits.make_model(fnn)
    assert {type(m) for m in model} == {fnn.Linear, fnn.GELU}
