"""Exhaustive two-group search for the 2:4 level (the idea of NVIDIA Apex ASP's stripe-group search).

Two groups of 4 kept columns hold 8 columns, which split into two groups of 4 in 35 ways: the current
split, 16 exchanges of one column each way and 18 exchanges of two columns each way.  Every split of a
pair is scored on all rows of its tile at once, so this is strictly stronger than single channel swaps.
Instead of scoring all G·(G−1)/2 pairs of a tile every iteration (Apex does that on a GPU), each round
pairs the groups of every tile by a random perfect matching, so the G/2 pairs of a round never share a
group and all their improving splits apply together; a tile stops after `patience` rounds in a row
without a relative gain of `min_gain`.
"""

from __future__ import annotations

import torch

from ._common import Deadline, random_perm_rows
from .gyro import SearchStats, accept_round
from .saliency_accounting import top2_of_4

# The 6 pairs of positions inside a group of 4; pair 5 − i is the complement of pair i.
_PAIRS = torch.tensor([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]])
# Elements of one temporary: keeps the [rows, pairs, 6, 6] products in cache.
_CACHE = 1 << 19


def _splits() -> torch.Tensor:
    """Position layout [53, 8] of every scored split: entries 0..3 form the new first group and 4..7 the
    second, as positions into the pair's 8 columns (a's 4 then b's 4).  Split 0 is the identity, 1..36 the
    two-for-two exchanges (i, k): a's pair i with b's pair k, and a's pair 5 − i with b's pair 5 − k (each
    split twice, harmless), 37..52 the one-for-one swaps of a's position i with b's position k."""
    out = [list(range(8))]
    for i in range(6):
        for k in range(6):
            first = [*_PAIRS[i].tolist(), *(4 + _PAIRS[k]).tolist()]
            second = [*_PAIRS[5 - i].tolist(), *(4 + _PAIRS[5 - k]).tolist()]
            out.append(first + second)
    for i in range(4):
        for k in range(4):
            pos = list(range(8))
            pos[i], pos[4 + k] = 4 + k, i
            out.append(pos)
    return torch.tensor(out)


SPLITS = _splits()


def _top2_two_pairs(hi_a: torch.Tensor, lo_a: torch.Tensor, hi_b: torch.Tensor, lo_b: torch.Tensor) -> torch.Tensor:
    """Top-2 sum of {hi_a ≥ lo_a} ∪ {hi_b ≥ lo_b}: the larger maximum plus the best of the rest."""
    return torch.maximum(hi_a, hi_b) + torch.maximum(torch.minimum(hi_a, hi_b), torch.maximum(lo_a, lo_b))


