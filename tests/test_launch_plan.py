"""Launch planning of the tile-sparse kernels (pure Python, no GPU)."""

import pytest

from trt_plugins import launch


def test_plan_grid_covers_all_work():
    # 64-row tiles: CTAs of 64 rows x 256 tokens
    p = launch.plan(8192, 768, 2304, 64, 36, "float16")
    assert p.kernel_name == "tsgemm_f16_bm64_none" and p.block == (128, 1, 1)
    assert p.gemm_ctas == 36 * 32 and p.fill_ctas == 0 and p.grid == (1152, 1, 1)
    # a 128-row tile runs as one CTA of 128 x 128 tokens; 7 tokens still need one token tile
    p = launch.plan(7, 1024, 4096, 128, 24, "bfloat16", "gelu")
    assert p.kernel_name == "tsgemm_bf16_bm128_gelu" and p.gemm_ctas == 24
    assert p.fill_ctas == 16   # 1024 pruned rows / 64 per fill CTA, one token tile
    # 96-row tiles split into 3 CTAs of 32 rows; 257 tokens need 2 token tiles of 256
    p = launch.plan(257, 256, 192, 96, 2, "float16")
    assert p.cta_rows == 32 and p.gemm_ctas == 2 * 3 * 2


def test_shared_memory_mirrors_cuda_constants():
    # CtaShape<BM>: 6 (BM=128) or 4 stages of (A: BM*32 B, E: BM*4 B, B: 32*BN*2 B) vs the epilogue
    # tile BN*(BM+8)*2 B, BN = 128 for BM = 128 else 256
    assert launch.shared_bytes(64) == 4 * (2048 + 256 + 16384)
    assert launch.shared_bytes(128) == 6 * (4096 + 512 + 8192)
    assert launch.shared_bytes(32) == 4 * (1024 + 128 + 16384)
    # the AOT entry points: fewer stages, within the default 48 KB
    assert launch.shared_bytes(128, low_smem=True) == 3 * (4096 + 512 + 8192) <= 48 * 1024
    assert launch.shared_bytes(64, low_smem=True) == max(2 * (2048 + 256 + 16384), 256 * 72 * 2) <= 48 * 1024
    assert launch.shared_bytes(32, low_smem=True) <= 48 * 1024


@pytest.mark.parametrize("args,message", [
    ((64, 768, 2304, 64, 36, "float32"), "float16 or bfloat16 only"),
    ((64, 16, 64, 64, 1, "float16"), "K=16"),
    ((64, 768, 96, 48, 2, "float16"), "not a multiple of 32"),
    ((64, 768, 64, 64, 2, "float16"), "must be >= 1 tile and <= N=64"),
    ((2**21, 2048, 2048, 64, 32, "float16"), "overflows"),
])
def test_bad_problems(args, message):
    with pytest.raises(ValueError, match=message):
        launch.plan(*args)


def test_bad_activation():
    with pytest.raises(ValueError, match="activation 'tanh'"):
        launch.plan(64, 768, 2304, 64, 36, "float16", "tanh")


def test_enqueue_rejects_xt_past_32_bit_offsets():
    with pytest.raises(ValueError, match=r"XT\[K=4096, ldx=524288\].*2\^31"):
        launch.enqueue(xt_ptr=0, ldx=524288, values_ptr=0, meta_ptr=0, k_index_ptr=0, k_offsets_ptr=0, row_index_ptr=0,
                       bias_ptr=0, y_ptr=0, M=7, K=4096, N=64, tile_rows=64, num_tiles=1, dtype="float16",
                       activation="none", stream=None)


def test_y_feature_major_kernel_names():
    p = launch.plan(8192, 256, 384, 128, 3, "bfloat16", "gelu", family="wgmma_sp", y_feature_major=True)
    assert p.kernel_name == "tsgemm90_bf16_bm128_gelu_yfm" and p.shared_bytes == launch.sm90_shared_bytes(128)


