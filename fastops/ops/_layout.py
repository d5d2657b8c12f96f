"""Rules shared by the fake kernels; each mirrors a C++ rule so that compiled graphs see eager's strides and errors."""

import functools

import torch


def is_non_overlapping_and_dense(t: torch.Tensor) -> bool:
    """Same answer as c10's TensorImpl::is_non_overlapping_and_dense(): some permutation of the dims is contiguous.
    (torch's Python twin of this is private and renamed between releases, so the rule is restated here.) Written
    with comparisons only, so symbolic shapes add guards on relations and never specialise to values."""
    sizes, strides = t.shape, t.stride()
    if t.dim() == 1:
        return bool(sizes[0] < 2) or bool(strides[0] == 1)
    # Dims of size < 2 never matter; the rest, by increasing stride, must be contiguous.
    dims = [d for d in range(t.dim()) if not bool(sizes[d] < 2)]
    dims.sort(key=functools.cmp_to_key(lambda a, b: -1 if bool(strides[a] < strides[b]) else int(bool(strides[a] > strides[b]))))
    expected = 1
    for d in dims:
        if bool(strides[d] != expected):
            return False
        expected = expected * sizes[d]
    return True


def elementwise_output(first: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
    """Mirror of csrc/common/elementwise.h: keep the operands' layout when they share one dense layout, else
    produce a contiguous result."""
    if is_non_overlapping_and_dense(first) and all(o.stride() == first.stride() for o in others):
        return torch.empty_like(first)
    return first.new_empty(first.shape)


def check_same_device(op: str, first: torch.Tensor, **others) -> None:
    """The kernels' device rule: every tensor on `first`'s device. A CPU tensor mixed with a meta one dispatches to
    the fake kernel with real tensors, which must then refuse it (torch's meta kernels do) rather than return
    uninitialised memory."""
    for name, t in others.items():
        if t is not None:
            torch._check(t.device == first.device,
                         lambda name=name, t=t: f"fastops.{op}: {name} must be on the device of {first.device}, "
                                                f"got {t.device}")
