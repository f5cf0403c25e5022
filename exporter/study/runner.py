"""`run_pattern`: one (pattern, sparsity, seed) cell of the study, from a cached dense model.

    dense (trained once per seed, cached) ─┬─ one-shot prune at the final sparsity → accuracy (no fine-tune)
                                           └─ gradual prune with frozen masks + fine-tune (same budget for
                                              every pattern) → masked accuracy → finalize (Linear →
                                              SparseLinear for tile-sparse patterns) → final accuracy
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from safetensors.torch import load_file, save_file

from ..modules import SparseLinear
from .data import Dataset, load_dataset
from .model import DENSE, PRUNABLE, ModelConfig, StudyClassifier
from .pruning import gyro_available, make_pruner
from .specs import StudyError, get_row
from .train import TrainConfig, evaluate, predict, seed_everything, stage_steps, train

DEFAULT_CACHE = Path("out/study/cache")
QUICK_MODEL = ModelConfig(d_model=64, heads=2, ffn=128, layers=1)
QUICK_TRAIN = TrainConfig(dense_epochs=25, finetune_epochs=2, lr=3e-3, finetune_lr=1e-3)


@dataclass
class PatternResult:
    pattern: str
    sparsity: float
    seed: int
    dataset: str
    dense_acc: float
    oneshot_acc: float | None = None
    masked_acc: float | None = None      # after fine-tuning, masks as parametrizations
    final_acc: float | None = None       # after finalize(): SparseLinear / baked zeros (CPU reference path)
    achieved: float = 0.0                # weighted sparsity of the pruned layers
    sparse_layers: int = 0               # layers that became SparseLinear
    max_logit_diff: float = 0.0          # |masked − finalized| logits on the test set
    finetune_s: float = 0.0
    permutation_gain: float | None = None   # mean relative retained-saliency gain of gyro at the final stage
    stages: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _cache_key(data: Dataset, model_cfg: ModelConfig, cfg: TrainConfig, seed: int) -> str:
    blob = json.dumps({"data": data.describe(), "model": model_cfg.to_dict(), "epochs": cfg.dense_epochs,
                       "lr": cfg.lr, "bs": cfg.batch_size, "wd": cfg.weight_decay, "wu": cfg.warmup}, sort_keys=True)
    return f"dense_{data.name}_s{seed}_{hashlib.sha1(blob.encode()).hexdigest()[:10]}"


def dense_model(data: Dataset, seed: int, model_cfg: ModelConfig | None = None, cfg: TrainConfig | None = None,
                cache_dir: str | Path | None = DEFAULT_CACHE, progress: bool = True) -> tuple[StudyClassifier, dict]:
    """The trained dense model for `seed` and {accuracy, train_s, cached}; trained once, then read from the
    cache, so every pattern of a seed starts from the very same weights."""
    gen = seed_everything(seed)
    model = StudyClassifier(data.tokens, data.patch_dim, data.classes, model_cfg)
    path = Path(cache_dir) / f"{_cache_key(data, model_cfg, cfg, seed)}.safetensors" if cache_dir else None
    if path is not None and path.is_file():
        from safetensors import safe_open

        model.load_state_dict(load_file(path))
        with safe_open(path, "pt") as f:
            info = json.loads(f.metadata()["info"])
        return model, info | {"cached": True}
    start = time.perf_counter()
    train(model, data, cfg.dense_epochs, cfg.lr, cfg, gen, desc=f"dense seed {seed}", progress=progress)
    info = {"accuracy": evaluate(model, data), "train_s": time.perf_counter() - start}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, path, metadata={"info": json.dumps(info), "spec": json.dumps(model.spec())})
    return model, info | {"cached": False}


def _weighted_sparsity(pruner) -> float:
    total = sum(lm.mask.numel() for lm in pruner.masks.values())
    kept = sum(int(lm.mask.sum()) for lm in pruner.masks.values())
    return 1.0 - kept / total


def prune_and_finetune(model: StudyClassifier, data: Dataset, pattern_name: str, sparsity: float, seed: int,
                       cfg: TrainConfig, finetune_epochs: int, progress: bool = True):
    """Gradual pruning with masks + fine-tuning, in place.  Returns (pruner, masked accuracy, seconds)."""
    row = get_row(pattern_name, sparsity)
    if row.gyro and not gyro_available():
        raise StudyError("'hinm+gyro' needs exporter.permute (gyro-permutation, issue #3), which is not installed")
    gen = seed_everything(seed)
    pruner = make_pruner(model, row.pattern(), sparsity, gyro=row.gyro, seed=seed, include=PRUNABLE, exclude=DENSE)
    steps = stage_steps(len(pruner.schedule), finetune_epochs, data, cfg)
    hooks = [(step, lambda s=s: pruner.prune_to(s)) for step, s in zip(steps, pruner.schedule, strict=True)]
    start = time.perf_counter()
    train(model, data, finetune_epochs, cfg.finetune_lr, cfg, gen, hooks=hooks,
          desc=f"{row.name} {sparsity:g} seed {seed}", progress=progress)
    return pruner, evaluate(model, data), time.perf_counter() - start


def run_pattern(pattern: str, sparsity: float, seed: int, finetune_epochs: int | None = None, *,
                dataset: str | Dataset = "mnist5k", model_cfg: ModelConfig | None = None,
                cfg: TrainConfig | None = None, cache_dir: str | Path | None = DEFAULT_CACHE,
                progress: bool = True) -> PatternResult:
    """One study cell.  `pattern` is a row name of `specs.ROWS` ('dense', 'unstructured', '2:4', 'block',
    'tw', 'tvw', 'hinm', 'hinm+gyro'); raises StudyError for an unknown name or a sparsity the row does not
    allow.  `finetune_epochs` defaults to cfg.finetune_epochs."""
    row = get_row(pattern, sparsity)
    model_cfg, cfg = model_cfg or ModelConfig(), cfg or TrainConfig()
    epochs = cfg.finetune_epochs if finetune_epochs is None else int(finetune_epochs)
    data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    dense, info = dense_model(data, seed, model_cfg, cfg, cache_dir, progress)
    result = PatternResult(row.name, float(sparsity), seed, data.name, info["accuracy"])
    if row.pattern() is None:
        result.oneshot_acc = result.masked_acc = result.final_acc = info["accuracy"]
        return result

    # One-shot: the final masks straight from the dense weights, no training.
    oneshot = copy.deepcopy(dense)
    seed_everything(seed)
    shot = make_pruner(oneshot, row.pattern(), sparsity, gyro=row.gyro, seed=seed, include=PRUNABLE, exclude=DENSE)
    shot.prune_to(sparsity)
    result.oneshot_acc = evaluate(oneshot, data)

    model = copy.deepcopy(dense)
    pruner, result.masked_acc, result.finetune_s = prune_and_finetune(model, data, row.name, sparsity, seed, cfg,
                                                                       epochs, progress)
    result.stages = list(pruner.schedule)
    result.achieved = _weighted_sparsity(pruner)
    if row.gyro:
        last = [e for e in pruner.permutation_log if abs(e["stage"] - sparsity) < 1e-9]
        result.permutation_gain = sum(e["gain"] for e in last) / max(1, len(last))
    masked_logits = predict(model, data.x_test)
    pruner.finalize()
    result.sparse_layers = sum(isinstance(m, SparseLinear) for m in model.modules())
    final_logits = predict(model, data.x_test)
    result.final_acc = float((final_logits.argmax(1) == data.y_test).float().mean())
    result.max_logit_diff = float((final_logits - masked_logits).abs().max())
    return result
