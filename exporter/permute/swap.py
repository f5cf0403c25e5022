"""ASP-style greedy channel swaps for 2:4 groups (the baseline of NVIDIA Apex's permutation search).

For one tile with kept columns in group order, every swap of two columns p, q in different groups changes
the retained saliency by  D[p] + D[q] + H[p, q] + H[q, p]  where, per row, removing p leaves its group
with top-2 (rem1 ≥ rem2) and
    D[p]    = Σ_r rem1 + rem2 − top2(group of p)       (what the group loses when p leaves)
    H[p, q] = Σ_r max(0, x_q − rem2_p)                  (what column q adds when it takes p's place)
because top-2 of {rem1, rem2, rem3, x} = rem1 + rem2 + max(0, x − rem2).  An iteration applies the best
swaps in decreasing order of gain, each group at most once (as Apex's `use_swap_map` does), and only the
rows/columns of H whose groups changed are recomputed.
"""

from __future__ import annotations

import torch

from ._common import Deadline
from .gyro import SearchStats
from .saliency_accounting import top2_of_4


def _removal_tops(ordered: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For x [R, C] in group order: per position, (rem1, rem2) = top-2 of its group's other three, and the
    group's top-2 sum per position.  Returns rem1, rem2, base, each [R, C]."""
    r, c = ordered.shape
    grp = ordered.view(r, c // 4, 4)
    srt, idx = torch.sort(grp, dim=-1, descending=True)
    rank = torch.empty_like(idx).scatter_(-1, idx, torch.arange(4).expand_as(idx))
    s0, s1, s2 = srt[..., 0:1], srt[..., 1:2], srt[..., 2:3]
    # removing rank 0 leaves (s1, s2); rank 1 leaves (s0, s2); ranks 2, 3 leave (s0, s1)
    rem1 = torch.where(rank == 0, s1, s0)
    rem2 = torch.where(rank <= 1, s2, s1)
    base = (s0 + s1).expand_as(grp)
    return rem1.reshape(r, c), rem2.reshape(r, c), base.reshape(r, c)


_CACHE = 1 << 19   # elements of one temporary: stays in cache


def _h_block(xs: torch.Tensor, m2s: torch.Tensor) -> torch.Tensor:
    """Σ_r max(0, xs[r, None, :] − m2s[r, :, None]) → [m2 columns, x columns], looping over row chunks so the
    temporary stays in cache."""
    r = xs.shape[0]
    out = torch.zeros(m2s.shape[1], xs.shape[1], dtype=xs.dtype)
    step = max(1, _CACHE // max(1, xs.shape[1] * m2s.shape[1]))
    for a in range(0, r, step):
        out += (xs[a:a + step, None, :] - m2s[a:a + step, :, None]).clamp_min_(0).sum(0)
    return out


def _h_rows(x: torch.Tensor, rem2: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """H[rows, :] = Σ_r max(0, x[r, :] − rem2[r, rows])."""
    return _h_block(x, rem2[:, rows])


def _h_cols(x: torch.Tensor, rem2: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """H[:, cols] = Σ_r max(0, x[r, cols] − rem2[r, :])."""
    return _h_block(x[:, cols], rem2)


def swap_tile(tile: torch.Tensor, max_iters: int, threshold: float, deadline: Deadline,
              order: torch.Tensor | None = None) -> tuple[torch.Tensor, SearchStats]:
    """Greedy channel swaps inside one tile [R, C] (float64 saliency of its kept columns).  Returns the
    column order [C] (consecutive quadruples are the 2:4 groups) and stats (rounds = iterations,
    accepted = swaps)."""
    r, c = tile.shape
    g = c // 4
    order = torch.arange(c) if order is None else order.clone()
    current = float(top2_of_4(tile[:, order]).sum())
    stats = SearchStats(before=current, after=current)
    if g < 2:
        return order, stats
    group = torch.arange(c) // 4
    same = group[:, None] == group[None, :]
    x = tile[:, order].to(torch.float32)
    rem1, rem2, base = _removal_tops(x)
    d = (rem1 + rem2 - base).sum(0)
    h = _h_rows(x, rem2, torch.arange(c))
    for _ in range(max_iters):
        if deadline.expired():
            break
        stats.rounds += 1
        gain = d[:, None] + d[None, :] + h + h.T
        gain.masked_fill_(same, float("-inf"))
        gain = torch.triu(gain, diagonal=1) + torch.tril(torch.full_like(gain, float("-inf")))
        limit = threshold * max(current, 1e-30)
        top = torch.topk(gain.reshape(-1), min(gain.numel(), 4 * g))
        used = torch.zeros(g, dtype=torch.bool)
        swaps = []
        for value, flat in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            if value <= limit:
                break
            p, q = divmod(flat, c)
            gp, gq = p // 4, q // 4
            if used[gp] or used[gq]:
                continue
            used[gp] = used[gq] = True
            swaps.append((p, q))
        if not swaps:
            break
        p_idx = torch.tensor([s[0] for s in swaps])
        q_idx = torch.tensor([s[1] for s in swaps])
        new_order = order.clone()
        new_order[p_idx], new_order[q_idx] = order[q_idx], order[p_idx]
        new_val = float(top2_of_4(tile[:, new_order]).sum())
        if new_val <= current:   # float32 gains can disagree with float64 totals at the very end
            break
        order, current = new_order, new_val
        stats.accepted += len(swaps)
        # recompute what the touched groups changed
        changed = torch.nonzero(used.repeat_interleave(4)).flatten()
        x = tile[:, order].to(torch.float32)
        rem1, rem2, base = _removal_tops(x)
        d = (rem1 + rem2 - base).sum(0)
        h[changed, :] = _h_rows(x, rem2, changed)
        h[:, changed] = _h_cols(x, rem2, changed)
    stats.after = current
    return order, stats
