"""Run the study grid and write docs/RESULTS.md, docs/results.json and the plots.

Aggregation: mean ± sample standard deviation over seeds of each cell; Δ vs dense is paired per seed
(same dense model).  The verdict on the acceptance criteria is computed from those numbers, never typed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from .data import Dataset, load_dataset
from .model import ModelConfig
from .runner import DEFAULT_CACHE, PatternResult, dense_model, run_pattern
from .specs import ROWS, study_grid
from .train import TrainConfig, seed_everything


@dataclass
class Cell:
    pattern: str
    sparsity: float
    runs: list[PatternResult] = field(default_factory=list)

    def stat(self, key: str) -> tuple[float, float]:
        vals = [getattr(r, key) for r in self.runs if getattr(r, key) is not None]
        if not vals:
            return float("nan"), float("nan")
        return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)

    def delta(self) -> tuple[float, float]:
        """Fine-tuned accuracy minus the same seed's dense accuracy."""
        d = [r.final_acc - r.dense_acc for r in self.runs]
        return statistics.fmean(d), (statistics.stdev(d) if len(d) > 1 else 0.0)

    def to_dict(self) -> dict:
        keys = ("dense_acc", "oneshot_acc", "masked_acc", "final_acc", "achieved", "finetune_s", "permutation_gain")
        return {"pattern": self.pattern, "label": ROWS[self.pattern].label, "sparsity": self.sparsity,
                "seeds": [r.seed for r in self.runs],
                **{k: dict(zip(("mean", "std"), self.stat(k), strict=True)) for k in keys},
                "delta_vs_dense": dict(zip(("mean", "std"), self.delta(), strict=True))}


def run_study(seeds: Sequence[int], patterns: Sequence[str] | None = None, *, dataset: str | Dataset = "mnist5k",
              model_cfg: ModelConfig | None = None, cfg: TrainConfig | None = None, cache_dir=DEFAULT_CACHE,
              threads: int | None = None, progress: bool = True) -> dict:
    """Every (pattern, sparsity) of the grid for every seed.  Returns the results dict written to JSON."""
    from tqdm.auto import tqdm

    from .pruning import gyro_available

    model_cfg, cfg = model_cfg or ModelConfig(), cfg or TrainConfig()
    data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    grid = study_grid(list(patterns) if patterns else None)
    skipped = []
    if not gyro_available():
        skipped = [c for c in grid if ROWS[c[0]].gyro]
        grid = [c for c in grid if not ROWS[c[0]].gyro]
    cells = {c: Cell(*c) for c in grid}
    dense_info = {}
    start = time.perf_counter()
    with tqdm(total=len(seeds) * len(grid), desc="study", disable=not progress) as bar:
        for seed in seeds:
            seed_everything(seed, threads)
            _, dense_info[seed] = dense_model(data, seed, model_cfg, cfg, cache_dir, progress)
            for name, sparsity in grid:
                bar.set_postfix_str(f"seed {seed} {name} {sparsity:g}")
                seed_everything(seed, threads)
                cells[(name, sparsity)].runs.append(run_pattern(
                    name, sparsity, seed, dataset=data, model_cfg=model_cfg, cfg=cfg, cache_dir=cache_dir,
                    progress=progress))
                bar.update()
    return {"dataset": data.describe(), "dataset_name": data.name, "model": model_cfg.to_dict(),
            "train": cfg.to_dict(), "seeds": list(seeds), "threads": threads,
            "dense": {str(k): v for k, v in dense_info.items()},
            "cells": [c.to_dict() for c in cells.values()],
            "runs": [r.to_dict() for c in cells.values() for r in c.runs],
            "not_run": [{"pattern": n, "sparsity": s, "why": "exporter.permute (gyro, issue #3) is not available"}
                        for n, s in skipped],
            "wall_s": time.perf_counter() - start}
