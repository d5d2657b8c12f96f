"""Train the small GPT of examples/gpt.py, built from fastops modules, with FSDP2 and tensor parallelism, and print
its loss curve against the same model trained in one process.

    torchrun --standalone --nproc-per-node 4 examples/train_gpt_distributed.py [--tp 2] [--steps 30]

The ranks form a 2-D mesh (data parallel x tensor parallel; --tp 2 on 4 processes: 2 x 2). The model is built on
the meta device (no memory), split by tensor parallelism (attention and feed-forward projections by features, the
loss head along the vocabulary: fastops.distributed.VocabParallel), sharded by FSDP2 over the data-parallel ranks,
materialised with to_empty() and loaded from the one-process model's initial weights, so that both runs start
equal. Each data-parallel rank trains on its share of every global batch; activations are recomputed in the
backward (activation checkpointing). Rank 0 then trains the one-process model on the same global batches.
CPU processes talk over gloo; with a GPU per process, NCCL.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpt import GPT, GPTConfig, markov_batches, tensor_parallel_plan

import fastops.nn as fnn

LR = 1e-2


def train_single(modules, cfg: GPTConfig, batches, state: dict, dtype=torch.float32, device="cpu") -> list[float]:
    """The one-process run: the model from `modules` (fastops.nn or torch.nn) loaded with `state`."""
    model = GPT(cfg, modules).to(device=device, dtype=dtype)
    model.load_state_dict(state)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    losses = []
    for tokens, targets in batches:
        loss = model(tokens.to(device), targets.to(device))
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def build_distributed(cfg: GPTConfig, mesh, state: dict | None, *, param_dtype=None, device="cpu",
                      activation_checkpointing: bool = True) -> GPT:
    """The fastops GPT on a (dp, tp) mesh: tensor parallel over mesh['tp'], FSDP2 over mesh['dp']. Built on the meta
    device, then materialised: loaded from `state` (a full state_dict, the same on every rank), or initialised with
    the modules' own reset_parameters when `state` is None."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from torch.distributed.tensor.parallel import parallelize_module

    import fastops.distributed as fdist

    with torch.device("meta"):
        model = GPT(cfg, fnn, activation_checkpointing=activation_checkpointing)
    parallelize_module(model, mesh["tp"], tensor_parallel_plan(model, fdist.VocabParallel()))
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    for block in model.blocks:
        fully_shard(block, mesh=mesh["dp"], mp_policy=mp)
    fully_shard(model, mesh=mesh["dp"], mp_policy=mp)
    model.to_empty(device=device)
    if state is None:
        model.init_weights()
    else:
        # A copy: set_model_state_dict replaces the dict's values with their shards.
        set_model_state_dict(model, dict(state), options=StateDictOptions(full_state_dict=True))
    return model


def train_distributed(cfg: GPTConfig, batches, mesh, state: dict, *, param_dtype=None, device="cpu") -> list[float]:
    """Every rank: the global mean loss of each step (each data-parallel rank trains on its rows of the batch)."""
    import fastops.distributed as fdist

    model = build_distributed(cfg, mesh, state, param_dtype=param_dtype, device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    dp, dp_rank = mesh["dp"].size(), mesh["dp"].get_local_rank()
    losses = []
    for tokens, targets in batches:
        rows = slice(dp_rank * len(tokens) // dp, (dp_rank + 1) * len(tokens) // dp)
        with fdist.loss_parallel():  # the head's vocabulary-parallel loss, forward and backward
            loss = model(tokens[rows].to(device), targets[rows].to(device))
            loss.backward()
        opt.step()
        opt.zero_grad()
        mean = loss.detach().float().clone()
        dist.all_reduce(mean, group=mesh["dp"].get_group())  # equal rows per rank: the mean of means
        losses.append(mean.item() / dp)
    return losses


def run(args, mesh, device: str) -> tuple[list[float], list[float] | None]:
    """Both runs on an initialised process group; rank 0 prints the curves. Returns (the distributed curve, the
    one-process curve on rank 0, else None)."""
    cfg = GPTConfig()
    torch.manual_seed(0)
    state = GPT(cfg, fnn).state_dict()  # the initial weights both runs start from
    batches = markov_batches(cfg, args.batch, args.steps)
    start = time.perf_counter()
    losses = train_distributed(cfg, batches, mesh, state, param_dtype=torch.bfloat16 if args.bf16 else None,
                               device=device)
    seconds = time.perf_counter() - start
    single = None
    if dist.get_rank() == 0:
        start = time.perf_counter()
        single = train_single(fnn, cfg, batches, state, device=device)
        single_seconds = time.perf_counter() - start
        world, tp = dist.get_world_size(), mesh["tp"].size()
        print(f"{world} processes: {world // tp} data parallel x {tp} tensor parallel "
              f"({dist.get_backend()}{', bfloat16 compute' if args.bf16 else ''}); one process: the same model and "
              "batches in float32")
        print(f"{'step':>4}  {'loss ' + str(world) + ' proc':>12}  {'loss 1 proc':>12}  {'difference':>10}")
        for step, (a, b) in enumerate(zip(losses, single)):
            print(f"{step:>4}  {a:>12.6f}  {b:>12.6f}  {a - b:>10.2e}")
        worst = max(abs(a - b) for a, b in zip(losses, single))
        print(f"max |difference| {worst:.2e}; {seconds:.1f} s distributed, {single_seconds:.1f} s in one process",
              flush=True)
    return losses, single


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tp", type=int, default=2, help="tensor-parallel ranks (the rest is data parallel)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16, help="global batch (sequences per step)")
    parser.add_argument("--bf16", action="store_true", help="FSDP2 mixed precision: bfloat16 compute, float32 "
                        "gradient reduction (the one-process run stays float32)")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    use_cuda = torch.cuda.is_available() and torch.cuda.device_count() >= int(os.environ.get("WORLD_SIZE", "1"))
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    else:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    dist.init_process_group("nccl" if use_cuda else "gloo")
    from torch.distributed.device_mesh import init_device_mesh

    world = dist.get_world_size()
    if world % args.tp or args.batch % (world // args.tp):
        raise SystemExit(f"--tp {args.tp} must divide the {world} processes, and the data-parallel ranks the batch")
    device = f"cuda:{torch.cuda.current_device()}" if use_cuda else "cpu"
    mesh = init_device_mesh("cuda" if use_cuda else "cpu", (world // args.tp, args.tp), mesh_dim_names=("dp", "tp"))
    try:
        run(args, mesh, device)
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
