"""Fuse sibling Linear layers (layers that read the same input, e.g. an attention block's q, k and v) into one.

Why: one sparse layer of N = N_q + N_k + N_v outputs is one kernel launch instead of three, and for HiNM / TVW
the output permutation of the fused layer may put rows of q, k and v into one block, so the search has three times
the rows to choose each block's rows from.  On all-mpnet-base-v2 at 75 % HiNM (V = 64) it lifts the attention matrices
(q, k, v and o) from 21.0 % to 22.7 % of the no-permutation → unstructured gap, the whole model from 23.1 % to
23.8 % (docs/PERMUTATION.md).  Every output row still
keeps the same count of weights as in its own layer (HiNM keeps half of its block's kept vectors in every row), so
each member stays at the requested sparsity.

How: `fuse_siblings` concatenates the members' weights and biases into one nn.Linear held by a `LinearGroup`
registered at the members' common parent (name: the members' names joined by "_", e.g. `q_k_v`; the layer
itself is `<parent>.q_k_v.linear`, which `sparsify` then turns into one SparseLinear), and replaces every member by
a `LinearSlice` that returns its columns of the group's output.  The group computes once per input: the first
member called with a tensor runs the fused layer, the others called with the same, unmodified tensor object take
their slice of that result (the cache is dropped once every member took its slice, or on the next input).  Under
torch.export / ONNX export that traces to one fused node and one slice per member.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from .graph import trace_linears
from .patterns import PatternError


def _version(x: torch.Tensor) -> int | None:
    """The in-place version counter (None for torch.fx proxies, which have none and cannot be compared)."""
    return None if isinstance(x, torch.fx.Proxy) else x._version


class LinearGroup(nn.Module):
    """The fused layer of sibling Linears: `linear` (nn.Linear, later SparseLinear) computes all members' outputs;
    member i owns output columns bounds[i][0]:bounds[i][1]."""

    def __init__(self, linear: nn.Module, members: Sequence[str], bounds: Sequence[tuple[int, int]]) -> None:
        super().__init__()
        self.linear = linear
        self.members = tuple(members)
        self.bounds = tuple(bounds)
        self._cache: tuple | None = None   # (weakref to the input, its version, fused output, members served)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    def part(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Member `index`'s output for input x: a slice of the fused output, computed once per input."""
        cache = self._cache
        if cache is not None and cache[0]() is x and cache[1] == _version(x):
            y, served = cache[2], cache[3] | {index}
        else:
            y, served = self.linear(x), {index}
        self._cache = None if len(served) == len(self.bounds) else (weakref.ref(x), _version(x), y, served)
        lo, hi = self.bounds[index]
        return y[..., lo:hi]

    def extra_repr(self) -> str:
        return "members=" + ", ".join(f"{m}[{lo}:{hi}]" for m, (lo, hi) in zip(self.members, self.bounds, strict=True))


class LinearSlice(nn.Module):
    """Stands where a fused member was: its output is its slice of the group's output.  The group is a plain
    attribute, not a submodule (it is registered once, at the parent), so its weights appear once in state_dict."""

    def __init__(self, group: LinearGroup, index: int, in_features: int) -> None:
        super().__init__()
        object.__setattr__(self, "group", group)
        self.index = index
        self.in_features = in_features
        lo, hi = group.bounds[index]
        self.out_features = hi - lo

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.group.part(x, self.index)

    def extra_repr(self) -> str:
        lo, hi = self.group.bounds[self.index]
        return f"in_features={self.in_features}, out_features={self.out_features}, of {self.group.members} [{lo}:{hi}]"


def sibling_groups(model: nn.Module, names: Iterable[str], example_inputs: Sequence | None = None) -> list[list[str]]:
    """Groups of at least two of the Linear layers `names` that read the same tensor, have the same parent module
    and the same in_features, in graph order (torch.export with `example_inputs`, else torch.fx).  Raises what the
    tracer raises on a model it cannot trace."""
    names = list(names)
    graph = trace_linears(model, names, example_inputs)
    by_input: dict[object, list[str]] = {}
    for node in graph.nodes:
        name = graph.linear_of(node)
        if name is not None and node.args:
            by_input.setdefault(node.args[0], []).append(name)
    groups = []
    for members in by_input.values():
        by_parent: dict[tuple, list[str]] = {}
        for m in dict.fromkeys(members):   # a layer called twice on the same input counts once
            key = (m.rpartition(".")[0], model.get_submodule(m).in_features)
            by_parent.setdefault(key, []).append(m)
        groups += [g for g in by_parent.values() if len(g) > 1]
    return groups


