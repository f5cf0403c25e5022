"""The Linear layers of a traced model: which node runs which layer, and which ops act elementwise.

Shared by the model-level passes that need the data flow between layers: the permutation's absorption
(exporter.permute.model: an output reaching one sparse layer through elementwise ops only) and the sibling
fusion (exporter.siblings: layers reading the same input).  torch.export with example inputs, else torch.fx.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

# Ops that act on every feature independently, so a permutation of features commutes with them.
_ELEMENTWISE_ATEN = {
    "gelu", "relu", "relu_", "silu", "silu_", "tanh", "sigmoid", "dropout", "clone", "alias", "hardtanh",
    "leaky_relu", "elu", "mish", "hardswish", "hardsigmoid", "softplus", "_to_copy", "contiguous", "identity",
}
_ELEMENTWISE_MODULES = (nn.GELU, nn.ReLU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Dropout, nn.Identity, nn.LeakyReLU,
                        nn.ELU, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Hardtanh)
_ELEMENTWISE_FUNCTIONS = {torch.relu, torch.tanh, torch.sigmoid, nn.functional.gelu, nn.functional.relu,
                          nn.functional.silu, nn.functional.dropout, nn.functional.leaky_relu, nn.functional.elu,
                          nn.functional.mish, nn.functional.hardswish, nn.functional.softplus}


@dataclass
class LinearGraph:
    """A traced graph's nodes; `linear_of(node)` names the selected nn.Linear a node runs (or None), and
    `is_elementwise(node)` says whether it acts on every feature independently."""

    nodes: list
    linear_of: Callable
    is_elementwise: Callable


def trace_linears(model: nn.Module, names: Iterable[str], example_inputs: Sequence | None = None) -> LinearGraph:
    """Trace `model` (torch.export with `example_inputs`, in eval mode; else torch.fx) and find the nodes of the
    Linear layers `names`.  Raises whatever the tracer raises on a model it cannot trace."""
    names = set(names)
    if example_inputs is None:
        traced = torch.fx.symbolic_trace(model)
        modules = dict(traced.named_modules())

        def fx_linear(node) -> str | None:
            return node.target if node.op == "call_module" and node.target in names else None

        def fx_elementwise(node) -> bool:
            if node.op == "call_module":
                return isinstance(modules.get(node.target), _ELEMENTWISE_MODULES)
            return node.op == "call_function" and node.target in _ELEMENTWISE_FUNCTIONS

        return LinearGraph(list(traced.graph.nodes), fx_linear, fx_elementwise)
    was_training = model.training
    model.eval()
    try:
        graph = torch.export.export(model, tuple(example_inputs)).graph_module.graph
    finally:
        model.train(was_training)

    def export_linear(node) -> str | None:
        if node.op != "call_function" or getattr(node.target, "__name__", "").split(".")[0] != "linear":
            return None
        stack = node.meta.get("nn_module_stack") or {}
        path = list(stack.values())[-1][0] if stack else None
        return path if path in names else None

    def export_elementwise(node) -> bool:
        return node.op == "call_function" and getattr(node.target, "__name__", "").split(".")[0] in _ELEMENTWISE_ATEN

    return LinearGraph(list(graph.nodes), export_linear, export_elementwise)
