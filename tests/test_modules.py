"""SparseLinear (CPU reference) against the masked dense Linear, on odd batch sizes and 3-D inputs."""

import pytest
import torch
from torch import nn

from exporter import NM, TVW, TW, HiNM, SparseLinear, select_masks


@pytest.mark.parametrize("pattern,sparsity", [(HiNM(vector=32), 0.75), (HiNM(vector=64), 0.875), (TVW(tile=32), 0.75),
                                              (TVW(tile=32, output_share=0.4), 0.8), (TW(tile=32), 0.5), (NM(2, 4), 0.5)])
@pytest.mark.parametrize("batch", [1, 7, 129])
def test_sparse_linear_matches_masked_dense(pattern, sparsity, batch, rng):
    k = 160 if not isinstance(pattern, NM) else 128
    linear = nn.Linear(k, 128)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(128, k, generator=rng))
        linear.bias.copy_(torch.randn(128, generator=rng))
    lm = select_masks({"fc": linear.weight.abs()}, pattern, sparsity)["fc"]
    sparse = SparseLinear.from_linear(linear, lm, name="fc")
    x = torch.randn(batch, k, generator=rng)
    ref = nn.functional.linear(x.double(), (linear.weight * lm.mask).double(), linear.bias.double())
    got = sparse(x)
    assert got.dtype == torch.float32 and got.shape == (batch, 128)
    # fp32 accumulation of <= 160 terms of O(1) values: well within 1e-4 relative of the float64 reference
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-4)
    x3 = torch.randn(3, batch, k, generator=rng)
    torch.testing.assert_close(sparse(x3), nn.functional.linear(x3, linear.weight * lm.mask, linear.bias), rtol=1e-5, atol=1e-4)
    if pattern.kind == "tvw" and pattern.output_share:   # pruned output features return just their bias
        pruned = torch.ones(128, dtype=torch.bool)
        covered = (sparse.k_offsets.numel() - 1) * sparse.tile_rows
        pruned[sparse.row_index[:covered].long()] = False
        assert pruned.any()
        torch.testing.assert_close(got[:, pruned], linear.bias[pruned].expand(batch, -1))


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
def test_half_precision_values(dtype, tol, rng):
    linear = nn.Linear(256, 64)
    lm = select_masks({"fc": linear.weight.abs()}, HiNM(vector=32), 0.75)["fc"]
    sparse = SparseLinear.from_linear(linear, lm, dtype=dtype)
    assert sparse.values.dtype == dtype and sparse.bias.dtype == dtype
    x = torch.randn(33, 256, generator=rng).to(dtype)
    ref = nn.functional.linear(x.double(), (linear.weight * lm.mask).to(dtype).double(), linear.bias.to(dtype).double())
    got = sparse(x)
    assert got.dtype == dtype
    # stated tolerance: output rounding of fp16 (2^-11) / bf16 (2^-8) relative to the output norm
    assert (got.double() - ref).norm() / ref.norm() < tol


def test_activation_and_repr(rng):
    linear = nn.Linear(64, 32)
    lm = select_masks({"fc": linear.weight.abs()}, HiNM(vector=32), 0.75)["fc"]
    sparse = SparseLinear.from_linear(linear, lm)
    x = torch.randn(5, 64, generator=rng)
    sparse.activation = "gelu"
    torch.testing.assert_close(sparse(x), nn.functional.gelu(nn.functional.linear(x, linear.weight * lm.mask, linear.bias)))
    assert "sparsity=0.750" in repr(sparse) and "tiles=1x32" in repr(sparse)
    sparse.activation = "swish"
    with pytest.raises(ValueError, match="activation must be"):
        sparse(x)
    with pytest.raises(ValueError, match="expected K=64"):
        SparseLinear.from_linear(linear, lm)(torch.randn(2, 65))


@pytest.mark.parametrize("pattern", [HiNM(vector=32), TVW(tile=32)], ids=["hinm", "tvw"])
def test_feature_major_layouts_compute_the_same_function(pattern, rng):
    """x_feature_major / y_feature_major (chaining layers without transposes) on the reference path: the
    same numbers as the token-major call, transposed; wrong layouts raise naming the expected shape."""
    linear = nn.Linear(96, 64)
    lm = select_masks({"fc": linear.weight.abs()}, pattern, 0.75)["fc"]
    sparse = SparseLinear.from_linear(linear, lm)
    sparse.activation = "gelu"
    x = torch.randn(13, 96, generator=rng)
    y = sparse(x)
    torch.testing.assert_close(sparse(x, y_feature_major=True), y.t(), rtol=0, atol=0)
    torch.testing.assert_close(sparse(x.t().contiguous(), x_feature_major=True), y, rtol=0, atol=0)
    torch.testing.assert_close(sparse(x.t(), x_feature_major=True, y_feature_major=True), y.t(), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"expected K=96 features as a 2-D XT\[K, M\]"):
        sparse(x, x_feature_major=True)
    with pytest.raises(ValueError, match=r"expected K=96 features as a 2-D XT"):
        sparse(x.t().reshape(96, 13, 1), x_feature_major=True)


def test_add_layer_norm_op_reference(rng):
    """The op's reference path: LayerNorm of x + residual (the sum rounded to the dtype) in both layouts; no
    residual is a plain LayerNorm; bad weights or residuals raise naming the op."""
    x, r = (torch.randn(3, 5, 40, generator=rng).half() for _ in range(2))
    w, b = torch.randn(40, generator=rng), torch.randn(40, generator=rng)
    y, yt = torch.ops.sparsetrt.add_layer_norm(x, r, w, b, 1e-5, True)
    ref = nn.functional.layer_norm((x + r).double(), (40,), w.double(), b.double(), 1e-5)
    assert y.dtype == torch.float16 and yt.shape == (40, 15)
    torch.testing.assert_close(y.double(), ref, atol=4e-3, rtol=4e-3)
    assert torch.equal(yt.t().reshape(3, 5, 40), y)
    y0, empty = torch.ops.sparsetrt.add_layer_norm(x, None, w, b, 1e-5, False)
    torch.testing.assert_close(y0.double(), nn.functional.layer_norm(x.double(), (40,), w.double(), b.double(), 1e-5),
                               atol=4e-3, rtol=4e-3)
    assert empty.numel() == 0
    with pytest.raises(ValueError, match=r"add_layer_norm: expected x\[\.\.\., D\] with weight and bias of shape"):
        torch.ops.sparsetrt.add_layer_norm(x, r, w[:8], b, 1e-5, True)
    with pytest.raises(ValueError, match=r"add_layer_norm: residual must match x"):
        torch.ops.sparsetrt.add_layer_norm(x, r[:1], w, b, 1e-5, True)


def test_layer_norm_feature_major_op_reference(rng):
    """The op's reference path: LayerNorm of each column of XT equals torch's layer_norm of X; bad shapes raise."""
    x = torch.randn(13, 96, generator=rng) * 2 + 1
    w, b = torch.randn(96, generator=rng), torch.randn(96, generator=rng)
    y = torch.ops.sparsetrt.layer_norm_feature_major(x.t().contiguous(), w, b, 1e-5)
    torch.testing.assert_close(y.t(), nn.functional.layer_norm(x, (96,), w, b, 1e-5))
    with pytest.raises(ValueError, match=r"expected XT\[D, M\] with weight and bias of shape \(D,\)"):
        torch.ops.sparsetrt.layer_norm_feature_major(x, w, b, 1e-5)
