"""DTensor sharding rules for every fastops operator, forward and backward ops alike.

Each rule lists, for one mesh dimension, the placements under which running the op on every rank's local shards
gives a valid DTensor: ``(output placements, input placements)``, the inputs being the op's tensor arguments in
order (``None`` for an absent optional one).
DTensor expands the list over every mesh dimension, picks the cheapest one for the inputs it is given and
redistributes only when no listed strategy matches them. A rule names only what is exact: an op whose math mixes
elements across a sharded dim (a softmax over the classes, a gated unit over a packed last dim, an activation of a
partial sum) has no local strategy for that sharding; cross entropy over sharded classes is handled by
``_vocab_parallel`` with its own communication.

Because the rules are per op, they hold whichever way autograd reaches the op (a Python ``register_autograd``
formula or a C++ Autograd kernel): every backward op has its own rule here.
"""

from __future__ import annotations

import math

import torch
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard
from torch.distributed.tensor._op_schema import RuntimeSchemaInfo
from torch.distributed.tensor.experimental import register_sharding

from ..ops.activations import UNARY_OPS

fastops = torch.ops.fastops
R = Replicate()
P = Partial()  # sum


RULES: dict = {}  # op -> its rule function (the tests run every strategy each rule lists)


def is_tensor_argument(argument) -> bool:
    """Whether a schema argument is a Tensor or an optional one: the arguments a rule places."""
    ty = argument.type
    return isinstance(ty, torch.TensorType) or (isinstance(ty, torch.OptionalType) and
                                                isinstance(ty.getElementType(), torch.TensorType))


def _register(*ops):
    """register_sharding for `ops`, with a sharding cache key that sees every non-tensor argument.

    register_sharding keys DTensor's sharding cache on the tensor specs plus the arguments from the first *int*
    argument on, so two calls of linear_act that differ only in `store_pre` (bool) or of gelu that differ only in
    `approximate` (str) share one cached decision, including the output shapes it recorded: linear_act's `pre` is
    [0] without store_pre and the output's shape otherwise. Here the key starts at the first non-tensor argument."""

    def wrap(fn):
        register_sharding(list(ops))(fn)
        RULES.update(dict.fromkeys(ops, fn))
        table = DTensor._op_dispatcher.sharding_propagator.op_to_schema_info
        for op in ops:
            args = op._schema.arguments
            tensor_like = [is_tensor_argument(a) for a in args]
            static = next((i for i, t in enumerate(tensor_like) if not t), 100)
            table[op] = RuntimeSchemaInfo(static, [a.name for a, t in zip(args, tensor_like) if not t] or None,
                                          needs_pytree=True)
        return fn

    return wrap


def _last(spec) -> int:
    return spec.ndim - 1


def _pointwise(ndim: int, n_inputs: int, n_outputs: int = 1, dims=None) -> list:
    """Replicate, or every operand sharded along one common dim (all of `dims`, default every dim)."""
    rules = [([R] * n_outputs, [R] * n_inputs)]
    for d in range(ndim) if dims is None else dims:
        rules.append(([Shard(d)] * n_outputs, [Shard(d)] * n_inputs))
    return rules


# ---- activations ----

@_register(*(getattr(fastops, name).default for name in UNARY_OPS))
def _unary(x, *params):
    return _pointwise(x.ndim, 1)


@_register(*(getattr(fastops, f"{name}_backward").default for name in UNARY_OPS))
def _unary_backward(grad_output, saved, *params):
    # Linear in grad_output for a fixed saved tensor: a partial gradient stays partial.
    return _pointwise(grad_output.ndim, 2) + [([P], [P, R])]


@_register(fastops.bias_act.default)
def _bias_act(x, bias, act):
    last = _last(x)
    rules = [([R], [R, R])] + [([Shard(d)], [Shard(d), R]) for d in range(last)]
    return rules + [([Shard(last)], [Shard(last), Shard(0)])]


