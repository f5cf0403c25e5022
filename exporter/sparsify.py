"""`sparsify(model, pattern, sparsity)`: choose masks and swap nn.Linear layers for SparseLinear."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from . import saliency as sal
from .masks import LayerMask, select_masks
from .modules import SparseLinear
from .patterns import Pattern, PatternError, pattern_from_spec
from .siblings import fuse_selected


@dataclass
class LayerReport:
    name: str
    kind: str
    shape: tuple[int, int]
    requested: float
    achieved: float
    tiles: int = 0
    kept_min: int = 0
    kept_max: int = 0


@dataclass
class SparsifyReport:
    pattern: str
    requested: float
    layers: list[LayerReport] = field(default_factory=list)
    permutation: object | None = None   # exporter.permute.PermutationReport when sparsify(permutation=...)
    fused: dict[str, list[str]] = field(default_factory=dict)   # fused layer → its sibling members (fuse_siblings)

    @property
    def achieved(self) -> float:
        total = sum(r.shape[0] * r.shape[1] for r in self.layers)
        kept = sum(r.shape[0] * r.shape[1] * (1.0 - r.achieved) for r in self.layers)
        return 1.0 - kept / total if total else 0.0

    def to_dict(self) -> dict:
        out = {"pattern": self.pattern, "requested": self.requested, "achieved": self.achieved,
               "layers": [vars(r) | {"shape": list(r.shape)} for r in self.layers]}
        if self.permutation is not None:
            out["permutation"] = self.permutation.to_dict()
        if self.fused:
            out["fused"] = self.fused
        return out

    def table(self):
        from rich.table import Table

        table = Table(title=f"{self.pattern}: requested {self.requested:.1%}, achieved {self.achieved:.2%}")
        for col in ("layer", "module", "N×K", "requested", "achieved", "tiles", "kept K / tile"):
            table.add_column(col, justify="left" if col in ("layer", "module") else "right", no_wrap=True)
        for r in self.layers:
            kept = "" if not r.tiles else (f"{r.kept_min}" if r.kept_min == r.kept_max else f"{r.kept_min}–{r.kept_max}")
            table.add_row(r.name, r.kind, f"{r.shape[0]}×{r.shape[1]}", f"{r.requested:.1%}", f"{r.achieved:.2%}",
                          str(r.tiles or ""), kept)
        return table

    def print(self) -> None:
        from rich.console import Console

        console = Console()
        if not console.is_terminal:   # logs and CI: do not squeeze the table into 80 columns
            console = Console(width=160)
        console.print(self.table())
        if self.permutation is not None:   # retained saliency per layer, before / after the permutation search
            console.print(self.permutation.table())


def select_layers(model: nn.Module, include: Sequence[str] = ("*",), exclude: Sequence[str] = (),
                  types: tuple[type, ...] = (nn.Linear,)) -> dict[str, nn.Module]:
    """Modules of `types` whose qualified name matches an include glob and no exclude glob."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, types) and any(fnmatch.fnmatch(name, p) for p in include) \
                and not any(fnmatch.fnmatch(name, p) for p in exclude):
            out[name] = module
    return out


def compute_scores(model: nn.Module, layers: dict[str, nn.Module], method: str = "magnitude",
                   data: Iterable | None = None, loss_fn: Callable | None = None,
                   max_batches: int | None = None, progress: bool = True) -> dict[str, torch.Tensor]:
    if method == "magnitude":
        return sal.magnitude(layers)
    if method == "taylor":
        if data is None or loss_fn is None:
            raise ValueError("saliency='taylor' needs a data loader (data=...) and a loss (loss_fn=...)")
        return sal.taylor(model, layers, data, loss_fn, max_batches=max_batches, progress=progress)
    raise ValueError(f"saliency must be 'magnitude' or 'taylor', got {method!r}")


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def layer_report(name: str, module: nn.Module, lm: LayerMask) -> LayerReport:
    rep = LayerReport(name, type(module).__name__, tuple(lm.mask.shape), lm.requested, lm.achieved)
    if lm.cols is not None:
        kept = [len(c) for c in lm.cols]
        rep.tiles, rep.kept_min, rep.kept_max = len(kept), min(kept), max(kept)
    return rep


