"""Launch layer for the tile-sparse GEMM kernels: plan (pure Python), load (pycuda), launch (any stream).

    plan(M, K, N, tile_rows, num_tiles, dtype, activation, family) -> LaunchPlan   # no GPU needed
    enqueue(xt_ptr=..., ..., stream=handle)                                        # raw device pointers
    tile_sparse_linear(x, values, ...)                                             # torch tensors

Two kernel families read the same bytes: "mma_sp" (mma.sp.m16n8k32, sm_80+, every tile height that is a
multiple of 32; also what the TensorRT AOT plugin embeds) and "wgmma_sp" (Hopper wgmma.mma_async.sp, sm_90a
cubin, tile heights that are multiples of 64, 16-byte aligned XT rows).  `choose_family` picks wgmma_sp on
compute capability 9.0 where it applies; SPARSETRT_KERNEL=mma_sp|wgmma_sp forces one (benchmarks, tests).

The kernel reads activations feature-major, XT[K, ldx] (see cuda/tile_sparse_gemm.cuh); the torch
path transposes X[M, K] into a padded XT first.  pycuda loads the module into the primary context
that PyTorch also uses.  pycuda cannot launch on a stream it did not create, so `enqueue` forks from
the caller's stream (torch's current stream or TensorRT's) to a pycuda-owned stream with events and
joins back: the launch is ordered like any other work on the caller's stream, also while a CUDA
graph is being captured on it.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from . import tail_split

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"
FATBIN = "sparsetrt_kernels.fatbin"
SM90A_CUBIN = "sparsetrt_kernels_sm90a.cubin"
FAMILIES = ("mma_sp", "wgmma_sp")
ACTIVATIONS = {"none": 0, "relu": 1, "gelu": 2}
DTYPES = {"float16": "f16", "bfloat16": "bf16"}
THREADS = 128
KEPT_PER_STAGE = 32
FILL_ROWS_PER_CTA = 64
CTA_ROWS = (128, 64, 32)
DEFAULT_SHARED_LIMIT = 48 * 1024   # above this a kernel needs cudaFuncAttributeMaxDynamicSharedMemorySize


class KernelUnavailable(RuntimeError):
    """No usable kernel binary / GPU runtime (pycuda missing, no GPU, no nvcc for the fallback)."""


@dataclass(frozen=True)
class LaunchPlan:
    kernel_name: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_bytes: int
    cta_rows: int
    gemm_ctas: int
    fill_ctas: int
    family: str = "mma_sp"
    split: tail_split.TailSplit = tail_split.NO_SPLIT   # wgmma_sp: the last partial round's split along K


# ---- the Hopper family: mirrors of Sm90Shape<BM> in cuda/tile_sparse_gemm_sm90.cuh ----------------------
SM90_TOKENS = 256           # tokens per CTA
SM90_KEPT_PER_STAGE = 64    # 2 wgmma k32 steps
SM90_MAX_SMEM = 227 * 1024
SM90_DEFAULT_SMS = 132      # H100 / H200 SXM; the runtime passes the GPU's own count


def sm90_cta_rows_for(tile_rows: int) -> int:
    """CTA height of the wgmma kernel: 128 or 64 (one wgmma is 64 rows); ValueError otherwise."""
    for bm in (128, 64):
        if tile_rows % bm == 0:
            return bm
    raise ValueError(f"tile_rows={tile_rows}: the wgmma kernel needs a multiple of 64")


SM90_HALF_TILE_MAX_STEPS = 64   # items of at most this many k32 steps (2048 kept columns) run in 64-row halves


def _sm90_cta_rows(tile_rows: int, tile_items: int, fill_items: int, sm_count: int, steps: int = 0) -> int:
    """BM of a launch: 128 for 128-row tiles, except where their 64-row halves still fit in one round
    (2 * tiles x token tiles + fill items <= SMs: small M) and the items are short (<= SM90_HALF_TILE_MAX_STEPS k32
    steps): 1.2-1.4x faster on the H200 at BERT sizes; at Llama-7B down (172 steps) each half gathers the whole
    tile's rows again and BM = 128 with the tail split is faster (docs/KERNEL_NOTES.md v9).
    SPARSETRT_SM90_CTA_ROWS=64 / 128 forces one (comparisons), "auto" is the default."""
    bm = sm90_cta_rows_for(tile_rows)
    setting = os.environ.get("SPARSETRT_SM90_CTA_ROWS", "auto").strip().lower()
    if setting not in ("auto", "64", "128"):
        raise ValueError(f"SPARSETRT_SM90_CTA_ROWS={setting!r}: expected 'auto', '64' or '128'")
    if bm != 128 or setting == "128":
        return bm
    if setting == "64" or (2 * tile_items * (tile_rows // 128) + fill_items <= sm_count
                           and steps <= SM90_HALF_TILE_MAX_STEPS):
        return 64
    return 128


def sm90_threads(cta_rows: int) -> int:
    """2 consumer warpgroups + 1 producer (BM = 128) or 2 (BM = 64): Sm90Shape<BM>::kThreads."""
    return 128 * (2 + (1 if cta_rows == 128 else 2))


def sm90_shared_bytes(cta_rows: int) -> int:
    stage = -(-(SM90_KEPT_PER_STAGE * SM90_TOKENS * 2 + 2 * cta_rows * 32 + 2 * cta_rows * 4) // 1024) * 1024
    # epilogue tiles of 64 tokens: [64][rows + 8] (token-major Y) or [rows][64 + 8] (feature-major YT), the larger
    out_tiles = (1 if cta_rows == 128 else 2) * max(64 * (cta_rows + 8), cta_rows * (64 + 8)) * 2
    stages = min(6, (SM90_MAX_SMEM - 2048 - out_tiles) // stage)
    return stages * stage + out_tiles + 2 * stages * 8 + 16 + 1024   # + the per-tile map ring word


def sm90_kernel_name(dtype: str, cta_rows: int, activation: str, y_feature_major: bool = False) -> str:
    """`tsgemm90_<dtype>_bm<rows>_<act>`, with `_yfm` for the variant that writes YT[N, M]."""
    name = kernel_name(dtype, cta_rows, activation).replace("tsgemm_", "tsgemm90_", 1)
    return name + "_yfm" if y_feature_major else name


def wgmma_applies(tile_rows: int, ldx: int, xt_ptr: int = 0, k_index_ptr: int = 0) -> bool:
    """The wgmma kernel's own rules beyond check_problem: 64-row multiples, 16-byte aligned rows of XT, and a
    16-byte aligned k_index (its producer loads the kept indices as int4 at BM = 128, int2 at BM = 64)."""
    return tile_rows % 64 == 0 and ldx % 8 == 0 and xt_ptr % 16 == 0 and k_index_ptr % 16 == 0


def choose_family(tile_rows: int, ldx: int, xt_ptr: int = 0, capability: tuple[int, int] | None = None,
                  wgmma_loaded: bool | None = None, k_index_ptr: int = 0) -> str:
    """'wgmma_sp' on compute capability 9.0 for tiles of 64·k rows when it applies and its module is loaded
    (`wgmma_loaded`: the runtime's answer, which also covers a cubin compiled at first use; None = the prebuilt
    cubin exists), else 'mma_sp'.  Since the producer's 32-bit gather addressing (v6d) wgmma_sp is also faster for
    64-row tiles, on all 8 benchmark shapes (H200, 2026-12-02, docs/KERNEL_NOTES.md).
    SPARSETRT_KERNEL=mma_sp|wgmma_sp overrides (a forced wgmma_sp that cannot run raises ValueError)."""
    forced = os.environ.get("SPARSETRT_KERNEL", "")
    if forced and forced not in FAMILIES:
        raise ValueError(f"SPARSETRT_KERNEL='{forced}': expected one of {FAMILIES}")
    if forced == "mma_sp":
        return "mma_sp"
    ok = wgmma_applies(tile_rows, ldx, xt_ptr, k_index_ptr)
    if forced == "wgmma_sp":
        if not ok:
            raise ValueError(f"SPARSETRT_KERNEL=wgmma_sp: tile_rows={tile_rows} (needs a multiple of 64), ldx={ldx} "
                             f"(needs a multiple of 8), or an XT or k_index pointer that is not 16-byte aligned")
        return "wgmma_sp"
    preferred = ok and capability == (9, 0)
    loaded = _sm90a_cubin_present() if wgmma_loaded is None else wgmma_loaded
    return "wgmma_sp" if preferred and loaded else "mma_sp"


@functools.lru_cache(maxsize=1)
def _sm90a_cubin_present() -> bool:
    """Checked once: a file-system stat on every call shows up in eager per-layer launch overhead."""
    return (KERNEL_DIR / SM90A_CUBIN).is_file()


def cta_rows_for(tile_rows: int) -> int:
    """CTA height: the largest of 128/64/32 that divides the tile height (one B gather feeds all rows)."""
    for bm in CTA_ROWS:
        if tile_rows % bm == 0:
            return bm
    raise ValueError(f"tile_rows={tile_rows} is not a multiple of 32, which the kernels need")


def tokens_per_cta(cta_rows: int) -> int:
    """Mirror of CtaShape<BM>::kTokens: 4 warps of 64x64 (32x64) tiles, 2x2 for BM = 128 else 1x4."""
    return 128 if cta_rows == 128 else 256


def shared_bytes(cta_rows: int, low_smem: bool = False) -> int:
    """Mirror of CtaShape<BM, kLowSmem>::kSmemBytes in cuda/tile_sparse_gemm.cuh (`low_smem`: the <= 48 KB
    variant behind the `<name>_aot` entry points)."""
    stages = (3 if cta_rows == 128 else 2) if low_smem else (6 if cta_rows == 128 else 4)
    tokens = tokens_per_cta(cta_rows)
    stage = cta_rows * (KEPT_PER_STAGE // 2) * 2 + cta_rows * 4 + KEPT_PER_STAGE * tokens * 2
    out_tile = tokens * (cta_rows + 8) * 2
    return max(stages * stage, out_tile)


def check_problem(M: int, K: int, N: int, tile_rows: int, num_tiles: int, dtype: str) -> None:
    """Raise ValueError naming the dimension the kernels cannot run."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype '{dtype}': the sparse-tensor-core kernels run float16 or bfloat16 only")
    if M < 0:
        raise ValueError(f"M={M}: the number of tokens must be >= 0")
    if K < KEPT_PER_STAGE:
        raise ValueError(f"K={K}: the input dimension must be >= {KEPT_PER_STAGE}")
    cta_rows_for(tile_rows)
    if num_tiles < 1 or num_tiles * tile_rows > N:
        raise ValueError(f"num_tiles={num_tiles} x tile_rows={tile_rows} must be >= 1 tile and <= N={N}")
    if M * max(N, K) >= 2**31:
        raise ValueError(f"M={M} x max(N, K)={max(N, K)} overflows the kernels' 32-bit index arithmetic")