@_register(fastops.bias_act_backward.default)
def _bias_act_backward(grad_output, x, bias, act):
    last = _last(x)
    rules = [([R, R], [R, R, R]), ([P, P], [P, R, R])]
    # Rows split over ranks: each rank's column sums are a partial bias gradient.
    rules += [([Shard(d), P], [Shard(d), Shard(d), R]) for d in range(last)]
    return rules + [([Shard(last), Shard(0)], [Shard(last), Shard(last), Shard(0)])]


# ---- softmax / log_softmax: local along every dim but the normalised one ----


def _other_dims(x, dim: int) -> list:
    return [d for d in range(x.ndim) if d != dim % max(x.ndim, 1)]


@_register(fastops.softmax.default, fastops.log_softmax.default)
def _softmax(x, dim):
    return [([R], [R])] + [([Shard(d)], [Shard(d)]) for d in _other_dims(x, dim)]


@_register(fastops.softmax_backward.default, fastops.log_softmax_backward.default)
def _softmax_backward(grad_output, output, dim):
    # Linear in grad_output for a fixed output: a partial gradient stays partial.
    return ([([R], [R, R]), ([P], [P, R])] +
            [([Shard(d)], [Shard(d), Shard(d)]) for d in _other_dims(output, dim)])


# ---- gated units ----


@_register(fastops.swiglu.default, fastops.geglu.default)
def _glu(gate, up, *params):
    return _pointwise(gate.ndim, 2) + [([P], [R, P])]  # act(gate) * up is linear in up


def _refuse_split_halves(op: str, x) -> None:
    """A packed [..., 2H] input holds [gate | up] along its last dim: a shard of it would pair the wrong halves, so
    only the leading dims split. Rather than let DTensor gather the whole input, say so."""
    if any(p.is_shard(_last(x)) for p in x.placements):
        raise ValueError(f"fastops.{op}: the packed input is split along its last dim, which holds [gate | up]; "
                         "split gate and up as two Linears (ColwiseParallel each) and call the two-input form")


@_register(fastops.swiglu.packed, fastops.geglu.packed)
def _glu_packed(x, *params):
    _refuse_split_halves("swiglu/geglu packed", x)
    return _pointwise(x.ndim, 1, dims=range(_last(x)))


@_register(fastops.glu_backward.default)
def _glu_backward(grad_output, gate, up, act):
    return _pointwise(gate.ndim, 3, n_outputs=2) + [([P, P], [P, R, R])]


@_register(fastops.glu_packed_backward.default)
def _glu_packed_backward(grad_output, x, act):
    _refuse_split_halves("glu_packed_backward", x)
    return _pointwise(x.ndim, 2, dims=range(_last(x))) + [([P], [P, R])]


# torch's glu(x, dim): x holds [a | b] along dim, so every other dim splits.
@_register(fastops.glu.default)
def _glu_dim(x, dim=-1):
    return _pointwise(x.ndim, 1, dims=_other_dims(x, dim))


@_register(fastops.glu_dim_backward.default)
def _glu_dim_backward(grad_output, x, dim):
    return _pointwise(x.ndim, 2, dims=_other_dims(x, dim)) + [([P], [P, R])]


# ---- matmul ----


def _batch_rules(a_ndim: int, b_ndim: int, a_shape, b_shape, out_batch: int):
    """(output dim, a's dim or None, b's dim or None) for each batch dim of the output that an operand holds at
    full size (a broadcast operand, of size 1 or absent there, stays replicated)."""
    rules = []
    for i in range(out_batch):
        ia, ib = i - (out_batch - (a_ndim - 2)), i - (out_batch - (b_ndim - 2))
        a_dim = ia if ia >= 0 and a_shape[ia] != 1 else None
        b_dim = ib if ib >= 0 and b_shape[ib] != 1 else None
        if a_dim is not None or b_dim is not None:
            rules.append((i, a_dim, b_dim))
    return rules