def _removal_tops(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For groups g [..., 4]: the top-2 (rem1 ≥ rem2) of the other three, per position, each [..., 4]."""
    srt, idx = torch.sort(g, dim=-1, descending=True)
    rank = torch.empty_like(idx).scatter_(-1, idx, torch.arange(4).expand_as(idx))
    s0, s1, s2 = srt[..., 0:1], srt[..., 1:2], srt[..., 2:3]
    # removing rank 0 leaves (s1, s2); rank 1 leaves (s0, s2); ranks 2, 3 leave (s0, s1)
    return torch.where(rank == 0, s1, s0), torch.where(rank <= 1, s2, s1)


def pair_values(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """2:4-kept saliency of every split in `SPLITS` for group pairs a, b [R, P, 4] (R rows, P pairs), summed
    over the rows → [P, 53].

    No gathers of the 8 columns: with each group's 6 sub-pairs as (hi ≥ lo), a two-for-two exchange keeps
    top2(a's pair i ∪ b's pair k) + top2(a's pair 5−i ∪ b's pair 5−k), and a one-for-one swap of a_i and b_k
    keeps rem1_a + max(rem2_a, b_k) + rem1_b + max(rem2_b, a_i) (top-2 of {m1 ≥ m2 ≥ m3, x} = m1 + max(m2, x)
    with m1, m2 the top-2 of the three that stay)."""
    r, p, _ = a.shape
    out = torch.zeros(p, SPLITS.shape[0], dtype=a.dtype)
    step = max(1, _CACHE // max(1, 36 * p))
    for r0 in range(0, r, step):
        xa, xb = a[r0:r0 + step], b[r0:r0 + step]
        pa, pb = xa[..., _PAIRS], xb[..., _PAIRS]                                   # [r, P, 6, 2]
        hi_a, lo_a = pa.amax(-1), pa.amin(-1)
        hi_b, lo_b = pb.amax(-1), pb.amin(-1)
        t = _top2_two_pairs(hi_a[..., :, None], lo_a[..., :, None], hi_b[..., None, :], lo_b[..., None, :])
        two = t + t.flip(-1).flip(-2)                                               # [r, P, 6, 6]
        r1a, r2a = _removal_tops(xa)
        r1b, r2b = _removal_tops(xb)
        one = (r1a[..., :, None] + torch.maximum(r2a[..., :, None], xb[..., None, :])
               + r1b[..., None, :] + torch.maximum(r2b[..., None, :], xa[..., :, None]))  # [r, P, 4, 4]
        ident = top2_of_4(xa).squeeze(-1) + top2_of_4(xb).squeeze(-1)               # [r, P]
        out[:, 0] += ident.sum(0)
        out[:, 1:37] += two.sum(0).reshape(p, 36)
        out[:, 37:] += one.sum(0).reshape(p, 16)
    return out


def search_pairs(block: torch.Tensor, order: torch.Tensor, patience: int, min_gain: float, max_rounds: int,
                 gen: torch.Generator, deadline: Deadline, bar=None) -> tuple[torch.Tensor, SearchStats]:
    """Exhaustive two-group refinement of the 2:4 grouping of every tile.  block [T, R, C] float64 holds each
    tile's kept columns, order [T, C] their current grouping (consecutive quadruples); returns the new order
    and stats.  Every round is re-checked on float64 totals per tile, so no tile ever loses."""
    t, r, c = block.shape
    g = c // 4
    order = order.clone()
    b32 = block.to(torch.float32)
    current = top2_of_4(block.gather(2, order[:, None, :].expand(t, r, c))).sum((1, 2))   # [T] float64
    stats = SearchStats(before=float(current.sum()), after=float(current.sum()))
    if g < 2:
        return order, stats
    fails = torch.zeros(t, dtype=torch.int64)
    half = g // 2
    while stats.rounds < max_rounds and not deadline.expired():
        active = torch.nonzero(fails < patience).flatten()
        if active.numel() == 0:
            break
        stats.rounds += 1
        n_act = active.numel()
        act_order = order[active]
        # a random matching of each tile's groups: positions 2j and 2j + 1 of a random group order are paired
        match = random_perm_rows(gen, n_act, g)[:, :2 * half].view(n_act, half, 2)
        cols_a = (4 * match[..., 0:1] + torch.arange(4)).reshape(n_act, half * 4)     # [a, P·4] positions
        cols_b = (4 * match[..., 1:2] + torch.arange(4)).reshape(n_act, half * 4)
        ordered = b32[active].gather(2, act_order[:, None, :].expand(n_act, r, c))
        xa = ordered.gather(2, cols_a[:, None, :].expand(n_act, r, half * 4)).view(n_act, r, half, 4)
        xb = ordered.gather(2, cols_b[:, None, :].expand(n_act, r, half * 4)).view(n_act, r, half, 4)
        best = torch.stack([pair_values(xa[i], xb[i]).argmax(1) for i in range(n_act)])  # [a, P]
        # apply every pair's best split: the 8 positions of a pair are rewritten in the split's layout
        pos8 = torch.cat([cols_a.view(n_act, half, 4), cols_b.view(n_act, half, 4)], dim=2)  # [a, P, 8]
        src = pos8.gather(2, SPLITS[best])
        new_order = act_order.clone()
        new_order.scatter_(1, pos8.reshape(n_act, -1), act_order.gather(1, src.reshape(n_act, -1)))
        new_val = top2_of_4(block[active].gather(2, new_order[:, None, :].expand(n_act, r, c))).sum((1, 2))
        accept_round(order, current, fails, stats, active, new_order, new_val, min_gain, bar, "pairs")
    stats.after = float(current.sum())
    return order, stats
