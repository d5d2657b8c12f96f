"""convert(model): swap a model's torch.nn layers, activations and losses (and the common model zoo's: transformers'
Conv1D and activation classes) for their fastops twins in place; with ``fuse=True``, also fuse Linear + activation
into LinearAct and gate/up projections into SwiGLU / GeGLU where the module structure shows the pattern."""

from __future__ import annotations

import ast
import collections
import copy
import functools
import inspect
import itertools
import operator
import sys
import textwrap

import torch
from torch import nn

from .. import functional as F


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


def _fresh(module: nn.Module, twin: nn.Module) -> nn.Module:
    # A parameterless module replaced by a newly built one keeps the original's hooks and training flag.
    for name, value in module.__dict__.items():
        if "hook" in name:
            twin.__dict__[name] = value
    return twin.train(module.training)


def _zoo() -> dict[type, collections.abc.Callable]:
    """Model-zoo class -> function building its fastops twin from an instance, for the libraries already imported
    (a model holding their modules has imported them; fastops never imports them itself)."""
    import fastops.nn as fnn

    table = {}
    acts = sys.modules.get("transformers.activations")
    if acts is not None:
        # transformers' GELUs are erf GELU (GELUActivation, with or without use_gelu_python) or the tanh
        # approximation written out (NewGELU, AccurateGELU, GELUTanh's Python form; FastGELU's 0.7978845608 is
        # sqrt(2/pi) to 3.6e-12 relative, 1.7e4 times below float32's 6e-8 rounding).
        gelus = {"GELUActivation": "none", "NewGELUActivation": "tanh", "GELUTanh": "tanh",
                 "AccurateGELUActivation": "tanh", "FastGELUActivation": "tanh"}
        for name, approximate in gelus.items():
            if hasattr(acts, name):
                table[getattr(acts, name)] = lambda m, a=approximate: _fresh(m, fnn.GELU(approximate=a))
        if hasattr(acts, "SiLUActivation"):
            table[acts.SiLUActivation] = lambda m: _fresh(m, fnn.SiLU())
        if hasattr(acts, "MishActivation") and hasattr(fnn, "Mish"):
            table[acts.MishActivation] = lambda m: _fresh(m, fnn.Mish())
    utils = sys.modules.get("transformers.pytorch_utils")
    if utils is not None and hasattr(utils, "Conv1D"):
        from . import hf

        table[utils.Conv1D] = lambda m: _swap(m, hf.Conv1D)
    return table


def convert(model: nn.Module, inplace: bool = True, verbose: bool = False, fuse: bool = False) -> nn.Module:
    """Replace every module whose exact type is a torch.nn class with a fastops twin (Linear, the activations,
    the losses), keeping parameters, buffers, hooks and state_dict keys; likewise transformers' Conv1D (GPT-2's
    projections; the twin is a Conv1D subclass reading the [in, out] weight in place) and its activation classes
    (GELUActivation, NewGELUActivation, GELUTanh, AccurateGELU, FastGELU, SiLUActivation: fastops GELU / SiLU, which
    are torch.nn.GELU / SiLU subclasses).

    Subclasses of torch.nn classes are left alone: they may override forward. With ``inplace=False`` the model is
    deep-copied first. With ``fuse=True``, Linear + activation pairs become one fused LinearAct (and Conv1D gets the
    activation in its fused pass), the activation module becoming ``nn.Identity``; and a module whose forward is
    ``down(act(gate(x)) * up(x))`` (Llama's MLP) runs ``down(swiglu(gate(x), up(x)))`` (GeGLU for a GELU); see
    :func:`fuse_modules`. Returns the (converted) model; the counts are in ``model.fastops_swapped`` (class name ->
    count) and ``model.fastops_fused`` (fused form -> count), printed when ``verbose`` is set.
    """
    if not inplace:
        model = copy.deepcopy(model)
    pairs = _twins()
    zoo = _zoo()
    swapped: collections.Counter[str] = collections.Counter()

    twins: dict[int, nn.Module] = {}  # a module used in several places gets one twin, shared the same way

    def twin_of(module: nn.Module) -> nn.Module | None:
        if id(module) not in twins:
            fast_cls = pairs.get(type(module))
            build = (lambda m: _swap(m, fast_cls)) if fast_cls is not None else zoo.get(type(module))
            twins[id(module)] = build(module) if build is not None else None
        return twins[id(module)]

    def visit(parent: nn.Module) -> None:
        # Every slot, not named_children(): it skips the second place a shared module is used.
        for name, child in list(parent._modules.items()):
            if child is None:
                continue
            twin = twin_of(child)
            if twin is not None:
                setattr(parent, name, twin)
                swapped[type(child).__name__] += 1
            else:
                visit(child)

    root_twin = twin_of(model)
    if root_twin is not None:
        swapped[type(model).__name__] += 1
        model = root_twin
    else:
        visit(model)
    model.fastops_swapped = dict(swapped)
    model.fastops_fused = fuse_modules(model) if fuse else {}
    if verbose:
        summary = ", ".join(f"{n} x{c}" for n, c in sorted(swapped.items())) or "nothing"
        fused = ", ".join(f"{n} x{c}" for n, c in sorted(model.fastops_fused.items()))
        print(f"fastops.nn.convert: swapped {summary}" + (f"; fused {fused}" if fused else ""), file=sys.stderr)
    return model


