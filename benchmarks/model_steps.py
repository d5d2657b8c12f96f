"""Per-step training time of the test models (tests/test_models.py: tiny Hugging Face GPT-2, Llama, BERT, T5, ViT and
a nanoGPT-style GPT, float32 on the CPU) in torch.nn, through ``convert(fuse=True)``, and through ``convert(fuse=True)``
+ ``fastops.enable()``. One step: forward with the loss, zero_grad, backward, AdamW step. The three run interleaved
in one process, 5 steps per sample; printed: the min and median of the samples and the min's ratio to torch's.

    python benchmarks/model_steps.py [gpt2,llama,...] [samples]
"""

from __future__ import annotations

import contextlib
import copy
import pathlib
import statistics
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))

import test_models

import fastops


def _stepper(model, inputs, routed: bool):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        with fastops.enable() if routed else contextlib.nullcontext():
            loss = model(**inputs)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return step


def main() -> None:
    names = sys.argv[1].split(",") if len(sys.argv) > 1 else list(test_models.MODELS)
    samples = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    for name in names:
        model, converted, _, inputs = test_models._models(name)  # the tests' models: same weights, eval mode
        steps = {"torch": _stepper(model, inputs, False),
                 "convert": _stepper(converted, inputs, False),
                 "convert+enable": _stepper(copy.deepcopy(converted), inputs, True)}
        times: dict[str, list[float]] = {k: [] for k in steps}
        for step in steps.values():  # warm-up
            for _ in range(3):
                step()
        for _ in range(samples):
            for key, step in steps.items():
                start = time.perf_counter()
                for _ in range(5):
                    step()
                times[key].append((time.perf_counter() - start) / 5 * 1e3)
        base = min(times["torch"])
        print(name, " | ".join(f"{k}: min {min(v):.2f} ms, median {statistics.median(v):.2f} ms, {min(v) / base:.2f}x"
                               for k, v in times.items()), flush=True)


if __name__ == "__main__":
    main()
