#!/usr/bin/env python3
"""A reduced sweep of kernel launches for compute-sanitizer (memcheck / racecheck / synccheck):

    compute-sanitizer --tool memcheck --error-exitcode 9 python3 tools/kernel_sweep.py

Every pattern case of tests/gpu_helpers.py at three token counts, both dtypes, both kernel families where
they apply, aligned and unaligned activations; each result is checked against the float64 reference."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.gpu_helpers import CASES, check, family_applies, make_format, run_kernel  # noqa: E402


def main() -> int:
    gen = torch.Generator().manual_seed(1234)
    for name, pattern, sparsity, n, k in CASES:
        for dtype in (torch.float16, torch.bfloat16):
            fmt, bias = make_format(pattern, sparsity, n, k, dtype, gen)
            for m, pad in ((7, 1), (130, 8), (300, 8)):
                for family in ("mma_sp", "wgmma_sp"):
                    if not family_applies(family, fmt, pad):
                        continue
                    act = "gelu" if m == 7 else "none"
                    x = torch.randn(m, k, generator=gen).to(dtype)
                    err = check(fmt, x, bias, run_kernel(fmt, x, bias, act, pad_to=pad, family=family), act)
                    print(f"{name:18s} {family:9s} {str(dtype):15s} M={m:4d} ldx_pad={pad} rel_err={err:.2e}")
    print("sweep ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
