#!/usr/bin/env python3
"""Kernel benchmark on the GPU: our tile-sparse kernels vs cuBLAS, cuSPARSELt 2:4, Triton block-sparse
(torch BSR) and cuSPARSE CSR, all measured in one run.

    python3 tools/bench_kernels.py --out docs          # bench_kernels.json; BENCHMARKS.md + plot via bench_report

Timing: CUDA events, median of --reps runs after --warmup calls, inputs rotated over 3 buffers.  cuBLAS,
cuSPARSELt and ours are timed as CUDA-graph replays of one call per buffer (launch overhead out of the
number; cuSPARSELt's plan is built once at capture, like a deployment that reuses the plan), and also
eagerly ("(eager)": events around each Python call, launch overhead included; PyTorch's semi-structured
path rebuilds its plan per call).  BSR (Triton) is graph-timed too (and eagerly); CSR (cuSPARSE) only
eagerly: its calls take milliseconds, far longer than the launch overhead.  Ours is timed
as the kernel alone (activations already feature-major, XT[K, M], the layout it reads) and as the
full op (transpose of X[M, K] + kernel).  On Hopper "ours" is the wgmma.sp kernel (the launch layer's
choice for the tile height); the other family on the same bytes is timed too, as "<label> [mma.sp]" or
"<label> [wgmma.sp]"."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import traceback
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from exporter import NM, TVW, Block, HiNM, Unstructured, select_masks  # noqa: E402
from exporter.formats import compress  # noqa: E402
from exporter.timing import graph_median_ms, median_ms  # noqa: E402
from tools import bench_report  # noqa: E402

SHAPES = [  # name, M, K, N
    ("bert-base qkv", 8192, 768, 2304), ("bert-base ffn1", 8192, 768, 3072), ("bert-base ffn2", 8192, 3072, 768),
    ("bert-large ffn1", 8192, 1024, 4096), ("bert-large ffn2", 8192, 4096, 1024),
    ("llama7b mlp up", 4096, 4096, 11008), ("llama7b mlp down", 4096, 11008, 4096), ("square 8k", 8192, 8192, 8192),
]
OURS = [  # label, pattern, sparsity
    ("HiNM 50% (2:4)", HiNM(vector=128), 0.5), ("HiNM 75% V64", HiNM(vector=64), 0.75),
    ("HiNM 75% V128", HiNM(vector=128), 0.75), ("HiNM 87.5% V128", HiNM(vector=128), 0.875),
    ("TVW 75% G128", TVW(tile=128), 0.75), ("TVW 87.5% G128", TVW(tile=128), 0.875),
]


def timed(fn, warmup: int, reps: int) -> float:
    return median_ms(fn, "cuda", warmup, reps)


def rotating(buffers):
    state = {"i": 0}

    def nxt():
        state["i"] = (state["i"] + 1) % len(buffers)
        return buffers[state["i"]]
    return nxt


def graph_timed(fn, warmup: int, reps: int, calls: int = 1) -> float:
    return graph_median_ms(fn, warmup, reps, calls)


def forced_family(family: str):
    """Run our op with one kernel family (SPARSETRT_KERNEL) inside the block."""
    return mock.patch.dict(os.environ, {"SPARSETRT_KERNEL": family})


def masked(w: torch.Tensor, pattern, sparsity: float) -> torch.Tensor:
    mask = select_masks({"w": w.abs().float()}, pattern, sparsity)["w"].mask.to(w.device)
    return w * mask


def bench_shape(name, m, k, n, args, gen) -> dict:
    from trt_plugins import launch

    dev, dt = "cuda", torch.float16
    w = torch.randn(n, k, generator=gen).to(dt)
    xs = [torch.randn(m, k, generator=gen).to(dt).to(dev) for _ in range(3)]
    xts = [x.t().contiguous() for x in xs]
    wd = w.to(dev)
    row = {"shape": name, "M": m, "K": k, "N": n, "ms": {}, "errors": {}, "nnz": {}, "family": {}}
    ms = row["ms"]

    def record(label, thunk):
        try:
            ms[label] = thunk()
        except Exception as err:  # keep going: one failing baseline must not hide the others
            row["errors"][label] = f"{type(err).__name__}: {err}"
            traceback.print_exc()

    x_next, xt_next = rotating(xs), rotating(xts)
    nbuf = len(xs)   # graph-timed methods replay one call per input buffer
    record("cuBLAS dense", lambda: graph_timed(lambda: F.linear(x_next(), wd), args.warmup, args.reps, nbuf))
    ms["cuBLAS dense (eager)"] = timed(lambda: F.linear(x_next(), wd), args.warmup, args.reps)

    def cusparselt():
        from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

        SparseSemiStructuredTensor._FORCE_CUTLASS = False
        ws = to_sparse_semi_structured(masked(w, NM(2, 4), 0.5).to(dev))
        row["cusparselt_backend"] = type(ws).__name__
        ms["cuSPARSELt 2:4 (eager)"] = timed(lambda: F.linear(x_next(), ws), args.warmup, args.reps)
        return graph_timed(lambda: F.linear(x_next(), ws), args.warmup, args.reps, nbuf)
    record("cuSPARSELt 2:4", cusparselt)

    for s in (0.75, 0.875):
        def bsr(b, s=s):
            from torch.sparse._triton_ops import bsr_dense_mm

            wb = masked(w, Block(b), s).to(dev).to_sparse_bsr((b, b))
            eager = ms[f"BSR{b} {s:.1%} (eager)"] = timed(lambda: bsr_dense_mm(wb, xt_next()), args.warmup, args.reps)
            # graph replays: the Triton launch's Python overhead (0.3+ ms a call) stays out, as for ours
            try:
                return graph_timed(lambda: bsr_dense_mm(wb, xt_next()), args.warmup, args.reps, nbuf)
            except Exception as err:   # not capturable here: report the eager time, say so
                row["errors"][f"BSR{b} {s:.1%} graph capture"] = f"{type(err).__name__}: {err} (eager time used)"
                torch.cuda.synchronize()
                return eager
        record(f"BSR32 {s:.1%}", lambda: bsr(32))
        record(f"BSR64 {s:.1%}", lambda: bsr(64))

        def csr(s=s):
            wc = masked(w, Unstructured(), s).to(dev).to_sparse_csr()
            return timed(lambda: torch.sparse.mm(wc, xt_next()), 2, max(5, args.reps // 4))
        record(f"CSR {s:.1%}", csr)

    check = {}
    for label, pattern, s in OURS:
        def ours(label=label, pattern=pattern, s=s):
            lm = select_masks({"w": w.abs().float()}, pattern, s)["w"]
            fmt = compress(w, lm.mask, lm.rows, lm.cols, two_four=True).to(dev)
            row["nnz"][label] = fmt.nnz
            bias = None
            args_ = (fmt.values, fmt.meta, fmt.k_index, fmt.k_offsets, fmt.row_index, bias, n, fmt.tile_rows, "none")
            y = launch.tile_sparse_linear(xs[0], *args_)
            ref = F.linear(xs[0].float(), (w * lm.mask).to(dev).float())
            check[label] = ((y.float() - ref).norm() / ref.norm()).item()
            def kernel_only():
                return launch.tile_sparse_linear(xs[0], *args_, xt=xt_next())

            ms[f"{label} +transpose"] = graph_timed(lambda: launch.tile_sparse_linear(x_next(), *args_), args.warmup,
                                                    args.reps, nbuf)
            ms[f"{label} (eager)"] = timed(kernel_only, args.warmup, args.reps)
            rt = launch.runtime(0)   # the choice tile_sparse_linear makes for these tensors
            row["family"][label] = launch.choose_family(fmt.tile_rows, m, xs[0].data_ptr(), rt.capability,
                                                        rt.module90 is not None)
            # the other kernel family on the same bytes, for comparison (where it can run)
            other = "mma_sp" if row["family"][label] == "wgmma_sp" else "wgmma_sp"
            if other == "mma_sp" or launch.wgmma_applies(fmt.tile_rows, m) and torch.cuda.get_device_capability() == (9, 0):
                with forced_family(other):
                    ms[f"{label} [{other.replace('_', '.')}]"] = graph_timed(kernel_only, args.warmup, args.reps, nbuf)
            return graph_timed(kernel_only, args.warmup, args.reps, nbuf)
        record(label, ours)
    row["rel_err_vs_dense_masked"] = check
    return row


def summarize(rows: list[dict]) -> dict:
    def med(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    def ratio(r, a, b):
        return r["ms"][b] / r["ms"][a] if a in r["ms"] and b in r["ms"] else None

    out = {}
    for label, _, _ in OURS:
        out[label] = {
            "vs cuBLAS": med([ratio(r, label, "cuBLAS dense") for r in rows]),
            "vs cuBLAS (with transpose)": med([ratio(r, f"{label} +transpose", "cuBLAS dense") for r in rows]),
            "vs cuSPARSELt 2:4": med([ratio(r, label, "cuSPARSELt 2:4") for r in rows]),
            "vs best BSR 75%": med([min(filter(None, [r["ms"].get("BSR32 75.0%"), r["ms"].get("BSR64 75.0%")]),
                                        default=float("nan")) / r["ms"][label] if label in r["ms"] else None for r in rows]),
            "vs CSR 75%": med([ratio(r, label, "CSR 75.0%") for r in rows]),
            "vs our other kernel": med([ratio(r, label, f"{label} [mma.sp]") or ratio(r, label, f"{label} [wgmma.sp]")
                                        for r in rows]),
            "family": sorted({r["family"].get(label, "") for r in rows} - {""}),
        }
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--shapes", default="all", help="comma-separated shape indices or 'all'")
    parser.add_argument("--m", default="", help="comma-separated token counts to run each shape at instead of its own "
                        "M (small-batch latency; write them to another --out, e.g. docs/small_m)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_kernels: needs a CUDA GPU", file=sys.stderr)
        return 3
    shapes = SHAPES if args.shapes == "all" else [SHAPES[int(i)] for i in args.shapes.split(",")]
    if args.m:
        shapes = [(f"{name} M={m}", m, k, n) for name, _, k, n in shapes for m in map(int, args.m.split(","))]
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    peak_ms = timed(lambda: a @ a, 3, 10)
    env = {"gpu": torch.cuda.get_device_name(), "date": datetime.date.today().isoformat(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "command": " ".join(["python3", "tools/bench_kernels.py", *(argv if argv is not None else sys.argv[1:])]),
           "dense_peak_tflops": 2 * 8192**3 / peak_ms / 1e9}
    rows = []
    for name, m, k, n in shapes:
        rows.append(bench_shape(name, m, k, n, args, gen))
        print(json.dumps({k: v for k, v in rows[-1].items() if k in ("shape", "ms")}), flush=True)
    result = {"env": env, "rows": rows, "summary": summarize(rows)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_kernels.json").write_text(json.dumps(result, indent=1))
    bench_report.write(out)
    print("\nsummary (median speedups):")
    for label, s in result["summary"].items():
        print(f"  {label:18s} " + "  ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v or '—'}"
                                             for k, v in s.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
