"""Permutation configs, in the style of torchao's configs: small frozen dataclasses that validate themselves.

`Gyro` is the method of the HiNM paper (output-channel permutation by sampled, clustered rows and a linear
assignment, then a per-tile input permutation that forms better 2:4 groups).  `NoPermutation`,
`RandomRestarts` and `ChannelSwap` are the baselines it is measured against.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..patterns import PatternError


def _check(cls: str, field: str, ok: bool, value: object, expected: str) -> None:
    if not ok:
        raise PatternError(f"{cls}.{field} must be {expected}, got {value!r}")


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class PermutationConfig:
    """Base class.  `seed` fixes every random choice (same seed, same input → identical result);
    `time_budget_s` bounds the search's wall time (for a model: all layers together)."""

    seed: int = 0
    time_budget_s: float | None = None
    name = "base"

    def __post_init__(self) -> None:
        cls = type(self).__name__
        _check(cls, "seed", _int(self.seed) and self.seed >= 0, self.seed, "a non-negative integer")
        _check(cls, "time_budget_s", self.time_budget_s is None or (isinstance(self.time_budget_s, (int, float))
               and self.time_budget_s > 0), self.time_budget_s, "None or a positive number of seconds")


@dataclass(frozen=True)
class NoPermutation(PermutationConfig):
    """Identity order: blocks of consecutive rows, kept columns grouped in ascending order."""

    name = "none"


@dataclass(frozen=True)
class RandomRestarts(PermutationConfig):
    """Best of `restarts` random row permutations (with random column grouping) and the identity."""

    restarts: int = 8
    name = "random"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check("RandomRestarts", "restarts", _int(self.restarts) and self.restarts >= 1, self.restarts, "a positive integer")


@dataclass(frozen=True)
class ChannelSwap(PermutationConfig):
    """NVIDIA-ASP-style greedy channel swaps for the 2:4 groups inside every tile (rows not permuted).

    Each iteration scores every swap of two kept columns in different groups, then applies the best ones
    in decreasing order of gain, skipping groups already touched in that iteration; it stops when no swap
    gains more than `threshold` × the tile's retained saliency, or after `max_iters` iterations."""

    max_iters: int = 100
    threshold: float = 1e-7
    name = "channel_swap"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check("ChannelSwap", "max_iters", _int(self.max_iters) and self.max_iters >= 1, self.max_iters, "a positive integer")
        _check("ChannelSwap", "threshold", isinstance(self.threshold, (int, float)) and self.threshold >= 0,
               self.threshold, "a non-negative number")


