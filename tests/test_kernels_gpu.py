"""The sparse-tensor-core kernels on a real GPU (run on the device: tools/run_gpu_tests.sh).

Every check: fresh random inputs, output poisoned with NaN before the launch, compared with the
float64 reference computed from the same compressed (rounded) values.  Tolerances: REL_TOL in
tests/gpu_helpers.py (fp16 2e-3, bf16 1.2e-2 relative Frobenius error)."""

import numpy as np
import pytest
import torch

from exporter import TVW, HiNM, SparseLinear, select_masks
from exporter.formats import meta as meta_layout

from .gpu_helpers import CASES, REL_TOL, check, family_applies, make_format, run_kernel, wgmma_available

pytestmark = pytest.mark.gpu
DTYPES = [torch.float16, torch.bfloat16]
FAMILIES = ["mma_sp", "wgmma_sp"]   # mma.sp (sm_80+) and the Hopper wgmma.sp kernel (sm_90a)


def skip_unless_applies(family, fmt, pad_to=8):
    if not family_applies(family, fmt, pad_to):
        pytest.skip(f"{family} does not run tile_rows={fmt.tile_rows} / pad_to={pad_to} on "
                    f"{torch.cuda.get_device_name()} (wgmma_sp: sm_90, 64-row tiles, aligned XT rows)")


def test_mma_sp_fragment_layout_probe(rng):
    """One mma.sp with host-built fragments: confirms the A, B, metadata and D layouts we assume."""
    from trt_plugins import launch

    rt = launch.runtime(0)
    fn = rt.module.get_function("probe_mma_sp_f16")
    a = torch.randint(-3, 4, (16, 32), generator=rng).float()
    pos = torch.stack([torch.randperm(4, generator=rng)[:2].sort().values for _ in range(16 * 8)]).reshape(16, 16)
    dense = torch.zeros(16, 32)
    comp = torch.zeros(16, 16)
    for r in range(16):
        for grp in range(8):
            for j in range(2):
                c = 4 * grp + int(pos[r, 2 * grp + j])
                dense[r, c] = a[r, c]
                comp[r, 2 * grp + j] = a[r, c]
    b = torch.randint(-3, 4, (32, 8), generator=rng).float()
    expect = dense @ b          # small integers: exact in fp16/fp32
    h = lambda t: t.half().numpy().view(np.uint16).astype(np.uint32)  # noqa: E731
    pack = lambda lo, hi: (h(lo) | (h(hi) << 16)).astype(np.uint32)  # noqa: E731
    af, bf = np.zeros((32, 4), np.uint32), np.zeros((32, 4), np.uint32)
    words = meta_layout.encode(pos.numpy())   # [g][t] for one 16x32 block
    ef = np.zeros(32, np.uint32)
    for lane in range(32):
        g, t = lane // 4, lane % 4
        af[lane] = [pack(comp[g, 2 * t], comp[g, 2 * t + 1]), pack(comp[g + 8, 2 * t], comp[g + 8, 2 * t + 1]),
                    pack(comp[g, 8 + 2 * t], comp[g, 9 + 2 * t]), pack(comp[g + 8, 8 + 2 * t], comp[g + 8, 9 + 2 * t])]
        bf[lane] = [pack(b[8 * j + 2 * t, g], b[8 * j + 2 * t + 1, g]) for j in range(4)]
        ef[lane] = words[g * 2 + (t & 1)]
    # keep the device copies alive until the launch has finished (else the allocator reuses their memory)
    a_d, b_d, e_d = (torch.from_numpy(arr.view(np.int32).copy()).cuda() for arr in (af, bf, ef))
    out = torch.full((32, 4), float("nan"), device="cuda")
    fn(np.uintp(a_d.data_ptr()), np.uintp(b_d.data_ptr()), np.uintp(e_d.data_ptr()),
       np.uintp(out.data_ptr()), block=(32, 1, 1), grid=(1, 1))
    torch.cuda.synchronize()
    got = torch.zeros(16, 8)
    for lane in range(32):
        g, t = lane // 4, lane % 4
        got[g, 2 * t], got[g, 2 * t + 1], got[g + 8, 2 * t], got[g + 8, 2 * t + 1] = out[lane].cpu()
    assert torch.equal(got, expect), f"fragment layout mismatch:\n{got}\n{expect}"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("m", [1, 7, 129, 4097])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_kernel_matches_float64_reference(case, m, dtype, family, rng):
    _, pattern, sparsity, n, k = case
    fmt, bias = make_format(pattern, sparsity, n, k, dtype, rng)
    skip_unless_applies(family, fmt)
    x = torch.randn(m, k, generator=rng).to(dtype)
    check(fmt, x, bias, run_kernel(fmt, x, bias, family=family))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fused_activation_no_bias(activation, dtype, family, rng):
    fmt, _ = make_format(HiNM(vector=64), 0.75, 256, 384, dtype, rng)
    skip_unless_applies(family, fmt)
    x = torch.randn(300, 384, generator=rng).to(dtype)
    check(fmt, x, None, run_kernel(fmt, x, None, activation, family=family), activation)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("activation", ["none", "gelu"])
