"""The end-to-end row: one training step of an MLP (Linear 1024->4096->4096->1024->1000 with GELU, cross entropy,
AdamW, bfloat16 autocast) in torch eager, torch.compile, fastops and fastops + torch.compile."""

from __future__ import annotations

import functools
import itertools

import torch
from torch import nn

from ..nn import convert
from .core import Case

WIDTHS = (1024, 4096, 4096, 1024, 1000)


def make_mlp(widths, device: str) -> nn.Sequential:
    layers = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(fan_in, fan_out, device=device))
        if i < len(widths) - 2:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


def train_step(model, loss_fn, optimizer, device_type: str, x, target):
    with torch.autocast(device_type, dtype=torch.bfloat16):
        loss = loss_fn(model(x), target)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


def step_provider(device: str, widths, *, fastops: bool, compiled: bool):
    """A callable (x, target) -> loss that owns its model (same seed for every provider) and AdamW state."""
    torch.manual_seed(0)
    model = make_mlp(widths, device)
    loss_fn = nn.CrossEntropyLoss()
    if fastops:
        model, loss_fn = convert(model), convert(loss_fn)
    if compiled:
        model = torch.compile(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    return functools.partial(train_step, model, loss_fn, optimizer, "cuda" if device.startswith("cuda") else "cpu")


def cases(device: str, quick: bool) -> list[Case]:
    if device == "cuda":
        batch, widths = (1024 if quick else 8192), WIDTHS
    else:
        batch, widths = (64 if quick else 256), tuple(w // 4 for w in WIDTHS)
    weights = sum(a * b for a, b in itertools.pairwise(widths))

    def make_inputs(dev):
        return (torch.randn(batch, widths[0], device=dev), torch.randint(0, widths[-1], (batch,), device=dev))

    providers = {
        "torch": step_provider(device, widths, fastops=False, compiled=False),
        "compile": step_provider(device, widths, fastops=False, compiled=True),
        "fastops": step_provider(device, widths, fastops=True, compiled=False),
        "fastops+compile": step_provider(device, widths, fastops=True, compiled=True),
    }
    return [Case(op="mlp_train_step", dtype="bfloat16", shape=f"{batch}x{widths[0]}x{widths[1]}",
                 make_inputs=make_inputs, providers=providers, modes=("full",), whole_step=True,
                 flops=lambda mode: 6.0 * batch * weights)]  # forward 2, backward 4 FLOPs per weight and row