# ---- fusion ----


def _linear_like(module: nn.Module) -> bool:
    """A fastops Linear or Conv1D with no activation of its own yet."""
    import fastops.nn as fnn

    if type(module) is fnn.Linear:
        return True
    hf = sys.modules.get("fastops.nn.hf")
    return hf is not None and "Conv1D" in vars(hf) and type(module) is hf.Conv1D and module.activation is None


def _activation_name(module: nn.Module) -> str | None:
    """The fastops.functional.LINEAR_ACTIVATIONS name of a fastops activation module, else None."""
    import fastops.nn as fnn

    if type(module) is fnn.ReLU:
        return "relu"
    if type(module) is fnn.SiLU:
        return "silu"
    if type(module) is fnn.GELU and module.approximate in ("none", "tanh"):
        return "gelu" if module.approximate == "none" else "gelu_tanh"
    return None


def _fuse_linear_act(parent: nn.Module, linear_name: str, act_name: str) -> str:
    import fastops.nn as fnn

    linear = getattr(parent, linear_name)
    activation = _activation_name(getattr(parent, act_name))
    if type(linear) is fnn.Linear:
        fused = _swap(linear, fnn.LinearAct)
        fused.activation = activation
        setattr(parent, linear_name, fused)
    else:
        linear.activation = activation
    setattr(parent, act_name, _fresh(getattr(parent, act_name), nn.Identity()))
    return "LinearAct"


# Syntax that makes a forward's one trace differ from some other call of it: branches, loops, short-circuits,
# exception handlers, context managers, nested functions.
_CONTROL_FLOW = (ast.If, ast.IfExp, ast.For, ast.AsyncFor, ast.While, ast.Try, ast.With, ast.AsyncWith, ast.Match,
                 ast.BoolOp, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.Lambda, ast.Yield,
                 ast.YieldFrom, ast.Await, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
if hasattr(ast, "TryStar"):
    _CONTROL_FLOW += (ast.TryStar,)


def _straight_line_forward(module: nn.Module) -> bool:
    """True when the module's forward takes one input and runs the same statements on every call (no control flow,
    no decorator), so that one symbolic trace is the whole forward."""
    forward = type(module).forward
    if "forward" in module.__dict__ or hasattr(forward, "__wrapped__"):
        return False
    try:
        params = list(inspect.signature(forward).parameters.values())
        tree = ast.parse(textwrap.dedent(inspect.getsource(forward)))
    except (OSError, TypeError, SyntaxError, ValueError):
        return False
    if len(params) != 2 or any(p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) or p.default is not p.empty
                               for p in params):
        return False
    (function,) = tree.body
    return not any(isinstance(node, _CONTROL_FLOW) for stmt in function.body for node in ast.walk(stmt))


