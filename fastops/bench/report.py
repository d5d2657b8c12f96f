"""Turns benchmark results into the ratio table (speed-up vs torch and vs torch.compile, % of the measured
ceiling) and PNG plots."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence

from .core import Result


def _group(results: Sequence[Result]):
    rows = defaultdict(dict)
    for r in results:
        rows[(r.case.op, r.mode, r.case.dtype, r.case.shape)][r.provider] = r
    return rows


def table(results: Sequence[Result], ceilings: dict[str, float]) -> str:
    """Markdown table: one row per (op, mode, dtype, shape), fastops vs torch vs compile."""
    header = ("| op | mode | dtype | shape | fastops ms | torch ms | compile ms | vs torch | vs compile "
              "| fastops rate | % of ceiling | other providers |")
    lines = [header, "|" + "---|" * 12]

    def ms(r):
        return f"{r.ms:.4g}" if r else "-"

    def ratio(fast, other):
        return f"{other.ms / fast.ms:.2f}x" if fast and other else "-"

    for (op, mode, dtype, shape), by in _group(results).items():
        fast, native, comp = by.get("fastops"), by.get("torch"), by.get("compile")
        rate = f"{fast.value:.4g} {fast.case.metric()}" if fast else "-"
        ceiling = ceilings.get(fast.case.metric()) if fast else None
        pct = f"{100 * fast.value / ceiling:.0f}%" if fast and ceiling else "-"
        # e.g. the GEMM ladder's variants, each with its speed-up over torch in the same run
        others = ", ".join(f"{name} {r.ms:.4g} ms" + (f" ({ratio(r, native)} torch)" if native else "")
                           for name, r in by.items() if name not in ("fastops", "torch", "compile")) or "-"
        lines.append(f"| {op} | {mode} | {dtype} | {shape} | {ms(fast)} | {ms(native)} | {ms(comp)} | "
                     f"{ratio(fast, native)} | {ratio(fast, comp)} | {rate} | {pct} | {others} |")
    return "\n".join(lines)


def plot(results: Sequence[Result], path: str, title: str) -> str | None:
    """Horizontal bars of fastops' speed-up over torch eager and torch.compile for every row (1.0 = parity)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    labels, vs_torch, vs_compile = [], [], []
    for (op, mode, dtype, shape), by in _group(results).items():
        fast = by.get("fastops")
        if not fast:
            continue
        labels.append(f"{op} {mode} {dtype} {shape}")
        vs_torch.append(by["torch"].ms / fast.ms if "torch" in by else 0.0)
        vs_compile.append(by["compile"].ms / fast.ms if "compile" in by else 0.0)
    if not labels:
        return None
    height = max(3.0, 0.35 * len(labels) + 1.5)
    fig, ax = plt.subplots(figsize=(10, height))
    ys = range(len(labels))
    ax.barh([y - 0.2 for y in ys], vs_torch, height=0.4, label="vs torch eager")
    ax.barh([y + 0.2 for y in ys], vs_compile, height=0.4, label="vs torch.compile")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(list(ys))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("speed-up of fastops (higher is better)")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
