#!/usr/bin/env python3
"""Where a wgmma kernel launch spends its time, per CTA and work item (Hopper, on the device):

    python3 tools/trace_sm90.py --shapes 3,7 --patterns hinm128,tvw128

Builds the sm_90a kernels with SPARSETRT_SM90_TRACE=1 (clock64 stamps into g_sm90_trace / g_sm90_stage, see
cuda/tile_sparse_gemm_sm90.cuh; --cubin takes a prebuilt one), runs one launch per shape and pattern on the launch
layer's usual path, and prints per-item statistics over all CTAs in microseconds:
  prologue      CTA start -> its first stage's data in (consumer side)
  c_wait        a consumer's previous epilogue done -> the next item's first stage in (the consumers idle)
  c_item        first stage in -> epilogue done (main loop + epilogue)
  p_item        producer: item start -> its last stage issued; p_first: item start -> first stage's buffer free
  lead          producer issued the item's first stage -> the consumers saw it land
and CTA 0's first 40 stages (producer thread 0: issue start, issued).  The stamps cost a little time themselves.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tools.bench_kernels import SHAPES  # noqa: E402
from tools.sm90_variants import PATTERNS, compressed_op, load_modules, parse_patterns, use_module  # noqa: E402

TRACE_SYMBOL, STAGE_SYMBOL = "_ZN9sparsetrt4sm9012g_sm90_traceE", "_ZN9sparsetrt4sm9012g_sm90_stageE"
SLOTS, ITEM0, ITEM_SLOTS, MAX_ITEMS = 64, 4, 6, 9


def build_trace_cubin(out: Path) -> Path:
    cmd = ["nvcc", "-std=c++17", "-O3", "--use_fast_math", "-gencode=arch=compute_90a,code=sm_90a", "-cubin",
           "-DSPARSETRT_SM90_TRACE=1", str(ROOT / "cuda" / "kernels_sm90.cu"), "-o", str(out)]
    subprocess.run(cmd, check=True)
    return out


def item_stats(tr: np.ndarray) -> tuple[float, dict[str, list[float]]]:
    """The SM clock (GHz, from each CTA's clock64 and globaltimer spans) and the per-item intervals (us) of a
    g_sm90_trace readout [CTAs, SLOTS]; CTAs that never started (slot 1 = 0) are left out."""
    ctas = [b for b in range(tr.shape[0]) if tr[b, 1]]
    ghz = statistics.median((tr[b, 3] - tr[b, 1]) / max(1, tr[b, 2] - tr[b, 0]) for b in ctas)

    def us(cycles):
        return float(cycles / ghz / 1e3)

    stats = {key: [] for key in ("prologue", "c_wait", "c_item", "p_first", "p_item", "lead", "cta_total")}
    for b in ctas:
        t = tr[b]
        stats["cta_total"].append(us(t[3] - t[1]))
        for k in range(MAX_ITEMS):
            p_start, p_first, p_end, c_first, _, c_done = (t[ITEM0 + ITEM_SLOTS * k + j] for j in range(ITEM_SLOTS))
            if not (p_start and c_first and c_done):
                break
            if k == 0:
                stats["prologue"].append(us(c_first - t[1]))
            else:
                stats["c_wait"].append(us(c_first - t[ITEM0 + ITEM_SLOTS * (k - 1) + 5]))
            stats["c_item"].append(us(c_done - c_first))
            stats["p_first"].append(us(p_first - p_start))
            stats["p_item"].append(us(p_end - p_start))
            stats["lead"].append(us(c_first - p_first))
    return ghz, stats


def summarize(tr: np.ndarray, stages: np.ndarray, kernel_us: float, title: str) -> None:
    ghz, stats = item_stats(tr)
    ctas = len(stats["cta_total"])
    print(f"== {title}: launch {kernel_us:.1f} us (eager, events), {ctas} CTAs, SM clock {ghz:.3f} GHz")
    for key, values in stats.items():
        if values:
            p10, p50, p90 = np.percentile(values, [10, 50, 90])
            print(f"   {key:10s} mean {np.mean(values):7.2f}  p10 {p10:7.2f}  p50 {p50:7.2f}  p90 {p90:7.2f} us  (n={len(values)})")
    c0 = tr[0, 1]
    rows = [(i, (stages[0, i, 0] - c0) / ghz / 1e3, (stages[0, i, 1] - c0) / ghz / 1e3)
            for i in range(stages.shape[1]) if stages[0, i, 0]]
    print("   CTA 0 stages (us from its start): it, issue start, issued")
    print("   " + "  ".join(f"{i}:{a:.2f}/{b:.2f}" for i, a, b in rows[:40]))


def main(argv=None) -> int:
    from trt_plugins import launch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="3", help="indices into tools/bench_kernels.py SHAPES")
    parser.add_argument("--patterns", default="hinm128", help=f"comma-separated: {', '.join(PATTERNS)}")
    parser.add_argument("--cubin", type=Path, help="a sm_90a cubin built with -DSPARSETRT_SM90_TRACE=1")
    parser.add_argument("--m", type=int, help="token count instead of each shape's own M (small-M launches)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0):
        print("trace_sm90: needs an sm_90 GPU", file=sys.stderr)
        return 3
    patterns = parse_patterns(parser, args.patterns)
    cubin = args.cubin or build_trace_cubin(Path(tempfile.mkdtemp()) / "sparsetrt_sm90a_trace.cubin")
    rt = launch.runtime(0)
    module = load_modules(rt, {"trace": cubin})["trace"]
    rt.context.push()
    try:
        trace_ptr, trace_bytes = module.get_global(TRACE_SYMBOL)
        stage_ptr, stage_bytes = module.get_global(STAGE_SYMBOL)
    finally:
        rt.context.pop()
    use_module(rt, module)   # the launch layer now runs the traced kernels
    gen = torch.Generator().manual_seed(0)
    for index in map(int, args.shapes.split(",")):
        name, m, k, n = SHAPES[index]
        m = args.m or m
        w = torch.randn(n, k, generator=gen).half()
        x = torch.randn(m, k, generator=gen).half().cuda()
        xt = x.t().contiguous()
        for label in patterns:
            op = compressed_op(w, label)
            for _ in range(5):
                launch.tile_sparse_linear(x, *op, xt=xt)
            torch.cuda.synchronize()
            rt.context.push()
            rt.cuda.memset_d8(trace_ptr, 0, trace_bytes)
            rt.cuda.memset_d8(stage_ptr, 0, stage_bytes)
            rt.context.pop()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            launch.tile_sparse_linear(x, *op, xt=xt)
            end.record()
            torch.cuda.synchronize()
            trace = np.zeros(trace_bytes // 8, dtype=np.uint64)
            stages = np.zeros(stage_bytes // 8, dtype=np.uint64)
            rt.context.push()
            rt.cuda.memcpy_dtoh(trace, trace_ptr)
            rt.cuda.memcpy_dtoh(stages, stage_ptr)
            rt.context.pop()
            summarize(trace.reshape(-1, SLOTS).astype(np.int64), stages.reshape(4, 256, 4).astype(np.int64),
                      start.elapsed_time(end) * 1e3, f"{name} (M {m}, K {k}, N {n}) {label} {PATTERNS[label][1]:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
