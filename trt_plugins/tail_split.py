"""Tail split of the Hopper kernel's last partial wave (pure Python; mirrors cuda/sm90_schedule.cuh).

The wgmma kernel runs one CTA per SM over G work items, so its last round keeps only G % P of the P SMs busy.
`choose` splits each of those R = G % P items along K into `parts` pieces (R * parts <= P); the pieces meet through
fp32 partial sums in a workspace (`workspace_bytes`) and 64-bit flags that carry a per-launch `nonce`.  By default
only launches of fewer items than SMs (small M) are split; the kernel's other entry points (no `_split` suffix) are
the unsplit code, machine-code identical to the build before the split existed.
"""

from __future__ import annotations

import itertools
import os
import secrets
from dataclasses import dataclass

MAX_PARTS = 8
# Cost model of one launch of fewer items than SMs, in microseconds, fitted to the H200 A/B of device run 15
# (docs/KERNEL_NOTES.md v9: 24 small-M problems x pieces 1/2/4/8, rms error 1.7 us).  A k32 step (32 kept columns)
# of an item takes STEP_US on one SM, unless the CTAs running together ask for more than BANDWIDTH_KB_PER_US
# (compressed values + gathered activations, all of them through L2); a split pays MEET_US once (the writers'
# stores, the flags) and READ_US per partial sum the owner adds (128 KB at BM = 128, half at BM = 64).
STEP_US = 0.24
BANDWIDTH_KB_PER_US = 7300.0
MEET_US = 3.8
READ_US = 1.4
# Split only for a predicted gain of at least this fraction: the fit's error (rms 1.7 us) is larger than the
# margins of close calls (BERT-base ffn2 at M = 2048, 48 items: predicted 0.1% faster in 2 pieces, measured 3% slower).
MIN_GAIN = 0.02


@dataclass(frozen=True)
class TailSplit:
    tail: int = 0    # the last `tail` GEMM items are split ...
    parts: int = 1   # ... into this many pieces each (1: no split)

    @property
    def writer_slots(self) -> int:
        return self.tail * (self.parts - 1)

    def units(self, gemm_items: int) -> int:
        """Work units of the GEMM: the whole items, then every piece."""
        return gemm_items - self.tail + self.tail * self.parts


NO_SPLIT = TailSplit()


def setting() -> int | None:
    """SPARSETRT_TAIL_SPLIT: unset or "auto" = the cost model; "0" = off (comparisons; a GPU shared with other work,
    README); an integer >= 2 = that many pieces wherever they fit (tests)."""
    value = os.environ.get("SPARSETRT_TAIL_SPLIT", "auto").strip().lower()
    if value == "auto":
        return None
    if not value.isdigit() or int(value) == 1:
        raise ValueError(f"SPARSETRT_TAIL_SPLIT={value!r}: expected 'auto', '0' (off) or a piece count >= 2")
    return int(value)


def enabled() -> bool:
    return setting() != 0


def choose(gemm_items: int, sm_count: int, steps_per_item: int, forced: int | None = None,
           fill_items: int = 0, cta_rows: int = 128, tokens: int = 256) -> TailSplit:
    """The split of the last partial round, or NO_SPLIT where it does not pay (cost model above).

    steps_per_item: k32 steps (32 kept columns) of a typical item; pieces get at least 2 steps.
    fill_items: the launch's pruned-rows items (they take SMs too); cta_rows: BM; tokens: an item's tokens (<= 256).
    The cost model splits only a launch that is a single partial round (gemm + fill items < SMs: small M), where
    idle SMs are the whole cost.  After whole rounds the last round's fewer CTAs run faster on their own (they
    share L2 and memory bandwidth with fewer): forced splits there measured no gain at full size and 0.68-0.86x at
    BERT-base qkv, M = 2048, on the H200 (docs/KERNEL_NOTES.md v9).
    forced: that many pieces (capped at what fits: tail * parts <= sm_count, 2 steps per piece), any round count,
    no cost model (tests, A/B runs)."""
    if gemm_items <= 0 or sm_count <= 0 or steps_per_item < 4:
        return NO_SPLIT
    tail = gemm_items % sm_count
    if tail == 0:
        return NO_SPLIT
    fit = min(sm_count // tail, steps_per_item // 2)
    if forced is not None:
        parts = min(forced, fit)
        return TailSplit(tail, parts) if parts > 1 else NO_SPLIT
    if gemm_items + fill_items >= sm_count:
        return NO_SPLIT
    fit = min(fit, MAX_PARTS, (sm_count - fill_items) // tail)
    costs = {parts: launch_us(tail, parts, steps_per_item, fill_items, cta_rows, tokens) for parts in range(1, fit + 1)}
    best = min(costs, key=costs.get)
    return TailSplit(tail, best) if best > 1 and costs[best] <= (1 - MIN_GAIN) * costs[1] else NO_SPLIT


def launch_us(items: int, parts: int, steps_per_item: int, fill_items: int = 0, cta_rows: int = 128,
              tokens: int = 256) -> float:
    """The cost model's time of a single-round launch of `items` items in `parts` pieces each (fixed costs out)."""
    step_kb = (cta_rows * 16 * 2 + 32 * tokens * 2) / 1024   # 2:4 values of BM rows + 32 gathered rows, fp16
    ctas = items * parts + fill_items
    step_us = max(STEP_US, ctas * step_kb / BANDWIDTH_KB_PER_US)
    meet = MEET_US + READ_US * (cta_rows / 128) * (parts - 1) if parts > 1 else 0.0
    return steps_per_item / parts * step_us + meet


def slot_bytes(cta_rows: int) -> int:
    """One CTA tile's fp32 accumulators: 2 consumer warpgroups x 64 rows x (256 or 128) tokens."""
    acc_regs = 128 if cta_rows == 128 else 64   # Sm90Shape<BM>::kAccRegs
    return 2 * acc_regs * 128 * 4


def workspace_bytes(split: TailSplit, cta_rows: int) -> int:
    """Flags (two 64-bit words per writer slot, rounded up to 256 bytes), then the writer slots."""
    if split.parts < 2:
        return 0
    flags = -(-16 * split.writer_slots // 256) * 256
    return flags + split.writer_slots * slot_bytes(cta_rows)


_NONCES = itertools.count(secrets.randbits(63))


def nonce() -> int:
    """A non-zero 64-bit value no earlier launch of this process used (a counter from a random start times an odd
    constant, a bijection mod 2^64), so a flag left in recycled memory does not read as this launch's."""
    while True:
        value = (next(_NONCES) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        if value:
            return value
