"""Training-time masking for gradual pruning: masks as parametrizations, a staged schedule, finalize().

    pruner = GradualPruner(model, HiNM(vector=64), final_sparsity=0.75)
    for sparsity in pruner.schedule:          # e.g. 0.5, 0.6, 0.65, 0.7, 0.75
        pruner.prune_to(sparsity)            # re-select masks from the current weights
        fine_tune(model)                     # masks stay frozen: pruned weights get zero gradient
    report = pruner.finalize()               # Linear → SparseLinear; Conv2d keeps its masked weight
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from .masks import LayerMask, select_masks
from .modules import SparseLinear
from .patterns import Pattern, pattern_from_spec
from .sparsify import SparsifyReport, _set_module, compute_scores, layer_report, select_layers

# The TW paper's sparsity stages, each followed by fine-tuning.
TW_STAGES = (0.25, 0.4, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.875, 0.9, 0.925, 0.95)


class WeightMask(nn.Module):
    """weight ↦ weight · mask; gradients of pruned weights are zero, so masks stay frozen in training."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def gradual_schedule(final_sparsity: float, pattern: Pattern | None = None, stages: Sequence[float] = TW_STAGES) -> list[float]:
    """Stages below `final_sparsity` that the pattern admits, then the final sparsity itself."""
    low = pattern.min_sparsity() if hasattr(pattern, "min_sparsity") else 0.0
    return [s for s in stages if low <= s < final_sparsity - 1e-9] + [final_sparsity]


class GradualPruner:
    def __init__(self, model: nn.Module, pattern: Pattern | str | dict, final_sparsity: float, *,
                 stages: Sequence[float] | None = None, include: Sequence[str] = ("*",), exclude: Sequence[str] = (),
                 saliency: str = "magnitude", types: tuple[type, ...] = (nn.Linear, nn.Conv2d)) -> None:
        self.model, self.pattern, self.final = model, pattern_from_spec(pattern), final_sparsity
        self.saliency = saliency
        self.layers = select_layers(model, include, exclude, types)
        if not self.layers:
            raise ValueError(f"no layer of {[t.__name__ for t in types]} matches include={list(include)} exclude={list(exclude)}")
        for name, m in self.layers.items():   # fail now, not after an hour of fine-tuning
            self.pattern.check_shape(name, (m.weight.shape[0], m.weight[0].numel()))
        self.pattern.check_sparsity("model", final_sparsity)
        self.schedule = list(stages) if stages is not None else gradual_schedule(final_sparsity, self.pattern)
        self.masks: dict[str, LayerMask] = {}
        for m in self.layers.values():
            parametrize.register_parametrization(m, "weight", WeightMask(torch.ones_like(m.weight, dtype=torch.bool)))

    def prune_to(self, sparsity: float, data: Iterable | None = None, loss_fn: Callable | None = None,
                 max_batches: int | None = None) -> SparsifyReport:
        """Re-select every mask at `sparsity` from the current (masked) weights or Taylor scores."""
        scores = compute_scores(self.model, self.layers, self.saliency, data, loss_fn, max_batches, progress=False)
        for name, m in self.layers.items():
            scores[name] = scores[name] * m.parametrizations.weight[0].mask.reshape(scores[name].shape).cpu()
        self.masks = select_masks(scores, self.pattern, sparsity)
        report = SparsifyReport(self.pattern.describe(), sparsity)
        for name, m in self.layers.items():
            holder = m.parametrizations.weight[0]
            holder.mask = self.masks[name].mask.reshape(m.weight.shape).to(holder.mask.device)
            report.layers.append(layer_report(name, m, self.masks[name]))
        return report

    def finalize(self, dtype: torch.dtype | None = None) -> SparsifyReport:
        """Bake masks into weights; Linear layers of tile-sparse patterns become SparseLinear."""
        if not self.masks:
            self.prune_to(self.final)
        report = SparsifyReport(self.pattern.describe(), self.final)
        for name, m in self.layers.items():
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
            lm = self.masks[name]
            new = m
            if isinstance(m, nn.Linear) and self.pattern.tile_sparse:
                new = SparseLinear.from_linear(m, lm, dtype=dtype, pattern=self.pattern.describe(), name=name)
                _set_module(self.model, name, new)
            report.layers.append(layer_report(name, new, lm))
        return report
