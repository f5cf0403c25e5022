"""2:4 metadata in the register layout of `mma.sp.sync.aligned.m16n8k32` operand A (f16/bf16,
sparsity selector 0).  This module is the only place that knows the bit layout; docs/FORMAT.md
describes it with a worked example.

For one tile of R rows and a compacted (kept) K of Kt columns, every group of 4 consecutive kept
columns of a row keeps exactly 2 values; `pos[r, 2j]` < `pos[r, 2j+1]` are their positions 0..3
inside group j.  The nibble of a group is `pos0 | pos1 << 2`.

Word order, one uint32 per (k step s of 32 columns, row group q of 16 rows, lane group g, half t):
    word[s, q, g, t] = half16(row 16q+g, s, t) | half16(row 16q+g+8, s, t) << 16
    half16(r, s, t)  = Σ_j nibble(r, group 8s + 4t + j) << 4j        (j = 0..3)
so lane 4g+t (t ∈ {0, 1}) of a warp loads word[s, q, g, t] as its metadata register; lanes with
t ∈ {2, 3} supply nothing under selector 0.  Flattened order is s, q, g, t (s slowest), so the
metadata of one k step of a whole tile is contiguous.
"""

from __future__ import annotations

import numpy as np

GROUP = 4          # 2:4 groups along K
STEP = 32          # uncompressed K columns per mma.sp m16n8k32
ROWS = 16          # rows per mma.sp (M)
VALID_NIBBLES = frozenset(p0 | (p1 << 2) for p0 in range(4) for p1 in range(4) if p0 < p1)


def words_per_tile(rows: int, kept: int) -> int:
    """Number of uint32 metadata words for a tile of `rows` × `kept` (uncompressed kept columns)."""
    return rows * kept // STEP


def encode(pos: np.ndarray) -> np.ndarray:
    """positions [R, Kt/2] (0..3, ascending pairs) → uint32 words [Kt/32 · R/16 · 8 · 2] in fragment order."""
    pos = np.asarray(pos, dtype=np.uint32)
    rows, half_k = pos.shape
    kept = 2 * half_k
    assert rows % ROWS == 0 and kept % STEP == 0, (rows, kept)
    steps, groups = kept // STEP, rows // ROWS
    nib = pos[:, 0::2] | (pos[:, 1::2] << 2)                           # [R, Kt/4]
    nib = nib.reshape(rows, steps, 2, 4)                                # [R, s, t, j]
    half16 = (nib << (4 * np.arange(4, dtype=np.uint32))).sum(axis=-1, dtype=np.uint32)  # [R, s, t]
    half16 = half16.reshape(groups, 2, 8, steps, 2)                     # r = 16q + 8h + g → [q, h, g, s, t]
    words = half16[:, 0] | (half16[:, 1] << 16)                         # [q, g, s, t]
    return np.ascontiguousarray(words.transpose(2, 0, 1, 3)).reshape(-1)  # [s, q, g, t]


def decode(words: np.ndarray, rows: int, kept: int) -> np.ndarray:
    """Inverse of `encode`: uint32 words → positions [R, Kt/2]."""
    words = np.asarray(words).astype(np.uint32, copy=False)
    steps, groups = kept // STEP, rows // ROWS
    w = words.reshape(steps, groups, 8, 2).transpose(1, 2, 0, 3)        # [q, g, s, t]
    half16 = np.stack([w & 0xFFFF, w >> 16], axis=1)                    # [q, h, g, s, t]
    half16 = half16.reshape(rows, steps, 2)                             # [R, s, t]
    nib = (half16[..., None] >> (4 * np.arange(4, dtype=np.uint32))) & 0xF  # [R, s, t, j]
    nib = nib.reshape(rows, kept // GROUP)
    pos = np.empty((rows, kept // 2), dtype=np.int64)
    pos[:, 0::2] = nib & 3
    pos[:, 1::2] = nib >> 2
    return pos


def invalid_nibbles(words: np.ndarray) -> np.ndarray:
    """Boolean mask over all nibbles of `words` that do not encode 2 distinct ascending positions."""
    words = np.asarray(words).astype(np.uint32, copy=False)
    nib = (words[:, None] >> (4 * np.arange(8, dtype=np.uint32))) & 0xF
    return (nib & 3) >= (nib >> 2)