@_register(fastops.matmul.default)
def _matmul(a, b):
    out_batch = max(a.ndim, b.ndim) - 2
    rules = [
        ([R], [R, R]),
        ([Shard(out_batch)], [Shard(a.ndim - 2), R]),  # rows of a
        ([Shard(out_batch + 1)], [R, Shard(b.ndim - 1)]),  # columns of b
        ([P], [Shard(a.ndim - 1), Shard(b.ndim - 2)]),  # the contracted dim: partial sums
        ([P], [P, R]),
        ([P], [R, P]),
    ]
    for out_dim, a_dim, b_dim in _batch_rules(a.ndim, b.ndim, a.shape, b.shape, out_batch):
        rules.append(([Shard(out_dim)], [R if a_dim is None else Shard(a_dim), R if b_dim is None else Shard(b_dim)]))
    return rules


def _linear_rules(x, bias, *, partial: bool) -> list:
    """(output placement, [x, weight, bias]) for y = x W^T + b. The bias of a partial output must be partial too
    (one rank's share each), or the sum over ranks would add it once per rank."""
    last = _last(x)
    b = (lambda p: p) if bias is not None else (lambda p: None)
    rules = [(R, [R, R, b(R)]), (Shard(last), [R, Shard(0), b(Shard(0))])]  # replicated; column-wise
    rules += [(Shard(d), [Shard(d), R, b(R)]) for d in range(last)]  # tokens split over ranks
    if partial:  # row-wise (the contracted dim split) and linearity in x or in the weight
        rules += [(P, [Shard(last), Shard(1), b(P)]), (P, [P, R, b(P)]), (P, [R, P, b(P)])]
    return rules


@_register(fastops.linear.default)
def _linear(x, weight, bias=None):
    return [([out], ins) for out, ins in _linear_rules(x, bias, partial=True)]


@_register(fastops.linear_act.default)
def _linear_act(x, weight, bias, act, store_pre):
    # act(partial sum) is not a partial anything: only column-wise and token-wise splits run locally. A weight split
    # by input features (RowwiseParallel) would need the sum first; rather than let DTensor gather x and the weight
    # to one rank's worth each, say so. Without store_pre, `pre` is an empty [0] tensor on every rank: replicated.
    if any(p.is_shard(1) for p in weight.placements):
        raise ValueError("fastops.linear_act: the weight is split by input features (RowwiseParallel), whose partial "
                         "sums need adding before the activation: use RowwiseParallel on a fastops.nn.Linear and the "
                         "activation module after it")
    return [([out, out if store_pre else R], ins) for out, ins in _linear_rules(x, bias, partial=False)]


@_register(fastops.bias_grad.default)
def _bias_grad(grad_output):
    last = _last(grad_output)
    rules = [([R], [R]), ([P], [P]), ([Shard(0)], [Shard(last)])]
    return rules + [([P], [Shard(d)]) for d in range(last)]  # column sums over split rows: partial


@_register(fastops.matmul_accumulate_.default)
def _matmul_accumulate(out, a, b):
    # out += a @ b in place: out keeps its placement; a partial out accumulates partial products.
    return [([], [R, R, R]), ([], [Shard(0), Shard(0), R]), ([], [Shard(1), R, Shard(1)]),
            ([], [P, Shard(1), Shard(0)]), ([], [P, P, R]), ([], [P, R, P])]


# ---- cross entropy (rows split over ranks; classes split: see _vocab_parallel) ----


def _opt(t, placement):
    return None if t is None else placement


def _refuse_split_classes(logits) -> None:
    """Logits split along the classes reach these rules only outside loss_parallel(), whose handlers take them first:
    the only local strategies here would gather every rank's logits, which the vocabulary-parallel path exists to
    avoid. Say so instead."""
    if any(p.is_shard(1) for p in logits.placements):
        raise ValueError("fastops cross entropy: the logits are split along the classes; run the loss (forward and "
                         "backward) inside fastops.distributed.loss_parallel(), which never gathers them")