def check_xt(M: int, K: int, ldx: int) -> None:
    """XT[K, ldx] must hold M tokens per row and stay within the kernels' 32-bit offsets."""
    if ldx < M:
        raise ValueError(f"ldx={ldx} must be >= M={M} (XT is [K, ldx])")
    if K * ldx >= 2**31:
        raise ValueError(f"XT[K={K}, ldx={ldx}] has {K * ldx} elements: the kernels' 32-bit offsets need < 2^31")


def kernel_name(dtype: str, cta_rows: int, activation: str) -> str:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation '{activation}': expected one of {sorted(ACTIVATIONS)}")
    return f"tsgemm_{DTYPES[dtype]}_bm{cta_rows}_{activation}"


def plan(M: int, K: int, N: int, tile_rows: int, num_tiles: int, dtype: str, activation: str = "none",
         family: str = "mma_sp", sm_count: int = SM90_DEFAULT_SMS, y_feature_major: bool = False,
         split_tail: bool = False, kept_total: int | None = None) -> LaunchPlan:
    """Grid, block and shared memory of one launch.  The wgmma_sp kernel is persistent: at most `sm_count`
    CTAs (one per SM) loop over its work items (gemm_ctas GEMM items, then fill_ctas pruned-rows items).
    `y_feature_major`: the kernel writes YT[N, M] (wgmma_sp only; the torch path transposes for mma_sp).
    `split_tail` (wgmma_sp): split the last partial round's items along K where the cost model says it pays
    (trt_plugins/tail_split.py; `kept_total`, the length of k_index, sizes the items, else K columns per tile)."""
    check_problem(M, K, N, tile_rows, num_tiles, dtype)
    if family == "wgmma_sp":
        steps = (kept_total // num_tiles if kept_total else K) // KEPT_PER_STAGE
        return _plan_sm90(M, N, tile_rows, num_tiles, dtype, activation, sm_count, y_feature_major, steps,
                          split_tail)
    if family != "mma_sp":
        raise ValueError(f"kernel family '{family}': expected one of {FAMILIES}")
    if y_feature_major:
        raise ValueError("y_feature_major: only the wgmma_sp kernel writes YT[N, M]; the mma_sp kernel writes Y[M, N]")
    bm = cta_rows_for(tile_rows)
    m_tiles = -(-M // tokens_per_cta(bm))
    gemm = num_tiles * (tile_rows // bm) * m_tiles
    pruned = N - num_tiles * tile_rows
    fill = m_tiles * -(-pruned // FILL_ROWS_PER_CTA)
    return LaunchPlan(kernel_name(dtype, bm, activation), (gemm + fill, 1, 1), (THREADS, 1, 1), shared_bytes(bm),
                      bm, gemm, fill)


def _plan_sm90(M: int, N: int, tile_rows: int, num_tiles: int, dtype: str, activation: str,
               sm_count: int, y_feature_major: bool = False, steps: int = 0, split_tail: bool = False) -> LaunchPlan:
    """steps: k32 steps of a typical item (BM choice, the tail split's cost model); split_tail: may split."""
    m_tiles = -(-M // SM90_TOKENS)
    fill = m_tiles * -(-(N - num_tiles * tile_rows) // FILL_ROWS_PER_CTA)
    bm = _sm90_cta_rows(tile_rows, num_tiles * m_tiles, fill, sm_count, steps)
    split_steps = steps if split_tail else 0
    gemm = num_tiles * (tile_rows // bm) * m_tiles
    split = (tail_split.choose(gemm, sm_count, split_steps, tail_split.setting(), fill, bm, -(-M // m_tiles))
             if split_steps else tail_split.NO_SPLIT)
    grid = max(1, min(split.units(gemm) + fill, sm_count))
    name = sm90_kernel_name(dtype, bm, activation, y_feature_major) + ("_split" if split.parts > 1 else "")
    return LaunchPlan(name, (grid, 1, 1),
                      (sm90_threads(bm), 1, 1), sm90_shared_bytes(bm), bm, gemm, fill, "wgmma_sp", split)


def ptx_path(arch: str = "sm_90") -> Path:
    if arch != "sm_90":
        raise ValueError(f"only sm_90 PTX is built (compute_90 PTX JIT-compiles for newer GPUs), got {arch}")
    path = KERNEL_DIR / "sparsetrt_kernels_sm90.ptx"
    if not path.is_file():
        raise KernelUnavailable(f"{path} is missing: build the kernels with `python cuda/build.py`")
    return path


# ---- the Hopper kernel's tensor map of the compressed values (TMA loads of A) --------------------------
TENSOR_MAP_UINT16, TENSOR_MAP_SWIZZLE_32B, TENSOR_MAP_SWIZZLE_128B, TENSOR_MAP_L2_128B = 1, 1, 3, 2   # cuda.h enums


@dataclass(frozen=True)
class ValuesMap:
    """cuTensorMapEncodeTiled's arguments for the values of tiles that all keep `kept` columns: the values viewed
    as [rows, kept / 2] 16-bit elements (row pitch kept bytes), boxes of 16 values x cta_rows rows with the 32-byte
    swizzle that the wgmma kernel's A layout is (Sm90Shape: chunk h of row r at r * 32 + (h ^ ((r >> 2) & 1)) * 16)."""
    rows: int
    kept: int
    cta_rows: int

    swizzle = TENSOR_MAP_SWIZZLE_32B

    @property
    def dims(self) -> tuple[int, int]:      # innermost first
        return (self.kept // 2, self.rows)

    @property
    def strides(self) -> tuple[int]:        # bytes, dims 1.. (row pitch)
        return (self.kept,)

    @property
    def box(self) -> tuple[int, int]:
        return (16, self.cta_rows)


def values_map_for(kept_total: int | None, num_tiles: int, tile_rows: int, cta_rows: int) -> ValuesMap | None:
    """The values map when the tiles can share one (the kept count divides evenly over the tiles and is a multiple
    of the kernel's 32-column step), else None.  A map built from a wrong count is still safe: the kernel uses it
    only when every tile's k_offsets match it, and otherwise loads all values with cp.async."""
    if not kept_total or kept_total % num_tiles:
        return None
    kept = kept_total // num_tiles
    return ValuesMap(num_tiles * tile_rows, kept, cta_rows) if kept % 32 == 0 else None


@dataclass(frozen=True)
class YMap:
    """cuTensorMapEncodeTiled's arguments for the wgmma kernel's TMA stores of token-major Y[M, N] (16-bit):
    boxes of 64 features x 32 tokens with the 128-byte swizzle of its epilogue buffers (chunk c of token n at
    n * 128 + (c ^ (n & 7)) * 16).  The map bounds the stores: tokens past M are not written."""
    M: int
    N: int

    swizzle = TENSOR_MAP_SWIZZLE_128B

    @property
    def dims(self) -> tuple[int, int]:      # innermost first
        return (self.N, self.M)

    @property
    def strides(self) -> tuple[int]:        # bytes, dims 1.. (row pitch)
        return (2 * self.N,)

    @property
    def box(self) -> tuple[int, int]:
        return (64, 32)


def y_map_for(M: int, N: int, y_ptr: int, y_feature_major: bool) -> YMap | None:
    """The Y map when the kernel can store Y by TMA: token-major Y, 16-byte aligned, rows of whole 16-byte chunks
    (N % 8 == 0, a tensor map's row pitch must be a multiple of 16 bytes).  The kernel uses it for the work items
    whose rows are contiguous output features (no row_index scatter); the others keep 16-byte st.global."""
    if y_feature_major or y_ptr % 16 or N % 8 or M < 1:
        return None
    return YMap(M, N)


_NO_MAP = bytes(128)


@functools.lru_cache(maxsize=1)
def _libcuda():
    """The driver API library, loaded once (tensor maps, parameter offsets, capture queries)."""
    import ctypes

    return ctypes.CDLL("libcuda.so.1")


@functools.lru_cache(maxsize=4096)
def _encode_map(ptr: int, view: ValuesMap | YMap) -> bytes:
    """A tensor map's 128 bytes (a pure function of the pointer and the view, hence cached); the zero map when the
    driver has no cuTensorMapEncodeTiled (CUDA < 12) or refuses the view, and the kernel then uses cp.async for the
    values / st.global for Y."""
    import ctypes

    try:
        encode = _libcuda().cuTensorMapEncodeTiled
    except (OSError, AttributeError):
        return _NO_MAP
    u64x2, u64x1, u32x2 = ctypes.c_uint64 * 2, ctypes.c_uint64 * 1, ctypes.c_uint32 * 2
    encode.restype = ctypes.c_int
    encode.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p, u64x2, u64x1, u32x2, u32x2,
                       ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    out = (ctypes.c_uint64 * 16)()
    res = encode(ctypes.addressof(out), TENSOR_MAP_UINT16, 2, ctypes.c_void_p(ptr), u64x2(*view.dims),
                 u64x1(*view.strides), u32x2(*view.box), u32x2(1, 1), 0, view.swizzle, TENSOR_MAP_L2_128B, 0)
    return bytes(out) if res == 0 else _NO_MAP


VALUES_TMA_LAUNCHES = 0   # wgmma_sp launches that passed a values map (tests check the TMA path ran)
TILE_MAP_LAUNCHES = 0     # of those, launches that passed it as the template of per-tile maps
Y_TMA_LAUNCHES = 0        # wgmma_sp launches that passed a Y map


TILE_MAPS_KEPT = -1       # values_map_kept for a template map (sm90::kTileMapsKept)
TILE_MAPS_MIN_K = 2048    # sm90::kTileMapsMinK: below it the kernel keeps cp.async for tiles without a common map


def tile_maps_apply(cta_rows: int, K: int) -> bool:
    """Whether the wgmma kernel can build per-tile values maps itself (tiles of different kept counts, TVW): for CTAs
    of 128 rows (at 64 the extra producer loop spilled under the 128-register cap) and K >= TILE_MAPS_MIN_K (per item
    the map rewrite costs more than it saves at K = 768 / 1024, measured on an H200).  The launch passes a template map
    when no single map covers the tiles; given a uniform map whose tiles do not all match it, the kernel turns to
    per-tile maps on its own.  SPARSETRT_VALUES_TMA=0 turns all values maps off (cp.async, for comparisons)."""
    return cta_rows == 128 and K >= TILE_MAPS_MIN_K


# ---- runtime (pycuda) ---------------------------------------------------------------------------------
class _Runtime:
    """Per-device: the loaded module, prepared functions, and the pycuda stream we launch on."""

    def __init__(self, device_index: int) -> None:
        try:
            import pycuda.driver as cuda
        except ImportError as err:
            raise KernelUnavailable("pycuda is not installed (pip install 'sparsetrt[gpu]')") from err
        import torch

        cuda.init()
        self.cuda = cuda
        self.device_index = device_index
        torch.cuda.init()
        self.context = cuda.Device(device_index).retain_primary_context()   # PyTorch's context
        self.context.push()
        try:
            path = _module_file(device_index)
            try:
                self.module = cuda.module_from_file(str(path))
            except cuda.Error:   # e.g. a driver too old for the shipped PTX: compile for this GPU now
                major, minor = torch.cuda.get_device_capability(device_index)
                self.module = cuda.module_from_file(str(compile_for(f"{major}{minor}")))
            self.capability = torch.cuda.get_device_capability(device_index)
            self.sm_count = torch.cuda.get_device_properties(device_index).multi_processor_count
            self.module90, path90 = _load_sm90a(cuda) if self.capability == (9, 0) else (None, None)
            # argument format of the wgmma kernels: padding, the two maps, the mma.sp kernels' parameters, two ints
            self.gemm90_args, self.gemm90_split = (_gemm90_arg_format(path90, sm90_kernel_name('float16', 128, 'none'))
                                                   if path90 else (GEMM90_ARGS, True))
            # non-blocking (CU_STREAM_NON_BLOCKING): every launch is ordered after its caller's stream by events
            # (_on_side_stream); a blocking stream would also tie it to the legacy default stream, which breaks
            # a global-mode capture of the caller's stream that torch does not own (a TensorRT engine in a graph)
            self.stream = cuda.Stream(flags=1)
        finally:
            self.context.pop()
        self.side = torch.cuda.ExternalStream(self.stream.handle, device=torch.device("cuda", device_index))
        self.functions: dict[str, object] = {}

    def function(self, name: str, shared: int, arg_format: str):
        fn = self.functions.get(name)
        if fn is None:
            if name.startswith("tsgemm90_") and self.module90 is None:
                raise KernelUnavailable(f"{name}: the sm_90a cubin is not loaded (GPU sm_{''.join(map(str, self.capability))})")
            fn = (self.module90 if name.startswith("tsgemm90_") else self.module).get_function(name)
            fn.prepare(arg_format)
            if shared > DEFAULT_SHARED_LIMIT:
                fn.set_attribute(self.cuda.function_attribute.MAX_DYNAMIC_SHARED_SIZE_BYTES, shared)
            self.functions[name] = fn
        return fn


_RUNTIMES: dict[int, _Runtime] = {}
_LOCK = threading.Lock()


def runtime(device_index: int = 0) -> _Runtime:
    with _LOCK:
        if device_index not in _RUNTIMES:
            _RUNTIMES[device_index] = _Runtime(device_index)
        return _RUNTIMES[device_index]


def _module_file(device_index: int) -> Path:
    """The prebuilt fatbin, or a cubin compiled now for this GPU when no prebuilt binary matches."""
    import torch

    major, minor = torch.cuda.get_device_capability(device_index)
    if major < 8:
        raise KernelUnavailable(f"GPU sm_{major}{minor}: mma.sp (sparse tensor cores) needs sm_80 or newer")
    prebuilt = KERNEL_DIR / FATBIN
    # the fatbin holds SASS for sm_80/86/89/90 and compute_80 PTX that the driver JIT-compiles for newer GPUs
    return prebuilt if prebuilt.is_file() else compile_for(f"{major}{minor}")


def _load_sm90a(cuda):
    """The Hopper module and its file: the prebuilt sm_90a cubin, else one compiled now; (None, None) when neither
    is possible."""
    path = KERNEL_DIR / SM90A_CUBIN
    try:
        path = path if path.is_file() else compile_for("90a", "kernels_sm90.cu")
        return cuda.module_from_file(str(path)), path
    except (KernelUnavailable, cuda.Error):
        return None, None


GEMM90_MAP_OFFSET_SM90 = 48   # where sm_90 code places the first map: params start at c[0][0x210], a map needs 64


def gemm90_fields() -> list[str]:
    """The wgmma kernels' parameters as struct fields, in order (GEMM90_ARGS split per parameter)."""
    return list(GEMM90_FIELDS)


def arg_format(fields: list[str], offsets: list[int]) -> str:
    """A struct format (native alignment, as pycuda packs it) placing each field at the kernel's byte offset:
    padding 'Nx' where the compiler left a gap beyond the natural alignment; ValueError if an offset lies before
    the field's natural place (inside the previous field: a format that would corrupt the arguments)."""
    import struct

    fmt = ""
    for field, offset in zip(fields, offsets, strict=True):
        natural = struct.calcsize(fmt + field) - struct.calcsize(field)
        if offset < natural:
            raise ValueError(f"kernel parameter at byte {offset} overlaps the previous one (next free byte {natural})")
        if offset > natural:
            fmt += f"{offset - struct.calcsize(fmt)}x"
            if struct.calcsize(fmt + field) - struct.calcsize(field) != offset:
                raise ValueError(f"kernel parameter at byte {offset} is not aligned for {field!r}")
        fmt += field
    return fmt


def _gemm90_arg_format(path: Path, name: str) -> tuple[str, bool]:
    """pycuda's argument format for the wgmma kernels, from the parameter offsets the driver reports
    (cuFuncGetParamInfo, CUDA >= 12.4), and whether the kernel takes the tail split's parameters (cubins built
    before 2026-12-04 do not; tools/ab_sm90.py still times them).  The 64-byte aligned tensor maps do not start at
    0: the compiler pads in front of them so that their absolute address in the parameter bank is aligned, and
    pycuda's packed buffer has to carry that padding.  Without the driver call: the sm_90 ABI's layout (48 bytes,
    then packed)."""
    import ctypes

    fallback = f"{GEMM90_MAP_OFFSET_SM90}x{GEMM90_ARGS}", True
    try:
        cu = _libcuda()
        info = cu.cuFuncGetParamInfo
    except (OSError, AttributeError):
        return fallback
    module, fn = ctypes.c_void_p(), ctypes.c_void_p()
    if cu.cuModuleLoad(ctypes.byref(module), str(path).encode()) != 0:
        return fallback
    try:
        if cu.cuModuleGetFunction(ctypes.byref(fn), module, name.encode()) != 0:
            return fallback
        offsets = []
        for index in range(len(GEMM90_FIELDS)):   # the driver fails past the kernel's last parameter
            offset, size = ctypes.c_size_t(), ctypes.c_size_t()
            if info(fn, ctypes.c_size_t(index), ctypes.byref(offset), ctypes.byref(size)) != 0:
                break
            offsets.append(int(offset.value))
        for fields in (GEMM90_FIELDS, GEMM90_FIELDS_NO_SPLIT):
            if len(offsets) == len(fields):
                return arg_format(list(fields), offsets), fields is GEMM90_FIELDS
        return fallback
    finally:
        cu.cuModuleUnload(module)


def compile_for(arch: str, source_name: str = "kernels.cu") -> Path:
    """Compile-at-first-use fallback: cubin for sm_<arch> into ~/.cache/sparsetrt (needs nvcc)."""
    source = KERNEL_DIR / source_name
    if not source.is_file():
        source = Path(__file__).resolve().parents[1] / "cuda" / source_name
    nvcc = shutil.which("nvcc")
    if nvcc is None or not source.is_file():
        raise KernelUnavailable(f"no prebuilt kernel for sm_{arch} and no nvcc/sources to compile one")
    cache = Path(os.environ.get("SPARSETRT_CACHE", Path.home() / ".cache" / "sparsetrt"))
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / f"{source.stem}_sm{arch}.cubin"
    if not out.is_file() or out.stat().st_mtime < source.stat().st_mtime:
        cmd = [nvcc, "-std=c++17", "-O3", "--use_fast_math", f"-gencode=arch=compute_{arch},code=sm_{arch}",
               "-cubin", str(source), "-o", str(out)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise KernelUnavailable(f"nvcc failed for sm_{arch}:\n{result.stderr}")
    return out


LAUNCH_COUNT = 0   # incremented per kernel launch; tests use it to prove the kernel path ran
LAUNCHES_BY_FAMILY = {family: 0 for family in FAMILIES}   # the same, per kernel family


def enqueue(*, xt_ptr: int, ldx: int, values_ptr: int, meta_ptr: int, k_index_ptr: int, k_offsets_ptr: int,
            row_index_ptr: int, bias_ptr: int, y_ptr: int, M: int, K: int, N: int, tile_rows: int, num_tiles: int,
            dtype: str, activation: str, stream: int | None, device_index: int = 0,
            family: str | None = None, y_feature_major: bool = False, kept_total: int | None = None) -> LaunchPlan:
    """Launch Y[M, N] = act(XT^T · W^T + b) on `stream` (a raw cudaStream_t handle; None = torch's current).

    bias_ptr = 0 means no bias; family None = `choose_family` for this GPU; `y_feature_major`: write YT[N, M]
    instead (wgmma_sp only: ValueError on the mma_sp family).  `kept_total`: the length of k_index; with it the
    wgmma kernel loads the compressed values by TMA when every tile keeps kept_total / num_tiles columns (HiNM;
    `values_map_for`; SPARSETRT_VALUES_TMA=0 turns it off, for comparisons).  Returns the plan it launched (empty
    grids launch nothing)."""
    check_xt(M, K, ldx)
    check_problem(M, K, N, tile_rows, num_tiles, dtype)
    if M == 0:
        return plan(M, K, N, tile_rows, num_tiles, dtype, activation)
    rt = runtime(device_index)
    family = family or choose_family(tile_rows, ldx, xt_ptr, rt.capability, rt.module90 is not None, k_index_ptr)
    split = family == "wgmma_sp" and _may_split(rt, stream)   # the capture query only where a split could run
    p = plan(M, K, N, tile_rows, num_tiles, dtype, activation, family, rt.sm_count, y_feature_major, split,
             kept_total)
    with _on_side_stream(rt, device_index, stream):
        _launch_gemm(rt, p, xt_ptr, ldx, values_ptr, meta_ptr, k_index_ptr, k_offsets_ptr, row_index_ptr, bias_ptr,
                     y_ptr, M, K, N, tile_rows, num_tiles, kept_total)
    return p


def _may_split(rt: _Runtime, stream: int | None = None) -> bool:
    """Whether a wgmma launch on `stream` (None: torch's current stream) may take the tail split: the cubin has its
    parameters, SPARSETRT_TAIL_SPLIT does not turn it off, and the stream is not under a capture torch does not own
    (the split's workspace comes from torch's caching allocator, which may cudaMalloc: an error inside a capture of,
    e.g., a TensorRT engine into a user's CUDA graph)."""
    return rt.gemm90_split and tail_split.enabled() and not _foreign_capture(stream)


def _foreign_capture(stream: int | None) -> bool:
    """Whether `stream` (a raw handle; None = torch's current stream) is being captured into a CUDA graph that
    torch is not capturing (cuStreamIsCapturing).  Only `stream` itself is queried: asking the legacy default stream
    while another stream is captured in global mode would invalidate that capture."""
    import ctypes

    import torch

    if stream is None:
        return False   # torch's current stream: torch's capture (its allocator serves the graph's pool) or none
    status = ctypes.c_int(0)
    if _libcuda().cuStreamIsCapturing(ctypes.c_void_p(stream), ctypes.byref(status)) != 0:
        return True    # cannot tell: play safe
    if status.value == 0:
        return False
    return not (torch.cuda.current_stream().cuda_stream == stream and torch.cuda.is_current_stream_capturing())


class _on_side_stream:
    """Order launches on our pycuda stream after the caller's stream, and the caller after them (events;
    legal during CUDA graph capture, where it forks and joins the captured stream)."""

    def __init__(self, rt: _Runtime, device_index: int, stream: int | None) -> None:
        import torch

        device = torch.device("cuda", device_index)
        self.rt = rt
        self.caller = (torch.cuda.current_stream(device) if stream is None
                       else torch.cuda.ExternalStream(stream, device=device))

    def __enter__(self):
        self.rt.side.wait_stream(self.caller)
        return self

    def __exit__(self, *exc) -> None:
        self.caller.wait_stream(self.rt.side)


GEMM_ARGS = "PPPPPPPPiiiiiii"               # the mma.sp kernels' parameters (cuda/kernels.cu)
# the wgmma kernels': values and Y maps first (after the runtime's `gemm90_args` padding), the values' kept count and
# the Y map flag, then the tail split's workspace, nonce, split items and pieces (cuda/kernels_sm90.cu)
GEMM90_FIELDS_NO_SPLIT = ("128s", "128s", *GEMM_ARGS, "i", "i")   # cubins built before 2026-12-04
GEMM90_FIELDS = (*GEMM90_FIELDS_NO_SPLIT, "P", "Q", "i", "i")
GEMM90_ARGS = "".join(GEMM90_FIELDS)


def _launch_gemm(rt: _Runtime, p: LaunchPlan, xt_ptr, ldx, values_ptr, meta_ptr, k_index_ptr, k_offsets_ptr,
                 row_index_ptr, bias_ptr, y_ptr, M, K, N, tile_rows, num_tiles, kept_total: int | None = None) -> None:
    global LAUNCH_COUNT, VALUES_TMA_LAUNCHES, Y_TMA_LAUNCHES, TILE_MAP_LAUNCHES
    args = (xt_ptr, values_ptr, meta_ptr, k_index_ptr, k_offsets_ptr, row_index_ptr,
            bias_ptr if bias_ptr else values_ptr, y_ptr, M, ldx, K, N, num_tiles, tile_rows, 1 if bias_ptr else 0)
    if p.family == "wgmma_sp":
        use_map = values_ptr % 16 == 0 and os.environ.get("SPARSETRT_VALUES_TMA", "1") != "0"
        vmap = values_map_for(kept_total, num_tiles, tile_rows, p.cta_rows) if use_map else None
        kept = vmap.kept if vmap else 0
        if vmap is None and use_map and tile_maps_apply(p.cta_rows, K):
            vmap, kept = ValuesMap(tile_rows, 32, p.cta_rows), TILE_MAPS_KEPT   # a template for per-tile maps
        blob = _encode_map(values_ptr, vmap) if vmap else _NO_MAP
        kept = kept if blob is not _NO_MAP else 0
        TILE_MAP_LAUNCHES += kept == TILE_MAPS_KEPT
        ymap = y_map_for(M, N, y_ptr, p.kernel_name.endswith("_yfm")) if os.environ.get("SPARSETRT_Y_TMA", "1") != "0" else None
        y_blob = _encode_map(y_ptr, ymap) if ymap else _NO_MAP
        y_on = int(y_blob is not _NO_MAP)
        VALUES_TMA_LAUNCHES += kept != 0
        Y_TMA_LAUNCHES += y_on
        split_args, workspace = _split_args(rt, p)
        rt.function(p.kernel_name, p.shared_bytes, rt.gemm90_args).prepared_async_call(
            p.grid, p.block, rt.stream, blob, y_blob, *args, kept, y_on, *split_args, shared_size=p.shared_bytes)
        del workspace   # the caching allocator reuses it only for work on our stream, ordered after this launch
    else:
        rt.function(p.kernel_name, p.shared_bytes, GEMM_ARGS).prepared_async_call(
            p.grid, p.block, rt.stream, *args, shared_size=p.shared_bytes)
    LAUNCH_COUNT += 1
    LAUNCHES_BY_FAMILY[p.family] += 1


SPLIT_LAUNCHES = 0   # wgmma launches with a tail split (tests use it to prove the split ran)


def _split_args(rt: _Runtime, p: LaunchPlan) -> tuple[tuple, object]:
    """The tail split's kernel arguments (none for a cubin without them) and its workspace tensor, allocated on our
    stream from torch's caching allocator (also inside a CUDA graph capture, from the graph's pool)."""
    global SPLIT_LAUNCHES
    if not rt.gemm90_split:
        return (), None
    if p.split.parts < 2:
        return (0, 0, 0, 1), None
    import torch

    with torch.cuda.stream(rt.side):
        workspace = torch.empty(tail_split.workspace_bytes(p.split, p.cta_rows), dtype=torch.uint8,
                                device=torch.device("cuda", rt.device_index))
    SPLIT_LAUNCHES += 1
    return (workspace.data_ptr(), tail_split.nonce(), p.split.tail, p.split.parts), workspace


def _launch_transpose(rt: _Runtime, x_ptr: int, xt_ptr: int, m: int, k: int, ldx: int) -> None:
    fn = rt.function("transpose16", 0, "PPiii")
    fn.prepared_async_call((-(-m // 64), -(-k // 64), 1), (256, 1, 1), rt.stream, x_ptr, xt_ptr, m, k, ldx)


# ---- torch path ---------------------------------------------------------------------------------------
def supports(x, values, two_four: bool, in_features: int | None = None) -> bool:
    """True when the kernels can run this call (else the op falls back to the reference math).
    `in_features`: K when x is feature-major (default: x's last dimension)."""
    import torch

    k = x.shape[-1] if in_features is None else in_features
    return (x.is_cuda and values.is_cuda and two_four and x.dtype in (torch.float16, torch.bfloat16)
            and values.dtype == x.dtype and k >= KEPT_PER_STAGE and _kernels_present())


@functools.lru_cache(maxsize=1)
def _kernels_present() -> bool:
    """pycuda importable and a kernel binary (or the means to compile one) present; checked once."""
    try:
        import pycuda  # noqa: F401
    except ImportError:
        return False
    return (KERNEL_DIR / FATBIN).is_file() or (KERNEL_DIR / "kernels.cu").is_file() or shutil.which("nvcc") is not None


LAYERNORM_FM_MAX_SMEM = 200 * 1024   # the kernel caches a [D][32] slice: D <= 3200 for 16-bit data


def layer_norm_feature_major(xt, weight, bias, eps: float, out=None):
    """LayerNorm over the features of XT[D, M] (each column normalised), returning YT[D, M]: our kernel on CUDA
    for fp16/bf16 (rows of XT may be padded: stride(0) >= M), else PyTorch's layer_norm on the transposed view.
    `out`: a contiguous [D, M] tensor to write (tests poison it first)."""
    import torch

    d, m = xt.shape
    if weight.shape != (d,) or bias.shape != (d,):
        raise ValueError(f"layer_norm_feature_major: weight and bias must have shape ({d},) for XT[{d}, {m}], got "
                         f"{tuple(weight.shape)} and {tuple(bias.shape)}")
    fast = (xt.is_cuda and xt.dtype in (torch.float16, torch.bfloat16) and xt.stride(1) == 1 and m > 0
            and d * 64 <= LAYERNORM_FM_MAX_SMEM and _kernels_present())
    if not fast:
        return torch.nn.functional.layer_norm(xt.t(), (d,), weight, bias, eps).t().contiguous()
    w, b = (t.to(xt.dtype).contiguous() for t in (weight, bias))
    yt = torch.empty(d, m, dtype=xt.dtype, device=xt.device) if out is None else out
    if yt.shape != (d, m) or not yt.is_contiguous() or yt.dtype != xt.dtype:
        raise ValueError(f"layer_norm_feature_major: out must be a contiguous {xt.dtype} [{d}, {m}] tensor")
    device_index = xt.device.index or 0
    rt = runtime(device_index)
    fn = rt.function(f"layernorm_fm_{DTYPES[str(xt.dtype).removeprefix('torch.')]}", LAYERNORM_FM_MAX_SMEM, "PPPPiiiif")
    with _on_side_stream(rt, device_index, None):
        fn.prepared_async_call((-(-m // 32), 1, 1), (256, 1, 1), rt.stream, xt.data_ptr(), w.data_ptr(), b.data_ptr(),
                               yt.data_ptr(), d, m, xt.stride(0), m, float(eps), shared_size=d * 64)
    return yt


ADD_LN_VECS = (1, 2, 4, 8)   # kernel variants: 16-byte vectors per lane per row, D <= 256 * v
ADD_LN_TOKENS = (8, 16, 32, 64)   # kernel variants: tokens per block (= length of each YT row run it writes)
ADD_LN_MAX_SMEM = 100 * 1024      # the [tokens][D/2 + 1] word tile of one block


def add_layer_norm_supported(x, residual=None) -> bool:
    """True when `add_layer_norm`'s kernel runs this call: CUDA fp16/bf16, D % 8 == 0, D <= 2048, contiguous
    16-byte aligned x (and residual).  Else the op computes the reference (exporter.ops)."""
    import torch

    d = x.shape[-1] if x.dim() else 0
    ins = (x,) if residual is None else (x, residual)
    return (x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and d % 8 == 0 and 0 < d <= 256 * ADD_LN_VECS[-1]
            and x.numel() > 0 and all(t.is_contiguous() and t.data_ptr() % 16 == 0 for t in ins)
            and _kernels_present())


def add_layer_norm(x, residual, weight, bias, eps: float, feature_major: bool = True, out=None, out_t=None,
                   tokens_per_block: int | None = None):
    """Y = LayerNorm(x + residual) over the last dimension of token-major x[..., D] (residual may be None) by our
    kernel, and with `feature_major` also YT[D, M] (M = tokens), the layout the next sparse layer gathers from:
    one kernel instead of an add, a LayerNorm and a transpose.  Returns (Y, YT or None).  x + residual is
    rounded to x's dtype before the statistics, as PyTorch's `ln(x + r)` does.  Only for calls that
    `add_layer_norm_supported` accepts (the op `sparsetrt::add_layer_norm` checks and falls back).
    `out` / `out_t`: tensors to write (tests poison them first).  `tokens_per_block`: one of ADD_LN_TOKENS
    (default: env SPARSETRT_LN_TOKENS, else 16, the fastest at M = 16384, D = 1024 on an H200), lowered while
    the shared tile of its kernel width would exceed ADD_LN_MAX_SMEM."""
    import torch

    d = x.shape[-1]
    if not add_layer_norm_supported(x, residual):
        raise ValueError(f"add_layer_norm: the kernel needs CUDA fp16/bf16, D % 8 == 0, D <= {256 * ADD_LN_VECS[-1]} "
                         f"and contiguous 16-byte aligned inputs; got {tuple(x.shape)} {x.dtype} on {x.device}")
    if weight.shape != (d,) or bias.shape != (d,):
        raise ValueError(f"add_layer_norm: weight and bias must have shape ({d},) for x of shape {tuple(x.shape)}, got "
                         f"{tuple(weight.shape)} and {tuple(bias.shape)}")
    if residual is not None and (residual.shape != x.shape or residual.dtype != x.dtype):
        raise ValueError(f"add_layer_norm: residual must match x ({tuple(x.shape)}, {x.dtype}), got "
                         f"{tuple(residual.shape)}, {residual.dtype}")
    m = x.numel() // d
    y = torch.empty_like(x) if out is None else out
    yt = (torch.empty(d, m, dtype=x.dtype, device=x.device) if out_t is None else out_t) if feature_major else None
    if y.shape != x.shape or not y.is_contiguous() or y.dtype != x.dtype or y.data_ptr() % 16:
        raise ValueError(f"add_layer_norm: out must be a contiguous, 16-byte aligned {x.dtype} tensor of shape {tuple(x.shape)}")
    if yt is not None and (yt.shape != (d, m) or not yt.is_contiguous() or yt.dtype != x.dtype):
        raise ValueError(f"add_layer_norm: out_t must be a contiguous {x.dtype} [{d}, {m}] tensor")
    # 16-byte loads of gamma and beta: copy a parameter that is a view at an odd offset
    w, b = (t.to(x.dtype).contiguous() if t.data_ptr() % 16 == 0 else t.to(x.dtype).clone() for t in (weight, bias))
    vec = next(v for v in ADD_LN_VECS if 256 * v >= d)
    tok = int(tokens_per_block or os.environ.get("SPARSETRT_LN_TOKENS", 16))
    if tok not in ADD_LN_TOKENS:
        raise ValueError(f"add_layer_norm: tokens_per_block must be one of {ADD_LN_TOKENS}, got {tok}")
    def tile_bytes(tokens: int, width: int) -> int:   # the [tokens][width/2 + 1] word tile of one block
        return tokens * (width // 2 + 1) * 4

    # sized for the variant's widest D, so the opt-in set at its first launch covers every D it serves
    while tok > ADD_LN_TOKENS[0] and tile_bytes(tok, 256 * vec) > ADD_LN_MAX_SMEM:
        tok //= 2
    device_index = x.device.index or 0
    rt = runtime(device_index)
    shared = tile_bytes(tok, d) if yt is not None else 0
    fn = rt.function(f"add_layernorm_{DTYPES[str(x.dtype).removeprefix('torch.')]}_v{vec}_t{tok}",
                     tile_bytes(tok, 256 * vec), "PPPPPPiiif")
    with _on_side_stream(rt, device_index, None):
        fn.prepared_async_call((-(-m // tok), 1, 1), (256, 1, 1), rt.stream, x.data_ptr(),
                               residual.data_ptr() if residual is not None else 0, w.data_ptr(), b.data_ptr(),
                               y.data_ptr(), yt.data_ptr() if yt is not None else 0, m, d, m, float(eps),
                               shared_size=shared)
    return y, yt


def to_feature_major(x2d, pad_to: int = 8):
    """X[M, K] → XT[K, ldx] with ldx = M rounded up to `pad_to` (16-byte aligned rows for the gather).

    On CUDA with 16-bit data this runs our tiled transpose kernel (PyTorch's strided copy is several
    times slower); columns M..ldx-1 are left unwritten (they only feed outputs that are never stored)."""
    import torch

    m, k = x2d.shape
    ldx = -(-max(m, 1) // pad_to) * pad_to
    xt = torch.empty(k, ldx, dtype=x2d.dtype, device=x2d.device)
    if x2d.is_cuda and x2d.element_size() == 2 and m and _kernels_present():
        x2d = x2d.contiguous()
        device_index = x2d.device.index or 0
        rt = runtime(device_index)
        with _on_side_stream(rt, device_index, None):
            _launch_transpose(rt, x2d.data_ptr(), xt.data_ptr(), m, k, ldx)
    else:
        xt[:, :m].copy_(x2d.t())
    return xt


def tile_sparse_linear(x, values, meta, k_index, k_offsets, row_index, bias, out_features: int, tile_rows: int,
                       activation: str, xt=None, x_feature_major: bool = False, y_feature_major: bool = False):
    """Torch entry point (what SparseLinear.forward runs on CUDA).  `xt` may pass a precomputed
    feature-major copy of x (benchmarks of the kernel alone).

    Layouts for chaining sparse layers without transposes: `x_feature_major` — x is XT[K, M] (2-D, unit
    stride along tokens), read as is; `y_feature_major` — return YT[N, M] instead of Y[..., N].  The wgmma_sp
    kernel writes YT itself; on the mma_sp kernel the result is transposed after the GEMM."""
    import torch

    if x_feature_major:
        if x.dim() != 2:
            raise ValueError(f"x_feature_major: x must be XT[K, M] (2-D), got shape {tuple(x.shape)}")
        k, m = x.shape
        lead = (m,)
        if m and x.stride(1) != 1:
            x = x.contiguous()
        xt = x
    else:
        k = x.shape[-1]
        lead = tuple(x.shape[:-1])
        x2d = x.reshape(-1, k)
        m = x2d.shape[0]
    y = torch.empty((out_features, m) if y_feature_major else (m, out_features), dtype=x.dtype, device=x.device)
    if m:
        ints = [t if t.is_contiguous() else t.contiguous() for t in (meta, k_index, k_offsets, row_index)]
        if any(t.dtype != torch.int32 for t in ints):
            raise ValueError("meta, k_index, k_offsets and row_index must be int32")
        values = values.contiguous()
        b = None if bias is None else bias.contiguous() if bias.dtype == x.dtype else bias.to(x.dtype).contiguous()
        device_index = x.device.index or 0
        rt = runtime(device_index)
        transpose = xt is None
        if transpose:
            x2d = x2d.contiguous()
            xt = torch.empty(k, -(-m // 8) * 8, dtype=x.dtype, device=x.device)
        if xt.shape[1] < m or xt.stride(1) != 1 or tuple(xt.shape[:1]) != (k,):
            raise ValueError(f"xt must be a row-major [K={k}, >= {m}] feature-major copy of x, got shape "
                             f"{tuple(xt.shape)} strides {xt.stride()}")
        check_xt(m, k, xt.stride(0))
        family = choose_family(tile_rows, xt.stride(0), xt.data_ptr(), rt.capability, rt.module90 is not None,
                               ints[1].data_ptr())
        yfm_in_kernel = y_feature_major and family == "wgmma_sp"
        p = plan(m, k, out_features, tile_rows, k_offsets.numel() - 1, str(x.dtype).removeprefix("torch."), activation,
                 family, rt.sm_count, yfm_in_kernel, _may_split(rt), k_index.numel())
        out = y if yfm_in_kernel or not y_feature_major else torch.empty(m, out_features, dtype=x.dtype, device=x.device)
        with _on_side_stream(rt, device_index, None):   # one fork/join for the transpose and the GEMM
            if transpose:
                _launch_transpose(rt, x2d.data_ptr(), xt.data_ptr(), m, k, xt.shape[1])
            _launch_gemm(rt, p, xt.data_ptr(), xt.stride(0), values.data_ptr(), ints[0].data_ptr(), ints[1].data_ptr(),
                         ints[2].data_ptr(), ints[3].data_ptr(), b.data_ptr() if b is not None else 0, out.data_ptr(),
                         m, k, out_features, tile_rows, k_offsets.numel() - 1, k_index.numel())
        if out is not y:
            y.copy_(out.t())
    return y if y_feature_major else y.reshape(*lead, out_features)