def test_pruned_outputs_get_activated_bias(activation, family, rng):
    """TVW with output pruning: rows past the tiles output act(bias), written by the fill CTAs."""
    fmt, bias = make_format(TVW(tile=64, output_share=0.5), 0.8, 384, 256, torch.float16, rng)
    skip_unless_applies(family, fmt)
    assert fmt.num_tiles * fmt.tile_rows < 384
    x = torch.randn(77, 256, generator=rng).half()
    check(fmt, x, bias, run_kernel(fmt, x, bias, activation, family=family), activation)


@pytest.mark.parametrize("m", [7, 130])
def test_scattered_rows_free_order_and_unaligned_activations(m, rng):
    """row_index scatter (no vector stores), non-ascending kept columns, XT rows not 16-byte aligned
    (mma_sp only; the automatic choice falls back to it for unaligned rows)."""
    fmt, bias = make_format(HiNM(vector=64), 0.75, 192, 256, torch.float16, rng, permute_rows=True, free_order=True)
    assert fmt.index_order == "free"
    x = torch.randn(m, 256, generator=rng).half()
    check(fmt, x, bias, run_kernel(fmt, x, bias, pad_to=1))   # ldx = M: odd, unaligned rows
    for family in FAMILIES:
        if family_applies(family, fmt):
            check(fmt, x, bias, run_kernel(fmt, x, bias, family=family))


@pytest.mark.parametrize("family", FAMILIES)
def test_large_k_and_many_tiles(family, rng):
    fmt, bias = make_format(HiNM(vector=128), 0.75, 1024, 4096, torch.float16, rng)
    skip_unless_applies(family, fmt)
    x = torch.randn(513, 4096, generator=rng).half()
    check(fmt, x, bias, run_kernel(fmt, x, bias, family=family))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_long_token_axis_and_variable_tvw_tiles(family, dtype, rng):
    """M = 32768 (128 token tiles of the wgmma kernel) and TVW tiles whose kept widths differ per tile,
    including widths that are odd multiples of 32 (half a wgmma stage)."""
    scale = torch.tensor([1.0, 0.6, 1.7, 0.9]).repeat_interleave(128)   # tiles of different weight: different widths
    fmt, bias = make_format(TVW(tile=128), 0.75, 512, 768, dtype, rng, row_scale=scale)
    skip_unless_applies(family, fmt)
    widths = (fmt.k_offsets[1:] - fmt.k_offsets[:-1]).tolist()
    assert len(set(widths)) > 1 and any(w_ % 64 for w_ in widths), widths
    x = torch.randn(32768, 768, generator=rng).to(dtype)
    check(fmt, x, bias, run_kernel(fmt, x, bias, family=family))


