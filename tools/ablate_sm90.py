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


def _encode_tiled(tensor: torch.Tensor, dims, strides, box, swizzle: int) -> torch.Tensor:
    """A CUtensorMap (128 bytes, in GPU memory) for a 2-D fp16 tensor, through the driver's cuTensorMapEncodeTiled."""
    import ctypes

    cuda = ctypes.CDLL("libcuda.so.1")
    out = (ctypes.c_uint8 * 128)()
    dim_t, stride_t = ctypes.c_uint64 * 2, ctypes.c_uint64 * 1
    box_t = ctypes.c_uint32 * 2
    res = cuda.cuTensorMapEncodeTiled(
        ctypes.byref(out), ctypes.c_int(6), ctypes.c_uint32(2), ctypes.c_void_p(tensor.data_ptr()),   # 6 = FLOAT16
        dim_t(*dims), stride_t(*strides), box_t(*box), box_t(1, 1),
        ctypes.c_int(0), ctypes.c_int(swizzle), ctypes.c_int(2), ctypes.c_int(0))   # L2 promotion 128 B, zero fill
    if res != 0:
        raise RuntimeError(f"cuTensorMapEncodeTiled failed with CUresult {res} (dims {dims}, box {box})")
    return torch.frombuffer(bytearray(out), dtype=torch.uint8).to("cuda")


def values_map(values: torch.Tensor, n: int, kept: int) -> torch.Tensor:
    """HiNM: the compressed values as [n, kept / 2] (boxes of 16 values x 128 rows, 32-byte swizzle)."""
    return _encode_tiled(values, (kept // 2, n), (kept,), (16, 128), 1)


def named_bm128_only(var: str) -> bool:
    """The TMA and forced-load experiments exist for 128-row CTAs only."""
    return not var.isdigit()


def main(argv=None) -> int:
    from trt_plugins import launch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cubin", nargs="+", help="PATH or LABEL=PATH, one per build variant")
    ap.add_argument("--producers-bm64", type=int, default=2, choices=(1, 2),
                    help="producer warpgroups the cubin's BM = 64 kernels were built with")
    ap.add_argument("--shapes", default="0,3,7")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--vectors", default="128,64", help="HiNM vector sizes V to run")
    ap.add_argument("--variants", default="0,1,2",
                    help="0 = full, 1 = no gather, 2 = no wgmma, 3 = no value loads, 4 = no epilogue stores, 5 = no epilogue; tma1 = A and E by TMA "
                         "(tma1n: without wgmma; BM = 128 only); tmaauto = "
                         "the shipped per-item choice; cpa = forced cp.async; ship = a shipped cubin's fp16 kernel "
                         "with the mma.sp kernels' parameters (before the values map); cpabulky / tmabulky = cpa / "
                         "tmaauto with the epilogue's Y tile stored by bulk copies")
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
            maps = None   # the values map, encoded once per shape
            reference = None
            for label, module, var in ((lb, md, a) for lb, md in modules.items() for a in args.variants.split(",")):
                tma = var.startswith("tma")   # kernels taking the values map
                if named_bm128_only(var) and p.cta_rows != 128:
                    continue
                named = tma or not var.isdigit()   # e.g. cpa: a kernel of that name with the usual parameters
                fname = (f"tsgemm90_f16_bm{p.cta_rows}_none" if var == "ship"   # a shipped cubin of before 2026-12-02
                         else f"{var}_bm{p.cta_rows}" if named else f"abl{var}_bm{p.cta_rows}")
                try:
                    fn = module.get_function(fname)
                except rt.cuda.LogicError:   # not in this cubin: variants are tried on every cubin given
                    continue
                fn.set_attribute(rt.cuda.function_attribute.MAX_DYNAMIC_SHARED_SIZE_BYTES, p.shared_bytes)
                ptrs = [np.uintp(t.data_ptr()) for t in (xt, f.values, f.meta, f.k_index, f.k_offsets, f.row_index,
                                                         f.values, y)]
                ints = [np.int32(a) for a in (m, m, k, n, f.num_tiles, f.tile_rows, 0)]
                if tma:
                    maps = maps if maps is not None else values_map(f.values, n, kt)
                    ints += [np.uintp(maps.data_ptr())]

                def once(fn=fn, ptrs=ptrs, ints=ints, p=p, block=block):
                    fn(*ptrs, *ints, block=block, grid=p.grid, shared=p.shared_bytes, stream=rt.stream)
                torch.cuda.synchronize()
                y.fill_(float("nan"))
                once()
                torch.cuda.synchronize()
                check = ""
                if var in ("ship", "0", "tma1", "tmaauto", "cpa", "cpabulky", "tmabulky"):   # full products: must equal the shipped kernel's bytes
                    if reference is None:
                        reference = y.clone()
                    check = "exact" if torch.equal(y, reference) else f"DIFFERS (max {(y - reference).abs().max():.3g})"
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
                vname = var if named else "full no-gather no-mma no-A no-store no-epi".split()[int(var)]
                print(f"{name:18s} {v:4d} {label:10s} {vname:8s} {t:8.4f} "
                      f"{moved / t / 1e9:12.2f} {100 * tc_s * 1e3 / t:11.1f} {check}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
