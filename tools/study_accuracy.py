#!/usr/bin/env python3
"""The accuracy study of issue #6: every pattern at 75% / 87.5% (2:4 at 50%) on a small transformer,
one-shot and fine-tuned with the same budget, mean ± std over seeds → docs/RESULTS.md, docs/results.json,
docs/results_*.png.

    python tools/study_accuracy.py                     # the full study (3 seeds, mnist5k) → docs/
    python tools/study_accuracy.py --quick             # CI smoke run (digits, tiny model, 1 seed) → out/study/quick/
    python tools/study_accuracy.py --render docs/results.json    # re-render the Markdown/plots from a JSON
    python tools/study_accuracy.py --render docs/results.json --ablation ft1=out/study/ablation_ft1/results.json
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
from dataclasses import replace
from datetime import date
from pathlib import Path

QUICK_PATTERNS = ["dense", "unstructured", "2:4", "hinm", "hinm+gyro"]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny CI run: digits, small model, 1 seed, 5 rows at 75%%")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (default 0 1 2; --quick: 0)")
    p.add_argument("--patterns", nargs="+", help="study rows (default: all): dense unstructured 2:4 block tw tvw "
                                                  "hinm hinm+gyro")
    p.add_argument("--dataset", choices=("mnist5k", "digits"), help="default mnist5k (--quick: digits)")
    p.add_argument("--finetune-epochs", type=int, help="fine-tuning budget per pattern (default 10; --quick 2)")
    p.add_argument("--dense-epochs", type=int, help="dense training epochs (default 30; --quick 25)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: see train.py)")
    p.add_argument("--out-dir", help="where RESULTS.md, results.json, PNGs go (default docs; --quick out/study/quick)")
    p.add_argument("--cache-dir", default="out/study/cache", help="dense checkpoints per seed (default %(default)s)")
    p.add_argument("--render", metavar="JSON", help="only re-render RESULTS.md and the plots from this results.json")
    p.add_argument("--ablation", metavar="NAME=JSON", action="append", default=[],
                   help="with --render: attach another run's results.json as an ablation section (stored in the JSON)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def _code_version() -> str:
    """The commit the study ran from (a git checkout), else $STUDY_CODE_VERSION (e.g. a `git archive` copy)."""
    import os
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "exporter", "tools"], capture_output=True,
                               text=True, cwd=Path(__file__).resolve().parent).stdout.strip()
        return head + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("STUDY_CODE_VERSION", "unknown")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from rich.console import Console

    from exporter.study import QUICK_MODEL, QUICK_TRAIN, ModelConfig, StudyError, TrainConfig
    from exporter.study.render import rich_table, write_results
    from exporter.study.report import run_study

    out_dir = Path(args.out_dir or ("out/study/quick" if args.quick else "docs"))
    if args.render:
        results = json.loads(Path(args.render).read_text())
        for spec in args.ablation:
            name, _, path = spec.partition("=")
            ab = json.loads(Path(path).read_text())
            ab |= {"name": name, "title": f"{ab['train']['finetune_epochs']}-epoch fine-tuning budget "
                                          f"({', '.join(dict.fromkeys(c['label'] for c in ab['cells']))})"}
            results["ablations"] = [a for a in results.get("ablations", []) if a.get("name") != name] + [ab]
    else:
        model_cfg, cfg = (QUICK_MODEL, QUICK_TRAIN) if args.quick else (ModelConfig(), TrainConfig())
        if args.finetune_epochs is not None:
            cfg = replace(cfg, finetune_epochs=args.finetune_epochs)
        if args.dense_epochs is not None:
            cfg = replace(cfg, dense_epochs=args.dense_epochs)
        seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
        patterns = args.patterns or (QUICK_PATTERNS if args.quick else None)
        dataset = args.dataset or ("digits" if args.quick else "mnist5k")
        try:
            results = run_study(seeds, patterns, dataset=dataset, model_cfg=model_cfg, cfg=cfg,
                                cache_dir=args.cache_dir, threads=args.threads, progress=not args.no_progress)
        except StudyError as err:
            print(f"study_accuracy: error: {err}", file=sys.stderr)
            return 2
        if args.quick:   # the quick run checks the machinery; 87.5% / block / TW rows are the full run's job
            results["cells"] = [c for c in results["cells"] if c["sparsity"] in (0.0, 0.5, 0.75)]
            results["runs"] = [r for r in results["runs"] if r["sparsity"] in (0.0, 0.5, 0.75)]
        results["command"] = "python " + " ".join(shlex.quote(a) for a in ["tools/study_accuracy.py", *sys.argv[1:]])
        results["date"] = date.today().isoformat()
        import torch

        results["code"] = _code_version()
        results["machine"] = (f"{platform.machine()} 2-core CPU, no GPU, torch {torch.__version__}, "
                              f"{results['threads']} intra-op thread(s)")
    written = write_results(results, out_dir, write_json=not args.render or bool(args.ablation))
    Console(width=160).print(rich_table(results))
    print(f"wrote {', '.join(map(str, written))}; study wall time {results['wall_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
