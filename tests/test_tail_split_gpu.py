"""The Hopper kernel's tail split on a real GPU (cuda/sm90_schedule.cuh; run on the device: tools/run_gpu_tests.sh).

SPARSETRT_TAIL_SPLIT=<parts> forces the split wherever it fits, so small problems (few items, no whole round) run
their items in pieces that meet through fp32 partial sums.  Every check: fresh random inputs, the output poisoned
first, compared with the float64 reference (REL_TOL in tests/gpu_helpers.py), and the split must really have run
(launch.SPLIT_LAUNCHES)."""

import pytest
import torch

from exporter import TVW, HiNM

from .gpu_helpers import CASES, check, make_format, run_kernel, wgmma_available

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not wgmma_available(), reason="the tail split is part of the wgmma kernel (sm_90)")]
DTYPES = [torch.float16, torch.bfloat16]
# (name, pattern, sparsity, N, K): K long enough for pieces; odd k32 step counts per tile (TVW), BM = 64 and 128,
# pruned output rows (fill items after the pieces), per-tile values maps (TVW, K >= 2048)
SPLIT_CASES = [
    ("hinm128_k3072", HiNM(vector=128), 0.75, 768, 3072),
    ("hinm64_k1024", HiNM(vector=64), 0.75, 320, 1024),
    ("tvw128_k2048", TVW(tile=128), 0.75, 384, 2048),
    ("tvw64_outprune", TVW(tile=64, output_share=0.4), 0.8, 448, 1216),
    *[c for c in CASES if c[0] in ("tvw128_longk", "nm24")],
]


def _split_run(monkeypatch, fmt, x, b, parts, activation="none", **kw):
    from trt_plugins import launch

    monkeypatch.setenv("SPARSETRT_TAIL_SPLIT", str(parts))
    before = launch.SPLIT_LAUNCHES
    y = run_kernel(fmt, x, b, activation, family="wgmma_sp", **kw)
    return y, launch.SPLIT_LAUNCHES - before


def _expects_split(fmt, m, parts) -> bool:
    from trt_plugins import launch

    rt = launch.runtime(0)
    p = launch.plan(m, fmt.shape[1], fmt.shape[0], fmt.tile_rows, fmt.num_tiles, "float16", family="wgmma_sp",
                    sm_count=rt.sm_count, split_tail=True, kept_total=fmt.k_index.numel())
    return p.split.parts > 1


@pytest.mark.parametrize("parts", [2, 3, 8])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("m", [1, 129, 4097])
@pytest.mark.parametrize("case", SPLIT_CASES, ids=[c[0] for c in SPLIT_CASES])
def test_split_tail_matches_float64(case, m, dtype, parts, rng, monkeypatch):
    _, pattern, sparsity, n, k = case
    fmt, b = make_format(pattern, sparsity, n, k, dtype, rng)
    x = torch.randn(m, k, generator=rng).to(dtype)
    monkeypatch.setenv("SPARSETRT_TAIL_SPLIT", str(parts))
    expected = _expects_split(fmt, m, parts)
    y, splits = _split_run(monkeypatch, fmt, x, b, parts, "gelu", guard_rows=8)
    assert splits == expected, "the launch did not run the split the plan asked for"
    check(fmt, x, b, y, "gelu")


@pytest.mark.parametrize("case", SPLIT_CASES[:3], ids=[c[0] for c in SPLIT_CASES[:3]])
def test_split_tail_feature_major_output(case, rng, monkeypatch):
    _, pattern, sparsity, n, k = case
    fmt, b = make_format(pattern, sparsity, n, k, torch.float16, rng)
    x = torch.randn(300, k, generator=rng).half()
    y, splits = _split_run(monkeypatch, fmt, x, b, 4, "relu", y_feature_major=True)
    assert splits == 1
    check(fmt, x, b, y, "relu")


def test_split_equals_unsplit_within_rounding_and_is_deterministic(rng, monkeypatch):
    """Same problem with and without the split: only the order of the fp32 sums differs; the split run repeats
    bit for bit (the owner adds the writers' partial sums in a fixed order)."""
    fmt, b = make_format(HiNM(vector=128), 0.75, 768, 3072, torch.float16, rng)
    x = torch.randn(1000, 3072, generator=rng).half()
    y0, s0 = _split_run(monkeypatch, fmt, x, b, 0)
    y1, s1 = _split_run(monkeypatch, fmt, x, b, 4)
    y2, _ = _split_run(monkeypatch, fmt, x, b, 4)
    assert (s0, s1) == (0, 1)
    check(fmt, x, b, y0), check(fmt, x, b, y1)
    assert torch.equal(y1, y2), "two runs of the split differ"
    scale = y0.float().abs().max()
    assert (y1.float() - y0.float()).abs().max() <= 4e-3 * scale


def test_split_survives_recycled_workspace_memory(rng, monkeypatch):
    """The workspace comes from the caching allocator uninitialised: fill the memory it will reuse with words that
    look like raised flags (all ones, other launches' leftovers) and run again and again."""
    from trt_plugins import launch

    fmt, b = make_format(TVW(tile=128), 0.75, 384, 2048, torch.float16, rng)
    monkeypatch.setenv("SPARSETRT_TAIL_SPLIT", "8")
    side = launch.runtime(0).side
    for trial in range(4):
        with torch.cuda.stream(side):   # the workspace is allocated on the launch layer's stream
            junk = torch.full((32 << 20,), -1 if trial % 2 else 0x5A, dtype=torch.int8, device="cuda")
        torch.cuda.synchronize()
        del junk
        x = torch.randn(129, 2048, generator=rng).half()
        y, splits = _split_run(monkeypatch, fmt, x, b, 8)
        assert splits == 1
        check(fmt, x, b, y)


