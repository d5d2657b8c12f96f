"""A parallel style for fastops.nn.LinearCrossEntropyLoss: its classifier split along the vocabulary."""

from __future__ import annotations

from torch import nn
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_module, distribute_tensor
from torch.distributed.tensor.parallel import ParallelStyle
from torch.distributed.tensor.placement_types import Placement


class VocabParallel(ParallelStyle):
    """Split a :class:`fastops.nn.LinearCrossEntropyLoss`'s classifier (``linear.weight`` and ``linear.bias``) along
    the classes (dim 0), as ``ColwiseParallel`` splits a Linear's outputs. Its forward takes the [tokens, features]
    hidden states laid out as ``input_layouts`` (``Replicate()``, or ``Shard(0)``: each rank's rows, as after a
    sequence-parallel block, all-gathered first in rank order) and the whole [tokens] target in that row order (the
    same on every rank), and returns the replicated loss (a plain tensor unless ``use_local_output=False``). The per-rank logits are [tokens, vocabulary / ranks], one chunk of rows at a
    time; the forward and the backward must run inside :func:`fastops.distributed.loss_parallel`."""

    def __init__(self, *, input_layouts: Placement | None = None, use_local_output: bool = True) -> None:
        super().__init__()
        self.input_layout = input_layouts or Replicate()
        self.use_local_output = use_local_output

    @staticmethod
    def _partition(name, module, mesh):
        if isinstance(module, nn.Linear):
            for pname, param in list(module.named_parameters(recurse=False)):
                module.register_parameter(pname, nn.Parameter(distribute_tensor(param, mesh, [Shard(0)]),
                                                              requires_grad=param.requires_grad))

    def _prepare_input(self, module, inputs, mesh):
        hidden, target = inputs
        if not isinstance(hidden, DTensor):
            hidden = DTensor.from_local(hidden, mesh, (self.input_layout,), run_check=False)
        if hidden.placements != (Replicate(),):
            hidden = hidden.redistribute(mesh, (Replicate(),), async_op=False)
        # distribute_module replicates the class-weight buffer as a DTensor; the target joins it (the 'mean' divisor
        # indexes one with the other).
        if not isinstance(target, DTensor):
            target = DTensor.from_local(target, mesh, (Replicate(),), run_check=False)
        return hidden, target

    def _prepare_output(self, module, outputs, mesh):
        if self.use_local_output and isinstance(outputs, DTensor):
            # to_local() returns a view; the scalar loss is copied so that FSDP2, when this is a root module's output,
            # can hook it without warning that an in-place op on a view would lose its pre-backward hook.
            return outputs.to_local().clone()
        return outputs

    def _apply(self, module: nn.Module, device_mesh) -> nn.Module:
        import fastops.nn as fnn

        if not isinstance(module, fnn.LinearCrossEntropyLoss):
            raise TypeError(f"VocabParallel applies to fastops.nn.LinearCrossEntropyLoss, got {type(module).__name__}")
        if module.out_features:
            raise NotImplementedError("VocabParallel: a K-dimensional classifier (out_features) is not supported")
        return distribute_module(
            module, device_mesh, self._partition,
            input_fn=lambda mod, inputs, mesh: self._prepare_input(mod, inputs, mesh),
            output_fn=lambda mod, outputs, mesh: self._prepare_output(mod, outputs, mesh),
        )


