#!/usr/bin/env python3
"""Where does the Hopper kernel's time go?  Times the shipped fp16 kernel (abl0) against itself with the
activation gather left out (abl1) and with the wgmma left out (abl2), on a few benchmark shapes, and prints
the L2->SM bytes each variant moves per microsecond.  Build the cubin first (on this machine or the GPU's):

    nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -cubin tools/cuda/sm90_ablation.cu -o out/abl.cubin
    python3 tools/ablate_sm90.py out/abl.cubin [--shapes 0,7]
    (add -DSPARSETRT_SM90_PRODUCERS_BM64=1 to nvcc and --producers-bm64 1 here for one producer at BM = 64)

Several cubins (label=path, e.g. built with -DSPARSETRT_SM90_MAX_STAGES=4 or -DSPARSETRT_SM90_L2HINT=1) are
timed on the same formats and inputs, so their rows compare within one run.

Development tool: the ablated kernels compute garbage and are not shipped."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from exporter import HiNM, select_masks  # noqa: E402
from exporter.formats import compress  # noqa: E402
from tools.bench_kernels import SHAPES  # noqa: E402


def main(argv=None) -> int:
    from trt_plugins import launch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cubin", nargs="+", help="PATH or LABEL=PATH, one per build variant")
    ap.add_argument("--producers-bm64", type=int, default=2, choices=(1, 2),
                    help="producer warpgroups the cubin's BM = 64 kernels were built with")
    ap.add_argument("--shapes", default="0,3,7")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--vectors", default="128,64", help="HiNM vector sizes V to run")
    ap.add_argument("--variants", default="0,1,2", help="0 = full, 1 = no gather, 2 = no wgmma")
    args = ap.parse_args(argv)
    rt = launch.runtime(0)
    modules = {}
    rt.context.push()   # load into PyTorch's (primary) context, like the launch layer does
    try:
        for spec in args.cubin:
            label, _, path = spec.rpartition("=")
            modules[label or Path(path).stem] = rt.cuda.module_from_file(path)
    finally:
        rt.context.pop()
    print(f"{'shape':18s} {'V':>4s} {'build':10s} {'variant':8s} {'ms':>8s} {'L2->SM TB/s':>12s} {'sparse TC %':>11s}")
    for i in map(int, args.shapes.split(",")):
        name, m, k, n = SHAPES[i]
        for v in map(int, args.vectors.split(",")):
            w = torch.randn(n, k, dtype=torch.float16)
            lm = select_masks({"w": w.abs().float()}, HiNM(vector=v), 0.75)["w"]
            f = compress(w, lm.mask, lm.rows, lm.cols, two_four=True).to("cuda")
            xt = torch.randn(k, m, dtype=torch.float16, device="cuda")
            y = torch.empty(m, n, dtype=torch.float16, device="cuda")
            p = launch.plan(m, k, n, f.tile_rows, f.num_tiles, "float16", family="wgmma_sp", sm_count=rt.sm_count)
            block = (128 * (2 + args.producers_bm64), 1, 1) if p.cta_rows == 64 else p.block
            kt = int(f.k_offsets[1] - f.k_offsets[0])
            moved = (n // p.cta_rows) * (-(-m // 256)) * (kt * 256 * 2 + p.cta_rows * kt // 2 * 2)
            tc_s = 2 * m * n * kt / 1979e12      # wgmma.sp work at the datasheet's sparse fp16 rate
            for label, module, abl in ((lb, md, a) for lb, md in modules.items() for a in map(int, args.variants.split(","))):
                fn = module.get_function(f"abl{abl}_bm{p.cta_rows}")
                fn.set_attribute(rt.cuda.function_attribute.MAX_DYNAMIC_SHARED_SIZE_BYTES, p.shared_bytes)
                ptrs = [np.uintp(t.data_ptr()) for t in (xt, f.values, f.meta, f.k_index, f.k_offsets, f.row_index,
                                                         f.values, y)]
                ints = [np.int32(a) for a in (m, m, k, n, f.num_tiles, f.tile_rows, 0)]

                def once(fn=fn, ptrs=ptrs, ints=ints, p=p, block=block):
                    fn(*ptrs, *ints, block=block, grid=p.grid, shared=p.shared_bytes, stream=rt.stream)
                torch.cuda.synchronize()
                for _ in range(3):
                    once()
                times = []
                for _ in range(5):
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    with torch.cuda.stream(rt.side):
                        start.record()
                        for _ in range(args.reps):
                            once()
                        end.record()
                    end.synchronize()
                    times.append(start.elapsed_time(end) / args.reps)
                t = float(np.median(times))
                print(f"{name:18s} {v:4d} {label:10s} {'full no-gather no-mma'.split()[abl]:8s} {t:8.4f} "
                      f"{moved / t / 1e9:12.2f} {100 * tc_s * 1e3 / t:11.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