def _check_group(model: nn.Module, members: Sequence[str]) -> list[nn.Linear]:
    if len(members) < 2 or len(set(members)) != len(members):
        raise PatternError(f"fuse_siblings: a group needs at least two distinct layers, got {list(members)}")
    layers = []
    for m in members:
        try:
            module = model.get_submodule(m)
        except AttributeError:
            raise PatternError(f"fuse_siblings: layer '{m}' does not exist in the model") from None
        if type(module) is not nn.Linear:
            raise PatternError(f"fuse_siblings: layer '{m}' is a {type(module).__name__}, expected an nn.Linear")
        layers.append(module)
    parents = {m.rpartition(".")[0] for m in members}
    if len(parents) != 1:
        raise PatternError(f"fuse_siblings: the layers {list(members)} must have the same parent module "
                           f"(got {sorted(parents)})")
    first = layers[0]
    for m, layer in zip(members, layers, strict=True):
        if (layer.in_features, layer.weight.dtype, layer.weight.device) != (first.in_features, first.weight.dtype,
                                                                            first.weight.device):
            raise PatternError(f"fuse_siblings: layer '{m}' has in_features={layer.in_features}, "
                               f"{layer.weight.dtype} on {layer.weight.device}; '{members[0]}' has "
                               f"in_features={first.in_features}, {first.weight.dtype} on {first.weight.device}: "
                               "siblings must read the same input the same way")
    return layers


def fuse_siblings(model: nn.Module, groups: str | Sequence[Sequence[str]] = "auto", *,
                  names: Iterable[str] | None = None, example_inputs: Sequence | None = None) -> dict[str, list[str]]:
    """Fuse groups of sibling nn.Linear layers in place (see the module docstring).  groups: "auto" (the
    `sibling_groups` of `names`, default every nn.Linear, found by tracing the model with `example_inputs` or
    torch.fx; a model that cannot be traced is left unfused) or explicit lists of layer names (you vouch that each
    group reads the same input).  Returns {fused layer name: members}; the model computes the same function."""
    if names is None:
        names = [n for n, m in model.named_modules() if type(m) is nn.Linear]
    if groups == "auto":
        try:
            groups = sibling_groups(model, names, example_inputs)
        except Exception as err:  # tracing arbitrary models can fail in many ways; not fusing is always correct
            import warnings

            warnings.warn(f"fuse_siblings: could not trace the model ({type(err).__name__}); no layers fused. "
                          "Pass example_inputs=... or explicit groups.", stacklevel=2)
            return {}
    elif isinstance(groups, str):
        raise PatternError(f"fuse_siblings: groups must be 'auto' or lists of layer names, got {groups!r}")
    # every group is checked before the model changes: a bad group leaves the model as it was
    seen: set[str] = set()
    plan = []
    for members in groups:
        members = list(members)
        layers = _check_group(model, members)
        if seen & set(members):
            raise PatternError(f"fuse_siblings: layer(s) {sorted(seen & set(members))} appear in two groups")
        seen |= set(members)
        parent_name = members[0].rpartition(".")[0]
        parent = model.get_submodule(parent_name) if parent_name else model
        child = "_".join(m.rpartition(".")[2] for m in members)
        if hasattr(parent, child):   # two groups of one parent with the same names overlap: caught above
            raise PatternError(f"fuse_siblings: '{parent_name}' already has an attribute '{child}' for the fused layer")
        plan.append((members, parent, child, layers, parent_name))
    fused: dict[str, list[str]] = {}
    for members, parent, child, layers, parent_name in plan:
        out = [layer.out_features for layer in layers]
        first = layers[0]
        linear = nn.Linear(first.in_features, sum(out), bias=any(layer.bias is not None for layer in layers),
                           device=first.weight.device, dtype=first.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.cat([layer.weight for layer in layers]))
            if linear.bias is not None:   # a member without bias adds zeros
                linear.bias.copy_(torch.cat([layer.bias if layer.bias is not None else
                                             torch.zeros_like(layer.weight[:, 0]) for layer in layers]))
        ends = torch.tensor(out).cumsum(0).tolist()
        group = LinearGroup(linear, members, [(e - n, e) for e, n in zip(ends, out, strict=True)])
        parent.add_module(child, group)
        for i, m in enumerate(members):
            setattr(parent, m.rpartition(".")[2], LinearSlice(group, i, first.in_features))
        fused[f"{parent_name}.{child}.linear" if parent_name else f"{child}.linear"] = members
    return fused


def fuse_selected(model: nn.Module, layers: dict[str, nn.Module], spec: bool | Sequence[Sequence[str]],
                  example_inputs: Sequence | None = None) -> tuple[dict[str, nn.Module], dict[str, list[str]]]:
    """The `fuse_siblings=` option of sparsify / permute_model: fuse siblings among the selected `layers` (True:
    found by tracing; or explicit groups, every member selected) and return the selection with each group's
    members replaced by its fused layer (at the first member's place), and {fused layer: members}."""
    if spec is False or spec is None:
        return layers, {}
    if spec is not True:
        if isinstance(spec, str):
            raise PatternError(f"fuse_siblings must be True, False or lists of layer names, got {spec!r}")
        for members in spec:
            missing = [m for m in members if m not in layers]
            if missing:
                raise PatternError(f"fuse_siblings: layer(s) {missing} are not selected for pruning "
                                   "(include/exclude); a fused layer is pruned as a whole")
    fused = fuse_siblings(model, "auto" if spec is True else spec, names=list(layers), example_inputs=example_inputs)
    first = {members[0]: name for name, members in fused.items()}
    dropped = {m for members in fused.values() for m in members}
    out: dict[str, nn.Module] = {}
    for name, module in layers.items():
        if name in first:
            out[first[name]] = model.get_submodule(first[name])
        elif name not in dropped:
            out[name] = module
    return out, fused