def test_split_under_cuda_graph_replays(rng, monkeypatch):
    """Captured once, replayed with fresh inputs: the owners clear the flags, so every replay meets again."""
    from trt_plugins import launch

    monkeypatch.setenv("SPARSETRT_TAIL_SPLIT", "4")
    fmt, b = make_format(HiNM(vector=128), 0.75, 768, 3072, torch.float16, rng)
    f, bias = fmt.to("cuda"), b.cuda()
    static_x = torch.randn(200, 3072, device="cuda", dtype=torch.float16)
    op = (f.values, f.meta, f.k_index, f.k_offsets, f.row_index, bias, 768, 128, "none")
    launch.tile_sparse_linear(static_x, *op)   # warm-up: loads the module outside the capture
    torch.cuda.synchronize()
    before = launch.SPLIT_LAUNCHES
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = launch.tile_sparse_linear(static_x, *op)
    assert launch.SPLIT_LAUNCHES == before + 1
    for _ in range(3):
        x = torch.randn(200, 3072, generator=rng).half()
        static_x.copy_(x.cuda())
        static_y.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        check(fmt, x, b, static_y.cpu())


def test_auto_split_only_below_one_round(rng, monkeypatch):
    """The default (SPARSETRT_TAIL_SPLIT unset): a launch of fewer items than SMs is split, one with whole rounds
    runs the unsplit entry point."""
    from trt_plugins import launch

    monkeypatch.delenv("SPARSETRT_TAIL_SPLIT", raising=False)
    fmt, b = make_format(HiNM(vector=128), 0.75, 768, 3072, torch.float16, rng)   # 6 items per 256 tokens
    sms = launch.runtime(0).sm_count
    for m, splits in ((1, 1), (256, 1), (256 * (sms // 6 + 1), 0)):
        x = torch.randn(m, 3072, generator=rng).half()
        before = launch.SPLIT_LAUNCHES
        y = run_kernel(fmt, x, b, "none", family="wgmma_sp")
        assert launch.SPLIT_LAUNCHES - before == splits, f"M={m}"
        check(fmt, x, b, y)


def test_no_split_under_a_capture_torch_does_not_own(rng, monkeypatch):
    """A TensorRT engine captured into a CUDA graph: enqueue's stream is being captured by someone else, so the
    launch layer must not allocate the split's workspace (torch's allocator could cudaMalloc); the graph replays
    the unsplit kernel and the result is right."""
    import ctypes

    from trt_plugins import launch

    monkeypatch.delenv("SPARSETRT_TAIL_SPLIT", raising=False)
    cu = ctypes.CDLL("libcuda.so.1")
    fmt, b = make_format(HiNM(vector=128), 0.75, 768, 3072, torch.float16, rng)   # 6 items at M = 64: splits
    f, bias = fmt.to("cuda"), b.cuda()
    x = torch.randn(64, 3072, generator=rng).half()
    xt = launch.to_feature_major(x.cuda())
    y = torch.full((64, 768), float("nan"), dtype=torch.float16, device="cuda")
    stream = torch.cuda.Stream()
    args = dict(xt_ptr=xt.data_ptr(), ldx=xt.shape[1], values_ptr=f.values.data_ptr(), meta_ptr=f.meta.data_ptr(),
                k_index_ptr=f.k_index.data_ptr(), k_offsets_ptr=f.k_offsets.data_ptr(),
                row_index_ptr=f.row_index.data_ptr(), bias_ptr=bias.data_ptr(), y_ptr=y.data_ptr(), M=64, K=3072,
                N=768, tile_rows=128, num_tiles=fmt.num_tiles, dtype="float16", activation="none",
                stream=stream.cuda_stream, family="wgmma_sp", kept_total=f.k_index.numel())
    before = launch.SPLIT_LAUNCHES
    assert launch.enqueue(**args).split.parts > 1 and launch.SPLIT_LAUNCHES == before + 1   # eager: splits
    monkeypatch.setenv("SPARSETRT_TAIL_SPLIT", "0")
    launch.enqueue(**args)   # warm-up of the unsplit kernel, as an engine runs once before it is captured
    monkeypatch.delenv("SPARSETRT_TAIL_SPLIT")
    torch.cuda.synchronize()
    y.fill_(float("nan"))
    torch.cuda.synchronize()
    handle = ctypes.c_void_p(stream.cuda_stream)
    assert cu.cuStreamBeginCapture_v2(handle, 0) == 0   # CU_STREAM_CAPTURE_MODE_GLOBAL, the strictest
    error = None
    try:
        p = launch.enqueue(**args)
    except Exception as err:   # noqa: BLE001  (end the capture first, then report)
        error = err
    graph = ctypes.c_void_p()
    ended = cu.cuStreamEndCapture(handle, ctypes.byref(graph))
    assert error is None, f"enqueue under a foreign capture raised {error!r}"
    assert ended == 0, f"the capture was invalidated (cuStreamEndCapture -> {ended})"
    assert p.split.parts == 1 and launch.SPLIT_LAUNCHES == before + 1, "split inside a foreign capture"
    exe = ctypes.c_void_p()
    assert cu.cuGraphInstantiateWithFlags(ctypes.byref(exe), graph, ctypes.c_ulonglong(0)) == 0
    assert cu.cuGraphLaunch(exe, handle) == 0
    stream.synchronize()
    check(fmt, x, b, y.cpu())
    cu.cuGraphExecDestroy(exe), cu.cuGraphDestroy(graph)