def test_enqueue_rejects_short_leading_dimension():
    with pytest.raises(ValueError, match="ldx=5 must be >= M=7"):
        launch.enqueue(xt_ptr=0, ldx=5, values_ptr=0, meta_ptr=0, k_index_ptr=0, k_offsets_ptr=0, row_index_ptr=0,
                       bias_ptr=0, y_ptr=0, M=7, K=64, N=64, tile_rows=64, num_tiles=1, dtype="float16",
                       activation="none", stream=None)


# ---- the Hopper (wgmma.sp) family --------------------------------------------------------------------------
def test_sm90_plan_grid_and_shape():
    # persistent: one CTA per SM loops over the work items; 384 threads (1 producer + 2 consumer warpgroups)
    p = launch.plan(8192, 4096, 11008, 128, 86, "float16", family="wgmma_sp", sm_count=132)
    assert p.kernel_name == "tsgemm90_f16_bm128_none" and p.block == (384, 1, 1) and p.family == "wgmma_sp"
    assert p.gemm_ctas == 86 * 32 and p.fill_ctas == 0 and p.grid == (132, 1, 1)
    # 64-row tiles, TVW with pruned rows: 1000 tokens -> 4 token tiles; 448 - 6*64 = 64 pruned rows -> 1 fill item each
    p = launch.plan(1000, 512, 448, 64, 6, "bfloat16", "gelu", family="wgmma_sp", sm_count=132)
    assert p.kernel_name == "tsgemm90_bf16_bm64_gelu" and p.gemm_ctas == 6 * 4 and p.fill_ctas == 4
    assert p.block == (512, 1, 1)   # BM = 64: 2 producer warpgroups
    assert p.grid == (28, 1, 1)   # fewer items than SMs: one CTA per item
    # 256-row tiles run as two 128-row items; an SM count from the device caps the grid
    p = launch.plan(7, 256, 512, 256, 2, "float16", family="wgmma_sp", sm_count=3)
    assert p.gemm_ctas == 4 and p.grid == (3, 1, 1)


def test_sm90_shared_memory_mirrors_cuda_constants():
    # Sm90Shape<BM>: stages of (B 64 x 256 x 2 B + A 2*BM*32 B + E 2*BM*4 B, rounded to 1 KB), as many as fit
    # 227 KB (at most 6) beside the epilogue tiles (64 tokens x (BM + 8) halves; two of them for BM = 64),
    # + 2 mbarriers per stage + the per-tile map ring word (16 B) + 1 KB alignment slack
    assert launch.sm90_shared_bytes(128) == 5 * 41984 + 128 * 72 * 2 + 5 * 16 + 16 + 1024   # the [rows][64 + 8] YT tile
    assert launch.sm90_shared_bytes(64) == 5 * 37888 + 2 * 64 * 72 * 2 + 5 * 16 + 16 + 1024
    assert max(launch.sm90_shared_bytes(64), launch.sm90_shared_bytes(128)) <= 227 * 1024


def test_sm90_rejects_tiles_it_cannot_run():
    with pytest.raises(ValueError, match="tile_rows=96: the wgmma kernel needs a multiple of 64"):
        launch.plan(64, 768, 192, 96, 2, "float16", family="wgmma_sp")
    with pytest.raises(ValueError, match="kernel family 'wmma'"):
        launch.plan(64, 768, 192, 64, 2, "float16", family="wmma")