@pytest.mark.skipif(not wgmma_available(), reason="the wgmma kernel needs compute capability 9.0")
def test_automatic_choice_is_wgmma_on_hopper(rng):
    from trt_plugins import launch

    fmt, bias = make_format(HiNM(vector=128), 0.75, 256, 320, torch.float16, rng)
    before = dict(launch.LAUNCHES_BY_FAMILY)
    x = torch.randn(300, 320, generator=rng).half()
    check(fmt, x, bias, run_kernel(fmt, x, bias))
    assert launch.LAUNCHES_BY_FAMILY["wgmma_sp"] == before["wgmma_sp"] + 1


@pytest.mark.skipif(not wgmma_available(), reason="the feature-major output is a wgmma kernel variant (sm_90)")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("m", [1, 7, 129, 4097])
@pytest.mark.parametrize("case", [c for c in CASES if c[3] % 64 == 0], ids=[c[0] for c in CASES if c[3] % 64 == 0])
def test_feature_major_output_matches_reference(case, m, dtype, rng):
    """The *_yfm kernels write YT[N, M] (poisoned first): every case with 64-row-multiple tiles, M tails
    (M % 8 != 0 takes the element-store path), pruned rows (fill items), GELU."""
    _, pattern, sparsity, n, k = case
    fmt, bias = make_format(pattern, sparsity, n, k, dtype, rng)
    skip_unless_applies("wgmma_sp", fmt)
    x = torch.randn(m, k, generator=rng).to(dtype)
    y = run_kernel(fmt, x, bias, "gelu", family="wgmma_sp", y_feature_major=True)
    check(fmt, x, bias, y, "gelu")


def test_feature_major_output_needs_the_wgmma_family():
    from trt_plugins import launch

    with pytest.raises(ValueError, match="y_feature_major"):
        launch.plan(64, 128, 128, 128, 1, "float16", family="mma_sp", y_feature_major=True)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("pattern", [HiNM(vector=128), TVW(tile=128)], ids=["hinm128", "tvw128"])
def test_feature_major_chain_without_transposes(pattern, family, rng, monkeypatch):
    """fc1 (y_feature_major) → fc2 (x_feature_major), as the encoder's FFN runs, on both kernel families
    (mma_sp transposes after its GEMM), against the float64 reference of the token-major chain."""
    from trt_plugins import launch

    monkeypatch.setenv("SPARSETRT_KERNEL", family)
    if not family_applies(family, make_format(pattern, 0.75, 256, 128, torch.float16, rng)[0]):
        pytest.skip(f"{family} does not run on {torch.cuda.get_device_name()}")
    layers = []
    for n, k in ((512, 256), (256, 512)):
        fmt, bias = make_format(pattern, 0.75, n, k, torch.float16, rng)
        layers.append(SparseLinear(fmt, bias, activation="gelu" if n == 512 else "none").cuda())
    x = torch.randn(1000, 256, generator=rng).half()   # M % 8 == 0: a forced wgmma_sp needs aligned XT rows
    before = launch.LAUNCHES_BY_FAMILY[family]
    ht = layers[0](x.cuda(), y_feature_major=True)
    assert ht.shape == (512, 1000)
    y = layers[1](ht, x_feature_major=True)
    torch.cuda.synchronize()
    assert launch.LAUNCHES_BY_FAMILY[family] == before + 2
    f1, f2 = (lay.format.to("cpu") for lay in layers)
    h_ref = f1.matmul(x.double(), layers[0].bias.cpu().double(), "gelu")
    ref = f2.matmul(ht.cpu().t().double(), layers[1].bias.cpu().double())   # fc2 on fc1's actual fp16 output
    assert ((ht.cpu().t().double() - h_ref).norm() / h_ref.norm()).item() < REL_TOL[torch.float16]
    assert ((y.cpu().double() - ref).norm() / ref.norm()).item() < REL_TOL[torch.float16]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("d,m,pad", [(1024, 4097, 0), (200, 7, 8), (37, 1, 0), (768, 130, 3)])
