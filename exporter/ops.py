"""The `sparsetrt::tile_sparse_linear` custom op: one op for the CPU reference, the CUDA kernel and the
ONNX export.  The CPU (and fallback) implementation computes the exact reference from the compressed
tensors; `trt_plugins.launch` supplies the CUDA implementation (imported lazily on first CUDA call).
"""

from __future__ import annotations

import torch

from .formats.tilesparse import TileSparseWeight

ACTIVATIONS = ("none", "relu", "gelu")


def _format(values, meta, k_index, k_offsets, row_index, out_features, in_features, tile_rows, two_four):
    return TileSparseWeight((out_features, in_features), tile_rows, two_four, values, meta, k_index, k_offsets, row_index)


@torch.library.custom_op("sparsetrt::tile_sparse_linear", mutates_args=())
def tile_sparse_linear(
    x: torch.Tensor,
    values: torch.Tensor,
    meta: torch.Tensor,
    k_index: torch.Tensor,
    k_offsets: torch.Tensor,
    row_index: torch.Tensor,
    bias: torch.Tensor | None,
    out_features: int,
    tile_rows: int,
    two_four: bool,
    activation: str,
) -> torch.Tensor:
    """Y = act(X · Wᵀ + b) with W in TileSparse format (X: [..., K] → Y: [..., N])."""
    fmt = _format(values, meta, k_index, k_offsets, row_index, out_features, x.shape[-1], tile_rows, two_four)
    return fmt.matmul(x, bias, activation)


@tile_sparse_linear.register_fake
def _(x, values, meta, k_index, k_offsets, row_index, bias, out_features, tile_rows, two_four, activation):
    return x.new_empty(*x.shape[:-1], out_features)


@tile_sparse_linear.register_kernel("cuda")
def _cuda(x, values, meta, k_index, k_offsets, row_index, bias, out_features, tile_rows, two_four, activation):
    try:
        from trt_plugins import launch
    except ImportError:  # the kernels are optional: fall back to the reference math on the GPU
        launch = None
    if launch is not None and launch.supports(x, values, two_four):
        return launch.tile_sparse_linear(x, values, meta, k_index, k_offsets, row_index, bias, out_features,
                                         tile_rows, activation)
    fmt = _format(values, meta, k_index, k_offsets, row_index, out_features, x.shape[-1], tile_rows, two_four)
    return fmt.matmul(x, bias, activation)
