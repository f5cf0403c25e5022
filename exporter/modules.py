"""`SparseLinear`: a Linear whose weight lives in the TileSparse format."""

from __future__ import annotations

import torch
from torch import nn

from . import ops  # noqa: F401  (registers torch.ops.sparsetrt.tile_sparse_linear)
from .formats.tilesparse import TENSOR_FIELDS, TileSparseWeight, compress
from .masks import LayerMask


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"SparseLinear ({self.pattern}, {self.out_features}x{self.in_features}): input has "
                             f"{x.shape[-1]} features, expected K={self.in_features}")
        return torch.ops.sparsetrt.tile_sparse_linear(
            x, self.values, self.meta, self.k_index, self.k_offsets, self.row_index, self.bias,
            self.out_features, self.tile_rows, self.two_four, self.activation)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, pattern={self.pattern}, "
                f"tiles={self.k_offsets.numel() - 1}x{self.tile_rows}, sparsity={self.sparsity:.3f}, "
                f"dtype={self.values.dtype}, activation={self.activation}")
