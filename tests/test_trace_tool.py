"""tools/trace_sm90.py's reading of the kernel's clock64 stamps (no GPU: a synthetic readout with known times)."""

import numpy as np
import pytest

from tools.trace_sm90 import ITEM0, ITEM_SLOTS, SLOTS, item_stats


def _cta(start_ns: int, ghz: float, items: list[tuple[int, int, int, int, int]], end_ns: int) -> np.ndarray:
    """Slots of one CTA; times in ns from its start, items as (p_start, p_first, p_end, c_first, c_done)."""
    row = np.zeros(SLOTS, dtype=np.int64)
    clock0 = 1_000_000
    row[0], row[1] = start_ns, clock0
    row[2], row[3] = start_ns + end_ns, clock0 + round(end_ns * ghz)
    for k, stamps in enumerate(items):
        for j, ns in zip((0, 1, 2, 3, 5), stamps, strict=True):
            row[ITEM0 + ITEM_SLOTS * k + j] = clock0 + round(ns * ghz)
    return row


def test_item_intervals_in_microseconds():
    rng = np.random.default_rng()
    ghz = float(rng.uniform(1.2, 2.0))
    items = [(100, 400, 6000, 2900, 8800), (6300, 6700, 12500, 9900, 15400)]
    tr = np.zeros((4, SLOTS), dtype=np.int64)   # CTAs 2 and 3 never ran
    tr[0] = _cta(5_000, ghz, items, 16_000)
    tr[1] = _cta(5_120, ghz, items[:1], 9_000)
    clock, stats = item_stats(tr)
    assert clock == pytest.approx(ghz, rel=1e-4)   # cycle counts are rounded
    assert stats["prologue"] == pytest.approx([2.9, 2.9], abs=2e-3)
    assert stats["c_wait"] == pytest.approx([9.9 - 8.8], abs=2e-3)    # epilogue done -> next item's first stage in
    assert stats["c_item"] == pytest.approx([5.9, 5.5, 5.9], abs=2e-3)
    assert stats["p_first"] == pytest.approx([0.3, 0.4, 0.3], abs=2e-3)
    assert stats["p_item"] == pytest.approx([5.9, 6.2, 5.9], abs=2e-3)
    assert stats["lead"] == pytest.approx([2.5, 3.2, 2.5], abs=2e-3)
    assert stats["cta_total"] == pytest.approx([16.0, 9.0], abs=2e-3)
