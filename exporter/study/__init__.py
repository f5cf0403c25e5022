"""The accuracy study and the end-to-end demo (issue #6): a small transformer classifier on a real
dataset that installs with a package, pruned with every pattern under one fine-tuning budget.

    from exporter.study import run_pattern, run_demo
    r = run_pattern("hinm+gyro", 0.75, seed=0)          # one cell: dense → one-shot / gradual + fine-tune
    summary = run_demo("hinm", 0.75, quick=True, out_dir="out/demo")   # train → prune → export → validate

`tools/study_accuracy.py` runs the whole grid and writes docs/RESULTS.md.
"""

from .data import DATASETS, Dataset, DatasetUnavailable, load_dataset
from .demo import load_classifier, run_demo, save_classifier
from .model import DENSE, PRUNABLE, ModelConfig, StudyClassifier
from .pruning import GyroPruner, common_schedule, gyro_available
from .render import write_results
from .report import run_study
from .runner import QUICK_MODEL, QUICK_TRAIN, PatternResult, dense_model, run_pattern
from .specs import ROWS, StudyError, get_row, study_grid
from .train import TrainConfig, evaluate, train

__all__ = [
    "DATASETS", "DENSE", "PRUNABLE", "QUICK_MODEL", "QUICK_TRAIN", "ROWS", "Dataset", "DatasetUnavailable",
    "GyroPruner", "ModelConfig", "PatternResult", "StudyClassifier", "StudyError", "TrainConfig", "common_schedule",
    "dense_model", "evaluate", "get_row", "gyro_available", "load_classifier", "load_dataset", "run_demo", "run_pattern",
    "run_study", "save_classifier", "study_grid", "train", "write_results",
]