def test_choose_family(monkeypatch):
    monkeypatch.delenv("SPARSETRT_KERNEL", raising=False)
    have_cubin = (launch.KERNEL_DIR / launch.SM90A_CUBIN).is_file()
    assert launch.choose_family(128, 8192, 0, (9, 0)) == ("wgmma_sp" if have_cubin else "mma_sp")
    assert launch.choose_family(128, 8192, 0, (8, 0)) == "mma_sp"          # A100: no wgmma
    assert launch.choose_family(32, 8192, 0, (9, 0)) == "mma_sp"           # 32-row tiles
    assert launch.choose_family(64, 8192, 0, (9, 0)) == ("wgmma_sp" if have_cubin else "mma_sp")   # 64-row tiles
    assert launch.choose_family(256, 8192, 0, (9, 0)) == ("wgmma_sp" if have_cubin else "mma_sp")
    assert launch.choose_family(128, 8191, 0, (9, 0)) == "mma_sp"          # unaligned XT rows
    assert launch.choose_family(128, 8192, 8, (9, 0)) == "mma_sp"          # unaligned XT pointer
    assert launch.choose_family(128, 8192, 0, (9, 0), k_index_ptr=4) == "mma_sp"   # unaligned kept indices
    # the runtime says whether the sm_90a module loaded (prebuilt or compiled at first use)
    assert launch.choose_family(128, 8192, 0, (9, 0), wgmma_loaded=True) == "wgmma_sp"
    assert launch.choose_family(128, 8192, 0, (9, 0), wgmma_loaded=False) == "mma_sp"
    monkeypatch.setenv("SPARSETRT_KERNEL", "mma_sp")
    assert launch.choose_family(128, 8192, 0, (9, 0)) == "mma_sp"
    monkeypatch.setenv("SPARSETRT_KERNEL", "wgmma_sp")
    assert launch.choose_family(128, 8192, 0, (8, 0)) == "wgmma_sp"
    assert launch.choose_family(64, 8192, 0, (9, 0)) == "wgmma_sp"
    with pytest.raises(ValueError, match="SPARSETRT_KERNEL=wgmma_sp: tile_rows=32"):
        launch.choose_family(32, 8192, 0, (9, 0))
    monkeypatch.setenv("SPARSETRT_KERNEL", "fast")
    with pytest.raises(ValueError, match="SPARSETRT_KERNEL='fast'"):
        launch.choose_family(128, 8192, 0, (9, 0))


# ---- the wgmma kernel's tensor map of the compressed values ---------------------------------------------
def test_values_map_fields_match_the_kernels_a_layout():
    # HiNM 75%, V = 128, K = 4096: 2048 kept columns per tile -> values [86 * 128, 1024] 16-bit elements
    vmap = launch.values_map_for(86 * 2048, 86, 128, 128)
    assert vmap == launch.ValuesMap(rows=86 * 128, kept=2048, cta_rows=128)
    assert vmap.dims == (1024, 86 * 128) and vmap.strides == (2048,) and vmap.box == (16, 128)
    # BM = 64 CTAs of 128-row tiles take boxes of 64 rows
    assert launch.values_map_for(4 * 96, 4, 128, 64).box == (16, 64)


@pytest.mark.parametrize("kept_total, tiles, why", [
    (None, 4, "no count given"),
    (0, 4, "nothing kept"),
    (4 * 96 + 32, 4, "the count does not divide over the tiles"),
    (4 * 80, 4, "80 per tile is no multiple of the 32-column step"),
])
def test_no_values_map_when_the_tiles_cannot_share_one(kept_total, tiles, why):
    assert launch.values_map_for(kept_total, tiles, 64, 64) is None, why


def test_wgmma_argument_format_frames_the_mma_sp_one():
    # the two maps (128 bytes each, 64-byte aligned) first, so the packed pointers after them stay 8-byte aligned
    import struct

    assert launch.GEMM90_ARGS == "128s128s" + launch.GEMM_ARGS + "ii" + "PQii"   # + the tail split's four
    # the workspace pointer after the 9 ints (356 bytes) starts 8-byte aligned at 360
    assert struct.calcsize("@" + launch.GEMM90_ARGS) == 2 * 128 + 8 * 8 + 9 * 4 + 4 + 8 + 8 + 2 * 4
    assert "".join(launch.gemm90_fields()) == launch.GEMM90_ARGS
    assert launch.GEMM90_FIELDS[:len(launch.GEMM90_FIELDS_NO_SPLIT)] == launch.GEMM90_FIELDS_NO_SPLIT


