"""The classic PyTorch book's image classifier on fastops: ``Linear - Tanh - Linear - LogSoftmax`` trained with
``NLLLoss``, then the same network without the LogSoftmax trained with ``CrossEntropyLoss`` (the book's next step:
the two are the same loss), with plain SGD as in the book (a larger step, 0.1, for 20 epochs instead of 100).

The book trains on CIFAR-10, which torchvision downloads. This program needs no network: its images are the 1797
8x8 grey-level digits that ship inside scikit-learn's wheel (``sklearn/datasets/data/digits.csv.gz``, read by
``sklearn.datasets.load_digits``), 10 classes as in CIFAR-10; the network is the book's with 64 inputs instead of
3072.

    python examples/train_book_classifier.py [--epochs 20] [--loss nll|ce|both] [--device cpu|cuda]

For each loss it prints fastops.coverage of the fastops model (one batch), then trains it and the same network in
torch.nn (same initial weights, same batches) and prints both loss curves and test accuracies.
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader
from train_digits import DigitsDataset

import fastops
import fastops.nn as fnn
from fastops.coverage import Report


def has_log_softmax_nll(modules=fnn) -> bool:
    """fastops.nn gets LogSoftmax and NLLLoss with its softmax / nll_loss ops; until then only 'ce' runs."""
    return hasattr(modules, "LogSoftmax") and hasattr(modules, "NLLLoss")


def make_model(modules, loss: str, hidden: int = 512) -> nn.Sequential:
    """The book's network from either namespace (fastops.nn or torch.nn); 'nll' ends in LogSoftmax."""
    layers = [modules.Linear(64, hidden), modules.Tanh(), modules.Linear(hidden, 10)]
    if loss == "nll":
        layers.append(modules.LogSoftmax(dim=1))
    return nn.Sequential(*layers)


def make_loss(modules, loss: str) -> nn.Module:
    return modules.NLLLoss() if loss == "nll" else modules.CrossEntropyLoss()


def train(modules, loss: str, *, epochs: int, device: str = "cpu", dtype=torch.float32, seed: int = 0,
          batch_size: int = 64, lr: float = 0.1):
    """Trains make_model(modules, loss) with SGD; returns (per-epoch mean losses, test accuracy)."""
    torch.manual_seed(seed)
    model = make_model(modules, loss).to(device=device, dtype=dtype)
    loss_fn = make_loss(modules, loss)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loader = DataLoader(DigitsDataset(train=True), batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    curve = []
    for _ in range(epochs):
        total = 0.0
        for x, y in loader:
            out = model(x.to(device=device, dtype=dtype))
            batch_loss = loss_fn(out, y.to(device))
            optimizer.zero_grad(set_to_none=True)
            batch_loss.backward()
            optimizer.step()
            total += batch_loss.item()
        curve.append(total / len(loader))
    return curve, accuracy(model, device, dtype)


@torch.no_grad()
def accuracy(model: nn.Module, device: str, dtype) -> float:
    correct = total = 0
    for x, y in DataLoader(DigitsDataset(train=False), batch_size=256):
        correct += (model(x.to(device=device, dtype=dtype)).argmax(dim=1).cpu() == y).sum().item()
        total += len(y)
    return correct / total


def coverage_report(loss: str, device: str = "cpu") -> Report:
    model = make_model(fnn, loss).to(device)
    x, y = next(iter(DataLoader(DigitsDataset(train=True), batch_size=64)))
    loss_fn = make_loss(fnn, loss)
    return fastops.coverage(model, x.to(device), loss_fn=lambda out: loss_fn(out, y.to(device)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--loss", choices=("nll", "ce", "both"), default="both")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    losses = ("nll", "ce") if args.loss == "both" else (args.loss,)
    if "nll" in losses and not has_log_softmax_nll():
        print("fastops.nn has no LogSoftmax / NLLLoss yet: the NLLLoss model is left out", file=sys.stderr)
        losses = tuple(x for x in losses if x != "nll")
    worst = 1.0
    for loss in losses:
        name = "Linear-Tanh-Linear-LogSoftmax + NLLLoss" if loss == "nll" else "Linear-Tanh-Linear + CrossEntropyLoss"
        print(f"== {name}")
        print(coverage_report(loss, args.device))
        curve, acc = train(fnn, loss, epochs=args.epochs, device=args.device)
        torch_curve, torch_acc = train(nn, loss, epochs=args.epochs, device=args.device)
        print("epoch   fastops loss   torch loss   difference")
        for epoch, (a, b) in enumerate(zip(curve, torch_curve), 1):
            print(f"{epoch:5d}   {a:12.6f}   {b:10.6f}   {a - b:+.2e}")
        print(f"test accuracy: fastops {100 * acc:.1f}%, torch {100 * torch_acc:.1f}%")
        worst = min(worst, acc)
    return 0 if worst >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
