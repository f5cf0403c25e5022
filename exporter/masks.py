"""Mask selection: from per-layer saliency scores to masks (and, for tile-sparse patterns, tile layouts).

TW/TVW choose with global thresholds across all layers (so layers end with different sparsities, as
in the TW paper); HiNM, N:M, block and unstructured choose per layer.  Kept-column counts of tiles are
rounded to the kernel step (32), so achieved sparsity matches the request within that rounding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .formats.tilesparse import padded_kept
from .patterns import K_STEP, NM, TVW, TW, Block, HiNM, Pattern, PatternError, Unstructured


@dataclass
class LayerMask:
    """The kept positions of one layer, plus its tile layout when the pattern is tile-sparse."""

    name: str
    mask: torch.Tensor                       # [N, K] bool
    requested: float
    rows: torch.Tensor | None = None         # [T, R] output features per tile
    cols: list[torch.Tensor] | None = None   # kept input columns per tile, in 2:4 group order
    two_four: bool = False

    @property
    def achieved(self) -> float:
        return 1.0 - float(self.mask.sum()) / self.mask.numel()


def _topk_mask(scores: torch.Tensor, keep: int) -> torch.Tensor:
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    if keep > 0:
        mask[torch.topk(scores.reshape(-1), keep, sorted=False).indices] = True
    return mask.reshape(scores.shape)


def two_four_mask(scores: torch.Tensor) -> torch.Tensor:
    """Keep the 2 highest of every 4 consecutive entries along the last dimension."""
    groups = scores.reshape(*scores.shape[:-1], -1, 4)
    top = torch.topk(groups, 2, dim=-1).indices
    return torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True).reshape(scores.shape)


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    groups = scores.reshape(scores.shape[0], -1, m)
    top = torch.topk(groups, n, dim=-1).indices
    return torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True).reshape(scores.shape)


def block_mask(scores: torch.Tensor, b: int, sparsity: float) -> torch.Tensor:
    n, k = scores.shape
    block_scores = scores.reshape(n // b, b, k // b, b).sum(dim=(1, 3))
    keep = round(block_scores.numel() * (1.0 - sparsity))
    kept = _topk_mask(block_scores, keep)
    return kept.repeat_interleave(b, 0).repeat_interleave(b, 1)


def _tiles_to_mask(shape: tuple[int, int], rows: torch.Tensor, cols: list[torch.Tensor],
                   scores: torch.Tensor, two_four: bool) -> torch.Tensor:
    mask = torch.zeros(shape, dtype=torch.bool)
    for t, c in enumerate(cols):
        r = rows[t]
        sub = scores[r[:, None], c[None, :]]
        mask[r[:, None], c[None, :]] = two_four_mask(sub) if two_four else True
    return mask


def hinm_kept(k: int, sparsity: float) -> int:
    """Kept column vectors per block: K·(1 − s_v) with s_v = 1 − 2(1 − s), rounded to the K step."""
    kept = padded_kept(k * min(1.0, 2.0 * (1.0 - sparsity)))
    return min(kept, (k // K_STEP) * K_STEP)


def hinm_layer(name: str, scores: torch.Tensor, pattern: HiNM, sparsity: float) -> LayerMask:
    n, k = scores.shape
    v = pattern.vector
    kept = hinm_kept(k, sparsity)
    block_scores = scores.reshape(n // v, v, k).sum(1)                            # [blocks, K]
    cols = [torch.sort(torch.topk(s, kept).indices).values for s in block_scores]
    rows = torch.arange(n).reshape(n // v, v)
    return LayerMask(name, _tiles_to_mask((n, k), rows, cols, scores, True), sparsity, rows, cols, True)


def _global_keep(scores: torch.Tensor, weights: torch.Tensor, target: float) -> torch.Tensor:
    """Boolean over `scores`: the highest scores whose summed `weights` reach `target` of the total."""
    order = torch.argsort(scores, descending=True)
    cum = torch.cumsum(weights[order].to(torch.float64), 0)
    count = int(torch.searchsorted(cum, target * float(cum[-1]) - 1e-9)) + 1
    keep = torch.zeros_like(scores, dtype=torch.bool)
    keep[order[:count]] = True
    return keep


def tw_layers(scores: Mapping[str, torch.Tensor], pattern: TW, sparsity: float) -> dict[str, LayerMask]:
    """Tile-wise selection with global thresholds (output features first when output_share > 0)."""
    two_four = isinstance(pattern, TVW)
    g = pattern.tile
    density = min(1.0, (1.0 - sparsity) * (2.0 if two_four else 1.0))
    feature_density = density ** pattern.output_share
    k_density = density / feature_density
    names = list(scores)
    if pattern.score_norm == "mean":
        scores = {n: s / s.mean().clamp_min(1e-30) for n, s in scores.items()}

    # 1. output features: one global threshold on mean saliency, counts rounded per layer to tiles.
    kept_rows: dict[str, torch.Tensor] = {}
    if feature_density < 1.0:
        feat = torch.cat([scores[n].mean(1) for n in names])
        sizes = torch.cat([torch.full((scores[n].shape[0],), scores[n].shape[1]) for n in names])
        keep = _global_keep(feat, sizes, feature_density).split([scores[n].shape[0] for n in names])
        for name, kf in zip(names, keep, strict=True):
            count = min(scores[name].shape[0], max(g, round(int(kf.sum()) / g) * g))
            top = torch.topk(scores[name].mean(1), count).indices
            kept_rows[name] = torch.sort(top).values
    else:
        kept_rows = {n: torch.arange(scores[n].shape[0]) for n in names}

    # 2. K-rows inside tiles: one global threshold over chunks of 32 K-rows.  Each tile's K-rows are
    #    sorted by tile-mean saliency and cut into chunks of 32 (the kernel step); a chunk scores the
    #    mean of its rows, so chunk scores fall within a tile and the global top-B chunks are prefixes.
    #    Every tile keeps its first chunk; the total lands within one chunk of the target.
    tile_scores = {n: scores[n][kept_rows[n]].reshape(-1, g, scores[n].shape[1]).mean(1) for n in names}
    order = {n: torch.sort(ts, dim=1, descending=True).indices for n, ts in tile_scores.items()}
    chunk_scores = {}
    for n, ts in tile_scores.items():
        chunks = ts.shape[1] // K_STEP
        sorted_scores = torch.gather(ts, 1, order[n])[:, :chunks * K_STEP]
        chunk_scores[n] = sorted_scores.reshape(ts.shape[0], chunks, K_STEP).mean(-1)
    budget = round(k_density * sum(ts.numel() for ts in tile_scores.values()) / K_STEP)
    optional = torch.cat([c[:, 1:].reshape(-1) for c in chunk_scores.values()])
    extra = max(0, min(optional.numel(), budget - sum(c.shape[0] for c in chunk_scores.values())))
    chosen = torch.zeros(optional.numel(), dtype=torch.bool)
    chosen[torch.topk(optional, extra).indices] = True
    chosen = chosen.split([c[:, 1:].numel() for c in chunk_scores.values()])
    out = {}
    for name, picked in zip(names, chosen, strict=True):
        counts = 1 + picked.reshape(chunk_scores[name].shape[0], -1).sum(1)
        # store tiles longest first: the kernel launches CTAs in tile order (longest-processing-time first)
        lpt = torch.sort(counts, descending=True, stable=True).indices
        cols = [torch.sort(order[name][t, :int(counts[t]) * K_STEP]).values for t in lpt.tolist()]
        rows = kept_rows[name].reshape(-1, g)[lpt]
        mask = _tiles_to_mask(tuple(scores[name].shape), rows, cols, scores[name], two_four)
        out[name] = LayerMask(name, mask, sparsity, rows, cols, two_four)
    return out


def select_masks(scores: Mapping[str, torch.Tensor], pattern: Pattern, sparsity: float) -> dict[str, LayerMask]:
    """Masks for every layer in `scores` (saliency, ≥ 0, shaped like the 2-D weight view)."""
    scores = {name: s.detach().to(torch.float32).cpu() for name, s in scores.items()}
    for name, s in scores.items():
        pattern.check_shape(name, tuple(s.shape))
        pattern.check_sparsity(name, sparsity)
    if isinstance(pattern, TW):
        return tw_layers(scores, pattern, sparsity) if scores else {}
    out = {}
    for name, s in scores.items():
        if isinstance(pattern, HiNM):
            out[name] = hinm_layer(name, s, pattern, sparsity)
        elif isinstance(pattern, NM):
            mask = nm_mask(s, pattern.n, pattern.m)
            lm = LayerMask(name, mask, sparsity)
            if pattern.tile_sparse:   # 2:4 = HiNM with every column kept
                n, k = s.shape
                r = next(v for v in (128, 64, 32, 16) if n % v == 0)
                lm.rows, lm.cols, lm.two_four = torch.arange(n).reshape(n // r, r), [torch.arange(k)] * (n // r), True
            out[name] = lm
        elif isinstance(pattern, Block):
            out[name] = LayerMask(name, block_mask(s, pattern.b, sparsity), sparsity)
        elif isinstance(pattern, Unstructured):
            out[name] = LayerMask(name, _topk_mask(s, round(s.numel() * (1.0 - sparsity))), sparsity)
        else:
            raise PatternError(f"layer '{name}': no mask selection for pattern {pattern!r}")
    return out


# ---- helpers for permuted layouts (exporter.permute) ----------------------------------------------------------
def hinm_columns(scores: torch.Tensor, rows: torch.Tensor, kept: int) -> list[torch.Tensor]:
    """HiNM level 1 for a given row blocking: block t (rows[t]) keeps the `kept` input columns whose saliency
    summed over the block's rows is largest, in ascending order (what `hinm_layer` does for rows = arange)."""
    rows = torch.as_tensor(rows, dtype=torch.int64)
    block_scores = scores[rows].sum(1)                                              # [blocks, K]
    return list(torch.sort(torch.topk(block_scores, kept, dim=1).indices, dim=1).values)


