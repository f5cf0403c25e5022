#!/usr/bin/env python3
"""End-to-end example: a small transformer classifier trained from scratch on real MNIST digits, pruned to
a sparsity pattern, fine-tuned with frozen masks, saved in the compressed format, exported to ONNX,
validated (ONNX Runtime vs PyTorch + the ONNX file's own test accuracy) and, on a CUDA GPU, benchmarked
against its dense twin.

    python examples/train_prune_export.py                          # HiNM + gyro at 75% (~3 min on 2 CPU cores)
    python examples/train_prune_export.py --pattern all            # every pattern of the accuracy study
    python examples/train_prune_export.py --pattern tvw --sparsity 0.875
    python examples/train_prune_export.py --quick                  # seconds: digits, tiny model (CI)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    from exporter.study import ROWS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pattern", default="hinm+gyro",
                   help=f"one of {[n for n in ROWS if n != 'dense']} or 'all' (default %(default)s)")
    p.add_argument("--sparsity", type=float, help="target sparsity (default 0.75; 2:4 is 0.5)")
    p.add_argument("--quick", action="store_true", help="scikit-learn digits and a tiny model: seconds, for CI")
    p.add_argument("--dataset", choices=("mnist5k", "digits"), help="default mnist5k (--quick: digits)")
    p.add_argument("--finetune-epochs", type=int, help="fine-tuning epochs with masks (default 10; --quick 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--out-dir", default="out/example", help="checkpoints, ONNX files, JSON (default %(default)s)")
    p.add_argument("--cache-dir", default="out/study/cache", help="dense checkpoints (shared with the study)")
    p.add_argument("--no-export", action="store_true", help="stop after the compressed checkpoint")
    p.add_argument("--no-bench", action="store_true", help="skip the GPU benchmark")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def jobs(pattern: str, sparsity: float | None) -> list[tuple[str, float]]:
    from exporter.study import ROWS, get_row

    if pattern == "all":
        names = [n for n in ROWS if n != "dense"]
        return [(n, sparsity if sparsity is not None else ROWS[n].sparsities[0]) for n in names
                if sparsity is None or sparsity in ROWS[n].sparsities]
    row = get_row(pattern)
    chosen = sparsity if sparsity is not None else (0.75 if 0.75 in row.sparsities else row.sparsities[0])
    get_row(pattern, chosen)   # a sparsity the pattern does not allow fails here, before any training
    return [(row.name, chosen)]


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from rich.console import Console
    from rich.table import Table

    from exporter.study import StudyError, gyro_available
    from exporter.study.demo import run_demo

    try:
        todo = jobs(args.pattern, args.sparsity)
    except StudyError as err:
        print(f"train_prune_export: error: {err}", file=sys.stderr)
        return 2
    if not gyro_available() and any(n == "hinm+gyro" for n, _ in todo):
        print("note: exporter.permute (gyro) is not available: 'hinm+gyro' is skipped")
        todo = [j for j in todo if j[0] != "hinm+gyro"]
    results = []
    for name, sparsity in todo:
        print(f"== {name} at {sparsity:.1%} ==")
        r = run_demo(name, sparsity, args.quick, args.out_dir, seed=args.seed, dataset=args.dataset,
                     finetune_epochs=args.finetune_epochs, export=not args.no_export, bench=not args.no_bench,
                     cache_dir=args.cache_dir, threads=args.threads, progress=not args.no_progress)
        results.append(r)
        ex, bench = r["export"], r["bench"]
        print(f"  dense {r['dense_acc']:.2%} → pruned + fine-tuned {r['final_acc']:.2%} "
              f"({r['achieved']:.1%} sparse, {r['sparse_layers']} SparseLinear layers); checkpoint {r['checkpoint']}")
        if "skipped" in ex:
            print(f"  export: skipped ({ex['skipped']})")
        else:
            print(f"  export: {ex['onnx']}; validate (ONNX Runtime vs PyTorch): "
                  f"{'PASS' if ex['validate_passed'] else 'FAIL'} (max |Δ| {ex['validate_max_abs']:.1e}); "
                  f"ONNX test accuracy {ex['onnx_acc']:.2%}")
        print(f"  bench: {bench['skipped']}" if "skipped" in bench else
              f"  bench ({bench['device']}, batch {bench['batch']}, fp16): dense {bench['dense_ms']:.3f} ms, "
              f"sparse {bench['sparse_ms']:.3f} ms, {bench['speedup']:.2f}×")

    table = Table(title=f"end-to-end example: {results[0]['dataset'] if results else ''}")
    for col in ("pattern", "achieved", "dense %", "fine-tuned %", "ONNX %", "validate", "GPU speedup", "time s"):
        table.add_column(col, justify="left" if col == "pattern" else "right")
    failed = False
    for r in results:
        ex, bench = r["export"], r["bench"]
        ok = ex.get("validate_passed")
        failed |= ok is False or not r["reload_matches"]
        table.add_row(r["label"], f"{r['achieved']:.1%}", f"{100 * r['dense_acc']:.2f}", f"{100 * r['final_acc']:.2f}",
                      f"{100 * ex['onnx_acc']:.2f}" if "onnx_acc" in ex else "—",
                      "—" if ok is None else ("PASS" if ok else "FAIL"),
                      f"{bench['speedup']:.2f}×" if "speedup" in bench else "skipped",
                      f"{r['timings']['total_s']:.0f}")
    Console(width=140).print(table)
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.out_dir) / "summary.json").write_text(json.dumps(results, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