def test_arg_format_places_each_parameter_at_the_drivers_offset():
    import struct

    fields = launch.gemm90_fields()
    # the sm_90 layout: maps at 48 and 176 (absolute 0x240, 0x2c0 in the parameter bank), then packed
    offsets = [48, 176] + [304 + 8 * i for i in range(8)] + [368 + 4 * i for i in range(9)] + [408, 416, 424, 428]
    fmt = launch.arg_format(fields, offsets)
    assert fmt == "48x128s128s" + "P" * 8 + "i" * 9 + "PQii"
    assert struct.calcsize(fmt) == struct.calcsize(f"@{launch.GEMM90_MAP_OFFSET_SM90}x{launch.GEMM90_ARGS}")
    packed = struct.pack(fmt, b"a" * 128, b"y" * 128, *range(1, 9), *range(9), 0x1000, 2**64 - 1, 3, 4)
    assert packed[48:176] == b"a" * 128 and packed[176:304] == b"y" * 128
    assert struct.unpack_from("=Q", packed, 304 + 8 * 7)[0] == 8 and struct.unpack_from("=i", packed, 400)[0] == 8
    # a gap the compiler leaves between two parameters becomes padding
    assert struct.unpack_from("=QQii", packed, 408) == (0x1000, 2**64 - 1, 3, 4)
    gapped = offsets[:10] + [372 + 4 * i for i in range(9)] + offsets[19:]
    assert launch.arg_format(fields, gapped) == "48x128s128s" + "P" * 8 + "4x" + "i" * 9 + "PQii"
    with pytest.raises(ValueError, match="overlaps"):
        launch.arg_format(fields, [48, 100] + offsets[2:])


def test_y_map_fields_match_the_epilogue_buffers():
    ymap = launch.y_map_for(4097, 2304, 0x7F0000000000, False)
    assert ymap == launch.YMap(M=4097, N=2304)
    assert ymap.dims == (2304, 4097) and ymap.strides == (4608,) and ymap.box == (64, 32)
    assert ymap.swizzle == launch.TENSOR_MAP_SWIZZLE_128B   # 64 features = one 128-byte swizzle row
    assert launch.ValuesMap(128, 64, 128).swizzle == launch.TENSOR_MAP_SWIZZLE_32B


@pytest.mark.parametrize("M, N, ptr, yfm, why", [
    (100, 2304, 0x1000, True, "feature-major YT keeps st.global"),
    (100, 2308, 0x1000, False, "rows of 2308 halves are no whole 16-byte chunks"),
    (100, 2304, 0x1008, False, "Y not 16-byte aligned"),
    (0, 2304, 0x1000, False, "no tokens"),
])
def test_no_y_map_when_the_kernel_cannot_store_by_tma(M, N, ptr, yfm, why):
    assert launch.y_map_for(M, N, ptr, yfm) is None, why


def test_per_tile_maps_only_for_128_row_ctas():
    """The wgmma kernel builds per-tile values maps for 128-row CTAs and K >= 2048 only; the template passed for them is a valid
    values view of one tile (its fields other than address, extent and pitch are what the kernel keeps)."""
    assert launch.tile_maps_apply(128, 2048) and not launch.tile_maps_apply(64, 4096)
    assert not launch.tile_maps_apply(128, 1024)   # short K: cp.async (the rewrite per item costs more)
    template = launch.ValuesMap(128, 32, 128)
    assert template.dims == (16, 128) and template.box == (16, 128) and template.strides == (32,)


