"""What a permutation search returns for one layer, and the per-layer / per-model reports."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..masks import LayerMask
from .gyro import SearchStats
from .saliency_accounting import gap_closed


@dataclass
class PermutationResult:
    """One layer's permuted layout, in ORIGINAL feature ids.

    rows[t]  output features of tile t (for HiNM: the V rows of block t; `rows.reshape(-1)` is the output
             permutation σ: position p of the permuted layer holds original feature σ[p]),
    cols[t]  kept input columns of tile t in 2:4-group order (consecutive quadruples share a group),
    mask     the kept weights [N, K] (what a dense masked layer would keep: the same function).
    Retained saliency is reported for the no-permutation layout, this layout and the unstructured bound."""

    name: str
    pattern: str
    method: str
    sparsity: float
    rows: torch.Tensor
    cols: list[torch.Tensor]
    two_four: bool
    mask: torch.Tensor
    no_perm: float
    retained: float
    unstructured: float
    seconds: float = 0.0
    stopped_early: bool = False
    stages: dict[str, SearchStats] = field(default_factory=dict)

    @property
    def gain(self) -> float:
        """Relative gain over no permutation."""
        return self.retained / self.no_perm - 1.0 if self.no_perm > 0 else 0.0

    @property
    def gap_closed(self) -> float:
        return gap_closed(self.retained, self.no_perm, self.unstructured)

    @property
    def output_order(self) -> torch.Tensor:
        """σ over all N outputs: tile rows first, then output features no tile covers (pruned features)."""
        n = self.mask.shape[0]
        covered = self.rows.reshape(-1)
        rest = torch.ones(n, dtype=torch.bool)
        rest[covered] = False
        return torch.cat([covered, torch.nonzero(rest).flatten()])

    @property
    def index_order(self) -> str:
        """'ascending' when every tile's kept columns are ascending, else 'free' (the format's flag)."""
        return "ascending" if all(bool((torch.diff(c) > 0).all()) for c in self.cols) else "free"

    def layer_mask(self) -> LayerMask:
        """The LayerMask to compress (rows/cols in original ids; restoring the order by row_index)."""
        return LayerMask(self.name, self.mask, self.sparsity, self.rows, list(self.cols), self.two_four)

    def summary(self) -> dict:
        return {"name": self.name, "pattern": self.pattern, "method": self.method, "shape": list(self.mask.shape),
                "sparsity": self.sparsity, "no_perm": self.no_perm, "retained": self.retained,
                "unstructured": self.unstructured, "gain": self.gain, "gap_closed": self.gap_closed,
                "seconds": self.seconds, "stopped_early": self.stopped_early,
                "stages": {k: vars(v) for k, v in self.stages.items()}}


@dataclass
class PermutationReport:
    """Per-layer retained saliency before/after, and how each layer's output order is handled."""

    pattern: str
    method: str
    sparsity: float
    layers: list[PermutationResult] = field(default_factory=list)
    output_handling: dict[str, str] = field(default_factory=dict)   # name → 'absorbed by <consumer>' | 'restored'
    seconds: float = 0.0

    @property
    def no_perm(self) -> float:
        return sum(r.no_perm for r in self.layers)

    @property
    def retained(self) -> float:
        return sum(r.retained for r in self.layers)

    @property
    def unstructured(self) -> float:
        return sum(r.unstructured for r in self.layers)

    @property
    def gap_closed(self) -> float:
        return gap_closed(self.retained, self.no_perm, self.unstructured)

    @property
    def stopped_early(self) -> bool:
        return any(r.stopped_early for r in self.layers)

    def to_dict(self) -> dict:
        return {"pattern": self.pattern, "method": self.method, "sparsity": self.sparsity, "seconds": self.seconds,
                "no_perm": self.no_perm, "retained": self.retained, "unstructured": self.unstructured,
                "gap_closed": self.gap_closed, "stopped_early": self.stopped_early,
                "layers": [r.summary() | {"output": self.output_handling.get(r.name, "")} for r in self.layers]}

    def table(self):
        from rich.table import Table

        title = (f"{self.method} permutation, {self.pattern} at {self.sparsity:.1%}: retained saliency "
                 f"{self.no_perm:.6g} → {self.retained:.6g} ({self.retained / max(self.no_perm, 1e-30) - 1:+.2%}), "
                 f"gap to unstructured closed {self.gap_closed:.1%}, {self.seconds:.1f} s"
                 + (" — stopped early by the time budget" if self.stopped_early else ""))
        table = Table(title=title)
        for col in ("layer", "N×K", "no perm", "permuted", "gain", "unstructured", "gap closed", "s", "outputs"):
            table.add_column(col, justify="left" if col in ("layer", "outputs") else "right", no_wrap=True)
        for r in self.layers:
            n, k = r.mask.shape
            table.add_row(r.name, f"{n}×{k}", f"{r.no_perm:.6g}", f"{r.retained:.6g}", f"{r.gain:+.2%}",
                          f"{r.unstructured:.6g}", f"{r.gap_closed:.1%}", f"{r.seconds:.2f}" + ("*" if r.stopped_early else ""),
                          self.output_handling.get(r.name, ""))
        return table

    def print(self) -> None:
        from rich.console import Console

        console = Console()
        if not console.is_terminal:
            console = Console(width=170)
        console.print(self.table())
