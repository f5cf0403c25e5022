"""The rows of the accuracy study: a name → pattern (+ permutation) and the sparsities it allows.

Tile / vector / block sizes are all 32 so the structured patterns are compared at one granularity: 32 is
the kernel's K step, a multiple of the 16-row mma tile, and divides every pruned N (128 and 512).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..patterns import NM, TVW, TW, Block, HiNM, Pattern, PatternError, Unstructured

TILE = 32


class StudyError(PatternError):
    """A study request that cannot run: unknown row name, or a sparsity the pattern does not allow."""


@dataclass(frozen=True)
class Row:
    name: str
    label: str
    sparsities: tuple[float, ...]
    gyro: bool = False

    def pattern(self) -> Pattern | None:
        """The pattern to prune with (None for the dense baseline)."""
        return _PATTERNS[self.name]()


_PATTERNS = {
    "dense": lambda: None,
    "unstructured": Unstructured,
    "2:4": lambda: NM(2, 4),
    "block": lambda: Block(TILE),
    "tw": lambda: TW(tile=TILE),
    "tvw": lambda: TVW(tile=TILE),
    "hinm": lambda: HiNM(vector=TILE),
    "hinm+gyro": lambda: HiNM(vector=TILE),
}

ROWS: dict[str, Row] = {r.name: r for r in (
    Row("dense", "dense", (0.0,)),
    Row("unstructured", "unstructured (magnitude)", (0.75, 0.875)),
    Row("2:4", "2:4 (N:M)", (0.5,)),
    Row("block", f"block-sparse {TILE}×{TILE}", (0.75, 0.875)),
    Row("tw", f"TW (G={TILE})", (0.75, 0.875)),
    Row("tvw", f"TVW (G={TILE}, 2:4)", (0.75, 0.875)),
    Row("hinm", f"HiNM (V={TILE}, no permutation)", (0.75, 0.875)),
    Row("hinm+gyro", f"HiNM (V={TILE}) + gyro-permutation", (0.75, 0.875), gyro=True),
)}


def get_row(name: str, sparsity: float | None = None) -> Row:
    """The study row `name`; with `sparsity`, also check the row allows it."""
    row = ROWS.get(str(name).strip().lower())
    if row is None:
        raise StudyError(f"unknown study pattern '{name}'; expected one of {list(ROWS)}")
    if sparsity is not None and not any(abs(float(sparsity) - s) < 1e-9 for s in row.sparsities):
        allowed = ", ".join(f"{s:g}" for s in row.sparsities)
        raise StudyError(f"study pattern '{row.name}' runs at sparsity {allowed}, got {sparsity!r}")
    return row


def study_grid(names: list[str] | tuple[str, ...] | None = None) -> list[tuple[str, float]]:
    """(row, sparsity) pairs in table order."""
    rows = [get_row(n) for n in names] if names else list(ROWS.values())
    return [(r.name, s) for r in rows for s in r.sparsities]