def sparsify(
    model: nn.Module,
    pattern: Pattern | str | dict,
    sparsity: float,
    *,
    include: Sequence[str] = ("*",),
    exclude: Sequence[str] = (),
    saliency: str = "magnitude",
    data: Iterable | None = None,
    loss_fn: Callable | None = None,
    max_batches: int | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = True,
    permutation=None,
    fuse_siblings: bool | Sequence[Sequence[str]] = False,
) -> SparsifyReport:
    """Prune the selected nn.Linear layers of `model` in place.

    Tile-sparse patterns (HiNM, TVW, TW, 2:4) become `SparseLinear` modules holding compressed weights;
    the baselines (unstructured, block, other N:M) stay nn.Linear with pruned weights set to zero.
    Returns a per-layer report of requested vs achieved sparsity.

    `permutation` (e.g. `exporter.permute.Gyro()`, HiNM/TVW/TW only) permutes rows and 2:4 groups first
    to keep more saliency; the model computes the same function as with unpermuted kept weights (outputs
    absorbed by the next sparse layer where the graph allows, else restored by the output scatter; see
    docs/PERMUTATION.md).  The report's `permutation` field holds the retained-saliency report.

    `fuse_siblings` (True, or explicit groups of layer names) first fuses selected layers that read the same
    input (an attention block's q, k, v) into one layer (exporter.siblings): one kernel launch, and with a
    permutation the blocks may mix their rows.  The report's `fused` field lists the groups."""
    from tqdm.auto import tqdm

    pattern = pattern_from_spec(pattern)
    layers = select_layers(model, include, exclude)
    if not layers:
        raise PatternError(f"no nn.Linear layer matches include={list(include)} exclude={list(exclude)}")
    layers, fused = fuse_selected(model, layers, fuse_siblings)
    scores = compute_scores(model, layers, saliency, data, loss_fn, max_batches, progress)
    if permutation is not None:
        report = _sparsify_permuted(model, layers, scores, pattern, sparsity, permutation, dtype, progress)
        report.fused = fused
        return report
    masks = select_masks(scores, pattern, sparsity)
    report = SparsifyReport(pattern.describe(), sparsity, fused=fused)
    for name in tqdm(layers, desc=f"sparsify {pattern.describe()}", disable=not progress, leave=False):
        module, lm = layers[name], masks[name]
        if pattern.tile_sparse:
            new = SparseLinear.from_linear(module, lm, dtype=dtype, pattern=pattern.describe(), name=name)
            _set_module(model, name, new)
        else:
            with torch.no_grad():
                module.weight.mul_(lm.mask.to(module.weight.device, module.weight.dtype))
            new = module
        report.layers.append(layer_report(name, new, lm))
    return report


def _sparsify_permuted(model, layers, scores, pattern, sparsity, permutation, dtype, progress) -> SparsifyReport:
    import time

    from .permute.model import absorbable_pairs, apply_permuted, permute_scores
    from .permute.result import PermutationReport

    start = time.perf_counter()
    results = permute_scores(scores, pattern, sparsity, permutation, progress=progress)
    handling = apply_permuted(model, layers, results, absorbable_pairs(model, layers), pattern, dtype)
    report = SparsifyReport(pattern.describe(), sparsity)
    for name in layers:
        report.layers.append(layer_report(name, model.get_submodule(name), results[name].layer_mask()))
    report.permutation = PermutationReport(pattern.describe(), permutation.name, sparsity, list(results.values()),
                                           handling, time.perf_counter() - start)
    return report


sparsify_ = sparsify
