#!/usr/bin/env python3
"""Locate layout bugs in a kernel family on the GPU: small problems of growing complexity, and for each
failing one the rows (mod 64) and tokens (mod 256) whose outputs are wrong.

    python3 tools/wgmma_probe.py [--family wgmma_sp]

Cases go from one tile and one pipeline stage (2:4 only, 64 kept columns) to several stages, an odd last
stage, 128-row tiles, two row blocks per tile, token tails and both dtypes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from exporter import HiNM  # noqa: E402
from tests.gpu_helpers import REL_TOL, make_format, run_kernel  # noqa: E402

CASES = [  # label, vector, sparsity, N, K, M
    ("1 tile, 1 stage", 64, 0.5, 64, 64, 256),
    ("1 tile, 2 stages", 64, 0.5, 64, 128, 256),
    ("1 tile, odd last stage", 64, 0.5, 64, 96, 256),
    ("V=128, 1 stage", 128, 0.5, 128, 64, 256),
    ("V=64, 4 tiles, 75%", 64, 0.75, 256, 512, 256),
    ("V=128, 75%, 2 token tiles + tail", 128, 0.75, 256, 512, 700),
    ("V=256 (2 row blocks)", 256, 0.75, 512, 256, 300),
]


def locate(y: torch.Tensor, ref: torch.Tensor) -> str:
    bad = (y.double() - ref).abs() > 0.05 * ref.abs().max()
    if not bad.any():
        return "all outputs within 5% of max"
    toks, rows = bad.nonzero(as_tuple=True)
    return (f"{bad.float().mean():.1%} wrong; rows mod 64: {sorted(set((rows % 64).tolist()))[:24]}; "
            f"tokens mod 256: {sorted(set((toks % 256).tolist()))[:24]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="wgmma_sp", choices=("mma_sp", "wgmma_sp"))
    args = ap.parse_args(argv)
    gen = torch.Generator().manual_seed(7)
    failures = 0
    for dtype in (torch.float16, torch.bfloat16):
        for label, v, s, n, k, m in CASES:
            fmt, bias = make_format(HiNM(vector=v), s, n, k, dtype, gen, bias=False)
            x = torch.randn(m, k, generator=gen).to(dtype)
            y = run_kernel(fmt, x, None, family=args.family)
            ref = fmt.matmul(x.double(), None)
            unwritten = int(torch.isnan(y).sum())
            err = ((y.double().nan_to_num(1e9) - ref).norm() / ref.norm()).item()
            ok = unwritten == 0 and err < REL_TOL[dtype]
            failures += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {str(dtype):14s} {label:34s} rel_err={err:.2e} unwritten={unwritten}"
                  + ("" if ok else f"  {locate(y.nan_to_num(0), ref)}"))
    print(f"probe: {failures} failing case(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
