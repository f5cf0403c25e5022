#!/usr/bin/env python3
"""Same-process A/B of sm_90a cubins on the shipped entry points (Hopper, on the device):

    nvcc -std=c++17 -O3 --use_fast_math -gencode=arch=compute_90a,code=sm_90a -cubin cuda/kernels_sm90.cu -o new.cubin
    python3 tools/ab_sm90.py base=old.cubin new=new.cubin --shapes 0,1,2,3,4,5,6,7 --patterns hinm128,tvw128,hinm64

The mma.sp kernels (the sm_80+ family) the same way, from sm_90 builds of cuda/kernels.cu:

    nvcc -std=c++17 -O3 --use_fast_math -gencode=arch=compute_90,code=sm_90 -cubin cuda/kernels.cu -o new.cubin
    python3 tools/ab_sm90.py base=old.cubin new=new.cubin --family mma_sp

A variant may set environment variables for its launches after the path, e.g. the tail split off and on with one
cubin, at small M:  nosplit=new.cubin?SPARSETRT_TAIL_SPLIT=0 auto=new.cubin p4=new.cubin?SPARSETRT_TAIL_SPLIT=4 --m 256

Each cubin replaces the launch layer's Hopper module in turn (same inputs, same launch plans); the first one is the
baseline.  Per shape and pattern: the median over --rounds of CUDA-graph timings (--reps calls each), the rounds
alternating the variants' order, because a long run heats the GPU and later calls clock lower; each variant's output
must be bit-identical to the baseline's, or (where the tail split changes the order of the fp32 sums) within
1e-2 of the output's largest magnitude: "close" in the table.  The large shapes (Llama, 8k) still move by up to ~10% between rounds;
the small ones by ~0.3%.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from exporter.timing import graph_median_ms  # noqa: E402
from tools.bench_kernels import SHAPES  # noqa: E402
from tools.sm90_variants import PATTERNS, compressed_op, load_modules, parse_patterns, use_module  # noqa: E402


def time_variants(launch, use, labels, x, xts, op, reps: int, rounds: int) -> dict[str, list[float]]:
    """CUDA-graph times (ms) of each variant per round; the rounds alternate the variants' order."""
    feature_major = itertools.cycle(xts)   # inputs rotated over the buffers, as in bench_kernels
    times = {v: [] for v in labels}
    for r in range(rounds):
        for v in labels if r % 2 == 0 else labels[::-1]:
            use(v)
            times[v].append(graph_median_ms(lambda: launch.tile_sparse_linear(x, *op, xt=next(feature_major)),
                                            5, reps, len(xts)))
    return times


def main(argv=None) -> int:
    from trt_plugins import launch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="+", help="label=path.cubin; the first is the baseline")
    parser.add_argument("--shapes", default="0,1,2,3,4,5,6,7", help="indices into tools/bench_kernels.py SHAPES")
    parser.add_argument("--patterns", default="hinm128,tvw128,hinm64", help=f"comma-separated: {', '.join(PATTERNS)}")
    parser.add_argument("--m", default="", help="comma-separated token counts to run each shape at instead of its "
                        "own M (small M: the launches the tail split is for)")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("ab_sm90.json"))
    parser.add_argument("--family", choices=("wgmma_sp", "mma_sp"), default="wgmma_sp",
                        help="mma_sp: the cubins are builds of cuda/kernels.cu for sm_90 (the mma.sp kernels), which "
                             "replace the launch layer's generic module, and the launch layer is forced to that family")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0):
        print("ab_sm90: needs an sm_90 GPU", file=sys.stderr)
        return 3
    specs = [v.split("=", 1) for v in args.variants]
    if any(len(s) != 2 for s in specs):
        parser.error("variants: expected label=path[?VAR=value&...], e.g. base=old.cubin")
    paths = {label: spec.split("?", 1)[0] for label, spec in specs}
    envs = {label: dict(kv.split("=", 1) for kv in spec.split("?", 1)[1].split("&")) if "?" in spec else {}
            for label, spec in specs}
    if any(not Path(path).is_file() for path in paths.values()):
        parser.error("variants: every path must be an existing cubin file")
    patterns = parse_patterns(parser, args.patterns)
    rt = launch.runtime(0)
    modules = load_modules(rt, paths)
    labels = list(modules)

    if args.family == "mma_sp":
        os.environ["SPARSETRT_KERNEL"] = "mma_sp"
    env_names = {name for env in envs.values() for name in env}
    env_base = {name: os.environ.get(name) for name in env_names}

    def use(label):
        use_module(rt, modules[label], generic=args.family == "mma_sp", path=paths[label])
        for name in env_names:
            value = envs[label].get(name, env_base[name])
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    gen = torch.Generator().manual_seed(0)
    rows = []
    token_counts = [int(m) for m in args.m.split(",")] if args.m else [None]
    for index, m_override in itertools.product(map(int, args.shapes.split(",")), token_counts):
        name, m, k, n = SHAPES[index]
        if m_override is not None:
            name, m = f"{name} M={m_override}", m_override
        w = torch.randn(n, k, generator=gen).half()
        xs = [torch.randn(m, k, generator=gen).half().cuda() for _ in range(3)]
        xts = [x.t().contiguous() for x in xs]
        for label in patterns:
            op = compressed_op(w, label)
            outputs = {}
            for v in labels:
                use(v)
                outputs[v] = launch.tile_sparse_linear(xs[0], *op, xt=xts[0])
            torch.cuda.synchronize()
            identical = {v: bool(torch.equal(outputs[v], outputs[labels[0]])) for v in labels}
            scale = outputs[labels[0]].float().abs().max().item()
            close = {v: (outputs[v].float() - outputs[labels[0]].float()).abs().max().item() <= 1e-2 * scale
                     for v in labels}
            times = time_variants(launch, use, labels, xs[0], xts, op, args.reps, args.rounds)
            ms = {v: statistics.median(t) for v, t in times.items()}
            rows.append({"shape": name, "pattern": label, "ms": ms, "rounds": times, "bit_identical": identical,
                         "close": close})
            base = ms[labels[0]]
            verdict = {v: "" if identical[v] else ", close" if close[v] else ", OUTPUT DIFFERS" for v in labels}
            print(f"{name:24s} {label:12s} " + "  ".join(f"{v} {ms[v]:.4f} ({base / ms[v]:.3f}x{verdict[v]})"
                                                        for v in labels), flush=True)
    args.out.write_text(json.dumps(rows, indent=1))
    print(f"geometric mean speedup vs {labels[0]}:")
    for label in patterns:
        sel = [r for r in rows if r["pattern"] == label]
        print(f"  {label:12s} " + "  ".join(
            f"{v} {statistics.geometric_mean([r['ms'][labels[0]] / r['ms'][v] for r in sel]):.4f}" for v in labels))
    return 0 if all(all(r["close"].values()) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
