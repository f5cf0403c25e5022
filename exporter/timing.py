"""Median wall time of a callable: CUDA events on the GPU (after a synchronize), perf_counter on the CPU,
and CUDA-graph replays (GPU time without per-call launch overhead).  Shared by `sparsetrt bench`,
the example's GPU benchmark and tools/bench_*.py."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_ms(fn: Callable[[], object], device: str = "cuda", warmup: int = 5, reps: int = 30) -> float:
    import torch

    for _ in range(warmup):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def graph_median_ms(fn: Callable[[], object], warmup: int = 5, reps: int = 30, calls: int = 1) -> float:
    """Capture `calls` calls of `fn` in one CUDA graph (after warm-up on a side stream) and time its replays;
    returns the median per call.  Several calls per graph let `fn` rotate over input buffers (so repeated
    calls do not just re-read the L2 cache) while launch overhead stays out of the time."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    return median_ms(graph.replay, "cuda", warmup, reps) / calls
