"""Retained-saliency accounting: how much of a layer's saliency a kept set (or a layout) keeps.

Everything here works on saliency scores S[N, K] ≥ 0 (|w| or a Taylor score) and sums in float64, so
that the greedy searches compare totals without float32 rounding noise deciding an acceptance.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def as_scores(scores: torch.Tensor) -> torch.Tensor:
    """Detached, CPU, float64 copy-free view of a saliency matrix (the searches' working precision)."""
    return scores.detach().to("cpu", torch.float64)


def top2_pair(groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest and second largest of every quadruple [..., 4] → ([...], [...]), by a 4-input sorting
    network (max/min only: about twice as fast as topk on the CPU and exact)."""
    a, b, c, d = groups.unbind(-1)
    hi_ab, lo_ab, hi_cd, lo_cd = torch.maximum(a, b), torch.minimum(a, b), torch.maximum(c, d), torch.minimum(c, d)
    return torch.maximum(hi_ab, hi_cd), torch.maximum(torch.minimum(hi_ab, hi_cd), torch.maximum(lo_ab, lo_cd))


def top2_of_4(values: torch.Tensor) -> torch.Tensor:
    """Sum of the 2 largest of every 4 consecutive entries along the last dimension: [..., C] → [..., C/4]."""
    first, second = top2_pair(values.reshape(*values.shape[:-1], -1, 4))
    return first + second


def vector_retained(column_sums: torch.Tensor, kept: int) -> torch.Tensor:
    """Level-1 (column-vector) retained saliency: the `kept` largest column sums of every tile, [..., K] → [...]."""
    return torch.topk(column_sums, kept, dim=-1, sorted=False).values.sum(-1)


def tile_retained(scores: torch.Tensor, rows: torch.Tensor, cols: Sequence[torch.Tensor], two_four: bool) -> torch.Tensor:
    """Retained saliency of every tile [T] for a layout: tile t keeps `cols[t]` (in 2:4 group order) on
    the rows `rows[t]`, and with 2:4 the 2 largest of every consecutive quadruple per row."""
    s = as_scores(scores)
    rows = torch.as_tensor(rows, dtype=torch.int64)
    lengths = {len(c) for c in cols}
    if len(lengths) == 1 and len(cols):   # uniform tiles (HiNM): one batched gather
        c = torch.stack([torch.as_tensor(x, dtype=torch.int64) for x in cols])          # [T, C]
        sub = s[rows[:, :, None], c[:, None, :]]                                          # [T, R, C]
        return (top2_of_4(sub).sum((1, 2)) if two_four else sub.sum((1, 2)))
    out = torch.zeros(len(cols), dtype=torch.float64)
    for t, c in enumerate(cols):
        sub = s[rows[t][:, None], torch.as_tensor(c, dtype=torch.int64)[None, :]]
        out[t] = top2_of_4(sub).sum() if two_four else sub.sum()
    return out


def layout_retained(scores: torch.Tensor, rows: torch.Tensor, cols: Sequence[torch.Tensor], two_four: bool) -> float:
    return float(tile_retained(scores, rows, cols, two_four).sum())


def mask_retained(scores: torch.Tensor, mask: torch.Tensor) -> float:
    return float((as_scores(scores) * mask.to(torch.float64)).sum())


def unstructured_retained(scores: torch.Tensor, keep: int) -> float:
    """The upper bound: the `keep` largest scores of the layer, wherever they are."""
    s = as_scores(scores).reshape(-1)
    keep = max(0, min(int(keep), s.numel()))
    return float(torch.topk(s, keep, sorted=False).values.sum()) if keep else 0.0


def gap_closed(retained: float, no_perm: float, unstructured: float) -> float:
    """(retained − no_perm) / (unstructured − no_perm): the share of the gap to the unstructured bound closed."""
    gap = unstructured - no_perm
    return (retained - no_perm) / gap if gap > 0 else 0.0
