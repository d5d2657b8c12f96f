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
    """A callable (x, target) -> loss that owns its model (same seed for every provider) and AdamW state, built at
    its first call: listing the cases (and checking their row names on a machine without a GPU) allocates nothing."""
    state = {}

    def step(x, target):
        if "step" not in state:
            torch.manual_seed(0)
            model = make_mlp(widths, device)
            loss_fn = nn.CrossEntropyLoss()
            if fastops:
                model, loss_fn = convert(model), convert(loss_fn)
            if compiled:
                model = torch.compile(model)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
            state["step"] = functools.partial(train_step, model, loss_fn, optimizer,
                                              "cuda" if device.startswith("cuda") else "cpu")
        return state["step"](x, target)

    return step


PROVIDERS = ("torch", "compile", "fastops", "fastops+compile")


def train_step_case(device: str, batch: int, widths=WIDTHS, providers=PROVIDERS) -> Case:
    """mlp_train_step at `batch` x widths[0] x widths[1]; `providers` picks which of the four own a model (each is
    built here: a seeded model, its AdamW state)."""
    weights = sum(a * b for a, b in itertools.pairwise(widths))

    def make_inputs(dev):
        return (torch.randn(batch, widths[0], device=dev), torch.randint(0, widths[-1], (batch,), device=dev))

    flags = {"torch": (False, False), "compile": (False, True), "fastops": (True, False),
             "fastops+compile": (True, True)}
    built = {name: step_provider(device, widths, fastops=flags[name][0], compiled=flags[name][1])
             for name in providers}
    return Case(op="mlp_train_step", dtype="bfloat16", shape=f"{batch}x{widths[0]}x{widths[1]}",
                make_inputs=make_inputs, providers=built, modes=("full",), whole_step=True,
                flops=lambda mode: 6.0 * batch * weights)  # forward 2, backward 4 FLOPs per weight and row


def cases(device: str, quick: bool) -> list[Case]:
    if device == "cuda":
        return [train_step_case(device, 1024 if quick else 8192)]
    return [train_step_case(device, 64 if quick else 256, tuple(w // 4 for w in WIDTHS))]
