#!/usr/bin/env python3
"""A reduced sweep of kernel launches for compute-sanitizer (memcheck / racecheck / synccheck):

    compute-sanitizer --tool memcheck --error-exitcode 9 python3 tools/kernel_sweep.py

Every pattern case of tests/gpu_helpers.py at three token counts, both dtypes, both kernel families where
they apply, aligned and unaligned activations, then the wgmma kernel's tail split forced on; each result is checked
against the float64 reference."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.gpu_helpers import CASES, check, family_applies, make_format, run_kernel  # noqa: E402


def sweep_tail_split(gen) -> None:
    """The wgmma kernel's tail split forced on (pieces meeting through global memory: the flags and partial sums
    are what racecheck and memcheck should see), HiNM BM = 128 and 64 and TVW with per-tile maps."""
    if not family_applies("wgmma_sp", make_format(*CASES[0][1:], torch.float16, gen)[0]):
        return
    from exporter import TVW, HiNM
    from trt_plugins import launch

    for name, pattern, n, k in (("hinm128 split", HiNM(vector=128), 384, 2048), ("hinm64 split", HiNM(vector=64), 256, 1024),
                                ("tvw128 split", TVW(tile=128), 384, 2048)):
        fmt, bias = make_format(pattern, 0.75, n, k, torch.float16, gen)
        for m, parts in ((7, 3), (300, 8)):
            os.environ["SPARSETRT_TAIL_SPLIT"] = str(parts)
            before = launch.SPLIT_LAUNCHES
            x = torch.randn(m, k, generator=gen).half()
            err = check(fmt, x, bias, run_kernel(fmt, x, bias, "gelu", family="wgmma_sp"), "gelu")
            assert launch.SPLIT_LAUNCHES == before + 1, f"{name}: the split did not run"
            print(f"{name:18s} wgmma_sp  parts<={parts} M={m:4d} rel_err={err:.2e}")
    os.environ.pop("SPARSETRT_TAIL_SPLIT")


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
    sweep_tail_split(gen)
    print("sweep ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