def test_layer_norm_feature_major_matches_float64(d, m, pad, dtype, rng):
    """Our LayerNorm over the features of XT[D, M] (rows padded by `pad`), output poisoned first, against the
    float64 reference of the same rounded inputs; odd D and M exercise the partial warps and blocks."""
    from trt_plugins import launch

    x = (torch.randn(d, m, generator=rng) * 3 + 1.5).to(dtype)     # an offset mean, as residual streams have
    w, b = torch.randn(d, generator=rng).to(dtype), torch.randn(d, generator=rng).to(dtype)
    xt = torch.zeros(d, m + pad, dtype=dtype, device="cuda")[:, :m]
    xt.copy_(x.cuda())
    out = torch.full((d, m), float("nan"), dtype=dtype, device="cuda")
    launch.layer_norm_feature_major(xt, w.cuda(), b.cuda(), 1e-5, out=out)
    torch.cuda.synchronize()
    ref = torch.nn.functional.layer_norm(x.double().t(), (d,), w.double(), b.double(), 1e-5).t()
    assert not torch.isnan(out).any(), "some outputs were never written (poison survived)"
    err = ((out.cpu().double() - ref).norm() / ref.norm()).item()
    assert err < REL_TOL[dtype], f"relative error {err:.3g}"
    y = torch.ops.sparsetrt.layer_norm_feature_major(xt, w.cuda(), b.cuda(), 1e-5)   # the op runs the same kernel
    assert torch.equal(y, out)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("m,d,residual,fm", [(4097, 1024, True, True), (7, 264, True, True), (1, 8, False, True),
                                             (129, 2048, True, False), (16, 768, False, True), (300, 200, True, True)])
