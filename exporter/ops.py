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


# ---- layouts for chaining sparse layers (PyTorch runtime only; ONNX export uses the op above) -----------
def _check_layout(x, in_features: int, x_feature_major: bool) -> None:
    if x_feature_major and (x.dim() != 2 or x.shape[0] != in_features):
        raise ValueError(f"x_feature_major: x must be XT[K={in_features}, M], got shape {tuple(x.shape)}")


@torch.library.custom_op("sparsetrt::tile_sparse_linear_layout", mutates_args=())
def tile_sparse_linear_layout(
    x: torch.Tensor,
    values: torch.Tensor,
    meta: torch.Tensor,
    k_index: torch.Tensor,
    k_offsets: torch.Tensor,
    row_index: torch.Tensor,
    bias: torch.Tensor | None,
    out_features: int,
    in_features: int,
    tile_rows: int,
    two_four: bool,
    activation: str,
    x_feature_major: bool,
    y_feature_major: bool,
) -> torch.Tensor:
    """`tile_sparse_linear` with explicit layouts: x is X[..., K] or, feature-major, XT[K, M]; the result is
    Y[..., N] or, feature-major, YT[N, M].  A feature-major output feeds the next layer's feature-major input
    with no transpose in between (the kernel gathers rows of XT)."""
    _check_layout(x, in_features, x_feature_major)
    return _layout_reference(x, values, meta, k_index, k_offsets, row_index, bias, out_features, in_features,
                             tile_rows, two_four, activation, x_feature_major, y_feature_major)


def _layout_reference(x, values, meta, k_index, k_offsets, row_index, bias, out_features, in_features, tile_rows,
                      two_four, activation, x_feature_major, y_feature_major):
    fmt = _format(values, meta, k_index, k_offsets, row_index, out_features, in_features, tile_rows, two_four)
    y = fmt.matmul(x.t() if x_feature_major else x, bias, activation)
    return y.t().contiguous() if y_feature_major else y


@tile_sparse_linear_layout.register_fake
def _(x, values, meta, k_index, k_offsets, row_index, bias, out_features, in_features, tile_rows, two_four,
      activation, x_feature_major, y_feature_major):
    _check_layout(x, in_features, x_feature_major)
    m = x.shape[1] if x_feature_major else x.shape[:-1].numel()
    if y_feature_major:
        return x.new_empty(out_features, m)
    return x.new_empty(m, out_features) if x_feature_major else x.new_empty(*x.shape[:-1], out_features)


@tile_sparse_linear_layout.register_kernel("cuda")
def _cuda_layout(x, values, meta, k_index, k_offsets, row_index, bias, out_features, in_features, tile_rows,
                 two_four, activation, x_feature_major, y_feature_major):
    _check_layout(x, in_features, x_feature_major)
    try:
        from trt_plugins import launch
    except ImportError:
        launch = None
    if launch is not None and launch.supports(x, values, two_four, in_features):
        return launch.tile_sparse_linear(x, values, meta, k_index, k_offsets, row_index, bias, out_features,
                                         tile_rows, activation, x_feature_major=x_feature_major,
                                         y_feature_major=y_feature_major)
    return _layout_reference(x, values, meta, k_index, k_offsets, row_index, bias, out_features, in_features,
                             tile_rows, two_four, activation, x_feature_major, y_feature_major)


@torch.library.custom_op("sparsetrt::layer_norm_feature_major", mutates_args=())
def layer_norm_feature_major(xt: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm over the features of a feature-major XT[D, M] (each token column normalised) → YT[D, M]:
    keeps a residual stream in the layout the sparse layers gather from."""
    _check_layer_norm(xt, weight, bias)
    return _layer_norm_reference(xt, weight, bias, eps)


def _check_layer_norm(xt, weight, bias) -> None:
    if xt.dim() != 2 or weight.shape != (xt.shape[0],) or bias.shape != (xt.shape[0],):
        raise ValueError(f"layer_norm_feature_major: expected XT[D, M] with weight and bias of shape (D,), got "
                         f"{tuple(xt.shape)}, {tuple(weight.shape)}, {tuple(bias.shape)}")


def _layer_norm_reference(xt, weight, bias, eps):
    return torch.nn.functional.layer_norm(xt.t(), (xt.shape[0],), weight, bias, eps).t().contiguous()


@layer_norm_feature_major.register_fake
def _(xt, weight, bias, eps):
    _check_layer_norm(xt, weight, bias)
    return xt.new_empty(xt.shape)


@layer_norm_feature_major.register_kernel("cuda")
def _cuda_ln(xt, weight, bias, eps):
    _check_layer_norm(xt, weight, bias)   # the CUDA path skips the CPU implementation and its check
    try:
        from trt_plugins import launch
    except ImportError:
        return _layer_norm_reference(xt, weight, bias, eps)
    return launch.layer_norm_feature_major(xt, weight, bias, eps)


@torch.library.custom_op("sparsetrt::add_layer_norm", mutates_args=())
def add_layer_norm(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor,
                   eps: float, feature_major: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(Y, YT) with Y = LayerNorm(x + residual) over the last dimension of token-major x[..., D] and, when
    `feature_major`, YT[D, M] = the same values feature-major (M tokens; else an empty tensor): a post-LN block's
    residual stream and the next sparse layer's input from one kernel on CUDA.  x + residual is rounded to x's
    dtype first, as `ln(x + r)` on such tensors does; statistics in fp32."""
    _check_add_layer_norm(x, residual, weight, bias)
    return _add_layer_norm_reference(x, residual, weight, bias, eps, feature_major)


def _check_add_layer_norm(x, residual, weight, bias) -> None:
    d = x.shape[-1] if x.dim() else 0
    if x.dim() < 1 or weight.shape != (d,) or bias.shape != (d,):
        raise ValueError(f"add_layer_norm: expected x[..., D] with weight and bias of shape (D,), got "
                         f"{tuple(x.shape)}, {tuple(weight.shape)}, {tuple(bias.shape)}")
    if residual is not None and (residual.shape != x.shape or residual.dtype != x.dtype):
        raise ValueError(f"add_layer_norm: residual must match x ({tuple(x.shape)}, {x.dtype}), got "
                         f"{tuple(residual.shape)}, {residual.dtype}")


def _add_layer_norm_reference(x, residual, weight, bias, eps, feature_major):
    d = x.shape[-1]
    s = x if residual is None else x + residual
    y = torch.nn.functional.layer_norm(s.float(), (d,), weight.float(), bias.float(), eps).to(x.dtype)
    yt = y.reshape(-1, d).t().contiguous() if feature_major else x.new_empty(0)
    return y, yt


@add_layer_norm.register_fake
def _(x, residual, weight, bias, eps, feature_major):
    _check_add_layer_norm(x, residual, weight, bias)
    d = x.shape[-1]
    return x.new_empty(x.shape), (x.new_empty(d, x.numel() // d) if feature_major else x.new_empty(0))


@add_layer_norm.register_kernel("cuda")
def _cuda_add_ln(x, residual, weight, bias, eps, feature_major):
    _check_add_layer_norm(x, residual, weight, bias)
    try:
        from trt_plugins import launch
    except ImportError:
        launch = None
    if launch is None or not launch.add_layer_norm_supported(x, residual):
        return _add_layer_norm_reference(x, residual, weight, bias, eps, feature_major)
    y, yt = launch.add_layer_norm(x, residual, weight, bias, eps, feature_major)
    return y, (yt if yt is not None else x.new_empty(0))
