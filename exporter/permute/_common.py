"""Small shared helpers: deterministic per-layer generators, deadlines, the linear-assignment call."""

from __future__ import annotations

import time
import zlib

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


def layer_generator(seed: int, name: str) -> torch.Generator:
    """A generator seeded from the config seed and the layer name, so a layer's result does not depend on
    which other layers were permuted before it (or in which order)."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**63 - 1))


class Deadline:
    """Wall-clock budget; `None` seconds never expires.  `hit` records that a search stopped because of it."""

    def __init__(self, seconds: float | None) -> None:
        self.end = None if seconds is None else time.perf_counter() + float(seconds)
        self.hit = False

    def expired(self) -> bool:
        if self.end is not None and time.perf_counter() >= self.end:
            self.hit = True
        return self.hit

    def remaining(self) -> float | None:
        return None if self.end is None else max(0.0, self.end - time.perf_counter())


def assign_max(cost: torch.Tensor) -> np.ndarray:
    """Column assigned to every row of a square cost (a gain to maximise): scipy's Jonker–Volgenant LSA.

    Row and column maxima are subtracted first: that leaves the optimum unchanged (every row and column is
    used once) and halves the solver's time on the output stage's costs, whose rows repeat per tile."""
    c = cost.detach().to(torch.float64).cpu()
    c = c - c.max(1, keepdim=True).values
    c = (c - c.max(0, keepdim=True).values).numpy()
    rows, cols = linear_sum_assignment(c, maximize=True)
    out = np.empty(c.shape[0], dtype=np.int64)
    out[rows] = cols
    return out


def random_perm_rows(gen: torch.Generator, rows: int, n: int) -> torch.Tensor:
    """`rows` independent random permutations of 0..n-1, [rows, n]."""
    return torch.argsort(torch.rand(rows, n, generator=gen), dim=1)
