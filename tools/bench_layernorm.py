#!/usr/bin/env python3
"""Our fused residual add + LayerNorm (`trt_plugins.launch.add_layer_norm`) against PyTorch's add + LayerNorm
(and + our transpose, what the sparse encoder otherwise runs), for every block size, and one dense encoder block of
tools/bench_e2e.py with and without it, as CUDA-graph replays:

    python3 tools/bench_layernorm.py [--m 16384] [--d 1024]

Prints one line per variant (µs) and the fastest block size.  Needs a CUDA GPU and the built kernels."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import exporter.ops  # noqa: E402,F401  (registers the sparsetrt ops)
from tools.bench_kernels import graph_timed  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--m", type=int, default=16384)
    ap.add_argument("--d", type=int, default=1024)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_layernorm: needs a CUDA GPU", file=sys.stderr)
        return 3
    from trt_plugins import launch

    x, r = (torch.randn(args.m, args.d, device="cuda", dtype=torch.float16) for _ in range(2))
    ln = torch.nn.LayerNorm(args.d).cuda().half()
    res = {}
    with torch.no_grad():
        res["torch add+LN"] = graph_timed(lambda: ln(x + r), 5, 50)
        res["torch add+LN + transpose"] = graph_timed(lambda: launch.to_feature_major(ln(x + r)), 5, 50)
        res["ours token-major only"] = graph_timed(
            lambda: launch.add_layer_norm(x, r, ln.weight, ln.bias, 1e-5, False), 5, 50)
        for tok in launch.ADD_LN_TOKENS:
            res[f"ours both layouts, {tok} tokens/block"] = graph_timed(
                lambda tok=tok: launch.add_layer_norm(x, r, ln.weight, ln.bias, 1e-5, True, tokens_per_block=tok), 5, 50)
        import tools.bench_e2e as e2e

        if args.d == e2e.D:   # one dense BERT-large block (batch 32 x 512) with PyTorch's add + LayerNorm and with ours
            blk = e2e.Block().half().cuda().eval()
            xb = torch.randn(e2e.BATCH, e2e.SEQ, e2e.D, device="cuda", dtype=torch.float16)
            res["dense encoder block, PyTorch add+LN"] = graph_timed(lambda: blk(xb), 5, 30)
            res["dense encoder block, our add+LN"] = graph_timed(lambda: blk.forward_fused(xb, None), 5, 30)
    for k, v in res.items():
        print(f"{k:40s} {v * 1e3:8.1f} us")
    print("fastest block size:", min(launch.ADD_LN_TOKENS, key=lambda t: res[f"ours both layouts, {t} tokens/block"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
