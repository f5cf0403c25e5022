#!/usr/bin/env python3
"""Run one tile-sparse GEMM shape a few times, for Nsight Compute:

    ncu --kernel-name regex:tsgemm --launch-skip 3 --launch-count 1 --clock-control none \\
        --section SpeedOfLight --section WarpStateStats python3 tools/profile_kernel.py --shape 0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from exporter import TVW, HiNM, select_masks  # noqa: E402
from exporter.formats import compress  # noqa: E402
from tools.bench_kernels import SHAPES  # noqa: E402


def main() -> int:
    from trt_plugins import launch

    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", type=int, default=0)
    parser.add_argument("--pattern", default="hinm128", choices=["hinm64", "hinm128", "tvw128"])
    parser.add_argument("--sparsity", type=float, default=0.75)
    args = parser.parse_args()
    name, m, k, n = SHAPES[args.shape]
    pattern = {"hinm64": HiNM(vector=64), "hinm128": HiNM(vector=128), "tvw128": TVW(tile=128)}[args.pattern]
    w = torch.randn(n, k, dtype=torch.float16)
    lm = select_masks({"w": w.abs().float()}, pattern, args.sparsity)["w"]
    fmt = compress(w, lm.mask, lm.rows, lm.cols, two_four=True).to("cuda")
    x = torch.randn(m, k, dtype=torch.float16, device="cuda")
    xt = x.t().contiguous()
    for _ in range(5):
        launch.tile_sparse_linear(x, fmt.values, fmt.meta, fmt.k_index, fmt.k_offsets, fmt.row_index, None, n,
                                  fmt.tile_rows, "none", xt=xt)
    torch.cuda.synchronize()
    print(f"profiled {name} {args.pattern} {args.sparsity}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
