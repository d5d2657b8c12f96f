"""Vocabulary-parallel cross entropy: the fastops cross-entropy ops over logits (or a classifier weight) whose
classes are split over the ranks of one mesh dimension, without ever gathering the logits.

Math. For row i with target class y, class weights w, label smoothing eps over V classes and the target's weight on
class j q_j = (1 - eps) w_y [j == y] + eps / V w_j, its mass B = sum_j q_j and lse = logsumexp_j z_j:
    loss = sum_j q_j (lse - z_j) = B lse - sum_j q_j z_j          d loss / d z_j = B exp(z_j - lse) - q_j
Every term splits over the classes: lse is the logsumexp over ranks of each rank's own lse_r, and sum_j q_j z_j is a
sum of per-rank sums plus the target logit, which only its owner holds. So each rank runs fastops' own kernels on its
[N, V / ranks] block, and the ranks exchange per-row numbers only: one all-gather of 4 float64 per row.

The kernels see each rank's block as a whole problem with these operands: label smoothing 1 (so the kernel adds no
one-hot term for any row: the target may live on another rank) and class weights w'_j = w_j eps n / V for its n
classes (so its smoothing weight w'_j / n is the global eps / V w_j). Then
  * cross_entropy_forward gives lse_r and loss_r = sum_{j local} q_j (lse_r - z_j): with qsum_r = sum_{j local} q_j,
    the local part of sum_j q_j z_j is qsum_r lse_r - loss_r;
  * cross_entropy_backward, handed the global lse and B, writes B exp(z_j - lse) - q_j for every local class but the
    target's one-hot term, which the owner then rewrites for its target element: u (B exp(z_y - lse) - q_y),
    computed in float64 and rounded once, as the kernel rounds every element once.
The all-gathered per-row numbers are reduced in rank order on every rank, so every rank holds bitwise the same loss.

Scope (as torch's loss_parallel): class-index targets (probabilities raise), one mesh dim splitting the classes and
every other mesh dim replicating them. Active inside :func:`fastops.distributed.loss_parallel`, which the backward
must run under too.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.distributed.tensor._dtensor_spec import DTensorSpec, TensorMeta
from torch.distributed.tensor.parallel import loss_parallel as _torch_loss_parallel

from ..ops import linear_cross_entropy as _lce
from ..ops.losses import math_dtype

fastops = torch.ops.fastops

# torch 2.13 renamed all_gather_into_tensor (now deprecated) to all_gather_single; the GPU machine runs torch 2.11.
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor

KERNEL_IGNORE = -1  # no local class index is negative, so this never meets a real target


@dataclasses.dataclass
class _VocabShard:
    """This rank's slice [start, start + n) of the V classes, split along mesh dim `mesh_dim` of `mesh`."""

    mesh: object
    mesh_dim: int
    num_classes: int
    start: int
    n: int

    @classmethod
    def of(cls, spec: DTensorSpec, class_dim: int, what: str) -> _VocabShard:
        dims = [i for i, p in enumerate(spec.placements) if p.is_shard(class_dim)]
        others = [p for i, p in enumerate(spec.placements) if i not in dims]
        if len(dims) != 1 or not all(p.is_replicate() for p in others):
            raise ValueError(f"fastops loss_parallel: {what} must be split along dim {class_dim} (the classes) on "
                             f"exactly one mesh dim and replicated on the others, got {spec.placements}")
        mesh_dim, v = dims[0], spec.shape[class_dim]
        n, start = Shard.local_shard_size_and_offset(v, spec.mesh.size(mesh_dim), spec.mesh.get_local_rank(mesh_dim))
        if n == 0:
            raise ValueError(f"fastops loss_parallel: {v} classes over {spec.mesh.size(mesh_dim)} ranks leave a rank "
                             "without classes")
        return cls(spec.mesh, mesh_dim, v, start, n)

    @property
    def group(self):
        return self.mesh.get_group(self.mesh_dim)

    def replicate(self, t: torch.Tensor) -> DTensor:
        """t, the same on every rank, as a replicated DTensor (contiguous global strides = local ones)."""
        spec = DTensorSpec(self.mesh, (Replicate(),) * self.mesh.ndim,
                           tensor_meta=TensorMeta(t.shape, t.stride(), t.dtype))
        return DTensor(t, spec, requires_grad=False)

    def like(self, t: torch.Tensor, spec: DTensorSpec) -> DTensor:
        """t, this rank's shard of a tensor placed as `spec` (the logits' or weight's layout)."""
        meta = TensorMeta(spec.shape, torch._prims_common.make_contiguous_strides_for(spec.shape), t.dtype)
        return DTensor(t, DTensorSpec(spec.mesh, spec.placements, tensor_meta=meta), requires_grad=False)


