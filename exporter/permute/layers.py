"""Layer-level permutation: HiNM (one layer at a time) and TVW / TW (layers together, global thresholds).

Flow for every method: an output stage picks which rows share a tile, the pattern's own rule then picks
each tile's kept columns (HiNM: top column-vector sums; TVW/TW: `tw_layers`' global thresholds), and an
input stage picks the 2:4 grouping of each tile's kept columns.  A stage never lowers retained saliency
below what it started from, and an output order that retains less than the identity after the pattern's
selection is dropped for the identity, so no method keeps less than no permutation.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping

import torch

from ..masks import hinm_columns, hinm_kept, layout_mask, select_masks, tw_layers
from ..patterns import TW, HiNM, Pattern, PatternError
from ._common import Deadline, layer_generator
from .baselines import random_groups, random_rows, swap_groups
from .config import ChannelSwap, Gyro, NoPermutation, PermutationConfig, RandomRestarts
from .gyro import SearchStats, search_groups, search_rows, two_four_profile
from .pairs import search_pairs
from .result import PermutationResult
from .saliency_accounting import as_scores, layout_retained, tile_retained, unstructured_retained


@contextlib.contextmanager
def single_thread():
    """The searches run many small tensor ops: one intra-op thread avoids thread hand-off costs, which on a
    loaded 2-core machine made them 10–25× slower (layers can run in parallel processes instead)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _bar(name: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(desc=f"permute {name}", unit="round", leave=False, disable=not progress)


def check_config(config: object) -> PermutationConfig:
    """The config to use (None → Gyro()), or a PatternError for anything that is not a permutation config."""
    if config is None:
        return Gyro()
    if not isinstance(config, PermutationConfig):
        raise PatternError(f"permutation config must be Gyro(), ChannelSwap(), RandomRestarts() or NoPermutation(), "
                           f"got {config!r}")
    return config


def check_pattern(name: str, pattern: Pattern, shape: tuple[int, int], sparsity: float) -> None:
    if not isinstance(pattern, (HiNM, TW)):
        raise PatternError(f"layer '{name}': permutation needs a HiNM, TVW or TW pattern, got {pattern.describe()} "
                           "(N:M, block and unstructured layouts have no tiles to permute)")
    pattern.check_shape(name, shape)
    pattern.check_sparsity(name, sparsity)


# ---- stages --------------------------------------------------------------------------------------------------
def output_stage(s: torch.Tensor, tile_rows: int, kept: int, config: PermutationConfig, gen: torch.Generator,
                 deadline: Deadline, bar, two_four: bool = True) -> tuple[torch.Tensor | None, SearchStats | None]:
    """Rows of every tile [T, R] (indices into s's rows), or None for the identity."""
    if isinstance(config, Gyro) and config.output:
        target = two_four_profile(s, kept) if two_four and config.objective == "two_four" else s
        return search_rows(target, tile_rows, kept, config, gen, deadline, bar)
    if isinstance(config, RandomRestarts):
        return random_rows(s, tile_rows, kept, config, gen, deadline)
    return None, None


def _spare_columns(s: torch.Tensor, rows: torch.Tensor, c: torch.Tensor, spare: int) -> torch.Tensor:
    """The `spare` dropped columns with the largest sums over each tile's rows [t, spare]: the ones most
    likely to earn a place in a 2:4 group (a HiNM block may keep any `kept` columns)."""
    sums = s[rows].sum(1).scatter_(1, c, float("-inf"))                                # [t, K], kept ones out
    return torch.topk(sums, spare, dim=1).indices


def _pair_refine(block: torch.Tensor, order: torch.Tensor, config: Gyro, gen: torch.Generator, deadline: Deadline,
                 bar, st: SearchStats) -> torch.Tensor:
    """Gyro's optional last step: the exhaustive two-group search on the grouping the LSA rounds left
    (block [t, R, width], order [t, C] into its columns); adds its rounds to the input stage's stats."""
    t, r, _ = block.shape
    kept = block.gather(2, order[:, None, :].expand(t, r, order.shape[1]))             # [t, R, C] in group order
    start = torch.arange(order.shape[1]).repeat(t, 1)
    sub, pst = search_pairs(kept, start, config.pair_patience, config.min_gain, config.max_rounds, gen, deadline, bar)
    st.rounds, st.accepted, st.after = st.rounds + pst.rounds, st.accepted + pst.accepted, pst.after
    return order.gather(1, sub)


def input_stage(s: torch.Tensor, rows: torch.Tensor, cols: list[torch.Tensor], config: PermutationConfig,
                gen: torch.Generator, deadline: Deadline, bar, spare: int = 0) -> tuple[list[torch.Tensor], SearchStats | None]:
    """Reorder each tile's kept columns into better 2:4 groups.  Tiles of equal length are searched batched.
    With `spare` > 0 (gyro on HiNM) up to that many of the tile's dropped columns may replace kept ones."""
    if isinstance(config, NoPermutation) or (isinstance(config, Gyro) and not config.input):
        return cols, None
    out = list(cols)
    total = SearchStats()
    by_len: dict[int, list[int]] = {}
    for t, c in enumerate(cols):
        by_len.setdefault(len(c), []).append(t)
    for _, tiles in sorted(by_len.items(), reverse=True):
        idx = torch.tensor(tiles)
        c = torch.stack([cols[t] for t in tiles])                                  # [t, C]
        extra = min(spare, s.shape[1] - c.shape[1]) if isinstance(config, Gyro) else 0
        if extra > 0:
            c = torch.cat([c, _spare_columns(s, rows[idx], c, extra)], dim=1)      # [t, C + extra]
        block = s[rows[idx][:, :, None], c[:, None, :]]                             # [t, R, C (+ extra)]
        if isinstance(config, Gyro):
            order, st = search_groups(block, config, gen, deadline, bar, spare=extra)
            order = order[:, :c.shape[1] - extra]
            if config.pair_patience:
                order = _pair_refine(block, order, config, gen, deadline, bar, st)
        elif isinstance(config, ChannelSwap):
            order, st = swap_groups(block, config, deadline, bar)
        elif isinstance(config, RandomRestarts):
            order, st = random_groups(block, config, gen, deadline)
        else:  # pragma: no cover - check_config rejects other types
            raise PatternError(f"unknown permutation config {config!r}")
        new = c.gather(1, order)
        for j, t in enumerate(tiles):
            out[t] = new[j]
        total.rounds += st.rounds
        total.accepted += st.accepted
        total.before += st.before
        total.after += st.after
    return out, total


# ---- HiNM ------------------------------------------------------------------------------------------------------
def permute_hinm(scores: torch.Tensor, pattern: HiNM, sparsity: float, config: PermutationConfig | None = None, *,
                 name: str = "layer", progress: bool = False, deadline: Deadline | None = None) -> PermutationResult:
    """Permute one HiNM layer.  scores [N, K] saliency (≥ 0); returns the permuted layout and its accounting."""
    config = check_config(config)
    s = as_scores(scores)
    if s.dim() != 2:
        raise PatternError(f"layer '{name}': saliency must be 2-D [N, K], got shape {tuple(s.shape)}")
    check_pattern(name, pattern, tuple(s.shape), sparsity)
    if not isinstance(pattern, HiNM):
        return permute_tw({name: scores}, pattern, sparsity, config, progress=progress)[name]
    start = time.perf_counter()
    deadline = deadline or Deadline(config.time_budget_s)
    gen = layer_generator(config.seed, name)
    n, k = s.shape
    v = pattern.vector
    kept = hinm_kept(k, sparsity)
    rows0 = torch.arange(n).view(n // v, v)
    cols0 = hinm_columns(s, rows0, kept)
    no_perm = layout_retained(s, rows0, cols0, True)
    stages: dict[str, SearchStats] = {}
    with single_thread(), _bar(name, progress) as bar:
        rows, st = output_stage(s, v, kept, config, gen, deadline, bar)
        rows_used, cols = rows0, cols0
        if rows is not None:
            stages["output"] = st
            cand_cols = hinm_columns(s, rows, kept)
            if layout_retained(s, rows, cand_cols, True) > no_perm:
                rows_used, cols = rows, cand_cols
        spare = config.spare_columns if isinstance(config, Gyro) else 0
        cols, st = input_stage(s, rows_used, cols, config, gen, deadline, bar, spare)
        if st is not None:
            stages["input"] = st
    retained = layout_retained(s, rows_used, cols, True)
    lm = layout_mask(name, s, rows_used, cols, True, sparsity)
    return PermutationResult(name, pattern.describe(), config.name, sparsity, rows_used, cols, True, lm.mask, no_perm,
                             retained, unstructured_retained(s, int(lm.mask.sum())), time.perf_counter() - start,
                             deadline.hit, stages)


# ---- TVW / TW ----------------------------------------------------------------------------------------------------
def _tw_select(scores: Mapping[str, torch.Tensor], orders: Mapping[str, torch.Tensor], pattern: TW,
               sparsity: float) -> dict[str, tuple[torch.Tensor, list[torch.Tensor]]]:
    """tw_layers on row-permuted scores (order[p] = original feature at position p); returns rows in
    original ids and the (ascending) kept columns of every tile."""
    permuted = {n: scores[n][orders[n]].to(torch.float32) for n in scores}
    masks = tw_layers(permuted, pattern, sparsity)
    return {n: (orders[n][masks[n].rows], list(masks[n].cols)) for n in scores}


def permute_tw(scores: Mapping[str, torch.Tensor], pattern: TW, sparsity: float, config: PermutationConfig | None = None,
               *, progress: bool = False, deadline: Deadline | None = None) -> dict[str, PermutationResult]:
    """Permute TVW (or TW) layers together: their kept K-rows come from global thresholds across layers.

    Output stage per layer on the kept output features (tiles keep the layer's mean kept count in the
    search objective), then the global selection on the permuted rows, then (TVW) the 2:4 grouping per
    tile.  If the permuted selection retains less in total than the unpermuted one, the identity is used."""
    config = check_config(config)
    if not isinstance(pattern, TW):
        raise PatternError(f"permute_tw needs a TVW or TW pattern, got {pattern.describe()}")
    s_all = {n: as_scores(t) for n, t in scores.items()}
    for n, s in s_all.items():
        check_pattern(n, pattern, tuple(s.shape), sparsity)
    deadline = deadline or Deadline(config.time_budget_s)
    two_four = pattern.two_four
    base = select_masks({n: s.to(torch.float32) for n, s in s_all.items()}, pattern, sparsity)
    no_perm = {n: layout_retained(s_all[n], base[n].rows, base[n].cols, two_four) for n in s_all}
    identity = {n: torch.arange(s.shape[0]) for n, s in s_all.items()}
    stages: dict[str, dict[str, SearchStats]] = {n: {} for n in s_all}
    orders = dict(identity)
    times = {n: 0.0 for n in s_all}
    with single_thread():
        for n, s in s_all.items():
            t0 = time.perf_counter()
            feats = torch.sort(base[n].rows.reshape(-1)).values                     # kept output features
            kept = max(1, round(sum(len(c) for c in base[n].cols) / len(base[n].cols)))
            with _bar(n, progress) as bar:
                rows, st = output_stage(s_all[n][feats], pattern.tile, kept, config, layer_generator(config.seed, n),
                                        deadline, bar, two_four)
            if rows is not None:
                stages[n]["output"] = st
                rest = torch.ones(s.shape[0], dtype=torch.bool)
                rest[feats] = False
                orders[n] = torch.cat([feats[rows.reshape(-1)], torch.nonzero(rest).flatten()])
            times[n] += time.perf_counter() - t0
        selected = _tw_select(s_all, orders, pattern, sparsity)
        before_input = sum(layout_retained(s_all[n], *selected[n], two_four) for n in s_all)
        if before_input <= sum(no_perm.values()):
            selected = {n: (base[n].rows, list(base[n].cols)) for n in s_all}
        out = {}
        for n, s in s_all.items():
            t0 = time.perf_counter()
            rows, cols = selected[n]
            if two_four:
                with _bar(n, progress) as bar:
                    cols, st = input_stage(s, rows, cols, config, layer_generator(config.seed + 1, n), deadline, bar)
                if st is not None:
                    stages[n]["input"] = st
            lm = layout_mask(n, s, rows, cols, two_four, sparsity)
            retained = float(tile_retained(s, rows, cols, two_four).sum())
            times[n] += time.perf_counter() - t0
            out[n] = PermutationResult(n, pattern.describe(), config.name, sparsity, rows, cols, two_four, lm.mask,
                                       no_perm[n], retained, unstructured_retained(s, int(lm.mask.sum())), times[n],
                                       deadline.hit, stages[n])
    return out


def permute_tvw(scores: torch.Tensor | Mapping[str, torch.Tensor], pattern: TW, sparsity: float,
                config: PermutationConfig | None = None, *, name: str = "layer", progress: bool = False):
    """TVW convenience: one tensor → one PermutationResult, a mapping → {name: PermutationResult}."""
    if isinstance(scores, torch.Tensor):
        return permute_tw({name: scores}, pattern, sparsity, config, progress=progress)[name]
    return permute_tw(scores, pattern, sparsity, config, progress=progress)


def permute_layer(scores: torch.Tensor, pattern: Pattern, sparsity: float, config: PermutationConfig | None = None, *,
                  name: str = "layer", progress: bool = False) -> PermutationResult:
    """One layer, any tile pattern (HiNM, TVW, TW)."""
    check_pattern(name, pattern, tuple(scores.shape), sparsity)
    if isinstance(pattern, HiNM):
        return permute_hinm(scores, pattern, sparsity, config, name=name, progress=progress)
    return permute_tw({name: scores}, pattern, sparsity, config, progress=progress)[name]