def layout_mask(name: str, scores: torch.Tensor, rows: torch.Tensor, cols: list[torch.Tensor], two_four: bool,
                requested: float) -> LayerMask:
    """The LayerMask of a given tile layout: tile t covers output features rows[t] and keeps the input
    columns cols[t] in that order (consecutive quadruples form the 2:4 groups, where each row keeps its 2
    highest-scoring entries).  Used for permuted layouts, whose columns need not be ascending."""
    rows = torch.as_tensor(rows, dtype=torch.int64)
    cols = [torch.as_tensor(c, dtype=torch.int64) for c in cols]
    scores = scores.detach().to(torch.float32).cpu()
    if cols and len({len(c) for c in cols}) == 1:   # uniform tiles (HiNM): one batched gather and scatter
        n, k = scores.shape
        c = torch.stack(cols)                                                       # [T, C]
        sub = scores[rows[:, :, None], c[:, None, :]]                               # [T, R, C]
        keep = two_four_mask(sub) if two_four else torch.ones_like(sub, dtype=torch.bool)
        flat = (rows[:, :, None] * k + c[:, None, :])[keep]
        mask = torch.zeros(n * k, dtype=torch.bool)
        mask[flat] = True
        mask = mask.view(n, k)
    else:
        mask = _tiles_to_mask(tuple(scores.shape), rows, cols, scores, two_four)
    return LayerMask(name, mask, requested, rows, cols, two_four)