def _local(t):
    """The full value of an argument every rank holds whole: a plain tensor or a replicated DTensor."""
    if isinstance(t, DTensor):
        if not all(p.is_replicate() for p in t.placements):
            raise ValueError(f"fastops loss_parallel: targets, class weights and per-row factors must be replicated, "
                             f"got {t.placements}")
        return t.to_local()
    return t


@dataclasses.dataclass
class _Rows:
    """The kernels' view of one block of rows and this rank's classes, plus the global per-row terms."""

    local_target: torch.Tensor  # int64 [N]: the local class of the rows this rank owns, 0 elsewhere, -1 if ignored
    owner: torch.Tensor  # bool [N]
    kernel_weight: torch.Tensor  # [n] math type: w'_j
    q_target: torch.Tensor  # float64 [N]: q_y = (1 - eps) w_y + eps / V w_y (0 for ignored rows)
    row_weight: torch.Tensor  # float64 [N]: w_y (0 for ignored rows)
    lse: torch.Tensor | None = None  # float64 [N], global (0 for ignored rows)
    mass: torch.Tensor | None = None  # float64 [N]: B (0 for ignored rows)
    loss: torch.Tensor | None = None  # float64 [N] (0 for ignored rows)

    def __getitem__(self, rows: slice) -> _Rows:
        """The same terms for a block of the rows."""
        return dataclasses.replace(self, **{f.name: getattr(self, f.name)[rows] for f in dataclasses.fields(self)
                                            if f.name != "kernel_weight" and getattr(self, f.name) is not None})


def _prepare(logits: torch.Tensor, target, weight, ignore_index: int, eps: float, vs: _VocabShard) -> _Rows:
    if target.is_floating_point():
        raise NotImplementedError("fastops loss_parallel: class-probability targets are not supported (as in torch's "
                                  "loss_parallel); pass class indices")
    ignored = target == ignore_index
    bad = ~ignored & ((target < 0) | (target >= vs.num_classes))
    if bool(bad.any()):  # the one-rank kernel raises this too; here no rank's kernel would see the class
        raise IndexError(f"fastops.cross_entropy: target {int(target[bad][0])} is out of bounds for "
                         f"{vs.num_classes} classes (ignore_index is {ignore_index})")
    owner = ~ignored & (target >= vs.start) & (target < vs.start + vs.n)
    local_target = torch.where(owner, target - vs.start, 0).masked_fill(ignored, KERNEL_IGNORE)
    safe = torch.where(ignored, 0, target)
    full_w = weight.to(torch.float64) if weight is not None else None
    w_y = full_w[safe] if full_w is not None else torch.ones_like(safe, dtype=torch.float64)
    w_y = w_y.masked_fill(ignored, 0.0)
    local_w = (full_w[vs.start:vs.start + vs.n] if full_w is not None
               else torch.ones(vs.n, dtype=torch.float64, device=logits.device))
    kernel_weight = (local_w * (eps * vs.n / vs.num_classes)).to(math_dtype(logits.dtype))
    return _Rows(local_target, owner, kernel_weight, (1.0 - eps) * w_y + eps / vs.num_classes * w_y, w_y)


