"""Baselines the gyro search is measured against, as stages on the same layouts:
no permutation (identity), random restarts, and ASP-style channel swaps (see swap.py)."""

from __future__ import annotations

import torch

from ._common import Deadline, random_perm_rows
from .config import ChannelSwap, RandomRestarts
from .gyro import SearchStats
from .saliency_accounting import top2_of_4, vector_retained
from .swap import swap_tile


def random_rows(scores: torch.Tensor, tile_rows: int, kept: int, cfg: RandomRestarts, gen: torch.Generator,
                deadline: Deadline) -> tuple[torch.Tensor, SearchStats]:
    """Best of the identity and `restarts` random row permutations, by column-vector retained saliency."""
    n = scores.shape[0]
    best = torch.arange(n).view(-1, tile_rows)
    best_val = float(vector_retained(scores[best].sum(1), kept).sum())
    stats = SearchStats(before=best_val)
    for _ in range(cfg.restarts):
        if deadline.expired():
            break
        stats.rounds += 1
        cand = torch.randperm(n, generator=gen).view(-1, tile_rows)
        val = float(vector_retained(scores[cand].sum(1), kept).sum())
        if val > best_val:
            best, best_val = cand, val
            stats.accepted += 1
    stats.after = best_val
    return best, stats


def random_groups(block: torch.Tensor, cfg: RandomRestarts, gen: torch.Generator,
                  deadline: Deadline) -> tuple[torch.Tensor, SearchStats]:
    """Per tile, the best of the ascending grouping and `restarts` random column orders.  block [T, R, C]."""
    t, r, c = block.shape
    best = torch.arange(c).repeat(t, 1)
    best_val = top2_of_4(block).sum((1, 2))
    stats = SearchStats(before=float(best_val.sum()))
    for _ in range(cfg.restarts):
        if deadline.expired():
            break
        stats.rounds += 1
        cand = random_perm_rows(gen, t, c)
        val = top2_of_4(block.gather(2, cand[:, None, :].expand(t, r, c))).sum((1, 2))
        win = val > best_val
        best[win], best_val[win] = cand[win], val[win]
        stats.accepted += int(win.sum())
    stats.after = float(best_val.sum())
    return best, stats


def swap_groups(block: torch.Tensor, cfg: ChannelSwap, deadline: Deadline, bar=None) -> tuple[torch.Tensor, SearchStats]:
    """ASP-style greedy channel swaps inside every tile.  block [T, R, C]; returns order [T, C]."""
    orders, stats = [], SearchStats()
    for tile in block:
        order, st = swap_tile(tile, cfg.max_iters, cfg.threshold, deadline)
        orders.append(order)
        stats.rounds += st.rounds
        stats.accepted += st.accepted
        stats.before += st.before
        stats.after += st.after
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"swap kept={stats.after:.4g}", refresh=False)
    return torch.stack(orders), stats
