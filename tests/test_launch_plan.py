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


def test_enqueue_rejects_short_leading_dimension():
    with pytest.raises(ValueError, match="ldx=5 must be >= M=7"):
        launch.enqueue(xt_ptr=0, ldx=5, values_ptr=0, meta_ptr=0, k_index_ptr=0, k_offsets_ptr=0, row_index_ptr=0,
                       bias_ptr=0, y_ptr=0, M=7, K=64, N=64, tile_rows=64, num_tiles=1, dtype="float16",
                       activation="none", stream=None)