@_register(fastops.cross_entropy_forward.default)
def _cross_entropy_forward(logits, target, weight, ignore_index, label_smoothing):
    _refuse_split_classes(logits)
    # target: [N] class indices or [N, C] probabilities, split like the rows.
    return [([p] * 4, [p, p, _opt(weight, R)]) for p in (R, Shard(0))]


@_register(fastops.cross_entropy_backward.default)
def _cross_entropy_backward(grad_rows, logits, target, weight, lse, target_mass, ignore_index, label_smoothing):
    _refuse_split_classes(logits)
    def ins(g, p):
        return [g, p, p, _opt(weight, R), p, p]

    # Linear in grad_rows (the per-row upstream gradient).
    return [([R], ins(R, R)), ([Shard(0)], ins(Shard(0), Shard(0))), ([P], ins(P, R))]


def _grad_scale(grad_scale, rows_placement):
    # grad_scale is one factor for every row, or one per row (then split like the rows).
    return rows_placement if math.prod(grad_scale.shape) > 1 else R


@_register(fastops.cross_entropy_loss_forward.default)
def _cross_entropy_loss_forward(logits, target, weight, reduction, ignore_index, label_smoothing, dtype):
    _refuse_split_classes(logits)
    # (loss, lse, target_mass, divisor). 'none': the rows split like the logits', the divisor 1. A reduced loss is
    # rounded once from the float64 sum of all the rows: a Partial sum of the ranks' rounded sums would round again
    # (and 'mean' divides by the weight of all the rows), so the rows gather: replicated only.
    rules = [([R] * 4, [R, R, _opt(weight, R)])]
    if reduction == 0:
        rules.append(([Shard(0), Shard(0), Shard(0), R], [Shard(0), Shard(0), _opt(weight, R)]))
    return rules


@_register(fastops.cross_entropy_loss_forward_grad.default)
def _cross_entropy_loss_forward_grad(logits, target, weight, reduction, ignore_index, label_smoothing, dtype):
    _refuse_split_classes(logits)
    # (loss, gradient, grad_scale): a reduced loss, replicated only (see cross_entropy_loss_forward).
    return [([R] * 3, [R, R, _opt(weight, R)])]


# cross_entropy_forward_grad_ (the gradient written over the logits, the loss rows returned) has no rule: DTensor
# returns `self` from every op whose name ends in "_" and would hand back the logits instead of the loss. Its one
# caller, linear_cross_entropy, is opaque to DTensor anyway; under loss_parallel() _vocab_parallel runs it.


@_register(fastops.scale_rows_.default)
def _scale_rows(x, scale):
    rules = [([], [R, R]), ([], [P, R])]  # scaling is linear in x
    return rules + [([], [Shard(d), _grad_scale(scale, Shard(0)) if d == 0 else R]) for d in range(x.ndim)]


@_register(fastops.nll_loss_forward.default)
def _nll_loss_forward(input, target, weight, ignore_index):
    _refuse_split_classes(input)
    # (loss rows, row weights); rows split over ranks where they are input's dim 0 (input [N, C]).
    rules = [([R, R], [R, R, _opt(weight, R)])]
    return rules + ([([Shard(0)] * 2, [Shard(0), Shard(0), _opt(weight, R)])] if input.ndim == 2 else [])


@_register(fastops.nll_loss_backward.default)
def _nll_loss_backward(grad_rows, input, target, weight, ignore_index):
    _refuse_split_classes(input)
    rules = [([R], [R, R, R, _opt(weight, R)]), ([P], [P, R, R, _opt(weight, R)])]  # linear in grad_rows
    if input.ndim == 2:
        rules.append(([Shard(0)], [Shard(0), Shard(0), Shard(0), _opt(weight, R)]))
    return rules


