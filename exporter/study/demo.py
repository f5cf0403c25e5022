"""`run_demo`: the end-to-end example — train → prune (+ fine-tune with masks) → finalize → save →
export to ONNX → validate (ONNX Runtime vs PyTorch, and test-set accuracy of the ONNX file) → GPU benchmark
of the sparse model against its dense twin (skipped without a CUDA GPU).
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch

from ..formats import tilesparse
from ..modules import SparseLinear
from ..sparsify import _set_module
from .data import Dataset, load_dataset
from .model import ModelConfig, StudyClassifier
from .runner import DEFAULT_CACHE, QUICK_MODEL, QUICK_TRAIN, dense_model, prune_and_finetune
from .specs import get_row
from .train import TrainConfig, evaluate, predict, seed_everything


def slug(pattern: str, sparsity: float) -> str:
    return f"{pattern.replace(':', 'of').replace('+', '_')}_{round(sparsity * 1000):04d}"


def save_classifier(model: StudyClassifier, path: str | Path, info: dict | None = None) -> Path:
    """One safetensors file: SparseLinear layers compressed (TileSparse format), everything else dense —
    the layout of exporter.checkpoint.save_model, with the StudyClassifier spec in the header."""
    sparse = {name: m for name, m in model.named_modules() if isinstance(m, SparseLinear)}
    dense = {k: v.contiguous() for k, v in model.state_dict().items()
             if not any(k.startswith(n + ".") for n in sparse)}
    meta = {"model": json.dumps(model.spec()), "activations": json.dumps({n: m.activation for n, m in sparse.items()}),
            "info": json.dumps(info or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tilesparse.save(path, {n: (m.format, m.bias) for n, m in sparse.items()}, extra_tensors=dense,
                    extra_metadata=meta)
    return path


def load_classifier(path: str | Path) -> StudyClassifier:
    layers, dense, meta = tilesparse.load(path, with_extras=True)
    spec = json.loads(meta["model"])
    if spec.get("model") != "StudyClassifier":
        raise tilesparse.FormatError(f"{path}: not a StudyClassifier checkpoint")
    model = StudyClassifier.from_spec(spec)
    activations = json.loads(meta.get("activations", "{}"))
    for name, (fmt, bias) in layers.items():
        _set_module(model, name, SparseLinear(fmt, bias, activation=activations.get(name, "none")))
    model.load_state_dict(dense, strict=False)
    return model.eval()


def export_and_check(model: StudyClassifier, data: Dataset, onnx_path: Path) -> dict:
    """Export (batch dynamic, tokens fixed by the position table), validate ONNX Runtime against the PyTorch
    model with trt_plugins.validate, and measure the ONNX file's own test accuracy."""
    import numpy as np
    import onnxruntime as ort

    from trt_plugins.validate import validate

    from ..onnx_export import export_onnx

    t0 = time.perf_counter()
    batch = torch.export.Dim("batch", min=1, max=4096)
    export_onnx(model, (data.x_test[:4],), onnx_path, dynamic_shapes=({0: batch},),
                metadata={"study_spec": json.dumps(model.spec())})
    out = {"onnx": str(onnx_path), "export_s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    report = validate(onnx_path, model, runners=["onnxrt", "torch"], device="cpu", batch=8, iterations=2)
    out |= {"validate_passed": report.passed, "validate_s": time.perf_counter() - t0,
            "validate_max_abs": max((r.max_abs for r in report.rows), default=float("nan"))}
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    logits = np.concatenate([session.run(None, {name: data.x_test[i:i + 500].numpy()})[0]
                             for i in range(0, len(data.x_test), 500)])
    out["onnx_acc"] = float((logits.argmax(1) == data.y_test.numpy()).mean())
    return out


def gpu_benchmark(model: StudyClassifier, batch: int = 1024, reps: int = 50) -> dict:
    """Median ms of the sparse model vs its dense twin on the GPU (fp16), or why it was skipped."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA GPU on this machine: GPU benchmark skipped"}
    from ..cli_tools import dense_twin

    x = torch.randn(batch, model.tokens, model.patch_dim, device="cuda", dtype=torch.float16)
    sparse = copy.deepcopy(model).to("cuda", torch.float16).eval()
    dense = dense_twin(model).to("cuda", torch.float16).eval()
    times = {}
    with torch.no_grad():
        for label, m in (("dense", dense), ("sparse", sparse)):
            for _ in range(5):
                m(x)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            runs = []
            for _ in range(reps):
                start.record()
                m(x)
                end.record()
                end.synchronize()
                runs.append(start.elapsed_time(end))
            times[label] = sorted(runs)[len(runs) // 2]
    return {"device": torch.cuda.get_device_name(), "batch": batch, "dense_ms": times["dense"],
            "sparse_ms": times["sparse"], "speedup": times["dense"] / times["sparse"]}


def run_demo(pattern: str = "hinm+gyro", sparsity: float = 0.75, quick: bool = False, out_dir: str | Path = "out/example",
             *, seed: int = 0, dataset: str | None = None, finetune_epochs: int | None = None, export: bool = True,
             bench: bool = True, cache_dir: str | Path | None = DEFAULT_CACHE, threads: int | None = None,
             progress: bool = True) -> dict:
    """Train (or load the cached) dense classifier, prune it with one study pattern, fine-tune with masks,
    finalize, save, export, validate and benchmark.  Returns a summary dict (also written as JSON).

    `quick`: scikit-learn digits and a tiny model (seconds; what CI runs).  Export needs a tile-sparse
    pattern (2:4, TW, TVW, HiNM): the baselines have no sparse op and stop after the checkpoint."""
    row = get_row(pattern, sparsity)
    if row.pattern() is None:
        raise ValueError("run_demo needs a pruning pattern, not 'dense'")
    model_cfg, cfg = (QUICK_MODEL, QUICK_TRAIN) if quick else (ModelConfig(), TrainConfig())
    epochs = cfg.finetune_epochs if finetune_epochs is None else finetune_epochs
    data = load_dataset(dataset or ("digits" if quick else "mnist5k"))
    out_dir = Path(out_dir)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    seed_everything(seed, threads)
    dense, info = dense_model(data, seed, model_cfg, cfg, cache_dir, progress)
    timings["dense_s"] = time.perf_counter() - t0
    model = copy.deepcopy(dense)
    seed_everything(seed, threads)
    pruner, masked_acc, timings["finetune_s"] = prune_and_finetune(model, data, row.name, sparsity, seed, cfg, epochs,
                                                                    progress)
    report = pruner.finalize()
    summary = {"pattern": row.name, "label": row.label, "sparsity": sparsity, "achieved": report.achieved,
               "dataset": data.describe(), "seed": seed, "dense_acc": info["accuracy"], "masked_acc": masked_acc,
               "final_acc": evaluate(model, data),
               "sparse_layers": sum(isinstance(m, SparseLinear) for m in model.modules())}
    ckpt = save_classifier(model, out_dir / f"{slug(row.name, sparsity)}.sparse.safetensors",
                           {k: summary[k] for k in ("pattern", "sparsity", "final_acc")})
    reloaded = load_classifier(ckpt)
    summary["checkpoint"] = str(ckpt)
    summary["reload_matches"] = bool(torch.equal(predict(reloaded, data.x_test).argmax(1),
                                                 predict(model, data.x_test).argmax(1)))
    if not export:
        summary["export"] = {"skipped": "export disabled (--no-export)"}
    elif not summary["sparse_layers"]:
        summary["export"] = {"skipped": f"{row.label} stays nn.Linear with zeros: no sparse op to export"}
    else:
        summary["export"] = export_and_check(model, data, out_dir / f"{slug(row.name, sparsity)}.onnx")
    summary["bench"] = gpu_benchmark(model) if bench else {"skipped": "benchmark disabled (--no-bench)"}
    summary["timings"] = timings | {"total_s": time.perf_counter() - t0}
    (out_dir / f"{slug(row.name, sparsity)}.json").write_text(json.dumps(summary, indent=1))
    return summary


