"""`sparsetrt bench` and `sparsetrt report`: time and describe a pruned checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

EXIT_OK, EXIT_BAD_INPUT, EXIT_MISSING_DEP = 0, 2, 3

# The example model's layers (64-512 features) are far below the sizes where our kernels beat cuBLAS; said next
# to a sparse-slower-than-dense result so that it is not read as the product's speed.
SMALL_MODEL_NOTE = ("; the example's layers (64-512 features) are too small for sparse kernels to pay; "
                    "transformer-sized layers: docs/BENCHMARKS.md")


def dense_twin(model):
    """A copy of `model` whose SparseLinear layers are plain nn.Linear with the decompressed weights."""
    import copy

    from torch import nn

    from .modules import SparseLinear
    from .sparsify import _set_module

    twin = copy.deepcopy(model)
    for name, m in list(twin.named_modules()):
        if isinstance(m, SparseLinear):
            lin = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
            lin.weight.data = m.format.decompress().to(m.values.dtype)
            if m.bias is not None:
                lin.bias.data = m.bias.clone()
            layer = nn.Sequential(lin, {"gelu": nn.GELU(), "relu": nn.ReLU()}[m.activation]) if m.activation != "none" else lin
            _set_module(twin, name, layer)
    return twin


def cmd_bench(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console
    from rich.table import Table

    from .checkpoint import load_model
    from .fusion import fuse_activations
    from .timing import median_ms
    from .zoo import example_input

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("sparsetrt bench: error: --device cuda but no CUDA GPU is available")
        return EXIT_MISSING_DEP
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    if device == "cpu" and dtype != torch.float32:
        dtype = torch.float32   # the CPU reference path computes in fp32
    model, spec = load_model(args.checkpoint)
    fuse_activations(model)
    sparse = model.to(device, dtype).eval()
    dense = dense_twin(model).to(device, dtype).eval()
    x = example_input(spec["zoo"], model, batch=args.batch, seq=args.seq).to(device, dtype)
    with torch.no_grad():
        err = ((sparse(x).float() - dense(x).float()).norm() / dense(x).float().norm()).item()
        rows = {"dense (nn.Linear)": median_ms(lambda: dense(x), device, args.warmup, args.reps),
                "sparse (SparseLinear)": median_ms(lambda: sparse(x), device, args.warmup, args.reps)}
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    table = Table(title=f"{args.checkpoint} on {name}, {args.dtype if device == 'cuda' else 'fp32'}, input {tuple(x.shape)}")
    for col in ("model", "median ms", "speedup"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for label, ms in rows.items():
        table.add_row(label, f"{ms:.3f}", f"{rows['dense (nn.Linear)'] / ms:.2f}×")
    Console().print(table)
    print(f"relative difference sparse vs dense: {err:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "input": list(x.shape), "ms": rows, "rel_diff": err}, indent=2))
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from .formats import tilesparse

    layers, dense, meta = tilesparse.load(args.checkpoint, with_extras=True)
    spec = json.loads(meta.get("model", "{}"))
    table = Table(title=f"{args.checkpoint}: {spec.get('zoo', 'layers')} {spec.get('pattern', '')}")
    for col in ("layer", "pattern", "N×K", "sparsity", "tiles", "kept K / tile", "order", "dense bytes", "compressed bytes"):
        table.add_column(col, justify="left" if col in ("layer", "pattern", "order") else "right", no_wrap=True)
    total_dense = total_comp = 0
    out = {}
    for name, (fmt, _bias) in layers.items():
        kept = fmt.kept_per_tile
        dense_bytes = fmt.shape[0] * fmt.shape[1] * fmt.values.element_size()
        comp_bytes = sum(t.numel() * t.element_size() for t in fmt.tensors().values())
        total_dense, total_comp = total_dense + dense_bytes, total_comp + comp_bytes
        out[name] = {"pattern": fmt.pattern, "shape": list(fmt.shape), "sparsity": 1 - fmt.density, "tiles": fmt.num_tiles,
                     "kept_min": min(kept), "kept_max": max(kept), "dense_bytes": dense_bytes, "compressed_bytes": comp_bytes}
        table.add_row(name, fmt.pattern, f"{fmt.shape[0]}×{fmt.shape[1]}", f"{1 - fmt.density:.2%}", str(fmt.num_tiles),
                      f"{min(kept)}–{max(kept)}" if min(kept) != max(kept) else str(kept[0]), fmt.index_order,
                      f"{dense_bytes:,}", f"{comp_bytes:,}")
    console = Console() if Console().is_terminal else Console(width=170)
    console.print(table)
    console.print(f"{len(layers)} sparse layers; weights {total_dense:,} B dense → {total_comp:,} B compressed "
                  f"({total_comp / max(total_dense, 1):.1%}); {len(dense)} dense tensors besides")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": spec, "layers": out}, indent=2))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from .study.demo import run_demo

    summary = run_demo(args.pattern, args.sparsity, quick=args.quick, out_dir=args.out, seed=args.seed,
                       export=not args.no_export, bench=not args.no_bench, progress=not args.quiet)
    table = Table(title=f"sparsetrt demo: {summary['label']} at {summary['sparsity']:.1%} on {summary['dataset']}")
    table.add_column("step")
    table.add_column("result")
    table.add_row("dense accuracy", f"{summary['dense_acc']:.2%}")
    table.add_row("pruned + fine-tuned (masked)", f"{summary['masked_acc']:.2%}  (achieved sparsity {summary['achieved']:.2%})")
    table.add_row("SparseLinear model (CPU reference)", f"{summary['final_acc']:.2%}  ({summary['sparse_layers']} sparse layers)")
    table.add_row("checkpoint", f"{summary['checkpoint']}  (reload matches: {summary['reload_matches']})")
    export, bench = summary["export"], summary["bench"]
    if "skipped" in export:
        table.add_row("export / validate", export["skipped"])
    else:
        table.add_row("export", export["onnx"])
        table.add_row("validate (Polygraphy: ONNX Runtime vs PyTorch)",
                      f"{'PASS' if export['validate_passed'] else 'FAIL'}  (max |diff| {export['validate_max_abs']:.2e})")
        table.add_row("ONNX Runtime accuracy", f"{export['onnx_acc']:.2%}")
    table.add_row("GPU benchmark", bench["skipped"] if "skipped" in bench else
                  f"{bench['device']}: dense {bench['dense_ms']:.3f} ms, sparse {bench['sparse_ms']:.3f} ms "
                  f"({bench['speedup']:.2f}×)" + ("" if bench["speedup"] >= 1 else SMALL_MODEL_NOTE))
    table.add_row("wall time", f"{summary['timings']['total_s']:.0f} s")
    Console().print(table)
    ok = summary["reload_matches"] and export.get("validate_passed", True)
    return EXIT_OK if ok else 1


def register(sub) -> None:
    p = sub.add_parser("demo", help="the whole path on a small built-in example: train, prune, fine-tune, export, "
                                    "validate, (GPU) benchmark",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  sparsetrt demo                         # HiNM + gyro, 75%, MNIST-5k (~3 min on 2 cores)\n"
                              "  sparsetrt demo --pattern tvw --sparsity 0.875\n"
                              "  sparsetrt demo --quick                 # scikit-learn digits, tiny model (CI)")
    p.add_argument("--pattern", default="hinm+gyro",
                   help="unstructured | 2:4 | block | tw | tvw | hinm | hinm+gyro (default hinm+gyro)")
    p.add_argument("--sparsity", type=float, default=0.75)
    p.add_argument("--quick", action="store_true", help="tiny model on scikit-learn digits (seconds)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/example", help="output folder (checkpoint, ONNX, JSON summary)")
    p.add_argument("--no-export", action="store_true", help="stop after the checkpoint")
    p.add_argument("--no-bench", action="store_true", help="skip the GPU benchmark")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="time a pruned checkpoint against its dense twin (GPU, or CPU)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  sparsetrt bench out/encoder.sparse.safetensors --batch 32 --seq 128\n"
                              "  sparsetrt bench out/mlp.sparse.safetensors --device cpu --json out/bench.json\n"
                              "kernel-level benchmarks against cuBLAS/cuSPARSELt/BSR/CSR: python3 tools/bench_kernels.py")
    p.add_argument("checkpoint", help="a checkpoint written by `sparsetrt prune`")
    p.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when available")
    p.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default="fp16", help="GPU dtype (CPU runs fp32)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--json", help="also write the timings as JSON")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("report", help="per-layer summary of a pruned checkpoint (pattern, sparsity, tiles, bytes)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  sparsetrt report out/encoder.sparse.safetensors --json out/report.json")
    p.add_argument("checkpoint")
    p.add_argument("--json", help="also write the summary as JSON")
    p.set_defaults(func=cmd_report)
