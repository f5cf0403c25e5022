"""Fuse an activation that directly follows a SparseLinear into the kernel epilogue.

Handles the two shapes our models use: a module with attributes `fc1` then `act` (zoo.MLP,
zoo.EncoderBlock, most transformer MLPs), and consecutive entries of an nn.Sequential."""

from __future__ import annotations

from torch import nn

from .modules import SparseLinear


def _fusable(act: nn.Module) -> str | None:
    if isinstance(act, nn.ReLU):
        return "relu"
    if isinstance(act, nn.GELU) and act.approximate == "none":   # the kernel implements exact (erf) GELU
        return "gelu"
    return None


def fuse_activations(model: nn.Module) -> list[str]:
    """Fold GELU/ReLU into the preceding SparseLinear (activation attribute) and replace the activation
    module with nn.Identity.  Returns the names of the fused layers."""
    fused = []
    for name, module in model.named_modules():
        fc1, act = getattr(module, "fc1", None), getattr(module, "act", None)
        if isinstance(fc1, SparseLinear) and fc1.activation == "none" and act is not None and _fusable(act):
            fc1.activation = _fusable(act)
            module.act = nn.Identity()
            fused.append(f"{name}.fc1" if name else "fc1")
        if isinstance(module, nn.Sequential):
            items = list(module.named_children())
            for (n1, m1), (n2, m2) in zip(items, items[1:], strict=False):
                if isinstance(m1, SparseLinear) and m1.activation == "none" and _fusable(m2):
                    m1.activation = _fusable(m2)
                    setattr(module, n2, nn.Identity())
                    fused.append(f"{name}.{n1}" if name else n1)
    return fused
