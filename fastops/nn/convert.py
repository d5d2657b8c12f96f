"""convert(model): swap a model's torch.nn layers, activations and losses for their fastops twins in place."""

from __future__ import annotations

import collections
import copy
import sys

from torch import nn


def _twins() -> dict[type, type]:
    """torch.nn class -> fastops.nn class, for every fastops module that is a drop-in for a torch.nn one (same
    name, same constructor arguments, same attributes and state_dict keys). Found by name, so a new op family's
    modules are converted as soon as fastops.nn exports them."""
    import fastops.nn as fnn

    pairs = {}
    for name in fnn.__all__:
        fast_cls, torch_cls = getattr(fnn, name), getattr(nn, name, None)
        if isinstance(torch_cls, type) and issubclass(torch_cls, nn.Module) and issubclass(fast_cls, nn.Module):
            pairs[torch_cls] = fast_cls
    return pairs


def _swap(module: nn.Module, fast_cls: type) -> nn.Module:
    # Drop-in modules keep the same attributes, so the new module takes over the old one's state wholesale: the
    # very same Parameter and buffer objects (optimizers holding them keep working), hooks and training flag.
    twin = fast_cls.__new__(fast_cls)
    twin.__dict__.update(module.__dict__)
    return twin


def convert(model: nn.Module, inplace: bool = True, verbose: bool = False) -> nn.Module:
    """Replace every module whose exact type is a torch.nn class with a fastops twin (Linear, the activations,
    the losses) by that twin, keeping parameters, buffers, hooks and state_dict keys.

    Subclasses of torch.nn classes are left alone: they may override forward. With ``inplace=False`` the model is
    deep-copied first. Returns the (converted) model; the swap counts are in ``model.fastops_swapped``
    (class name -> count) and printed when ``verbose`` is set.
    """
    if not inplace:
        model = copy.deepcopy(model)
    pairs = _twins()
    swapped: collections.Counter[str] = collections.Counter()

    def visit(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            fast_cls = pairs.get(type(child))
            if fast_cls is not None:
                setattr(parent, name, _swap(child, fast_cls))
                swapped[type(child).__name__] += 1
            else:
                visit(child)

    root_cls = pairs.get(type(model))
    if root_cls is not None:
        model = _swap(model, root_cls)
        swapped[root_cls.__name__] += 1
    else:
        visit(model)
    model.fastops_swapped = dict(swapped)
    if verbose:
        summary = ", ".join(f"{n} x{c}" for n, c in sorted(swapped.items())) or "nothing"
        print(f"fastops.nn.convert: swapped {summary}", file=sys.stderr)
    return model
