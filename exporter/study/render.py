"""Render study results (the dict of `report.run_study`, i.e. results.json) as Markdown, rich and PNG."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from .specs import ROWS

HEADLINE = 0.75   # the acceptance criteria are judged at 75%


def _pct(mean: float, std: float | None = None, signed: bool = False) -> str:
    if mean is None or math.isnan(mean):
        return "—"
    body = f"{100 * mean:+.2f}" if signed else f"{100 * mean:.2f}"
    return body if std is None else f"{body} ± {100 * std:.2f}"


def _cell(results: dict, pattern: str, sparsity: float) -> dict | None:
    return next((c for c in results["cells"] if c["pattern"] == pattern and abs(c["sparsity"] - sparsity) < 1e-9), None)


def paired(results: dict, a: str, b: str, sparsity: float, key: str = "final_acc") -> dict | None:
    """key(a) − key(b) per common seed (same dense model): mean, std, wins of a, ties, n."""
    runs = {(r["pattern"], r["seed"]): r for r in results["runs"] if abs(r["sparsity"] - sparsity) < 1e-9}
    d = [runs[(a, s)][key] - runs[(b, s)][key] for s in results["seeds"]
         if (a, s) in runs and (b, s) in runs]
    if not d:
        return None
    return {"mean": statistics.fmean(d), "std": statistics.stdev(d) if len(d) > 1 else 0.0,
            "wins": sum(x > 0 for x in d), "ties": sum(x == 0 for x in d), "n": len(d)}


def table_rows(results: dict) -> list[list[str]]:
    rows = []
    for c in results["cells"]:
        dense = c["pattern"] == "dense"
        rows.append([
            c["label"], "0%" if dense else f"{c['sparsity']:.1%}",
            "—" if dense else f"{c['achieved']['mean']:.1%}",
            "—" if dense else _pct(c["oneshot_acc"]["mean"], c["oneshot_acc"]["std"]),
            _pct(c["final_acc"]["mean"], c["final_acc"]["std"]),
            "—" if dense else _pct(c["delta_vs_dense"]["mean"], c["delta_vs_dense"]["std"], signed=True),
            "—" if dense else f"{c['finetune_s']['mean']:.0f}",
        ])
    return rows


HEADERS = ["pattern", "target", "achieved", "one-shot acc %", "fine-tuned acc %", "Δ vs dense (pts)", "fine-tune s"]


def verdict(results: dict) -> list[str]:
    """The acceptance criteria, judged from the numbers (lines of Markdown)."""
    s = HEADLINE
    unst, gyro, hinm = (_cell(results, p, s) for p in ("unstructured", "hinm+gyro", "hinm"))
    if gyro is None:
        why = next((n["why"] for n in results.get("not_run", []) if n["pattern"] == "hinm+gyro"), "not requested")
        return [f"- **HiNM + gyro: not run** ({why}). The criteria on it cannot be judged from this run."]
    out = []
    if unst is not None:
        gap = unst["final_acc"]["mean"] - gyro["final_acc"]["mean"]
        ok = gap <= 0.01
        out.append(f"- HiNM + gyro within 1 point of unstructured at {s:.0%}: **{'yes' if ok else 'no'}** — "
                   f"{_pct(gyro['final_acc']['mean'])}% vs {_pct(unst['final_acc']['mean'])}% "
                   f"(gap {100 * gap:+.2f} points; positive = unstructured ahead).")
    for sp in sorted({c["sparsity"] for c in results["cells"] if c["pattern"] == "hinm+gyro"}):
        d = paired(results, "hinm+gyro", "hinm", sp)
        if d is None:
            continue
        if d["mean"] <= 0:
            answer = "no"
        elif d["n"] > 1 and d["mean"] <= d["std"]:
            answer = "not shown (ahead on average, but within the seed noise)"
        else:
            answer = "yes"
        if d["n"] < 2:
            spread = "; one seed, so no spread to judge it against."
        elif abs(d["mean"]) <= d["std"]:
            spread = "; the difference is within one standard deviation of the per-seed differences."
        else:
            spread = "."
        shot = paired(results, "hinm+gyro", "hinm", sp, "oneshot_acc")
        out.append(f"- Gyro better than no permutation at {sp:.1%} (fine-tuned): **{answer}** — "
                   f"paired difference {_pct(d['mean'], d['std'], signed=True)} points over {d['n']} seed(s) "
                   f"(gyro ahead on {d['wins']}, tied on {d['ties']})" + spread
                   + f" One-shot: {_pct(shot['mean'], shot['std'], signed=True)} points "
                   f"(gyro ahead on {shot['wins']} of {shot['n']}).")
    return out


def analysis(results: dict) -> list[str]:
    """Observations computed from the run (Markdown paragraphs); the wording adapts to what was measured."""
    out = []
    dense = _cell(results, "dense", 0.0)
    runs = results["runs"]
    if runs:
        worst = max(r["max_logit_diff"] for r in runs)
        same = all(r["final_acc"] == r["masked_acc"] for r in runs)
        out.append(f"- **Finalized = masked.** In {'every' if same else 'NOT every'} run the finalized model "
                   "(SparseLinear, compressed format) has the same test accuracy as the masked training model; "
                   f"the largest logit difference over all runs is {worst:.1e}.")
    gyro = [c for c in results["cells"] if c["pattern"] == "hinm+gyro"]
    if gyro:
        gains = ", ".join(f"{100 * c['permutation_gain']['mean']:.0f}% at {c['sparsity']:.1%}" for c in gyro
                          if c["permutation_gain"]["mean"] is not None and not math.isnan(c["permutation_gain"]["mean"]))
        parts, shot_better, fine_noise = [], True, True
        for c in gyro:
            shot = paired(results, "hinm+gyro", "hinm", c["sparsity"], "oneshot_acc")
            fine = paired(results, "hinm+gyro", "hinm", c["sparsity"])
            if shot and fine:
                parts.append(f"{c['sparsity']:.1%}: one-shot {_pct(shot['mean'], signed=True)}, fine-tuned "
                             f"{_pct(fine['mean'], fine['std'], signed=True)} points")
                shot_better &= shot["mean"] > 0
                fine_noise &= abs(fine["mean"]) <= max(fine["std"], 0.002)
        text = ("- **Gyro-permutation.** Gyro picks the layouts that keep the most weight magnitude (at the final stage "
                f"of gradual pruning: {gains} more than the identity order on the same scores). Paired against HiNM "
                f"without permutation (same dense model per seed): {'; '.join(parts)}.")
        if shot_better and fine_noise:
            text += (" So gyro helps where the mask has to work without training, and the advantage is gone after "
                     "fine-tuning: the masks are re-selected at every stage from the fine-tuned weights and the kept "
                     "weights are retrained, so both layouts recover to the same accuracy. Magnitude is a proxy for "
                     "accuracy that training can make up for when the budget allows. The remaining gaps are within the seed spread (0.1 point = 1 of the 1,000 test images).")
        if any(a.get("name") == "ft1" for a in results.get("ablations", [])):
            text += " The ablation below repeats the comparison with a 1-epoch fine-tuning budget."
        out.append(text)
    for c in results["cells"]:
        if c["pattern"] != "dense" and c["achieved"]["mean"] < c["sparsity"] - 0.01:
            out.append(f"- **{c['label']} at {c['sparsity']:.1%} reaches only {c['achieved']['mean']:.1%}.** Each tile "
                       "keeps a multiple of 32 input columns (one mma.sp k-step), so a 32-row tile of a 128-wide layer "
                       "keeps at least 32/128 = 25% of its weights; the global threshold cannot push q/k/v/o/fc1 lower, "
                       "and the row is reported at the sparsity it reached (a wider model, K ≥ 256, would allow 87.5%).")
    unst = _cell(results, "unstructured", HEADLINE)
    if dense and unst and unst["delta_vs_dense"]["mean"] > 0:
        out.append(f"- **Unstructured {HEADLINE:.0%} beats dense by {_pct(unst['delta_vs_dense']['mean'])} points.** The "
                   f"dense row is the model after its {results['train']['dense_epochs']} epochs; every pruned row gets "
                   f"{results['train']['finetune_epochs']} more epochs of training, so this is extra training (and the "
                   "regularising effect of light pruning), not a gain that pruning itself buys.")
    return out


def ablation_section(results: dict) -> list[str]:
    lines = []
    for ab in results.get("ablations", []):
        lines += [f"### Ablation: {ab['title']}", "", f"Command: `{ab['command']}` ({ab['wall_s'] / 60:.1f} min); "
                  "same dense models (cached per seed), only the fine-tuning budget differs.", "",
                  "| pattern | target | one-shot acc % | fine-tuned acc % | Δ vs dense (pts) |", "|---|---|---|---|---|"]
        for c in ab["cells"]:
            lines.append(f"| {c['label']} | {c['sparsity']:.1%} | {_pct(c['oneshot_acc']['mean'], c['oneshot_acc']['std'])} | "
                         f"{_pct(c['final_acc']['mean'], c['final_acc']['std'])} | "
                         f"{_pct(c['delta_vs_dense']['mean'], c['delta_vs_dense']['std'], signed=True)} |")
        for sp in sorted({c["sparsity"] for c in ab["cells"] if c["pattern"] == "hinm+gyro"}):
            d = paired(ab, "hinm+gyro", "hinm", sp)
            if d:
                lines += ["", f"Gyro − no permutation at {sp:.1%}, paired over {d['n']} seeds: "
                             f"{_pct(d['mean'], d['std'], signed=True)} points (gyro ahead on {d['wins']}, "
                             f"tied on {d['ties']})."]
        lines.append("")
    return lines


def markdown(results: dict, *, command: str, date: str, machine: str, notes: list[str] | None = None) -> str:
    lines = [
        "# Accuracy study: do the sparsity patterns keep accuracy?", "",
        f"Generated by `{command}` on {date}, {machine}, code at {results.get('code', 'unknown')}; the whole run took "
        f"{results['wall_s'] / 60:.1f} minutes (wall time, dense training included). Every number below comes "
        "from that run (`results.json` beside this file holds every per-seed result).", "",
        "## Setup", "",
        f"- **Data**: {results['dataset']} — a real dataset that installs with a package and loads offline.",
        f"- **Model**: ViT-style classifier, d_model {results['model']['d_model']}, {results['model']['heads']} heads, "
        f"FFN {results['model']['ffn']}, {results['model']['layers']} encoder block(s) (exporter.zoo."
        "EncoderBlock, all projections nn.Linear). Pruned: every q/k/v/o/fc1/fc2 projection; kept dense: the patch embedding and the "
        "classifier head.",
        f"- **Dense training**: {results['train']['dense_epochs']} epochs, AdamW lr {results['train']['lr']:g}, "
        f"weight decay {results['train']['weight_decay']:g}, batch {results['train']['batch_size']}, cosine schedule; "
        "trained once per seed and cached, so every pattern of a seed starts from the same weights.",
        "- **One-shot**: the final mask chosen from the dense weights (magnitude), no training.",
        f"- **Fine-tuned** (same budget for every pattern): {results['train']['finetune_epochs']} epochs at lr "
        f"{results['train']['finetune_lr']:g} with frozen masks (GradualPruner); the masks are re-selected at the "
        f"stages 50% → … → target (the TW paper's stages from 50%, identical for every pattern) spread over the first "
        f"{results['train']['prune_window']:.0%} of the steps. The accuracy is of the **finalized** model "
        "(tile-sparse layers as SparseLinear running the CPU reference path; baselines as nn.Linear with zeros).",
        f"- **Seeds**: {', '.join(map(str, results['seeds']))} (model init and batch order; the test split is fixed). "
        "± is the sample standard deviation over seeds.",
        "- Tiles, vectors and blocks are 32 rows (HiNM V=32, TW/TVW G=32, block 32×32). Achieved sparsity is over "
        "the pruned layers; TW / TVW choose with one global threshold, so layers differ.", "",
        "## Results", "",
        "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(results)]
    for n in results.get("not_run", []):
        lines.append(f"| {ROWS[n['pattern']].label} | {n['sparsity']:.1%} | — | not run | not run | — | — |")
    lines += ["", "![accuracy per pattern](results_accuracy.png)", "",
              "![accuracy vs sparsity](results_sparsity.png)", "",
              "## Acceptance criteria (issue #6)", "", *verdict(results), ""]
    lines += ["## What the numbers say", "", *analysis(results), *(notes or []), ""]
    lines += ablation_section(results)
    return "\n".join(lines)


def rich_table(results: dict):
    from rich.table import Table

    table = Table(title=f"accuracy study: {results['dataset_name']}, seeds {results['seeds']}")
    for h in HEADERS:
        table.add_column(h, justify="left" if h == "pattern" else "right", no_wrap=True)
    for r in table_rows(results):
        table.add_row(*r)
    return table


def plots(results: dict, out_dir: str | Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dense = _cell(results, "dense", 0.0)
    pruned = [c for c in results["cells"] if c["pattern"] != "dense"]
    names = list(dict.fromkeys(c["pattern"] for c in pruned))
    levels = sorted({c["sparsity"] for c in pruned})
    colors = dict(zip(levels, ("tab:green", "tab:blue", "tab:purple", "tab:orange"), strict=False))
    width = 0.8 / max(1, len(levels))

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    for ax, key, title in zip(axes, ("oneshot_acc", "final_acc"), ("one-shot (no fine-tuning)", "fine-tuned (same budget)"),
                              strict=True):
        for j, s in enumerate(levels):
            xs, ys, es = [], [], []
            for i, n in enumerate(names):
                c = _cell(results, n, s)
                if c is not None:
                    xs.append(i + (j - (len(levels) - 1) / 2) * width)
                    ys.append(100 * c[key]["mean"])
                    es.append(100 * c[key]["std"])
            ax.bar(xs, ys, width, yerr=es, capsize=3, color=colors[s], label=f"{s:.1%} sparse")
        if dense:
            ax.axhline(100 * dense["final_acc"]["mean"], color="k", ls="--", lw=1,
                       label=f"dense {100 * dense['final_acc']['mean']:.1f}%")
        ax.set_xticks(range(len(names)), [ROWS[n].label.split(" (")[0] + (" +gyro" if ROWS[n].gyro else "")
                                          for n in names], rotation=30, ha="right")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    lows = [100 * c["oneshot_acc"]["mean"] for c in pruned] + [100 * c["final_acc"]["mean"] for c in pruned]
    axes[0].set_ylim(max(0.0, min(lows) - 5), 100)
    axes[1].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{results['dataset_name']}: accuracy per pattern (mean ± std over {len(results['seeds'])} seed(s))")
    fig.tight_layout()
    bars = out_dir / "results_accuracy.png"
    fig.savefig(bars, dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.8))
    for n in names:
        cs = sorted((c for c in pruned if c["pattern"] == n), key=lambda c: c["achieved"]["mean"])
        ax.errorbar([100 * c["achieved"]["mean"] for c in cs], [100 * c["final_acc"]["mean"] for c in cs],
                    yerr=[100 * c["final_acc"]["std"] for c in cs], marker="o", capsize=3, label=ROWS[n].label)
    if dense:
        ax.axhline(100 * dense["final_acc"]["mean"], color="k", ls="--", lw=1, label="dense")
    ax.set_xlabel("achieved sparsity of the pruned layers (%)")
    ax.set_ylabel("fine-tuned test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("accuracy vs sparsity (fine-tuned)")
    fig.tight_layout()
    curve = out_dir / "results_sparsity.png"
    fig.savefig(curve, dpi=120)
    plt.close(fig)
    return [bars, curve]


def write_results(results: dict, out_dir: str | Path, *, write_json: bool = True) -> list[Path]:
    """results.json (unless re-rendering), RESULTS.md and the PNG plots under `out_dir`."""
    import json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if write_json:
        (out_dir / "results.json").write_text(json.dumps(results, indent=1))
        written.append(out_dir / "results.json")
    written += plots(results, out_dir)
    md = markdown(results, command=results.get("command", "?"), date=results.get("date", "?"),
                  machine=results.get("machine", "?"), notes=results.get("notes"))
    (out_dir / "RESULTS.md").write_text(md)
    return [*written, out_dir / "RESULTS.md"]
