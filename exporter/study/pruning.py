"""Pruners for the study: the project's GradualPruner, and one that re-selects HiNM masks with gyro.

Every pattern at a given final sparsity walks the SAME stages (`common_schedule`): the TW paper's stages
from 50% up (HiNM / TVW / 2:4 cannot go below 50%), so a gentler ramp is not an advantage any row has.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from torch import nn

from ..patterns import HiNM, Pattern
from ..sparsify import SparsifyReport, compute_scores, layer_report
from ..training import TW_STAGES, GradualPruner


def common_schedule(final_sparsity: float) -> list[float]:
    return [s for s in TW_STAGES if 0.5 <= s < final_sparsity - 1e-9] + [final_sparsity]


def gyro_available() -> bool:
    """True once exporter.permute (issue #3) offers `permute_hinm` and `Gyro`."""
    try:
        from ..permute import Gyro, permute_hinm  # noqa: F401
    except ImportError:
        return False
    return True


class GyroPruner(GradualPruner):
    """GradualPruner whose every stage picks HiNM masks through gyro-permutation (`permute_hinm`).

    The permutation is not applied to the weights: the chosen rows / 2:4 groups live in the mask's tile
    layout (original feature ids), and `finalize()` compresses them with `row_index` / `k_index`, which is
    how the format absorbs a permutation.  `self.permutation_log` keeps each layer's retained-saliency gain."""

    def __init__(self, model: nn.Module, pattern: Pattern, final_sparsity: float, *, seed: int = 0,
                 time_budget_s: float | None = None, **kwargs) -> None:
        if not isinstance(pattern, HiNM):
            raise ValueError(f"GyroPruner permutes HiNM layers, got {pattern.describe()}")
        from ..permute import Gyro

        super().__init__(model, pattern, final_sparsity, **kwargs)
        self.config = Gyro(seed=seed, time_budget_s=time_budget_s)
        self.permutation_log: list[dict] = []

    def prune_to(self, sparsity: float, data: Iterable | None = None, loss_fn: Callable | None = None,
                 max_batches: int | None = None) -> SparsifyReport:
        # Mirrors GradualPruner.prune_to with select_masks swapped for permute_hinm, layer by layer.
        from ..permute import permute_hinm

        scores = compute_scores(self.model, self.layers, self.saliency, data, loss_fn, max_batches, progress=False)
        report = SparsifyReport(self.pattern.describe() + "+gyro", sparsity)
        for name, m in self.layers.items():
            holder = m.parametrizations.weight[0]
            s = scores[name] * holder.mask.reshape(scores[name].shape).cpu()
            result = permute_hinm(s, self.pattern, sparsity, self.config, name=name)
            self.masks[name] = result.layer_mask()
            self.permutation_log.append({"stage": sparsity} | result.summary())
            holder.mask = self.masks[name].mask.reshape(m.weight.shape).to(holder.mask.device)
            report.layers.append(layer_report(name, m, self.masks[name]))
        return report


def make_pruner(model: nn.Module, pattern: Pattern, sparsity: float, *, gyro: bool, seed: int,
                include: Sequence[str], exclude: Sequence[str] = ()) -> GradualPruner:
    kwargs = dict(stages=common_schedule(sparsity), include=include, exclude=exclude, types=(nn.Linear,))
    if gyro:
        return GyroPruner(model, pattern, sparsity, seed=seed, **kwargs)
    return GradualPruner(model, pattern, sparsity, **kwargs)