def _global_terms(logits: torch.Tensor, rows: _Rows, eps: float, vs: _VocabShard) -> _Rows:
    """Fills rows.lse / mass / loss: one kernel pass over the local block and one all-gather of per-row terms."""
    loss_r, _, lse_r, _ = fastops.cross_entropy_forward(logits, rows.local_target, rows.kernel_weight, KERNEL_IGNORE,
                                                        1.0)
    qsum_r = rows.kernel_weight.to(torch.float64).sum() / vs.n  # the kernel's sum of w'_j / n over local classes
    z_y = logits.gather(1, rows.local_target.clamp(min=0).unsqueeze(1)).squeeze(1).to(torch.float64)
    mine = torch.stack([lse_r, qsum_r * lse_r - loss_r, torch.where(rows.owner, z_y, 0.0),
                        qsum_r.expand_as(lse_r)], dim=1)
    ranks = dist.get_world_size(vs.group)
    everyone = mine.new_empty((ranks * mine.shape[0], mine.shape[1]))
    _all_gather(everyone, mine.contiguous(), group=vs.group)
    everyone = everyone.view(ranks, *mine.shape)
    lse = torch.logsumexp(everyone[:, :, 0], dim=0)
    qz, z_y, qsum = everyone[:, :, 1].sum(0), everyone[:, :, 2].sum(0), everyone[:, :, 3].sum(0)
    ignored = rows.local_target == KERNEL_IGNORE
    one_hot = (1.0 - eps) * rows.row_weight
    rows.mass = torch.where(ignored, 0.0, one_hot + qsum)
    rows.lse = torch.where(ignored, 0.0, lse)
    rows.loss = torch.where(ignored, 0.0, rows.mass * lse - qz - one_hot * z_y)
    return rows


def _gradient(logits: torch.Tensor, rows: _Rows, upstream: torch.Tensor) -> torch.Tensor:
    """d (upstream_i loss_i) / d logits for this rank's classes (upstream: float64 [N] or one element)."""
    u = upstream.expand(logits.shape[0]).contiguous() if upstream.numel() == 1 else upstream.reshape(-1).contiguous()
    grad = fastops.cross_entropy_backward(u, logits, rows.local_target, rows.kernel_weight, rows.lse,
                                          rows.mass.to(math_dtype(logits.dtype)), KERNEL_IGNORE, 1.0)
    # The target's element, on its owner: the kernel left out its one-hot term.
    col = rows.local_target.clamp(min=0).unsqueeze(1)
    z_y = logits.gather(1, col).squeeze(1).to(torch.float64)
    g_y = u * (rows.mass * torch.exp(z_y - rows.lse) - rows.q_target)
    grad.scatter_(1, col, torch.where(rows.owner, g_y.to(grad.dtype), grad.gather(1, col).squeeze(1)).unsqueeze(1))
    return grad


# The gradient kernel writes a new tensor; overwriting the logits with it a block of rows at a time keeps a rank's
# extra memory at 1/8 of the logits (where the one-rank forward writes the gradient over the logits in place).
IN_PLACE_BLOCKS = 8


