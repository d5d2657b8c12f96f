"""A small GPT trained on a text file with fastops: Hugging Face's GPT-2 built from a tiny config (random weights,
nothing downloaded), converted with ``fastops.nn.convert(fuse=True)`` and trained inside ``fastops.enable()``, one
character per token.

    python examples/train_gpt.py [--text examples/data/sonnets.txt] [--steps 300] [--sample 200] [--device cpu|cuda]

convert() turns GPT-2's Conv1D projections into fastops GEMMs that read their [in, out] weights in place, fuses
c_fc with the GELU, and the function mode sends GPT-2's loss (transformers' F.cross_entropy call) to fastops. The
program prints fastops.coverage of one training step, trains the fastops model and the same GPT-2 in torch (same
initial weights, same batches), prints both loss curves, then lets the fastops model write a few lines.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import sys

import torch
import transformers

import fastops
from fastops.nn import convert

DEFAULT_TEXT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "sonnets.txt")


def load_text(path: str) -> tuple[torch.Tensor, list[str]]:
    """The text as one tensor of character indices, and the characters."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    return torch.tensor([index[c] for c in text]), chars


def make_model(vocab_size: int, block: int = 64, seed: int = 0) -> transformers.GPT2LMHeadModel:
    """A 2-layer GPT-2 (64 wide, 4 heads). No dropout: the fastops and torch runs then compute the same function."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=vocab_size, n_positions=block, n_embd=64, n_layer=2, n_head=4,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config)


def batches(data: torch.Tensor, *, steps: int, block: int, batch_size: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        starts = torch.randint(0, len(data) - block, (batch_size,), generator=gen)
        yield torch.stack([data[s:s + block] for s in starts.tolist()])


def train(model, data: torch.Tensor, *, steps: int, use_fastops: bool, block: int = 64, batch_size: int = 16,
          lr: float = 3e-3, device: str = "cpu") -> list[float]:
    """AdamW on random windows of the text (the labels are the inputs: transformers shifts them); per-step losses."""
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    with fastops.enable() if use_fastops else contextlib.nullcontext():
        for x in batches(data, steps=steps, block=block, batch_size=batch_size):
            x = x.to(device)
            loss = model(input_ids=x, labels=x).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return losses


@torch.no_grad()
def write(model, chars: list[str], prompt: str, length: int, block: int = 64, temperature: float = 0.8) -> str:
    """Samples `length` characters after `prompt` (characters absent from the text are dropped from it)."""
    model.eval()
    index = {c: i for i, c in enumerate(chars)}
    device = next(model.parameters()).device
    ids = torch.tensor([[index[c] for c in prompt if c in index] or [0]], device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    with fastops.enable():
        for _ in range(length):
            logits = model(input_ids=ids[:, -block:]).logits[:, -1] / temperature
            ids = torch.cat([ids, torch.multinomial(logits.softmax(-1), 1, generator=gen)], dim=1)
    return "".join(chars[i] for i in ids[0].tolist())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", default=DEFAULT_TEXT)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--sample", type=int, default=200, help="characters the trained model writes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    data, chars = load_text(args.text)
    torch_model = make_model(len(chars))
    model = convert(copy.deepcopy(torch_model), fuse=True)
    print(f"{len(data)} characters, {len(chars)} distinct; convert(): swapped {model.fastops_swapped}, "
          f"fused {model.fastops_fused}")
    x = next(batches(data, steps=1, block=64, batch_size=16)).to(args.device)
    with fastops.enable():
        print(fastops.coverage(model.to(args.device), input_ids=x, labels=x))
    curve = train(model, data, steps=args.steps, use_fastops=True, device=args.device)
    torch_curve = train(torch_model, data, steps=args.steps, use_fastops=False, device=args.device)
    print("step   fastops loss   torch loss   difference")
    for step in sorted({*range(0, args.steps, max(1, args.steps // 15)), args.steps - 1}):
        a, b = curve[step], torch_curve[step]
        print(f"{step + 1:4d}   {a:12.6f}   {b:10.6f}   {a - b:+.2e}")
    print("--- the fastops GPT writes:")
    print(write(model, chars, "Shall I ", args.sample))
    return 0 if curve[-1] < curve[0] else 1


if __name__ == "__main__":
    sys.exit(main())