# ---- the tail split (trt_plugins/tail_split.py; cuda/sm90_schedule.cuh) -------------------------------------
def test_tail_split_splits_only_a_single_partial_round_that_pays():
    from trt_plugins import tail_split as ts

    # after whole rounds the cost model never splits (measured slower on the H200, KERNEL_NOTES v9)
    assert ts.choose(192, 132, 48) == ts.NO_SPLIT            # BERT-base ffn2, 75% HiNM V128
    assert ts.choose(264, 132, 48) == ts.NO_SPLIT            # full rounds
    # one partial round (small M): idle SMs take pieces, as many as the cost model likes, at most MAX_PARTS
    few = ts.choose(8, 132, 64)
    assert few.tail == 8 and 2 < few.parts <= ts.MAX_PARTS and 8 * few.parts <= 132
    # the best piece counts of device run 15 (KERNEL_NOTES v9): Llama down at M = 64 (32 items of 172 steps) 4
    # pieces (1.83x); BERT-base ffn2 V64 at M = 64 (12 items, BM = 64) 4 (1.18x); at M = 1024 (24 items of 48 steps,
    # 256 tokens) 4 pieces lose (0.93x: 96 CTAs gathering at once ask for more than L2 gives), 2 win (1.02x)
    assert ts.choose(32, 132, 172, tokens=64).parts == 4
    assert ts.choose(12, 132, 48, cta_rows=64, tokens=64).parts == 4
    assert 1 < ts.choose(24, 132, 48).parts < 4
    assert ts.launch_us(24, 4, 48) > ts.launch_us(24, 2, 48)
    # close calls stay unsplit (MIN_GAIN): BERT-base ffn2 V128 at M = 2048 (48 items) measured 0.97x in 2 pieces,
    # BERT-large ffn2 V64 at M = 1024 (64 items, BM = 64, predicted 5% faster) 1.14x
    assert ts.choose(48, 132, 48) == ts.NO_SPLIT
    assert ts.choose(64, 132, 64, cta_rows=64).parts == 2
    assert ts.choose(8, 132, 6) == ts.NO_SPLIT               # 6 steps: meeting costs more than it saves
    assert ts.choose(100, 132, 64) == ts.NO_SPLIT            # no room for a second piece of each item
    assert ts.choose(30, 132, 172, fill_items=60).parts == 2   # pruned-rows items keep their SMs
    assert ts.choose(40, 132, 64, fill_items=100) == ts.NO_SPLIT
    # forced piece counts (tests, A/B) split after whole rounds too, capped by what fits: tail * parts <= SMs and
    # 2 steps per piece
    assert ts.choose(192, 132, 48, forced=8) == ts.TailSplit(60, 2)
    assert ts.TailSplit(60, 2).units(192) == 132 + 120 and ts.TailSplit(60, 2).writer_slots == 60
    assert ts.choose(3, 132, 6, forced=8) == ts.TailSplit(3, 3)
    assert ts.choose(3, 132, 3, forced=8) == ts.NO_SPLIT     # fewer than 4 steps: never split


def test_tail_split_setting_from_the_environment(monkeypatch):
    from trt_plugins import tail_split as ts

    for value, expected in (("auto", None), ("0", 0), ("4", 4), (" AUTO ", None)):
        monkeypatch.setenv("SPARSETRT_TAIL_SPLIT", value)
        assert ts.setting() == expected
    for bad in ("1", "yes", "-2"):
        monkeypatch.setenv("SPARSETRT_TAIL_SPLIT", bad)
        with pytest.raises(ValueError, match="SPARSETRT_TAIL_SPLIT"):
            ts.setting()


def test_sm90_small_launches_of_128_row_tiles_run_64_row_ctas(monkeypatch):
    monkeypatch.delenv("SPARSETRT_SM90_CTA_ROWS", raising=False)
    sm90 = dict(family="wgmma_sp", sm_count=132)
    # BERT-base qkv (18 tiles of 128 rows): 36 half-tile items at M <= 256 fit one round -> BM = 64 ...
    p = launch.plan(256, 768, 2304, 128, 18, "float16", **sm90, kept_total=18 * 384)
    assert p.cta_rows == 64 and p.gemm_ctas == 36 and p.kernel_name == "tsgemm90_f16_bm64_none"
    assert p.block == (512, 1, 1) and p.shared_bytes == launch.sm90_shared_bytes(64)
    # ... at M = 1024 they would not (144 > 132): BM = 128, 72 items
    assert launch.plan(1024, 768, 2304, 128, 18, "float16", **sm90, kept_total=18 * 384).cta_rows == 128
    # pruned-rows items count: 6 tiles of 128 kept of N = 2048 (1280 pruned rows: 20 fill items per token tile)
    kept = dict(kept_total=6 * 1536)   # 48 k32 steps per item
    assert launch.plan(2048, 3072, 2048, 128, 6, "float16", **sm90, **kept).cta_rows == 128   # 2*48 + 160 > 132
    assert launch.plan(512, 3072, 2048, 128, 6, "float16", **sm90, **kept).cta_rows == 64     # 2*12 + 40 <= 132
    # long items keep BM = 128 (each half would gather the tile's rows again): Llama-7B down, 172 steps
    assert launch.plan(256, 11008, 4096, 128, 32, "float16", **sm90, kept_total=32 * 5504).cta_rows == 128
    assert launch.plan(256, 3072, 2048, 128, 6, "float16", **sm90).cta_rows == 128   # no kept count: K's 96 steps
    assert launch.plan(64, 768, 2304, 64, 36, "float16", **sm90).cta_rows == 64       # 64-row tiles: always 64
    monkeypatch.setenv("SPARSETRT_SM90_CTA_ROWS", "128")
    assert launch.plan(256, 768, 2304, 128, 18, "float16", **sm90).cta_rows == 128
    monkeypatch.setenv("SPARSETRT_SM90_CTA_ROWS", "64")
    assert launch.plan(8192, 768, 2304, 128, 18, "float16", **sm90).cta_rows == 64
    monkeypatch.setenv("SPARSETRT_SM90_CTA_ROWS", "96")
    with pytest.raises(ValueError, match="SPARSETRT_SM90_CTA_ROWS='96'"):
        launch.plan(256, 768, 2304, 128, 18, "float16", **sm90)