# ---- elementwise losses ----

NONE, MEAN, SUM = 0, 1, 2


def _pointwise_loss_rules(x, n_inputs: int, reduction: int, *, backward: bool) -> list:
    """Rules over n_inputs input-shaped tensors (input, target, and BCE's weight / pos_weight); in the backward
    the first input is grad_output, input-shaped for 'none' and a 0-dim tensor otherwise."""
    if reduction == MEAN and any(p.is_shard() for p in x.placements):
        # The forward would be a Partial("avg") of the shards' means, but the backward kernel divides the upstream
        # gradient by the element count it sees, the rank's own: no local rule, so DTensor would gather the inputs in
        # the backward. Say so up front.
        raise ValueError("fastops elementwise loss: reduction='mean' over an input split across ranks has no local "
                         "backward (each rank's kernel would divide by its own element count); use reduction='sum' "
                         "and divide by the element count, or reduction='none'")
    if reduction == NONE:
        rules = _pointwise(x.ndim, n_inputs)
        return rules + ([([P], [P] + [R] * (n_inputs - 1))] if backward else [])
    if backward:
        # grad_input = upstream * d(loss)/d(input): local per element for 'sum'.
        rules = [([R], [R] * n_inputs), ([P], [P] + [R] * (n_inputs - 1))]
        if reduction == SUM:
            rules += [([Shard(d)], [R] + [Shard(d)] * (n_inputs - 1)) for d in range(x.ndim)]
        return rules
    rules = [([R], [R] * n_inputs)]
    if reduction == SUM:
        rules += [([P], [Shard(d)] * n_inputs) for d in range(x.ndim)]
    return rules


@_register(fastops.mse_loss.default, fastops.l1_loss.default, fastops.smooth_l1_loss.default,
           fastops.huber_loss.default, fastops.kl_div.default)
def _regression_loss(input, target, reduction=MEAN, param=None):
    # param: smooth_l1's beta, huber's delta, kl_div's log_target (none of which changes how the loss splits)
    return _pointwise_loss_rules(input, 2, reduction, backward=False)


@_register(fastops.mse_loss_backward.default, fastops.l1_loss_backward.default,
           fastops.smooth_l1_loss_backward.default, fastops.huber_loss_backward.default, fastops.kl_div_backward.default)
def _regression_loss_backward(grad_output, input, target, reduction, param=None):
    return _pointwise_loss_rules(input, 3, reduction, backward=True)


def _bce_slots(rules, weight, pos_weight, offset):
    """Place the optional weight / pos_weight after the `offset` leading operands, like the input they match."""
    out = []
    for o, ins in rules:
        like = ins[offset - 1]
        extra = [_opt(weight, like), _opt(pos_weight, like)]
        out.append((o, ins[:offset] + extra))
    return out


@_register(fastops.binary_cross_entropy_with_logits.default)
def _bce(input, target, weight=None, pos_weight=None, reduction=MEAN):
    return _bce_slots(_pointwise_loss_rules(input, 2, reduction, backward=False), weight, pos_weight, 2)


@_register(fastops.binary_cross_entropy_with_logits_backward.default)
def _bce_backward(grad_output, input, target, weight, pos_weight, reduction):
    return _bce_slots(_pointwise_loss_rules(input, 3, reduction, backward=True), weight, pos_weight, 3)


@_register(fastops.binary_cross_entropy.default)
def _bce_probabilities(input, target, weight=None, reduction=MEAN):
    rules = _pointwise_loss_rules(input, 2, reduction, backward=False)
    return [(o, ins + [_opt(weight, ins[1])]) for o, ins in rules]


@_register(fastops.binary_cross_entropy_backward.default)
def _bce_probabilities_backward(grad_output, input, target, weight, reduction):
    rules = _pointwise_loss_rules(input, 3, reduction, backward=True)
    return [(o, ins + [_opt(weight, ins[2])]) for o, ins in rules]
