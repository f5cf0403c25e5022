#!/usr/bin/env python3
"""Correctness probe for experimental Hopper cubins built with the hang-debug waits (on the device).

Unfinished work, kept for the next try (docs/KERNEL_NOTES.md "v10"): tools/cuda/sm90_cluster_multicast.patch adds
2-CTA clusters that share each stage's compressed values by TMA multicast (SPARSETRT_SM90_CLUSTER=2) and, with
SPARSETRT_SM90_HANG_DEBUG, mbarrier waits that give up after ~0.2 s and record the first wait that hung in g_hang.
Build and run:

    git apply tools/cuda/sm90_cluster_multicast.patch
    nvcc -std=c++17 -O3 --use_fast_math -gencode=arch=compute_90a,code=sm_90a -cubin cuda/kernels_sm90.cu \\
        -DSPARSETRT_SM90_CLUSTER=2 -DSPARSETRT_SM90_HANG_DEBUG=1 -o dbg.cubin
    SPARSETRT_TAIL_SPLIT=0 SPARSETRT_SM90_CLUSTER=2 python3 tools/cluster_probe.py dbg.cubin

(SPARSETRT_SM90_CLUSTER=2: the patched launch layer rounds BM = 128 grids up to even, as cluster launches need.)

Per shape (HiNM 75% V128, fp16): the hang record, then the variant's output against the shipped kernel's on the same
inputs (the output memory is NaN-poisoned first, so unwritten outputs show as NaN), where the wrong outputs lie (per
256-token slice: even slices are cluster rank 0, odd ones rank 1), and whether a repeat gives the same output (a race
does not).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools.sm90_variants import compressed_op, load_modules, use_module  # noqa: E402

SHIPPED = "trt_plugins/kernels/sparsetrt_kernels_sm90a.cubin"
HANG_SYMBOL = "_ZN9sparsetrt4sm906g_hangE"   # sparsetrt::sm90::g_hang
SHAPES = [(8192, 768, 2304), (1200, 1024, 4096)]   # M = 1200: an odd count of 256-token slices


def read_hang(rt, module, clear: bool) -> np.ndarray:
    """g_hang[16]: [0] waits that timed out, [1..5] block, thread, mbarrier address, parity, cluster rank of the
    first, [8..10] block 0's full / empty barrier addresses and stage count."""
    buf = np.zeros(16, dtype=np.uint64)
    rt.context.push()
    try:
        ptr, size = module.get_global(HANG_SYMBOL)
        if clear:
            rt.cuda.memset_d8(ptr, 0, size)
        else:
            rt.cuda.memcpy_dtoh(buf, ptr)
    finally:
        rt.context.pop()
    return buf


def item_report(bad: torch.Tensor, row_index: torch.Tensor, diff: torch.Tensor, ref: torch.Tensor) -> str:
    """Where the wrong outputs sit inside the work items (256 tokens x 128 rows): how many items have any, how much of
    a bad item is wrong, by consumer half (rows 0-63 / 64-127 of the tile), by 64-token quarter, by cluster rank, and
    how large the errors are against the outputs' rms (a lost or doubled stage adds about one stage's share)."""
    m, n = bad.shape
    slices, tiles = -(-m // 256), n // 128
    pos = torch.empty(n, dtype=torch.long, device=bad.device)
    pos[row_index.long()] = torch.arange(n, device=bad.device)   # output feature -> its place in tile order
    padded = torch.zeros(slices * 256, n, dtype=torch.bool, device=bad.device)
    padded[:m] = bad
    blocks = padded[:, pos.argsort()].reshape(slices, 4, 64, tiles, 2, 64)   # slice, quarter, tok, tile, half, row
    per_item = blocks.float().mean(dim=(1, 2, 4, 5))   # [slices, tiles]
    bad_items = per_item > 0
    if not bad_items.any():
        return "  items: none wrong"
    fr = per_item[bad_items]
    sel = blocks.permute(0, 3, 1, 2, 4, 5)[bad_items]   # [bad items, quarter, tok, half, row]
    halves = [round(sel[:, :, :, h].float().mean().item(), 3) for h in range(2)]
    quarters = [round(sel[:, q].float().mean().item(), 3) for q in range(4)]
    ranks = [int(bad_items[r::2].sum().item()) for r in range(2)]
    rel = (diff[bad].abs() / ref.pow(2).mean().sqrt()).float()
    return (f"  items wrong {int(bad_items.sum())}/{slices * tiles} (rank 0 / 1 slices: {ranks}); wrong share of a bad "
            f"item min/median/max {fr.min().item():.3f}/{fr.median().item():.3f}/{fr.max().item():.3f}; by half "
            f"{halves}, by token quarter {quarters}; |error|/rms median {rel.median().item():.3f} "
            f"max {rel.max().item():.3f}")


def main(argv=None) -> int:
    from trt_plugins import launch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cubin", help="a hang-debug build (SPARSETRT_SM90_HANG_DEBUG=1)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0):
        print("cluster_probe: needs an sm_90 GPU", file=sys.stderr)
        return 3
    rt = launch.runtime(0)
    paths = {"ship": SHIPPED, "probe": args.cubin}
    modules = load_modules(rt, paths)
    gen = torch.Generator().manual_seed(0)
    clean = True
    for m, k, n in SHAPES:
        w = torch.randn(n, k, generator=gen).half()
        x = torch.randn(m, k, generator=gen).half().cuda()
        xt = x.t().contiguous()
        op = compressed_op(w, "hinm128")
        use_module(rt, modules["ship"], path=paths["ship"])
        ref = launch.tile_sparse_linear(x, *op, xt=xt)
        torch.cuda.synchronize()
        use_module(rt, modules["probe"], path=paths["probe"])
        read_hang(rt, modules["probe"], clear=True)
        # freed NaN block: the caching allocator hands it to the next output of this size
        poison = torch.full((m, n), float("nan"), dtype=torch.half, device="cuda")
        del poison
        y = launch.tile_sparse_linear(x, *op, xt=xt)
        torch.cuda.synchronize()
        hang = read_hang(rt, modules["probe"], clear=False)
        diff = y.float() - ref.float()
        bad = diff.abs() > 1e-2 * ref.float().abs().max()
        slices = [round(bad[i * 256:(i + 1) * 256].float().mean().item(), 3) for i in range(-(-m // 256))]
        again = launch.tile_sparse_linear(x, *op, xt=xt)
        torch.cuda.synchronize()
        print(f"M={m} K={k} N={n}: hung waits {int(hang[0])} (first: block {int(hang[1])} thread {int(hang[2])} "
              f"barrier {int(hang[3])} parity {int(hang[4])} rank {int(hang[5])}; full/empty barriers at "
              f"{int(hang[8])}/{int(hang[9])}); unwritten {torch.isnan(y).float().mean().item():.4f}; "
              f"wrong {bad.float().mean().item():.4f} (per slice {slices}); "
              f"bit-identical {torch.equal(y, ref)}; repeat identical {torch.equal(y, again)}", flush=True)
        print(item_report(bad, op[4], diff, ref.float()), flush=True)
        clean &= bool(torch.equal(y, ref)) and int(hang[0]) == 0
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
