"""Gyro-permutation search kernels: output rows into tiles, and kept columns into 2:4 groups.

Both searches are greedy and monotone: a round is accepted only when it raises the retained saliency,
so the result never keeps less than the order it started from.  Costs are built batched in float32
(the expensive part) and every acceptance is re-checked on float64 totals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ._common import Deadline, assign_max, random_perm_rows
from .config import Gyro
from .saliency_accounting import top2_of_4, top2_pair, vector_retained

# Elements of one temporary in the cost loops: small enough to stay in cache (2 MB of float32).
_CACHE = 1 << 19


@dataclass
class SearchStats:
    rounds: int = 0
    accepted: int = 0
    before: float = 0.0
    after: float = 0.0


# ---- output stage: which rows share a tile ----------------------------------------------------------------
def _thresholds(sums: torch.Tensor, kept: int) -> torch.Tensor:
    """The kept-th largest column sum of every tile [T] (float32): the level-1 cut of each tile."""
    return torch.kthvalue(sums.to(torch.float32), sums.shape[1] - kept + 1, dim=1).values


def two_four_profile(scores: torch.Tensor, kept: int) -> torch.Tensor:
    """max(0, s − θ_r), θ_r = row r's kept-th largest score: the part of each score that can survive the 2:4
    level.  If a row's tile kept exactly the row's own top `kept` columns, 2:4 would keep about its top half
    of them, so entries below θ_r are (nearly) always pruned and should not pull rows together."""
    theta = torch.kthvalue(scores, scores.shape[1] - kept + 1, dim=1, keepdim=True).values
    return (scores - theta).clamp_min_(0)


def _join_costs(d: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """cost[i, j] = Σ_c max(0, d[i, c] + x[j, c]) with d = tile i's remaining column sums − its cut τ_i.

    Up to the constant kept·τ_i this is top-k(rest_i + x_j) via top-k(v) = min_τ k·τ + Σ max(0, v − τ) at
    the tile's current cut: exact while the cut does not move, an upper bound otherwise (~30× cheaper than
    a top-k per pair; every accepted round is re-checked with the exact top-k in float64)."""
    t, k = d.shape
    out = torch.empty(t, x.shape[0], dtype=torch.float32)
    step = max(1, _CACHE // (x.shape[0] * k))
    for a in range(0, t, step):
        out[a:a + step] = (d[a:a + step, None, :] + x[None, :, :]).clamp_min_(0).sum(-1)
    return out


def balanced_kmeans(x: torch.Tensor, clusters: int, size: int, iters: int, gen: torch.Generator) -> torch.Tensor:
    """Cluster the rows of x [clusters·size, K] into `clusters` groups of exactly `size` rows; returns the
    member rows of each cluster [clusters, size].  Balance comes from a linear assignment of points to
    `size` copies of every centroid (the tiled distance matrix)."""
    n = x.shape[0]
    centroids = x[torch.randperm(n, generator=gen)[:clusters]]
    labels = None
    for _ in range(iters):
        dist = torch.cdist(x, centroids).pow_(2)                                    # [n, clusters]
        slots = torch.from_numpy(assign_max(-dist.repeat_interleave(size, dim=1)))  # point → slot
        new = slots // size
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        centroids = torch.zeros_like(centroids).index_add_(0, labels, x) / size
    return torch.argsort(labels, stable=True).view(clusters, size)


def _units(s32: torch.Tensor, flat: torch.Tensor, tiles: int, e: int, cfg: Gyro, gen: torch.Generator) -> torch.Tensor:
    """How the T·e released rows travel, as indices into `flat` [U, m]: one row per unit (each tile then
    takes e units), or with `cfg.kmeans` the authors' balanced k-means clusters of e rows (one per tile)."""
    if not cfg.kmeans or e == 1:
        return torch.arange(tiles * e)[:, None]
    return balanced_kmeans(s32[flat], tiles, e, cfg.kmeans_iters, gen)