def test_add_layer_norm_matches_float64(m, d, residual, fm, dtype, rng):
    """Residual add + LayerNorm written token-major and feature-major by one kernel (outputs poisoned first),
    against float64 LayerNorm of the sum rounded to the dtype (what the kernel normalises), for every block size;
    M tails (1, 7, 129, 4097 tokens: partial blocks and 8-token chunks), D from 8 to 2048 (the four kernel
    widths), with and without residual."""
    from trt_plugins import launch

    x = (torch.randn(m, d, generator=rng) * 3 + 1.5).to(dtype)   # an offset mean, as residual streams have
    r = torch.randn(m, d, generator=rng).to(dtype) if residual else None
    w, b = torch.randn(d, generator=rng).to(dtype), torch.randn(d, generator=rng).to(dtype)
    xc, rc = x.cuda(), (r.cuda() if residual else None)
    s = (x.float() + r.float()).to(dtype).double() if residual else x.double()
    ref = torch.nn.functional.layer_norm(s, (d,), w.double(), b.double(), 1e-5)
    for tok in launch.ADD_LN_TOKENS:   # every block size (the tile shrinks for wide D)
        out = torch.full((m, d), float("nan"), dtype=dtype, device="cuda")
        out_t = torch.full((d, m), float("nan"), dtype=dtype, device="cuda") if fm else None
        launch.add_layer_norm(xc, rc, w.cuda(), b.cuda(), 1e-5, feature_major=fm, out=out, out_t=out_t,
                              tokens_per_block=tok)
        torch.cuda.synchronize()
        for got in (out.cpu(),) + ((out_t.cpu().t(),) if fm else ()):
            assert not torch.isnan(got).any(), f"tokens_per_block={tok}: some outputs never written (poison survived)"
            err = ((got.double() - ref).norm() / ref.norm()).item()
            assert err < REL_TOL[dtype], f"tokens_per_block={tok}: relative error {err:.3g}"
        if fm:
            assert torch.equal(out_t.cpu().t(), out.cpu()), "the two layouts must hold the same values"
    y, yt = torch.ops.sparsetrt.add_layer_norm(xc, rc, w.cuda(), b.cuda(), 1e-5, fm)   # the op runs the same kernel
    assert torch.equal(y, out) and (torch.equal(yt, out_t) if fm else yt.numel() == 0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sparse_linear_runs_the_kernel_on_cuda(dtype, rng):
    from trt_plugins import launch

    linear = torch.nn.Linear(320, 256)
    lm = select_masks({"fc": linear.weight.abs()}, HiNM(vector=64), 0.75)["fc"]
    layer = SparseLinear.from_linear(linear, lm, dtype=dtype).cuda()
    x = torch.randn(3, 41, 320, generator=rng).to(dtype)
    before = launch.LAUNCH_COUNT
    y = layer(x.cuda())
    torch.cuda.synchronize()
    assert launch.LAUNCH_COUNT == before + 1, "SparseLinear on CUDA did not launch our kernel"
    assert y.shape == (3, 41, 256) and y.dtype == dtype
    ref = layer.format.to("cpu").matmul(x.double().reshape(-1, 320), layer.bias.cpu().double()).reshape(3, 41, 256)
    err = ((y.cpu().double() - ref).norm() / ref.norm()).item()
    assert err < REL_TOL[dtype]


def test_cuda_graph_capture_and_side_stream(rng):
    linear = torch.nn.Linear(256, 256)
    lm = select_masks({"fc": linear.weight.abs()}, HiNM(vector=64), 0.75)["fc"]
    layer = SparseLinear.from_linear(linear, lm, dtype=torch.float16).cuda()
    static_x = torch.randn(100, 256, device="cuda", dtype=torch.float16)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):            # warm-up on a side stream (also loads the module)
        layer(static_x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = layer(static_x)
    for _ in range(3):                        # fresh data each replay
        x = torch.randn(100, 256, generator=rng).half()
        static_x.copy_(x.cuda())
        static_y.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        ref = layer.format.to("cpu").matmul(x.double(), layer.bias.cpu().double())
        assert not torch.isnan(static_y).any()
        assert ((static_y.cpu().double() - ref).norm() / ref.norm()).item() < REL_TOL[torch.float16]


@pytest.mark.parametrize("m,k", [(1, 33), (7, 64), (130, 200), (1000, 768)])
@pytest.mark.parametrize("pad_to", [1, 8])
def test_transpose_kernel_is_exact(m, k, pad_to, rng):
    from trt_plugins import launch

    x = torch.randn(m, k, generator=rng).half()
    xt = launch.to_feature_major(x.cuda(), pad_to=pad_to)
    torch.cuda.synchronize()
    assert xt.shape == (k, -(-m // pad_to) * pad_to)
    assert torch.equal(xt[:, :m].cpu(), x.t())


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[4]], ids=["hinm64", "hinm128", "tvw128_outprune"])
def test_aot_entry_points_in_tensorrt_order(case, rng):
    """The <name>_aot kernels (TensorRT AOT order: inputs, int scalars, output; <= 48 KB shared memory,
    launched without raising the dynamic shared-memory limit) compute what the JIT kernels compute."""
    from trt_plugins import launch

    _, pattern, sparsity, n, k = case
    fmt, bias = make_format(pattern, sparsity, n, k, torch.float16, rng)
    x = torch.randn(301, k, generator=rng).half()
    f, xd, bd = fmt.to("cuda"), x.cuda(), bias.cuda()
    xt = xd.t().contiguous()                      # dense [K, M], as TensorRT passes it: ldx = M = 301
    y = torch.full((301, n), float("nan"), dtype=torch.float16, device="cuda")
    p = launch.plan(301, k, n, fmt.tile_rows, fmt.num_tiles, "float16", "gelu")
    rt = launch.runtime(0)
    fn = rt.module.get_function(p.kernel_name + "_aot")
    fn.prepare("PPPPPPPiiiiiiiP")
    fn.prepared_call(p.grid, p.block, xt.data_ptr(), f.values.data_ptr(), f.meta.data_ptr(), f.k_index.data_ptr(),
                     f.k_offsets.data_ptr(), f.row_index.data_ptr(), bd.data_ptr(), 301, 301, k, n, fmt.num_tiles,
                     fmt.tile_rows, 1, y.data_ptr(), shared_size=launch.shared_bytes(p.cta_rows, low_smem=True))
    torch.cuda.synchronize()
    check(fmt, x, bias, y.cpu(), "gelu")


def _tiles_with_widths(widths, k, dtype, gen, tile=64):
    """A TVW-style format whose tiles keep the given numbers of columns (random ones), 2:4 inside."""
    from exporter.formats import compress
    from exporter.masks import _tiles_to_mask

    n = tile * len(widths)
    w = torch.randn(n, k, generator=gen)
    rows = torch.arange(n).reshape(len(widths), tile)
    cols = [torch.randperm(k, generator=gen)[:c].sort().values for c in widths]
    mask = _tiles_to_mask((n, k), rows, cols, w.abs(), True)
    return compress(w.to(dtype), mask, rows, cols, two_four=True), torch.randn(n, generator=gen).to(dtype)


TMA_WIDTHS = {"uniform": (96, 96, 96), "mixed": (64, 32, 96, 64), "no-map": (32, 96, 64, 128)}
TMA_MATCHING = {"uniform": [True] * 3, "mixed": [True, False, False, True], "no-map": [False] * 4}


@pytest.mark.gpu
@pytest.mark.parametrize("widths", list(TMA_WIDTHS))
@pytest.mark.parametrize("m", [1, 300, 4097])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_values_by_tma_equal_cp_async(widths, m, dtype, rng):
    """The wgmma kernel loads the values by TMA when every tile matches the launch's values map (uniform kept
    count and offset) and by cp.async otherwise: the same shared-memory bytes, so the outputs must be identical,
    and correct against float64.  'mixed': the launch passes a map (mean 64), but only tiles 0 and 3 match it, so
    the kernel must fall back to cp.async; 'no-map': 80 kept per tile on average is no multiple of 32, so the
    launch passes no map."""
    if not wgmma_available():
        pytest.skip("the wgmma kernel needs an sm_90 GPU")
    from trt_plugins import launch

    fmt, b = _tiles_with_widths(TMA_WIDTHS[widths], 224, dtype, rng)
    offsets = fmt.k_offsets.tolist()
    tiles = len(offsets) - 1
    kept = offsets[-1] // tiles
    assert [offsets[t] == t * kept and offsets[t + 1] == (t + 1) * kept for t in range(tiles)] == TMA_MATCHING[widths]
    x = torch.randn(m, 224, generator=rng).to(dtype)
    before = launch.VALUES_TMA_LAUNCHES
    y_tma = run_kernel(fmt, x, b, family="wgmma_sp")
    expect_map = widths != "no-map"
    assert launch.VALUES_TMA_LAUNCHES - before == expect_map
    y_cp = run_kernel(fmt, x, b, family="wgmma_sp", values_map=False)
    assert launch.VALUES_TMA_LAUNCHES - before == expect_map
    check(fmt, x, b, y_tma)
    assert torch.equal(y_tma, y_cp), "TMA and cp.async loads of the values gave different outputs"


@pytest.mark.gpu
@pytest.mark.parametrize("case", [c for c in CASES if c[0] in ("hinm64", "hinm128")], ids=lambda c: c[0])
@pytest.mark.parametrize("yfm", [False, True])
def test_hinm_values_by_tma(case, yfm, rng):
    """HiNM tiles all keep the same count: every wgmma launch of a HiNM layer takes the TMA path, through enqueue
    and through the torch entry point (the callers pass the kept count)."""
    if not wgmma_available():
        pytest.skip("the wgmma kernel needs an sm_90 GPU")
    from trt_plugins import launch

    _, pattern, sparsity, n, k = case
    fmt, b = make_format(pattern, sparsity, n, k, torch.float16, rng)
    x = torch.randn(129, k, generator=rng).half()
    before = launch.VALUES_TMA_LAUNCHES
    y = run_kernel(fmt, x, b, family="wgmma_sp", y_feature_major=yfm)
    assert launch.VALUES_TMA_LAUNCHES == before + 1
    check(fmt, x, b, y)
    f = fmt.to("cuda")
    out = launch.tile_sparse_linear(x.cuda(), f.values, f.meta, f.k_index, f.k_offsets, f.row_index, b.cuda(), n,
                                    fmt.tile_rows, "none")
    assert launch.VALUES_TMA_LAUNCHES == before + 2
    check(fmt, x, b, out.cpu())


TILE_MAP_K = 2048   # launch.TILE_MAPS_MIN_K: the kernel builds per-tile maps from this K on
TILE_MAP_WIDTHS = {   # name -> kept columns per 128-row tile
    "template (no common count)": (64, 1024, 96, 160, 32, 224, 96, 640, 128, 32, 1984, 64),
    "mean map, tiles differ": (64, 32, 96, 64),
    "odd k32 steps": (32, 96, 160, 224),
    "96 tiles (the ring wraps)": (32, 64, 96, 128, 160, 224) * 16,
}


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(TILE_MAP_WIDTHS))
@pytest.mark.parametrize("m", [1, 7, 300, 4097, 32768])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_per_tile_maps_equal_cp_async(name, m, dtype, rng, monkeypatch):
    """128-row tiles that keep different counts (TVW): the kernel rewrites a ring of global-memory tensor maps, one
    per work item, and loads each tile's values by TMA; SPARSETRT_VALUES_TMA=0 loads them by cp.async.  Same bytes in
    shared memory, so the outputs must be identical, and correct against float64.  A CTA gets more items than the
    ring has slots (it wraps) at M = 32768 with 12 tiles and at M = 4097 with 96 tiles; 'mean map':
    the launch passes a uniform map that only some tiles match, and the kernel must switch to per-tile maps itself."""
    if not wgmma_available():
        pytest.skip("the wgmma kernel needs an sm_90 GPU")
    from trt_plugins import launch

    monkeypatch.setenv("SPARSETRT_SM90_CTA_ROWS", "128")   # per-tile maps are a BM = 128 feature; small M would pick 64
    widths = TILE_MAP_WIDTHS[name]
    if len(widths) > 12 and m > 4097:
        pytest.skip("96 tiles wrap the ring at M = 4097 already; M = 32768 would only slow the float64 reference")
    fmt, b = _tiles_with_widths(widths, TILE_MAP_K, dtype, rng, tile=128)
    x = torch.randn(m, TILE_MAP_K, generator=rng).to(dtype)
    before_t, before_v = launch.TILE_MAP_LAUNCHES, launch.VALUES_TMA_LAUNCHES
    y_maps = run_kernel(fmt, x, b, "gelu", family="wgmma_sp", guard_rows=8)
    assert launch.VALUES_TMA_LAUNCHES == before_v + 1
    template = launch.values_map_for(sum(widths), len(widths), 128, 128) is None
    assert launch.TILE_MAP_LAUNCHES == before_t + template
    monkeypatch.setenv("SPARSETRT_VALUES_TMA", "0")
    y_cp = run_kernel(fmt, x, b, "gelu", family="wgmma_sp", guard_rows=8)
    assert launch.VALUES_TMA_LAUNCHES == before_v + 1
    check(fmt, x, b, y_maps, "gelu")
    assert torch.equal(y_maps, y_cp), "per-tile maps and cp.async loads of the values gave different outputs"


