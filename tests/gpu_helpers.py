"""Shared helpers for the GPU tests and tools/kernel_sweep.py: build formats, run the kernel, check it."""

from __future__ import annotations

import torch

from exporter import NM, TVW, HiNM, select_masks
from exporter.formats import compress
from exporter.masks import _tiles_to_mask

# (name, pattern, sparsity, N, K): non-square, K not always a multiple of 32, variable-Kt TVW tiles,
# pruned output rows (fill path), 2:4 only, TVW with a long K (the wgmma kernel's per-tile values maps).
CASES = [
    ("hinm64", HiNM(vector=64), 0.75, 256, 320),
    ("hinm128", HiNM(vector=128), 0.875, 384, 512),
    ("hinm32", HiNM(vector=32), 0.75, 160, 200),
    ("tvw64", TVW(tile=64), 0.75, 320, 448),
    ("tvw128_outprune", TVW(tile=128, output_share=0.4), 0.8, 512, 256),
    ("nm24", NM(2, 4), 0.5, 128, 256),
    ("tvw128_longk", TVW(tile=128), 0.75, 384, 2048),   # K >= 2048, 128-row tiles: per-tile values maps on Hopper
]
# Stated tolerances (relative Frobenius error vs float64; output rounding dominates):
REL_TOL = {torch.float16: 2e-3, torch.bfloat16: 1.2e-2}


def make_format(pattern, sparsity, n, k, dtype, gen, *, permute_rows=False, free_order=False, bias=True, row_scale=None):
    """row_scale: optional [n] factors on the rows of a random W (e.g. so TVW tiles keep different widths).
    permute_rows: True scatters every tile's rows over the outputs; "odd tiles" shuffles the rows of odd tiles only."""
    w = torch.randn(n, k, generator=gen)
    if row_scale is not None:
        w = w * row_scale[:, None]
    lm = select_masks({"fc": w.abs()}, pattern, sparsity)["fc"]
    rows, cols = lm.rows, lm.cols
    if free_order:   # kept columns in a non-ascending 2:4 grouping, as input permutation produces
        cols = [c[torch.randperm(len(c), generator=gen)] for c in cols]
    if permute_rows == "odd tiles":   # odd tiles' rows shuffled among themselves: contiguous and scattered tiles mixed
        rows = rows.clone()
        rows[1::2] = torch.stack([r[torch.randperm(len(r), generator=gen)] for r in rows[1::2]])
    elif permute_rows:  # tile rows scattered over the outputs, as a restored output permutation produces
        perm = torch.randperm(n, generator=gen)
        rows = perm[rows]
    mask = _tiles_to_mask((n, k), rows, cols, w.abs(), lm.two_four)
    fmt = compress(w.to(dtype), mask, rows, cols, two_four=True, index_order="free" if free_order else "ascending")
    b = torch.randn(n, generator=gen).to(dtype) if bias else None
    return fmt, b


def wgmma_available() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)


def family_applies(family, fmt, pad_to=8) -> bool:
    """Whether a kernel family can run this format on this GPU (the wgmma kernel: Hopper, 64-row tiles)."""
    return family == "mma_sp" or (wgmma_available() and fmt.tile_rows % 64 == 0 and pad_to % 8 == 0)


def run_kernel(fmt, x, bias, activation="none", pad_to=8, device="cuda", family=None, y_feature_major=False,
               values_map=True, guard_rows=0):
    """Launch through enqueue with the output poisoned (NaN) first; returns y [M, N] on the CPU.
    family: "mma_sp", "wgmma_sp" or None (the launch layer's choice for this GPU).  y_feature_major: the
    kernel writes YT[N, M] (returned transposed back to [M, N]).  values_map=False: no kept count for the launch
    layer, so the wgmma kernel loads every tile's values with cp.async instead of TMA.  guard_rows: token-major Y
    gets that many poisoned rows past M, and the launch must leave them untouched (asserted here)."""
    from trt_plugins import launch

    f = fmt.to(device)
    x = x.to(device)
    m = x.shape[0]
    xt = launch.to_feature_major(x, pad_to=pad_to)
    assert not (guard_rows and y_feature_major), "guard rows are rows past M of token-major Y"
    shape = (fmt.shape[0], m) if y_feature_major else (m + guard_rows, fmt.shape[0])
    y_buf = torch.full(shape, float("nan"), dtype=x.dtype, device=device)
    y = y_buf[:m] if not y_feature_major else y_buf
    b = bias.to(device) if bias is not None else None
    launch.enqueue(xt_ptr=xt.data_ptr(), ldx=xt.shape[1], values_ptr=f.values.data_ptr(), meta_ptr=f.meta.data_ptr(),
                   k_index_ptr=f.k_index.data_ptr(), k_offsets_ptr=f.k_offsets.data_ptr(),
                   row_index_ptr=f.row_index.data_ptr(), bias_ptr=b.data_ptr() if b is not None else 0,
                   y_ptr=y.data_ptr(), M=m, K=fmt.shape[1], N=fmt.shape[0], tile_rows=fmt.tile_rows,
                   num_tiles=fmt.num_tiles, dtype=str(x.dtype).removeprefix("torch."), activation=activation,
                   stream=None, family=family, y_feature_major=y_feature_major,
                   kept_total=f.k_index.numel() if values_map else None)
    torch.cuda.synchronize()
    if guard_rows:
        assert torch.isnan(y_buf[m:]).all(), "the kernel wrote rows past M"
    return y.cpu().t() if y_feature_major else y.cpu()


def check(fmt, x, bias, y, activation="none"):
    """Compare against the float64 reference of the same (rounded) values; return the relative error."""
    ref = fmt.matmul(x.double(), None if bias is None else bias.double(), activation)
    assert not torch.isnan(y).any(), "some outputs were never written (poison survived)"
    err = ((y.double() - ref).norm() / ref.norm().clamp_min(1e-30)).item()
    assert err < REL_TOL[x.dtype], f"relative error {err:.3g} exceeds {REL_TOL[x.dtype]:g}"
    return err
