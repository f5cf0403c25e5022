"""`SparseLinear`: a Linear whose weight lives in the TileSparse format."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from . import ops  # noqa: F401  (registers torch.ops.sparsetrt.tile_sparse_linear)
from .formats.tilesparse import TENSOR_FIELDS, TileSparseWeight, compress
from .masks import LayerMask

_EXPORTING = [0]   # > 0 while exporter.onnx_export traces a model


@contextlib.contextmanager
def exporting():
    """Marks an ONNX export in progress: the feature-major layouts have no ONNX/TensorRT counterpart."""
    _EXPORTING[0] += 1
    try:
        yield
    finally:
        _EXPORTING[0] -= 1


class SparseLinear(nn.Module):
    """Holds compressed weights (+ bias) as buffers; forward runs `sparsetrt::tile_sparse_linear`
    (exact reference on the CPU, our sparse-tensor-core kernel on CUDA when available)."""

    def __init__(self, fmt: TileSparseWeight, bias: torch.Tensor | None = None, activation: str = "none") -> None:
        super().__init__()
        fmt.validate()
        self.out_features, self.in_features = fmt.shape
        self.tile_rows, self.two_four = fmt.tile_rows, fmt.two_four
        self.pattern, self.index_order = fmt.pattern, fmt.index_order
        self.activation = activation
        for f, t in fmt.tensors().items():
            self.register_buffer(f, t.detach().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone().to(fmt.values.dtype))

    @classmethod
    def from_linear(cls, linear: nn.Linear, layer: LayerMask, dtype: torch.dtype | None = None,
                    pattern: str = "tilesparse", name: str = "") -> SparseLinear:
        if layer.rows is None or layer.cols is None:
            raise ValueError(f"layer '{name}': its mask has no tile layout; only tile-sparse patterns become SparseLinear")
        index_order = "ascending" if all(bool((torch.diff(c) > 0).all()) for c in layer.cols) else "free"
        fmt = compress(linear.weight, layer.mask, layer.rows, layer.cols, two_four=layer.two_four,
                       pattern=pattern, index_order=index_order, dtype=dtype or linear.weight.dtype, name=name)
        return cls(fmt, linear.bias, activation="none")

    @property
    def format(self) -> TileSparseWeight:
        return TileSparseWeight((self.out_features, self.in_features), self.tile_rows, self.two_four,
                                **{f: getattr(self, f) for f in TENSOR_FIELDS}, pattern=self.pattern,
                                index_order=self.index_order)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.format.density

    def forward(self, x: torch.Tensor, *, x_feature_major: bool = False, y_feature_major: bool = False) -> torch.Tensor:
        """Y[..., N] = act(X · Wᵀ + b).  For chains of sparse layers (fc1 → GELU → fc2), `y_feature_major=True`
        returns YT[N, M] and the next layer takes it with `x_feature_major=True` (x = XT[K, M]): on Hopper the
        kernel writes YT itself and the next one gathers from it, so no transpose runs in between.  The default
        layouts are the ones ONNX export and the TensorRT plugins use."""
        k = x.shape[0] if x_feature_major else x.shape[-1]
        if k != self.in_features or (x_feature_major and x.dim() != 2):
            layout = " as a 2-D XT[K, M] (x_feature_major)" if x_feature_major else " in the last dimension"
            raise ValueError(f"SparseLinear ({self.pattern}, {self.out_features}x{self.in_features}): input has "
                             f"shape {tuple(x.shape)}, expected K={self.in_features} features{layout}")
        if x_feature_major or y_feature_major:
            if _EXPORTING[0]:
                from .onnx_export import ExportError

                raise ExportError(f"SparseLinear ({self.out_features}x{self.in_features}) called with x_feature_major / "
                                  "y_feature_major: those layouts are a PyTorch-runtime option; ONNX export and the "
                                  "TensorRT plugins take the default token-major layouts")
            return torch.ops.sparsetrt.tile_sparse_linear_layout(
                x, self.values, self.meta, self.k_index, self.k_offsets, self.row_index, self.bias,
                self.out_features, self.in_features, self.tile_rows, self.two_four, self.activation,
                x_feature_major, y_feature_major)
        return torch.ops.sparsetrt.tile_sparse_linear(
            x, self.values, self.meta, self.k_index, self.k_offsets, self.row_index, self.bias,
            self.out_features, self.tile_rows, self.two_four, self.activation)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, pattern={self.pattern}, "
                f"tiles={self.k_offsets.numel() - 1}x{self.tile_rows}, sparsity={self.sparsity:.3f}, "
                f"dtype={self.values.dtype}, activation={self.activation}")