@dataclass
class _Tiles:
    """Output-stage state: the rows of every tile [T, R] and their column sums, exact (float64) for the
    acceptance test and float32 for the costs, with each tile's kept total and level-1 cut."""

    scores: torch.Tensor
    kept: int
    perm: torch.Tensor

    def __post_init__(self) -> None:
        self.s32 = self.scores.to(torch.float32)
        self.sums = self.scores[self.perm].sum(1)                                  # [T, K] float64
        self.sums32 = self.sums.to(torch.float32)
        self.vals = vector_retained(self.sums, self.kept)                          # [T]
        self.tau = _thresholds(self.sums, self.kept)                               # [T]
        self.total = float(self.vals.sum())

    def round(self, e: int, cfg: Gyro, gen: torch.Generator) -> float:
        """Every tile releases e random rows; a linear assignment on cost[i, j] = what tile i keeps with
        released unit j gives every tile e rows back; the exchange is kept only if the exact total grows.
        Returns the gain (0 when rejected)."""
        tiles, rows = self.perm.shape
        pos = torch.rand(tiles, rows, generator=gen).topk(e, dim=1).indices
        flat = self.perm.gather(1, pos).reshape(-1)                                # released rows [T·e]
        units = _units(self.s32, flat, tiles, e, cfg, gen)                         # [U, m]
        d = self.sums32 - self.s32[flat].view(tiles, e, -1).sum(1) - self.tau[:, None]
        cost = _join_costs(d, self.s32[flat[units]].sum(1))                        # [T, U]
        slots = e // units.shape[1]                                                # units each tile takes
        pick = torch.from_numpy(assign_max(cost.repeat_interleave(slots, dim=0))).view(tiles, slots)
        incoming = units[pick].reshape(tiles, e)                                   # indices into flat
        home = torch.arange(tiles).repeat_interleave(e)                            # tile each released row left
        changed = torch.nonzero((home[incoming] != torch.arange(tiles)[:, None]).any(1)).flatten()
        if changed.numel() == 0:
            return 0.0
        in_rows = flat[incoming[changed]]
        new_sums = self.sums[changed] - self.scores[flat.view(tiles, e)[changed]].sum(1) + self.scores[in_rows].sum(1)
        new_vals = vector_retained(new_sums, self.kept)
        gain = float(new_vals.sum() - self.vals[changed].sum())
        if gain <= self.total * 1e-12:                                             # float64 noise is no gain
            return 0.0
        self.perm[changed[:, None], pos[changed]] = in_rows
        self.sums[changed], self.vals[changed] = new_sums, new_vals
        self.sums32[changed] = new_sums.to(torch.float32)
        self.tau[changed] = _thresholds(new_sums, self.kept)
        self.total += gain
        return gain


def _round_weight(e: int, tiles: int, cfg: Gyro) -> float:
    """How much one round without gain uses up of `patience`: 1, or with `patience_by_rows` the share of
    `max_released` rows it released.  A round on a layer with few tiles (or at a small e) examines fewer
    rows and costs much less (a small assignment), so it should not end the search as soon as a full one:
    counting rows gives the cheap 768-row layers several times more rounds for little time."""
    return min(1.0, e * tiles / cfg.max_released) if cfg.patience_by_rows else 1.0


