"""Whole-model checkpoints of built-in models: compressed SparseLinear layers + the dense rest, one file.

Used by the CLI to hand a pruned model from `sparsetrt prune` to `sparsetrt export`/`validate`.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from . import zoo
from .formats import tilesparse
from .modules import SparseLinear
from .patterns import PatternError
from .siblings import fuse_siblings
from .sparsify import _set_module


def save_model(model: nn.Module, path: str | Path, spec: dict) -> None:
    """`spec` rebuilds the architecture: {"zoo": name, "kwargs": {...}, optional "fused": {fused layer: members}
    (exporter.siblings)} (+ anything informative)."""
    sparse = {name: m for name, m in model.named_modules() if isinstance(m, SparseLinear)}
    layers = {name: (m.format, m.bias) for name, m in sparse.items()}
    dense = {k: v for k, v in model.state_dict().items() if not any(k.startswith(n + ".") for n in sparse)}
    activations = {name: m.activation for name, m in sparse.items()}
    meta = {"model": json.dumps(spec), "activations": json.dumps(activations)}
    tilesparse.save(path, layers, extra_tensors=dense, extra_metadata=meta)


def load_model(path: str | Path) -> tuple[nn.Module, dict]:
    layers, dense, meta = tilesparse.load(path, with_extras=True)
    if "model" not in meta:
        raise tilesparse.FormatError(f"{path}: not a model checkpoint (no 'model' entry in the header)")
    spec = json.loads(meta["model"])
    activations = json.loads(meta.get("activations", "{}"))
    model = zoo.build(spec["zoo"], **spec.get("kwargs", {}))
    if spec.get("fused"):
        _fuse_as_saved(model, spec["fused"], path)
    for name, (fmt, bias) in layers.items():
        try:
            model.get_submodule(name)
        except AttributeError:
            raise tilesparse.FormatError(f"{path}: layer '{name}' does not exist in model '{spec['zoo']}'") from None
        _set_module(model, name, SparseLinear(fmt, bias, activation=activations.get(name, "none")))
    missing, unexpected = model.load_state_dict(dense, strict=False)
    sparse_keys = {f"{n}.{f}" for n in layers for f in (*tilesparse.TENSOR_FIELDS, "bias")}
    missing = [k for k in missing if k not in sparse_keys]
    if missing or unexpected:
        raise tilesparse.FormatError(f"{path}: state does not match model '{spec['zoo']}': missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval(), spec


def _fuse_as_saved(model: nn.Module, fused: dict, path: str | Path) -> None:
    """Fuse the rebuilt model's sibling groups as the pruned one was, so the saved fused layers have their places."""
    if not isinstance(fused, dict) or not all(isinstance(m, list) for m in fused.values()):
        raise tilesparse.FormatError(f"{path}: 'fused' in the model header must map fused layers to member lists")
    try:
        made = fuse_siblings(model, list(fused.values()))
    except PatternError as err:
        raise tilesparse.FormatError(f"{path}: cannot fuse the saved sibling groups again: {err}") from None
    if made != fused:
        raise tilesparse.FormatError(f"{path}: the saved groups fuse into {sorted(made)}, expected {sorted(fused)}")