@dataclass(frozen=True)
class Gyro(PermutationConfig):
    """Gyro-permutation.

    Output stage (which rows share a tile): for every e in `schedule`, repeat rounds of {every tile releases
    e random rows; cost[i, j] = column-vector saliency kept when released row j joins tile i's remaining
    rows; a linear assignment gives every tile e released rows back; keep the round only if the total kept
    saliency grows} until `patience` rounds in a row bring no gain.  The schedule is walked `passes` times.
    With `patience_by_rows` (the default) a round counts as the share e·T / `max_released` of a round: a
    round that releases fewer rows (few tiles, small e) examines fewer rows and costs much less, so the
    768-row layers (12 blocks) get 2–8× more of their cheap rounds; False counts every round as one.
    `kmeans=True` is the authors' variant: the released rows are first grouped by balanced k-means
    (`kmeans_iters` iterations) into one cluster per tile, and whole clusters are assigned.  With
    `objective="two_four"` (the default; patterns with a 2:4 level only) the column sums are taken over
    max(0, s − θ_r), θ_r = row r's kept-th largest score, so that scores the 2:4 level would prune anyway do
    not decide which rows share a tile; `"vector"` uses the plain column-vector level as the authors do.

    Input stage (which kept columns share a 2:4 group, per tile): repeat {pull one column from every group
    of 4; cost[i, j] = 2:4-kept saliency if column j joins group i's other 3, summed over the tile's rows;
    linear assignment; accept if better} until `input_patience` tries in a row bring no gain.  Problems with
    more than `lsa_groups` groups are split into random parts of at most that many groups per round.  On HiNM
the `spare_columns` dropped columns with the largest block sums are candidates too: a pulled column may
be replaced by one of them (a block may keep any set of `kept` columns, so the kept count is unchanged
and the kept set is chosen together with the 2:4 groups; 0 keeps the level-1 rule's set).  With
`pair_patience` > 0 the stage ends with the exhaustive two-group search of `pairs.py` (every way to
re-split two groups' 8 columns, on random matchings of each tile's groups) until `pair_patience` rounds
in a row bring no gain of `min_gain`; off by default: on the real checkpoints it added 0.1–0.2 points of
gap closed for several times the search time.

    `group_init="pairs"` (the default) starts the input stage from a constructed grouping instead of the
    kept columns' ascending order: the columns are matched into pairs maximising Σ_rows max of the pair, and
    the pairs into groups maximising Σ_rows top-2 (two linear assignments per tile; a tile keeps the identity
    where that is better).  On the real checkpoints it ends higher (most on the 768×3072 layers, whose
    1536-column blocks the LSA rounds cannot untangle from the identity) and sooner.

    A round whose relative gain is below `min_gain` (input stage) or `output_min_gain` (output stage) still
    applies but counts as a round without gain (the last rounds of a converging search gain ~1e-6 each and
    would otherwise dominate the run time).  `max_rounds` caps the rounds of each stage per layer."""

    schedule: tuple[int, ...] = (4, 2, 1)
    patience: int = 15
    patience_by_rows: bool = True
    passes: int = 1
    max_released: int = 96
    kmeans: bool = False
    kmeans_iters: int = 8
    objective: str = "two_four"
    output_min_gain: float = 5e-6
    input_patience: int = 3
    lsa_groups: int = 96
    spare_columns: int = 96
    pair_patience: int = 0
    group_init: str = "pairs"
    min_gain: float = 3e-5
    max_rounds: int = 20000
    output: bool = True
    input: bool = True
    name = "gyro"

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.schedule, list):   # accept a list from YAML/JSON configs; stored as a tuple
            object.__setattr__(self, "schedule", tuple(self.schedule))
        sched = self.schedule
        _check("Gyro", "schedule", isinstance(sched, tuple) and len(sched) > 0 and all(_int(e) and e >= 1 for e in sched),
               sched, "a non-empty tuple of positive integers (rows released per tile in each round)")
        for field in ("patience", "passes", "max_released", "kmeans_iters", "input_patience", "max_rounds"):
            v = getattr(self, field)
            _check("Gyro", field, _int(v) and v >= 1, v, "a positive integer")
        _check("Gyro", "spare_columns", _int(self.spare_columns) and self.spare_columns >= 0, self.spare_columns,
               "a non-negative integer (dropped columns per HiNM block the input stage may swap in)")
        _check("Gyro", "pair_patience", _int(self.pair_patience) and self.pair_patience >= 0, self.pair_patience,
               "a non-negative integer (0 turns the exhaustive two-group search off)")
        _check("Gyro", "lsa_groups", _int(self.lsa_groups) and self.lsa_groups >= 2, self.lsa_groups,
               "an integer >= 2")
        for field in ("min_gain", "output_min_gain"):
            v = getattr(self, field)
            _check("Gyro", field, isinstance(v, (int, float)) and 0 <= v < 1, v, "a number in [0, 1)")
        _check("Gyro", "objective", self.objective in ("two_four", "vector"), self.objective, "'two_four' or 'vector'")
        _check("Gyro", "group_init", self.group_init in ("pairs", "identity"), self.group_init,
               "'pairs' (constructed start for the 2:4 grouping) or 'identity' (kept columns in ascending order)")
        _check("Gyro", "kmeans", isinstance(self.kmeans, bool), self.kmeans, "True or False")
        _check("Gyro", "patience_by_rows", isinstance(self.patience_by_rows, bool), self.patience_by_rows,
               "True or False")
        _check("Gyro", "output/input", self.output or self.input, (self.output, self.input),
               "at least one enabled stage")