def _gradient_in_place(logits: torch.Tensor, rows: _Rows, upstream: torch.Tensor) -> None:
    """Overwrites the logits with _gradient's result (contiguous logits)."""
    n = logits.shape[0]
    step = max(1, -(-n // IN_PLACE_BLOCKS))
    for start in range(0, n, step):
        block = slice(start, min(n, start + step))
        u = upstream if upstream.numel() == 1 else upstream.reshape(-1)[block]
        logits[block] = _gradient(logits[block], rows[block], u)


# ---- op handlers: (op, args, kwargs) with DTensor arguments -> DTensor results ----


def _logits_shard(logits: DTensor) -> _VocabShard:
    if not isinstance(logits, DTensor):
        raise TypeError("fastops loss_parallel: logits must be a DTensor split along the classes")
    return _VocabShard.of(logits._spec, 1, "logits")


def _cross_entropy_forward(op, args, kwargs):
    logits, target, weight, ignore_index, eps = _bind(op, args, kwargs)
    vs = _logits_shard(logits)
    z = logits.to_local()
    rows = _global_terms(z, _prepare(z, _local(target), _local(weight), ignore_index, eps, vs), eps, vs)
    return tuple(vs.replicate(t) for t in (rows.loss, rows.row_weight, rows.lse, rows.mass.to(math_dtype(z.dtype))))


def _cross_entropy_backward(op, args, kwargs):
    grad_rows, logits, target, weight, lse, mass, ignore_index, eps = _bind(op, args, kwargs)
    vs = _logits_shard(logits)
    z = logits.to_local()
    rows = _prepare(z, _local(target), _local(weight), ignore_index, eps, vs)
    rows.lse, rows.mass = _local(lse), _local(mass).to(torch.float64)
    return vs.like(_gradient(z, rows, _local(grad_rows)), logits._spec)


def _scaled_loss(rows: _Rows, u: torch.Tensor) -> torch.Tensor:
    # 0 * u on ignored rows: NaN for 'mean' over only ignored rows (u = 1 / 0), as torch and the one-rank kernel.
    return torch.where(rows.local_target == KERNEL_IGNORE, 0 * u, u * rows.loss)


def _divisor(rows: _Rows, reduction: int) -> torch.Tensor:
    """'mean''s divisor (the summed weight of the rows not ignored), 1 for 'none' / 'sum'."""
    return rows.row_weight.sum() if reduction == 1 else torch.ones((), dtype=torch.float64,
                                                                    device=rows.row_weight.device)


def _cross_entropy_loss_forward(op, args, kwargs):
    logits, target, weight, reduction, ignore_index, eps, dtype = _bind(op, args, kwargs)
    vs = _logits_shard(logits)
    z = logits.to_local()
    rows = _global_terms(z, _prepare(z, _local(target), _local(weight), ignore_index, eps, vs), eps, vs)
    divisor = _divisor(rows, reduction)
    loss = rows.loss if reduction == 0 else rows.loss.sum() / divisor
    return tuple(vs.replicate(t) for t in (loss.to(dtype), rows.lse, rows.mass.to(math_dtype(z.dtype)), divisor))


def _cross_entropy_loss_forward_grad(op, args, kwargs):
    logits, target, weight, reduction, ignore_index, eps, dtype = _bind(op, args, kwargs)
    vs = _logits_shard(logits)
    z = logits.to_local()
    rows = _global_terms(z, _prepare(z, _local(target), _local(weight), ignore_index, eps, vs), eps, vs)
    u = 1 / _divisor(rows, reduction)
    return (vs.replicate(_scaled_loss(rows, u).sum().to(dtype)), vs.like(_gradient(z, rows, u), logits._spec),
            vs.replicate(u))


def _cross_entropy_forward_grad_inplace(op, args, kwargs):
    logits, target, weight, ignore_index, eps, grad_scale = _bind(op, args, kwargs)
    vs = _logits_shard(logits)
    z, u = logits.to_local(), _local(grad_scale)
    if not z.is_contiguous():
        raise ValueError("fastops.cross_entropy_forward_grad_: the logits must be contiguous")
    rows = _global_terms(z, _prepare(z, _local(target), _local(weight), ignore_index, eps, vs), eps, vs)
    _gradient_in_place(z, rows, u)
    return vs.replicate(_scaled_loss(rows, u))


def _linear_cross_entropy(op, args, kwargs):
    (input, weight, target, bias, class_weight, ignore_index, eps, grad_scale, rows_per_chunk,
     needs) = _bind(op, args, kwargs)
    need_input, need_weight, need_bias, need_target, need_class_weight = needs
    if need_target or need_class_weight:
        raise NotImplementedError("fastops loss_parallel: linear_cross_entropy over a split vocabulary gives no "
                                  "gradient for probability targets or class weights; detach them")
    if not isinstance(weight, DTensor):
        raise TypeError("fastops loss_parallel: linear_cross_entropy's weight must be a DTensor split along the "
                        "classes (dim 0)")
    vs = _VocabShard.of(weight._spec, 0, "the classifier weight")
    x, w = _local(input), weight.to_local()
    b = bias.to_local() if isinstance(bias, DTensor) else bias
    target, class_weight, u = _local(target), _local(class_weight), _local(grad_scale)
    n = x.shape[0]
    grad_input = torch.empty_like(x) if need_input else x.new_empty(0)
    grad_weight = torch.zeros_like(w) if need_weight else w.new_empty(0)
    grad_bias_sum = torch.zeros(vs.n, dtype=math_dtype(x.dtype), device=x.device) if need_bias else None
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    per_row = u.numel() > 1
    with torch.no_grad():
        step = rows_per_chunk or _lce.chunk_rows(n, w.shape[0], x.dtype)
        for start, stop in _lce.token_chunks(n, step, for_pass_2=False):
            xc, scale = x[start:stop], u[start:stop] if per_row else u
            logits = fastops.linear(xc, w, b)
            rows = _global_terms(logits, _prepare(logits, target[start:stop], class_weight, ignore_index, eps, vs),
                                 eps, vs)
            total += _scaled_loss(rows, scale).sum()
            if not (need_input or need_weight or need_bias):
                continue
            _gradient_in_place(logits, rows, scale)
            grad = logits
            if need_input:
                grad_input[start:stop] = fastops.matmul(grad, w)  # this rank's classes' share of the sum
            if need_weight:
                fastops.matmul_accumulate_(grad_weight, grad.mT, xc)
            if need_bias:
                grad_bias_sum += fastops.bias_grad(grad)
        if need_input:
            dist.all_reduce(grad_input, group=vs.group)
    grad_bias = grad_bias_sum.to(b.dtype) if need_bias else x.new_empty(0)
    # Not-needed gradients are empty on every rank: replicated.
    return (vs.replicate(total), vs.replicate(grad_input),
            vs.like(grad_weight, weight._spec) if need_weight else vs.replicate(grad_weight),
            vs.like(grad_bias, bias._spec) if need_bias else vs.replicate(grad_bias),
            vs.replicate(x.new_empty(0)), vs.replicate(x.new_empty(0)))


def _linear_cross_entropy_rows(op, args, kwargs):
    raise NotImplementedError("fastops loss_parallel: linear_cross_entropy with reduction='none' over a split "
                              "vocabulary is not supported; use 'sum' or 'mean'")


def _bind(op, args, kwargs):
    """The op's arguments in schema order, defaults filled in."""
    out = list(args)
    for a in op._schema.arguments[len(args):]:
        out.append(kwargs.get(a.name, a.default_value))
    return out


HANDLERS = {
    fastops.cross_entropy_forward.default: _cross_entropy_forward,
    fastops.cross_entropy_backward.default: _cross_entropy_backward,
    fastops.cross_entropy_loss_forward.default: _cross_entropy_loss_forward,
    fastops.cross_entropy_loss_forward_grad.default: _cross_entropy_loss_forward_grad,
    fastops.cross_entropy_forward_grad_.default: _cross_entropy_forward_grad_inplace,
    fastops.linear_cross_entropy.default: _linear_cross_entropy,
    fastops.linear_cross_entropy_rows.default: _linear_cross_entropy_rows,
}


@contextlib.contextmanager
def loss_parallel():
    """torch's :func:`~torch.distributed.tensor.parallel.loss_parallel` for fastops' losses too: inside it,
    ``fastops.functional.cross_entropy`` / ``fastops.nn.CrossEntropyLoss`` accept logits split along the classes,
    ``fastops.functional.linear_cross_entropy`` / ``fastops.nn.LinearCrossEntropyLoss`` a classifier weight split
    along the classes (dim 0), and torch's own cross entropy works as under torch's context. The logits are never
    gathered; the loss is replicated. Run the backward inside it too."""
    handlers = DTensor._op_dispatcher._custom_op_handlers
    saved = {op: handlers.get(op) for op in HANDLERS}
    with _torch_loss_parallel():
        handlers.update(HANDLERS)
        try:
            yield
        finally:
            for op, old in saved.items():
                if old is None:
                    handlers.pop(op, None)
                else:
                    handlers[op] = old
