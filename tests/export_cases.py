"""Small models × patterns × dtypes for the export, validation and TensorRT-RTX tests (exported once per
test session and shared, because a dynamo export takes ~2 s on the CI machine)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from exporter import HiNM, SparseLinear, select_masks, sparsify, zoo
from exporter.formats import compress
from exporter.masks import _tiles_to_mask
from exporter.onnx_export import export_onnx
from exporter.sparsify import _set_module

# pattern spec, sparsity.  TVW with output_share prunes whole output rows (bias-only outputs) and gives
# tiles of different kept widths; TW has dense tiles (no plugin: only the local function runs it).
PATTERNS = {
    "hinm": ("hinm:vector=32", 0.75),
    "tvw": ("tvw:tile=32,output_share=0.5", 0.7),
    "tw": ("tw:tile=32", 0.4),
    "nm": ("nm", 0.5),
    "hinm_permuted": ("hinm:vector=32", 0.75),   # tile rows scattered over N, kept columns in free order
}
MODELS = {
    "mlp": (lambda: zoo.MLP(128, 96, 64), (2, 128)),
    "encoder": (lambda: zoo.Encoder(64, 2, 128, 1), (2, 16, 64)),
}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
# stated tolerance, max |onnx - torch| / max |torch|: fp32 differs by summation order only; fp16 rounds
# every intermediate tensor (the two sides round at different points)
REL_TOL = {torch.float32: 1e-5, torch.float16: 1e-2}
_DIR = Path(tempfile.mkdtemp(prefix="sparsetrt-export-tests-"))
atexit.register(shutil.rmtree, _DIR, ignore_errors=True)


def permuted_hinm(model: nn.Module, vector: int, sparsity: float, gen: torch.Generator) -> nn.Module:
    """Replace every nn.Linear by a HiNM SparseLinear whose tiles take a random permutation of the output
    rows (row_index ≠ arange) and keep their columns in a shuffled 2:4 grouping (index_order='free')."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    for name, lin in layers.items():
        w = lin.weight.detach()
        lm = select_masks({name: w.abs()}, HiNM(vector=vector), sparsity)[name]
        perm = torch.randperm(w.shape[0], generator=gen)
        rows = perm[lm.rows]
        cols = [c[torch.randperm(len(c), generator=gen)] for c in lm.cols]
        mask = _tiles_to_mask(tuple(w.shape), rows, cols, w.abs(), True)
        fmt = compress(w, mask, rows, cols, two_four=True, pattern=f"HiNM(V={vector},2:4)", index_order="free", name=name)
        _set_module(model, name, SparseLinear(fmt, lin.bias))
    return model


def build(model_name: str, pattern: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = MODELS[model_name][0]().eval()
    spec, sparsity = PATTERNS[pattern]
    if pattern == "hinm_permuted":
        return permuted_hinm(model, 32, sparsity, torch.Generator().manual_seed(seed + 1))
    sparsify(model, spec, sparsity, progress=False)
    return model


@functools.cache
def exported(model_name: str, pattern: str, dtype: str) -> tuple[Path, nn.Module]:
    """(ONNX path, the PyTorch model it came from), exported once per session; do not mutate the model."""
    model = build(model_name, pattern).to(DTYPES[dtype])
    example = torch.randn(*MODELS[model_name][1], generator=torch.Generator().manual_seed(7)).to(DTYPES[dtype])
    path = _DIR / f"{model_name}-{pattern}-{dtype}.onnx"
    export_onnx(model, example, path)
    return path, model


def fresh_input(model_name: str, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    """Batch and sequence sizes different from (and odd, unlike) the export example."""
    feat = MODELS[model_name][1][-1]
    shape = (5, feat) if model_name == "mlp" else (3, 7, feat)
    return torch.randn(*shape, generator=gen).to(dtype)


def rel_err(got, ref) -> float:
    got, ref = torch.as_tensor(got).double(), torch.as_tensor(ref).double()
    return float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