def test_sm90_plan_with_a_tail_split(monkeypatch):
    monkeypatch.delenv("SPARSETRT_TAIL_SPLIT", raising=False)
    monkeypatch.setenv("SPARSETRT_SM90_CTA_ROWS", "128")   # the split at BM = 128 (small M would pick 64)
    # BERT-base ffn2, 75% HiNM V128 (kept 1536 of 3072 per tile) at M = 8192: 192 items, never split by default
    big = dict(family="wgmma_sp", sm_count=132, split_tail=True, kept_total=6 * 1536)
    p = launch.plan(8192, 3072, 768, 128, 6, "float16", **big)
    assert p.split.parts == 1 and p.grid == (132, 1, 1) and p.kernel_name == "tsgemm90_f16_bm128_none"
    # ... and at M = 256 (6 items): pieces, on the _split entry point, never more CTAs than SMs
    p = launch.plan(256, 3072, 768, 128, 6, "float16", **big)
    assert p.split.tail == 6 and p.split.parts > 2 and p.grid == (6 * p.split.parts, 1, 1)
    assert p.kernel_name == "tsgemm90_f16_bm128_none_split"
    p = launch.plan(256, 4096, 1024, 128, 8, "bfloat16", "gelu", family="wgmma_sp", sm_count=132, split_tail=True,
                    y_feature_major=True)
    assert p.split.tail == 8 and p.grid == (8 * p.split.parts, 1, 1)
    assert p.kernel_name == "tsgemm90_bf16_bm128_gelu_yfm_split"
    monkeypatch.setenv("SPARSETRT_TAIL_SPLIT", "0")
    p = launch.plan(256, 4096, 1024, 128, 8, "float16", family="wgmma_sp", sm_count=132,
                    split_tail=launch.tail_split.enabled())
    assert p.split.parts == 1 and p.kernel_name == "tsgemm90_f16_bm128_none"
    monkeypatch.setenv("SPARSETRT_TAIL_SPLIT", "2")   # forced: after whole rounds too
    assert launch.plan(8192, 3072, 768, 128, 6, "float16", **big).split == launch.tail_split.TailSplit(60, 2)


def test_tail_split_workspace_and_nonces():
    from trt_plugins import tail_split as ts

    split = ts.TailSplit(60, 2)
    # flags: 16 bytes per writer slot rounded up to 256; slots: 2 warpgroups x kAccRegs x 128 threads x 4 bytes
    assert ts.workspace_bytes(split, 128) == 1024 + 60 * 128 * 1024
    assert ts.workspace_bytes(split, 64) == 1024 + 60 * 64 * 1024
    assert ts.workspace_bytes(ts.NO_SPLIT, 128) == 0
    values = [ts.nonce() for _ in range(10000)]
    assert len(set(values)) == len(values) and all(0 < v < 2**64 for v in values)