def search_rows(scores: torch.Tensor, tile_rows: int, kept: int, cfg: Gyro, gen: torch.Generator,
                deadline: Deadline, bar=None, order: torch.Tensor | None = None) -> tuple[torch.Tensor, SearchStats]:
    """Output-channel permutation.  scores [N, K] float64; returns the rows of every tile [N/R, R] and stats
    (before/after in the objective's own units).

    Objective: Σ over tiles of the `kept` largest column sums of `scores` (the column-vector level of HiNM /
    TW; the caller passes `two_four_profile` scores to account for the 2:4 level)."""
    n = scores.shape[0]
    tiles = n // tile_rows
    perm = torch.arange(n).view(tiles, tile_rows) if order is None else order.clone().view(tiles, tile_rows)
    state = _Tiles(scores, kept, perm)
    stats = SearchStats(before=state.total, after=state.total)
    if tiles < 2:
        return perm, stats
    for _ in range(cfg.passes):
        for num_ext in cfg.schedule:
            # k-means assigns one cluster per tile (a T×T assignment); single rows are capped at max_released
            # per round in all, which keeps the (T·e)×(T·e) assignment cheap on layers with many tiles
            e = min(num_ext, tile_rows) if cfg.kmeans else max(1, min(num_ext, tile_rows, cfg.max_released // tiles))
            fails, cost = 0.0, _round_weight(e, tiles, cfg)
            while fails < cfg.patience and stats.rounds < cfg.max_rounds and not deadline.expired():
                stats.rounds += 1
                gain = state.round(e, cfg, gen)
                stats.accepted += gain > 0
                fails = 0.0 if gain > state.total * cfg.output_min_gain else fails + cost
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(f"out e={e} kept={state.total:.4g}", refresh=False)
    stats.after = float(vector_retained(state.sums, kept).sum())
    return state.perm, stats


# ---- input stage: which kept columns share a 2:4 group ------------------------------------------------------
def _pull_costs(x: torch.Tensor, m2: torch.Tensor) -> torch.Tensor:
    """cost[t, i, j] = Σ_r max(0, x[t, r, j] − m2[t, r, i]): the 2:4 gain of candidate column j joining group
    i whose other three have second-largest value m2 (top-2 of {m1 ≥ m2 ≥ m3, x} = m1 + m2 + max(0, x − m2)).
    x [T, R, n] (the pulled columns, then any spare ones), m2 [T, R, g] → [T, g, n]."""
    t, r, n = x.shape
    g = m2.shape[2]
    out = torch.zeros(t, g, n, dtype=x.dtype)
    step = max(1, _CACHE // (g * n))     # rows per step: keep the [rows, g, n] temporary in cache (≈8× faster)
    for a in range(t):
        acc = out[a]
        for r0 in range(0, r, step):
            acc += (x[a, r0:r0 + step, None, :] - m2[a, r0:r0 + step, :, None]).clamp_min_(0).sum(0)
    return out


def _match_halves(cost_fn, n: int, gen: torch.Generator) -> torch.Tensor:
    """Pair up items 0..n-1 (n even) [n/2, 2]: a random half is matched to the other half by a linear
    assignment on cost_fn(a, b) [n/2, n/2] (a gain).  A bipartite stand-in for a general matching: one
    LSA instead of a blossom algorithm, and the random split keeps it unbiased."""
    p = torch.randperm(n, generator=gen)
    a, b = p[: n // 2], p[n // 2:]
    pick = torch.from_numpy(assign_max(cost_fn(a, b)))
    return torch.stack([a, b[pick]], dim=1)


def _pair_gain(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ_r max(x[r, a_i], x[r, b_j]) [len a, len b] = (Σ x_a + Σ x_b + ‖x_a − x_b‖₁) / 2, so cdist does it."""
    xa, xb = x[:, a].T.contiguous(), x[:, b].T.contiguous()
    return (xa.sum(1)[:, None] + xb.sum(1)[None, :] + torch.cdist(xa, xb, p=1)) / 2


def _quad_gain(hi: torch.Tensor, lo: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ_r top-2 of pair a_i ∪ pair b_j [len a, len b] from each pair's per-row max (hi) and min (lo)."""
    out = torch.empty(len(a), len(b), dtype=hi.dtype)
    step = max(1, _CACHE // (len(b) * hi.shape[0]))
    for s in range(0, len(a), step):
        ha, la = hi[:, a[s:s + step], None], lo[:, a[s:s + step], None]
        hb, lb = hi[:, None, b], lo[:, None, b]
        out[s:s + step] = (torch.maximum(ha, hb) + torch.maximum(torch.minimum(ha, hb), torch.maximum(la, lb))).sum(0)
    return out


def initial_groups(block: torch.Tensor, c: int, gen: torch.Generator) -> torch.Tensor:
    """A constructed start for the 2:4 grouping of every tile, order [T, width]: match the first c columns
    into pairs maximising Σ_rows max of the pair, then match the pairs into groups maximising Σ_rows top-2
    of the group (top-2 of 4 ≥ the two pair maxima, so the second step only adds).  The LSA rounds from
    this start end higher and sooner than from the identity order (no pairs structure to undo)."""
    t, _, width = block.shape
    out = torch.arange(width).repeat(t, 1)
    if c < 8:
        return out
    for i in range(t):
        x = block[i, :, :c].to(torch.float32)                                            # [R, c]
        pairs = _match_halves(lambda a, b, x=x: _pair_gain(x, a, b), c, gen)            # [c/2, 2]
        first, second = x[:, pairs[:, 0]], x[:, pairs[:, 1]]
        hi, lo = torch.maximum(first, second), torch.minimum(first, second)
        quads = _match_halves(lambda a, b, hi=hi, lo=lo: _quad_gain(hi, lo, a, b), c // 2, gen)
        out[i, :c] = pairs[quads].reshape(-1)
    return out


def _assign_slots(cost, slots: torch.Tensor, order_rows: torch.Tensor, new_rows: torch.Tensor) -> None:
    """Apply one tile's assignment: group i's pulled slot slots[i] gets the candidate in slots[pick[i]];
    the candidates nobody picked go to the spare slots slots[g:], so the order stays a permutation."""
    g, n = cost.shape
    _, pick = linear_sum_assignment(cost, maximize=True)    # rows come back as 0..g-1
    free = np.ones(n, dtype=bool)
    free[pick] = False
    src = slots[torch.from_numpy(np.concatenate([pick, np.nonzero(free)[0]]))]
    new_rows[slots] = order_rows[src]


def _start_order(block: torch.Tensor, c: int, cfg: Gyro, gen: torch.Generator) -> torch.Tensor:
    """The input stage's start [T, width]: the identity, or with group_init="pairs" the constructed grouping
    wherever it keeps at least as much as the identity (so the search never starts below the unpermuted
    grouping and the never-worse guarantee holds)."""
    t, _, width = block.shape
    identity = torch.arange(width).repeat(t, 1)
    if cfg.group_init != "pairs":
        return identity
    built = initial_groups(block, c, gen)
    worse = _grouped_value(block, built, c) < _grouped_value(block, identity, c)
    built[worse] = identity[worse]
    return built


def search_groups(block: torch.Tensor, cfg: Gyro, gen: torch.Generator, deadline: Deadline, bar=None,
                  order: torch.Tensor | None = None, spare: int = 0) -> tuple[torch.Tensor, SearchStats]:
    """Input permutation of every tile.  block [T, R, C + spare] float64 holds each tile's kept columns and
    then `spare` columns the tile dropped; returns order [T, C + spare] (a permutation per tile: the first
    C/4 consecutive quadruples are the 2:4 groups, the rest are the columns left out) and stats.  With
    spares, a column pulled from a group can be replaced by a dropped column (the kept count stays)."""
    t, r, width = block.shape
    c = width - spare
    g = c // 4
    order = _start_order(block, c, cfg, gen) if order is None else order.clone()
    b32 = block.to(torch.float32)
    current = _grouped_value(block, order, c)                                           # [T] float64
    stats = SearchStats(before=float(current.sum()))
    fails = torch.zeros(t, dtype=torch.int64)
    rounds = 0
    while (g > 1 or spare > 0) and rounds < cfg.max_rounds and not deadline.expired():
        active = torch.nonzero(fails < cfg.input_patience).flatten()
        if active.numel() == 0:
            break
        rounds += 1
        stats.rounds += 1
        a = active.numel()
        every = a == t                                      # skip the copies of advanced indexing when all tiles run
        act_b32, act_block, act_order = (b32, block, order) if every else (b32[active], block[active], order[active])
        ordered = act_b32.gather(2, act_order[:, None, :].expand(a, r, width))
        grouped = ordered[:, :, :c].reshape(a, r, g, 4)
        pull = torch.randint(0, 4, (a, g), generator=gen)
        x = grouped.gather(3, pull[:, None, :, None].expand(a, r, g, 1)).squeeze(-1)       # [a, R, G]
        others = grouped.scatter(3, pull[:, None, :, None].expand(a, r, g, 1), float("-inf"))
        m2 = top2_pair(others)[1]                                                         # [a, R, G]
        # random parts of at most lsa_groups groups (the same split shape for every tile in the batch)
        parts = max(1, -(-g // cfg.lsa_groups))
        shuffled = random_perm_rows(gen, a, g) if parts > 1 else torch.arange(g).repeat(a, 1)
        spares = random_perm_rows(gen, a, spare) if parts > 1 and spare else torch.arange(spare).repeat(a, 1)
        slot_g = 4 * torch.arange(g)[None, :] + pull                                      # group i's pulled slot
        new_order = act_order.clone()
        for idx, sidx in zip(torch.tensor_split(shuffled, parts, dim=1), torch.tensor_split(spares, parts, dim=1),
                             strict=True):
            cand = torch.cat([x.gather(2, idx[:, None, :].expand(a, r, idx.shape[1])),
                              ordered[:, :, c:].gather(2, sidx[:, None, :].expand(a, r, sidx.shape[1]))], dim=2)
            mp = m2.gather(2, idx[:, None, :].expand(a, r, idx.shape[1]))
            cost = _pull_costs(cand, mp).to(torch.float64).numpy()
            slots = torch.cat([slot_g.gather(1, idx), c + sidx], dim=1)                   # [a, n] positions
            for i in range(a):
                _assign_slots(cost[i], slots[i], act_order[i], new_order[i])
        accept_round(order, current, fails, stats, active, new_order, _grouped_value(act_block, new_order, c),
                     cfg.min_gain, bar, "in")
    stats.after = float(current.sum())
    return order, stats


def accept_round(order: torch.Tensor, current: torch.Tensor, fails: torch.Tensor, stats: SearchStats,
                 active: torch.Tensor, new_order: torch.Tensor, new_val: torch.Tensor, min_gain: float, bar,
                 label: str) -> None:
    """One round's exact acceptance, per tile: keep a new grouping only where its float64 total grows (so no
    tile ever loses); a tile's patience counter resets on a relative gain of at least `min_gain`."""
    better = new_val > current[active] * (1 + 1e-12)
    gained = new_val > current[active] * (1 + min_gain)
    win = active[better]
    order[win] = new_order[better]
    current[win] = new_val[better]
    fails[active[gained]] = 0
    fails[active[~gained]] += 1
    stats.accepted += int(better.sum())
    if bar is not None:
        bar.update(1)
        bar.set_postfix_str(f"{label} tiles={active.numel()} kept={float(current.sum()):.4g}", refresh=False)


def _grouped_value(block: torch.Tensor, order: torch.Tensor, c: int) -> torch.Tensor:
    """2:4-kept saliency of every tile [T] when its first c ordered columns form the groups."""
    t, r, _ = block.shape
    return top2_of_4(block.gather(2, order[:, None, :c].expand(t, r, c))).sum((1, 2))