Y_TMA_CASES = {   # case name -> (CASES entry, permute_rows)
    "hinm64 (BM 64)": ("hinm64", False),
    "hinm128 (BM 128)": ("hinm128", False),
    "tvw outputs pruned (fill items)": ("tvw128_outprune", False),
    "rows scattered (st.global fallback per item)": ("hinm128", True),
    "2:4 only": ("nm24", False),
}


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(Y_TMA_CASES))
@pytest.mark.parametrize("m", [1, 7, 300, 4097])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_y_by_tma_equals_st_global(name, m, dtype, rng, monkeypatch):
    """The wgmma kernel stores token-major Y by TMA (a Y map per launch) for the items whose rows are contiguous
    output features, and with 16-byte st.global otherwise (SPARSETRT_Y_TMA=0: always).  Both write the same
    rounded values, so the outputs must be identical and correct against float64; rows past M stay untouched
    (the map clips the boxes of a token tail)."""
    if not wgmma_available():
        pytest.skip("the wgmma kernel needs an sm_90 GPU")
    from trt_plugins import launch

    case_name, permute_rows = Y_TMA_CASES[name]
    _, pattern, sparsity, n, k = next(c for c in CASES if c[0] == case_name)
    fmt, b = make_format(pattern, sparsity, n, k, dtype, rng, permute_rows=permute_rows)
    if fmt.tile_rows % 64:
        pytest.skip("the wgmma kernel runs 64-row multiples")
    x = torch.randn(m, k, generator=rng).to(dtype)
    before = launch.Y_TMA_LAUNCHES
    y_tma = run_kernel(fmt, x, b, "gelu", family="wgmma_sp", guard_rows=40)
    assert launch.Y_TMA_LAUNCHES == before + 1   # token-major, aligned: the launch passes the map
    monkeypatch.setenv("SPARSETRT_Y_TMA", "0")
    y_st = run_kernel(fmt, x, b, "gelu", family="wgmma_sp", guard_rows=40)
    assert launch.Y_TMA_LAUNCHES == before + 1
    check(fmt, x, b, y_tma, "gelu")
    assert torch.equal(y_tma, y_st), "TMA and st.global stores of Y gave different outputs"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_y_by_tma_and_st_global_items_mixed_in_one_cta(dtype, rng, monkeypatch):
    """Contiguous tiles (TMA stores, each consumer on its own barrier) and scattered ones (st.global through the
    shared tile of both consumers) alternate within one CTA's items: 5 tiles of 128 rows and 32 token slices give
    160 items, so CTAs 0-27 run two, of tiles b % 5 and (b + 2) % 5 — both orders of the two epilogues occur."""
    if not wgmma_available():
        pytest.skip("the wgmma kernel needs an sm_90 GPU")
    from trt_plugins import launch

    fmt, b = make_format(HiNM(vector=128), 0.75, 640, 256, dtype, rng, permute_rows="odd tiles")
    x = torch.randn(8192, 256, generator=rng).to(dtype)
    before = launch.Y_TMA_LAUNCHES
    y_mixed = run_kernel(fmt, x, b, "relu", family="wgmma_sp", guard_rows=8)
    assert launch.Y_TMA_LAUNCHES == before + 1
    monkeypatch.setenv("SPARSETRT_Y_TMA", "0")
    y_st = run_kernel(fmt, x, b, "relu", family="wgmma_sp", guard_rows=8)
    check(fmt, x, b, y_mixed, "relu")
    assert torch.equal(y_mixed, y_st), "mixed TMA / st.global epilogues differ from st.global alone"


@pytest.mark.gpu
def test_no_y_map_for_feature_major_or_unaligned_rows(rng):
    """YT[N, M] (feature-major) keeps st.global; so does Y whose rows are not whole 16-byte chunks (N % 8 != 0
    cannot occur for 64-row tiles, so the feature-major launch is the case to run)."""
    if not wgmma_available():
        pytest.skip("the wgmma kernel needs an sm_90 GPU")
    from trt_plugins import launch

    _, pattern, sparsity, n, k = CASES[0]
    fmt, b = make_format(pattern, sparsity, n, k, torch.float16, rng)
    x = torch.randn(129, k, generator=rng).half()
    before = launch.Y_TMA_LAUNCHES
    y = run_kernel(fmt, x, b, family="wgmma_sp", y_feature_major=True)
    assert launch.Y_TMA_LAUNCHES == before
    check(fmt, x, b, y)
