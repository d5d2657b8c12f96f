"""Train an MLP built from fastops modules on scikit-learn's handwritten digits (shipped with scikit-learn, no
download), and check it against the same model in torch.nn.

    python examples/train_digits.py [--epochs 30] [--device cpu|cuda] [--compare-torch]

The data go through a torch Dataset and DataLoader; the model is fastops.nn.Linear / GELU layers with
fastops.nn.CrossEntropyLoss, trained with AdamW. --compare-torch trains the torch.nn twin (same seed, same batches)
and a float64 twin, and reports how far each float32 loss curve is from the float64 one.
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import fastops.nn as fnn


class DigitsDataset(Dataset):
    """8x8 grey-level digit images as 64 features scaled to [0, 1], with their class (0-9)."""

    def __init__(self, train: bool, test_fraction: float = 0.2, seed: int = 0):
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        x_train, x_test, y_train, y_test = train_test_split(
            digits.data, digits.target, test_size=test_fraction, random_state=seed, stratify=digits.target
        )
        x, y = (x_train, y_train) if train else (x_test, y_test)
        self.features = torch.tensor(x, dtype=torch.float32) / 16.0
        self.labels = torch.tensor(y, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.features[i], self.labels[i]


def make_model(modules, hidden: int = 128) -> nn.Sequential:
    """The same MLP from either namespace (fastops.nn or torch.nn): their constructors are interchangeable."""
    return nn.Sequential(
        modules.Linear(64, hidden), modules.GELU(),
        modules.Linear(hidden, hidden), modules.GELU(),
        modules.Linear(hidden, 10),
    )


def train(modules, *, epochs: int, device: str, dtype=torch.float32, seed: int = 0, batch_size: int = 64,
          lr: float = 3e-3, progress: bool = False):
    """Trains make_model(modules); returns (per-step losses, test accuracy)."""
    torch.manual_seed(seed)
    model = make_model(modules).to(device=device, dtype=dtype)
    loss_fn = modules.CrossEntropyLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    loader = DataLoader(DigitsDataset(train=True), batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    losses = []
    bar = _progress(epochs * len(loader), progress)
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            x, y = x.to(device=device, dtype=dtype), y.to(device)
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{loss.item():.4f}")
            bar.update(1)
    bar.close()
    return losses, evaluate(model, device, dtype)


@torch.no_grad()
def evaluate(model: nn.Module, device: str, dtype) -> float:
    model.eval()
    correct = total = 0
    for x, y in DataLoader(DigitsDataset(train=False), batch_size=256):
        pred = model(x.to(device=device, dtype=dtype)).argmax(dim=1).cpu()
        correct += (pred == y).sum().item()
        total += len(y)
    return correct / total


def _progress(total: int, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:
        enabled = False
    if enabled:
        return tqdm(total=total, desc="train", leave=False)

    class _Silent:
        def set_postfix(self, **_):
            pass

        def update(self, _):
            pass

        def close(self):
            pass

    return _Silent()


def curve_gap(curve, reference) -> float:
    return max(abs(a - b) for a, b in zip(curve, reference))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compare-torch", action="store_true")
    args = parser.parse_args(argv)

    losses, accuracy = train(fnn, epochs=args.epochs, device=args.device, progress=sys.stderr.isatty())
    print(f"fastops MLP on digits: final loss {losses[-1]:.4f}, test accuracy {100 * accuracy:.1f}% "
          f"({args.epochs} epochs on {args.device})")
    if args.compare_torch:
        torch_losses, torch_accuracy = train(nn, epochs=args.epochs, device=args.device)
        ref_losses, _ = train(nn, epochs=args.epochs, device=args.device, dtype=torch.float64)
        print(f"torch.nn twin: test accuracy {100 * torch_accuracy:.1f}%; max loss-curve gap to float64: "
              f"fastops {curve_gap(losses, ref_losses):.2e}, torch {curve_gap(torch_losses, ref_losses):.2e}")
    return 0 if accuracy >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
