"""A small GPT (decoder-only transformer) from either fastops.nn or torch.nn modules, for the distributed example
(examples/train_gpt_distributed.py) and its tests.

Blocks are Llama-style: RMSNorm, causal self-attention (torch's scaled_dot_product_attention; fastops has no
attention kernel) with separate q/k/v/o projections, RMSNorm, SwiGLU feed-forward (w2(silu(w1 x) * w3 x)). The head
is a LinearCrossEntropyLoss: the [tokens, vocabulary] logits are never held whole. Built from fastops.nn, every
Linear, the gated unit and the head run fastops kernels; from torch.nn, the same model in plain torch, with the same
parameter names, init and state_dict keys (torch >= 2.13 for nn.LinearCrossEntropyLoss).

Separate q/k/v and w1/w3 projections (rather than fused ones) keep tensor parallelism simple: each is split by
output features (ColwiseParallel) and wo / w2 by input features (RowwiseParallel).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclasses.dataclass
class GPTConfig:
    vocab_size: int = 128
    seq_len: int = 16
    dim: int = 32
    n_layers: int = 2
    n_heads: int = 4
    hidden: int = 64  # feed-forward width


class TorchSwiGLU(nn.Module):
    """silu(gate) * up in plain torch: the twin of fastops.nn.SwiGLU's two-input form."""

    def forward(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return F.silu(gate) * up


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig, modules) -> None:
        super().__init__()
        self.head_dim = cfg.dim // cfg.n_heads
        self.wq, self.wk, self.wv, self.wo = (modules.Linear(cfg.dim, cfg.dim, bias=False) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        # -1 heads: under tensor parallelism each rank holds n_heads / ranks of them.
        q, k, v = (w(x).view(b, s, -1, self.head_dim).transpose(1, 2) for w in (self.wq, self.wk, self.wv))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(y.transpose(1, 2).reshape(b, s, -1))


class FeedForward(nn.Module):
    def __init__(self, cfg: GPTConfig, modules) -> None:
        super().__init__()
        self.w1 = modules.Linear(cfg.dim, cfg.hidden, bias=False)
        self.w3 = modules.Linear(cfg.dim, cfg.hidden, bias=False)
        self.w2 = modules.Linear(cfg.hidden, cfg.dim, bias=False)
        self.glu = getattr(modules, "SwiGLU", TorchSwiGLU)()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.glu(self.w1(x), self.w3(x)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, modules, activation_checkpointing: bool) -> None:
        super().__init__()
        self.attn_norm, self.mlp_norm = nn.RMSNorm(cfg.dim), nn.RMSNorm(cfg.dim)
        self.attn, self.mlp = Attention(cfg, modules), FeedForward(cfg, modules)
        self.activation_checkpointing = activation_checkpointing

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation_checkpointing and torch.is_grad_enabled():
            # Recomputed in the backward (the fastops ops included): keeps the state_dict keys, unlike a wrapper.
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)


class GPT(nn.Module):
    """forward(tokens [B, S], targets [B, S]) -> the mean next-token cross entropy."""

    def __init__(self, cfg: GPTConfig, modules, *, activation_checkpointing: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.pos_emb = nn.Embedding(cfg.seq_len, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg, modules, activation_checkpointing) for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.dim)
        self.head = modules.LinearCrossEntropyLoss(cfg.dim, cfg.vocab_size)

    def init_weights(self) -> None:
        """Every submodule's own reset_parameters (torch's init): also what a meta-device model runs after
        to_empty()."""
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.tok_emb(tokens) + self.pos_emb(positions)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).flatten(0, 1), targets.flatten())


def tensor_parallel_plan(model: GPT, vocab_parallel) -> dict:
    """parallelize_module's plan: q/k/v and w1/w3 split by output features, wo and w2 by input features, the head
    along the vocabulary (`vocab_parallel`: fastops.distributed.VocabParallel). w1 and w3 hand the gated unit
    DTensors (use_local_output=False), so it runs through fastops' sharding rule for swiglu."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    plan = {"head": vocab_parallel}
    for i in range(len(model.blocks)):
        prefix = f"blocks.{i}"
        plan.update({f"{prefix}.attn.{w}": ColwiseParallel() for w in ("wq", "wk", "wv")})
        plan[f"{prefix}.attn.wo"] = RowwiseParallel()
        plan.update({f"{prefix}.mlp.{w}": ColwiseParallel(use_local_output=False) for w in ("w1", "w3")})
        plan[f"{prefix}.mlp.w2"] = RowwiseParallel()
    return plan


def markov_batches(cfg: GPTConfig, batch: int, steps: int, seed: int = 0):
    """`steps` batches of (tokens, targets) [batch, seq_len] from a fixed random bigram chain whose next token is
    one of 4 likely successors: a language a small model learns in a few dozen steps (the loss falls from
    log(vocab) towards the chain's entropy)."""
    gen = torch.Generator().manual_seed(seed)
    successors = torch.randint(0, cfg.vocab_size, (cfg.vocab_size, 4), generator=gen)
    out = []
    for _ in range(steps):
        seq = torch.empty(batch, cfg.seq_len + 1, dtype=torch.int64)
        seq[:, 0] = torch.randint(0, cfg.vocab_size, (batch,), generator=gen)
        for t in range(cfg.seq_len):
            pick = torch.randint(0, 4, (batch,), generator=gen)
            seq[:, t + 1] = successors[seq[:, t], pick]
        out.append((seq[:, :-1].contiguous(), seq[:, 1:].contiguous()))
    return out
