#!/usr/bin/env python3
"""End-to-end speed of a BERT-large-shaped encoder (24 layers, d=1024, 16 heads, FFN 4096; batch 32 x
sequence 512 = 16384 tokens, random weights, fp16) on the GPU: dense nn.Linear (cuBLAS) vs our
SparseLinear at 75% HiNM (V=128) and 75% TVW (G=128), eager and as a CUDA-graph replay.

    python3 tools/bench_e2e.py --out docs        # writes bench_e2e.json; tools/bench_report.py makes the markdown

Both models fuse q/k/v into one 1024→3072 projection.  The sparse FFN runs fc1 → fc2 without a transpose in
between: fc1 writes its output feature-major (YT[4096, M], GELU fused) and fc2 gathers from it directly.
The "feature-major stream" variants keep the whole residual stream as XT[1024, M]: LayerNorm over features by
our kernel (`sparsetrt::layer_norm_feature_major`), q/k/v and fc1 read XT directly, o and fc2 write YT, so the
only transpose left per layer is the attention output's.  The "fused add+LN" variants keep the stream token-major
but run each residual add + LayerNorm as one kernel of ours (`sparsetrt::add_layer_norm`) that also writes the
result feature-major, so q/k/v and fc1 read XT without a transpose; the dense model with the same kernel (token-major
output only) is measured too, so the gain the fusion gives both models is visible.
Per-layer rows time each projection alone at M = 16384 as a CUDA-graph replay (sparse qkv/o/fc1: transpose of
X + kernel; fc2: kernel only, its input already feature-major); the whole-model rows time one forward pass,
eager and as a graph replay.  Median of CUDA-event-timed runs after warm-up."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from exporter import TVW, HiNM, SparseLinear, select_masks  # noqa: E402
from exporter.formats import compress  # noqa: E402
from tools.bench_kernels import graph_timed, timed  # noqa: E402

D, HEADS, FFN, LAYERS, BATCH, SEQ = 1024, 16, 4096, 24, 32, 512


class Block(nn.Module):
    """Post-LN encoder block, q/k/v fused into one projection; attention through scaled_dot_product_attention
    (flash on Hopper).  `chain_ffn` (sparse models): fc1 returns YT[FFN, M] and fc2 reads it as is."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.o = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.fc1, self.act, self.fc2 = nn.Linear(D, FFN), nn.GELU(), nn.Linear(FFN, D)
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.chain_ffn = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v)
        x = self.ln1(x + self.o(att.transpose(1, 2).reshape(b, s, D)))
        if self.chain_ffn:
            ht = self.fc1(x.reshape(b * s, D), y_feature_major=True)          # [FFN, M], GELU fused
            ffn = self.fc2(ht, x_feature_major=True).view(b, s, D)
        else:
            ffn = self.fc2(self.act(self.fc1(x)))
        return self.ln2(x + ffn)

    def forward_fused(self, x: torch.Tensor, xt: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The block with each residual add + LayerNorm as one kernel (`sparsetrt::add_layer_norm`).  Sparse
        models (xt given: XT[D, M] of x) get each LayerNorm's output in both layouts, so q/k/v and fc1 read XT
        without a transpose; the dense model (xt None) gets the token-major output only."""
        b, s, _ = x.shape
        sparse = xt is not None
        h = self.qkv(xt, x_feature_major=True) if sparse else self.qkv(x)
        q, k, v = h.view(b, s, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, s, D)
        x1, x1t = _add_ln(x, self.o(att), self.ln1, sparse)
        if sparse:
            ffn = self.fc2(self.fc1(x1t, x_feature_major=True, y_feature_major=True), x_feature_major=True).view(b, s, D)
        else:
            ffn = self.fc2(self.act(self.fc1(x1)))
        return _add_ln(x1, ffn, self.ln2, sparse)

    def forward_fm(self, xt: torch.Tensor, b: int, s: int) -> torch.Tensor:
        """The same block on a feature-major residual stream XT[D, M] (sparse layers only)."""
        q, k, v = self.qkv(xt, x_feature_major=True).view(b, s, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b * s, D)
        x1 = _ln_fm(xt + self.o(att, y_feature_major=True), self.ln1)
        ht = self.fc1(x1, x_feature_major=True, y_feature_major=True)
        return _ln_fm(x1 + self.fc2(ht, x_feature_major=True, y_feature_major=True), self.ln2)


def _ln_fm(xt: torch.Tensor, ln: nn.LayerNorm) -> torch.Tensor:
    return torch.ops.sparsetrt.layer_norm_feature_major(xt, ln.weight, ln.bias, ln.eps)


def _add_ln(x: torch.Tensor, r: torch.Tensor, ln: nn.LayerNorm, feature_major: bool):
    y, yt = torch.ops.sparsetrt.add_layer_norm(x, r, ln.weight, ln.bias, ln.eps, feature_major)
    return y, (yt if feature_major else None)


class Encoder(nn.Sequential):
    """The blocks in order; `feature_major` runs them on XT (one transpose in, one out); `fused` with the
    add + LayerNorm kernel (sparse models: one transpose of the input for the first block's q/k/v)."""

    feature_major = False
    fused = False
    sparse = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            xt = x.reshape(-1, D).t().contiguous() if self.sparse else None
            for blk in self:
                x, xt = blk.forward_fused(x, xt)
            return x
        if not self.feature_major:
            return super().forward(x)
        b, s, d = x.shape
        xt = x.reshape(b * s, d).t().contiguous()
        for blk in self:
            xt = blk.forward_fm(xt, b, s)
        return xt.t().reshape(b, s, d)


def sparse_formats(pattern, gen) -> dict[tuple[int, int], object]:
    """One compressed format per projection shape (random weights); layers get device copies of it."""
    out = {}
    for n, k in ((3 * D, D), (D, D), (FFN, D), (D, FFN)):
        w = torch.randn(n, k, generator=gen).half()
        lm = select_masks({"w": w.abs().float()}, pattern, 0.75)["w"]
        out[(n, k)] = compress(w, lm.mask, lm.rows, lm.cols, two_four=True)
    return out


def sparse_layer(fmt, activation: str = "none") -> SparseLinear:
    layer = SparseLinear(fmt, torch.zeros(fmt.shape[0], dtype=torch.float16), activation=activation)
    return layer.cuda()   # a fresh device copy per layer: no layer finds another's weights in L2


def build(kind: str, gen) -> nn.Module:
    model = Encoder(*(Block() for _ in range(LAYERS))).half()
    model.feature_major = kind.endswith(FM)
    model.fused, model.sparse = kind.endswith(FUSED), not kind.startswith("dense")
    if model.sparse:
        fmts = sparse_formats(HiNM(vector=128) if kind.startswith("HiNM") else TVW(tile=128), gen)
        for blk in model:
            for name in ("qkv", "o", "fc2"):
                lin = getattr(blk, name)
                setattr(blk, name, sparse_layer(fmts[(lin.out_features, lin.in_features)]))
            blk.fc1, blk.act, blk.chain_ffn = sparse_layer(fmts[(FFN, D)], "gelu"), nn.Identity(), True
    return model.cuda().eval()


FM = "(feature-major stream)"
FUSED = "(fused add+LN)"
# (input feature-major, output feature-major) of each sparse projection as the model runs it, by stream layout
LAYOUTS = {"token": {"qkv": (False, False), "o": (False, False), "fc1": (False, True), "fc2": (True, False)},
           FM: {"qkv": (True, False), "o": (False, True), "fc1": (True, True), "fc2": (True, True)},
           FUSED: {"qkv": (True, False), "o": (False, False), "fc1": (True, True), "fc2": (True, False)}}


def stream(kind: str) -> str:
    return next((s for s in (FM, FUSED) if kind.endswith(s)), "token")
LAYER_ROWS = (("qkv 1024→3072", (3 * D, D), "none"), ("o 1024→1024", (D, D), "none"),
              ("fc1 1024→4096 +GELU", (FFN, D), "gelu"), ("fc2 4096→1024", (D, FFN), "none"))


def per_layer(kind: str, gen, warmup: int, reps: int) -> dict:
    """Each projection alone, as the model runs it (sparse fc1 writes YT, sparse fc2 reads XT; on the
    feature-major stream qkv and fc1 read XT and every layer but qkv writes YT; with the fused add+LN qkv and
    fc1 read XT)."""
    x = {k: torch.randn(BATCH * SEQ, k, device="cuda", dtype=torch.float16) for k in (D, FFN)}
    xt_ffn, xt_d = x[FFN].t().contiguous(), x[D].t().contiguous()
    layouts = LAYOUTS[stream(kind)]
    rows = {}
    fmts = None if kind.startswith("dense") else sparse_formats(HiNM(vector=128) if kind.startswith("HiNM") else TVW(tile=128), gen)
    for label, (n, k), act in LAYER_ROWS:
        if kind.startswith("dense"):
            w = torch.randn(n, k, device="cuda", dtype=torch.float16)
            fn = (lambda w=w, k=k: F.gelu(F.linear(x[k], w))) if act == "gelu" else (lambda w=w, k=k: F.linear(x[k], w))
        else:
            layer = sparse_layer(fmts[(n, k)], act)
            x_fm, y_fm = layouts[label.split()[0]]
            x_in = ({D: xt_d, FFN: xt_ffn} if x_fm else x)[k]
            fn = lambda layer=layer, x_in=x_in, x_fm=x_fm, y_fm=y_fm: layer(  # noqa: E731
                x_in, x_feature_major=x_fm, y_feature_major=y_fm)
        with torch.no_grad():
            rows[label] = graph_timed(fn, warmup, reps)   # GPU time of the layer, without launch overhead
    return rows


def whole_model(model: nn.Module, warmup: int, reps: int) -> tuple[float, float]:
    x = torch.randn(BATCH, SEQ, D, device="cuda", dtype=torch.float16)
    with torch.no_grad():
        eager = timed(lambda: model(x), warmup, reps)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                model(x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            model(x)
        graphed = timed(graph.replay, warmup, reps)
    return eager, graphed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_e2e: needs a CUDA GPU", file=sys.stderr)
        return 3
    gen = torch.Generator().manual_seed(0)
    result = {"env": {"gpu": torch.cuda.get_device_name(), "date": datetime.date.today().isoformat(),
                      "torch": torch.__version__, "command": " ".join(["python3", "tools/bench_e2e.py", *(argv if argv is not None else sys.argv[1:])]),
                      "model": f"{LAYERS} layers, d={D}, heads={HEADS}, ffn={FFN}, batch {BATCH} x seq {SEQ}, fp16"},
              "models": {}}
    kinds = ("dense", "HiNM 75% V128", "TVW 75% G128", f"HiNM 75% V128 {FM}", f"TVW 75% G128 {FM}",
             f"dense {FUSED}", f"HiNM 75% V128 {FUSED}", f"TVW 75% G128 {FUSED}")
    for kind in kinds:
        torch.manual_seed(0)
        layers = per_layer(kind, gen, args.warmup, 20)
        model = build(kind, gen)
        eager, graphed = whole_model(model, args.warmup, args.reps)
        result["models"][kind] = {"per_layer_ms": layers, "eager_ms": eager, "graph_ms": graphed}
        print(json.dumps({kind: result["models"][kind]}), flush=True)
        del model
        torch.cuda.empty_cache()
    dense, dense_fused = result["models"]["dense"], result["models"][f"dense {FUSED}"]
    for r in result["models"].values():
        r["speedup_eager"] = dense["eager_ms"] / r["eager_ms"]
        r["speedup_graph"] = dense["graph_ms"] / r["graph_ms"]
        r["speedup_graph_vs_dense_fused"] = dense_fused["graph_ms"] / r["graph_ms"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_e2e.json").write_text(json.dumps(result, indent=1))
    for kind, r in result["models"].items():
        print(f"{kind:15s} eager {r['eager_ms']:8.2f} ms ({r['speedup_eager']:.2f}x)  graph {r['graph_ms']:8.2f} ms "
              f"({r['speedup_graph']:.2f}x)  " + "  ".join(f"{k}: {v:.3f}" for k, v in r["per_layer_ms"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