class _ChildrenAsLeaves(torch.fx.Tracer):
    """Traces one module's own forward: every submodule call is one node."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True


def _trace(module: nn.Module) -> torch.fx.Graph | None:
    try:
        return _ChildrenAsLeaves().trace(module)
    except Exception:  # noqa: BLE001  (any forward that fx cannot trace is simply not fused)
        return None


def _gated_forward(module: nn.Module, gate: str, up: str, approximate: str | None, tail: tuple, x):
    g, u = getattr(module, gate)(x), getattr(module, up)(x)
    h = F.swiglu(g, u) if approximate is None else F.geglu(g, u, approximate=approximate)
    for name in tail:
        h = getattr(module, name)(h)
    return h


def _match_gated(graph: torch.fx.Graph, module: nn.Module):
    """(gate, up, approximate or None for SiLU, tail) when the graph is exactly
    ``tail(act(gate(x)) * up(x))``: act a fastops SiLU or GELU, gate and up fastops Linears of the input, tail a chain
    of one-input submodules (down projection, dropout)."""
    nodes = list(graph.nodes)
    if len(nodes) < 6 or nodes[0].op != "placeholder" or nodes[-1].op != "output":
        return None
    x = nodes[0]
    muls = [n for n in nodes if n.op == "call_function" and n.target in (operator.mul, torch.mul)]
    if len(muls) != 1 or len(muls[0].args) != 2 or muls[0].kwargs:
        return None
    mul = muls[0]
    for act_node, up_node in (mul.args, mul.args[::-1]):
        if not (isinstance(act_node, torch.fx.Node) and isinstance(up_node, torch.fx.Node)):
            return None
        if act_node.op != "call_module" or up_node.op != "call_module" or up_node.args != (x,):
            continue
        gate_node = act_node.args[0] if len(act_node.args) == 1 else None
        if not (isinstance(gate_node, torch.fx.Node) and gate_node.op == "call_module" and gate_node.args == (x,)):
            continue
        act = _activation_name(module.get_submodule(act_node.target))
        if act == "relu" or act is None:
            continue
        gate, up = gate_node.target, up_node.target
        if not (_linear_like(module.get_submodule(gate)) and _linear_like(module.get_submodule(up))):
            continue
        tail, prev = [], mul
        for node in nodes[nodes.index(mul) + 1:-1]:
            if node.op != "call_module" or node.args != (prev,) or node.kwargs:
                return None
            tail.append(node.target)
            prev = node
        if nodes[-1].args != (prev,) or len(nodes) != 6 + len(tail):  # x, gate, act, up, mul, tail..., output
            return None
        used = [n.target for n in nodes if n.op == "call_module"]
        if len(used) != len(set(used)) or any(n.op not in ("placeholder", "call_module", "output") for n in nodes
                                              if n is not mul):
            return None
        approximate = None if act == "silu" else ("tanh" if act == "gelu_tanh" else "none")
        return gate, up, approximate, tuple(tail)
    return None


def _match_linear_act(graph: torch.fx.Graph, module: nn.Module) -> list[tuple[str, str]]:
    """(linear, activation) child pairs where the graph feeds the Linear's output only into the activation and
    calls each of them once."""
    calls = collections.Counter(n.target for n in graph.nodes if n.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or "." in node.target or not _linear_like(module.get_submodule(node.target)):
            continue
        users = list(node.users)
        if len(users) != 1 or users[0].op != "call_module" or users[0].args != (node,) or users[0].kwargs:
            continue
        act = users[0].target
        if "." not in act and _activation_name(module.get_submodule(act)) and calls[node.target] == calls[act] == 1:
            pairs.append((node.target, act))
    return pairs


def fuse_modules(model: nn.Module) -> dict[str, int]:
    """Fuse in place what the module structure shows (every module and Linear involved used once in the model):

    - in an ``nn.Sequential``, a fastops Linear (or Conv1D) followed by a ReLU / GELU / SiLU becomes one LinearAct
      (Conv1D: its ``activation``), the activation an ``nn.Identity`` (no parameters, so the state_dict keys stay);
    - in a module whose forward is straight-line code (no branch, loop or decorator) and whose fx trace, with every
      submodule as one node, is ``tail(act(gate(x)) * up(x))``: the module's forward becomes
      ``tail(swiglu(gate(x), up(x)))`` (GeGLU for a GELU), leaving every submodule and key in place;
    - in such a module, ``act(linear(...))`` where the Linear's output goes only to the activation: as in a
      Sequential.

    Returns the counts of the fused forms."""
    fused: collections.Counter[str] = collections.Counter()
    occurrences = collections.Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))

    def single(*modules) -> bool:
        return all(occurrences[id(m)] == 1 for m in modules)

    for module in list(model.modules()):
        children = dict(module.named_children())
        if not any(_linear_like(c) for c in children.values()) or not any(
                _activation_name(c) for c in children.values()):
            continue
        if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
            names = list(children)
            for first, second in itertools.pairwise(names):
                a, b = children[first], children[second]
                if _linear_like(a) and _activation_name(b) and single(a, b):
                    fused[_fuse_linear_act(module, first, second)] += 1
            continue
        if not single(module) or not _straight_line_forward(module):
            continue
        graph = _trace(module)
        if graph is None:
            continue
        gated = _match_gated(graph, module)
        if gated is not None and single(*(module.get_submodule(n) for n in gated[:2])):
            gate, up, approximate, tail = gated
            module.forward = functools.partial(_gated_forward, module, gate, up, approximate, tail)
            fused["SwiGLU" if approximate is None else "GeGLU"] += 1
            continue
        for linear_name, act_name in _match_linear_act(graph, module):
            if single(children[linear_name], children[act_name]):
                fused[_fuse_linear_act(module, linear_name, act_name)] += 1
    return dict(fused)
