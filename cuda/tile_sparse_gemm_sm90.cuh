// Hopper (sm_90a) tile-sparse GEMM on wgmma.mma_async.sp: the same problem and the same TileSparse bytes
// as tile_sparse_gemm.cuh (Y[M, N] = act(X · Wᵀ + b), X given feature-major as XT[K, ldx]), for tiles whose
// height is a multiple of 64 (one wgmma is 64 weight rows).
//
// Layers (CUTLASS-style, outermost last):
//   ptx helpers       mbarrier, wgmma fence/commit/wait, smem descriptors, setmaxnreg, stmatrix
//   Sm90Shape<BM>     the CTA tile: BM weight rows x 256 tokens, 64 kept columns (2 wgmma k32 steps) per stage
//   WorkItem          persistent schedule: CTA b takes items b, b + grid, ...; an item is one (token slice, tile,
//                     row block) in the mma.sp kernel's tile-fastest order, or a block of pruned output rows
//   producers         warpgroup 0 (BM = 128) or 0, 1 (BM = 64; one per k32 step of a stage): cp.async of A (compressed values), E (metadata) and B (a gather of kept rows
//                     of XT, one 512-byte run of tokens per kept index, moved as 128-byte lines of four rows per instruction) into a
//                     stage; completion arrives on the stage's `full` mbarrier (cp.async.mbarrier.arrive.noinc).  It runs
//                     ahead across items, so the next item's loads overlap this item's epilogue; each lane loads its own
//                     rows' kept indices 2 stages ahead.
//   consumers         the last two warpgroups: wait `full`, wgmma.sp from shared memory into fp32 registers, release the
//                     stage on `empty` once the wgmmas reading it retired
//   epilogue          bias + activation, stmatrix.trans into a [64 tokens][rows] shared tile of its own (so the
//                     pipeline keeps flowing), 16-byte stores (or the row_index scatter), four rounds per item;
//                     token-major Y with contiguous rows: TMA stores of 32-token rounds instead (epilogue_tma_y)
//
// Shared-memory layouts of one stage (all offsets from a 1024-byte aligned stage base):
//   B [0, 32 KB):  MN-major, 128-byte swizzle: 4 column blocks of 64 tokens x 64 kept rows x 128 B; kept row k,
//                  16-byte chunk c (8 tokens) of a block sits at block*8192 + k*128 + ((c ^ (k & 7)) * 16).
//                  Descriptor: LBO = 8192 (next 64 tokens), SBO = 1024 (next 8 kept rows).
//   A [32 KB, +2*BM*32): K-major, 32-byte swizzle, per k32 step: BM rows x 32 B (16 compressed values); chunk h
//                  of row r at r*32 + ((h ^ ((r >> 2) & 1)) * 16).  Descriptor: SBO = 256 (next 8 rows).
//   E [.., +2*BM*4): per k32 step the tile's metadata words for the CTA's rows, as stored in the format
//                  ([row group of 16][lane group g][half t]); lane 4g+t of warp w reads word (16w + 2g + (t & 1)).
#pragma once
#include "tile_sparse_gemm.cuh"
#include "wgmma_sp.cuh"

namespace sparsetrt {
namespace sm90 {

// Timing experiments only (tools/ablate_sm90.py builds variants; the shipped kernels use the default):
//   SPARSETRT_SM90_MAX_STAGES  cap on pipeline stages (the shared memory fits 5 at BM = 128; 4 measured 2% slower)
#ifndef SPARSETRT_SM90_MAX_STAGES
#define SPARSETRT_SM90_MAX_STAGES 6
#endif
//   SPARSETRT_SM90_TRACE       1: clock64 stamps of each CTA's item events (g_sm90_trace) and of CTAs 0-3's stages
//                              (g_sm90_stage), read back by tools/trace_sm90.py
#ifndef SPARSETRT_SM90_TRACE
#define SPARSETRT_SM90_TRACE 0
#endif
//   SPARSETRT_SM90_IDX_AHEAD   stages of kept indices each producer lane holds ahead (4 per stage at BM = 128, 2 at
//                              BM = 64; with quarter rows 3 stages measured the same as 2, 4 slower)
#ifndef SPARSETRT_SM90_IDX_AHEAD
#define SPARSETRT_SM90_IDX_AHEAD 2
#endif
//   SPARSETRT_SM90_PREGS[64] / CREGS[64]   setmaxnreg of the producer / consumer warpgroups at BM = 128 [64]: ptxas
//                              compiles each side within its count (the consumers spill below 200 at BM = 128).  The
//                              split must fit what the launch holds (128 P + 256 C <= 384 x 168 at BM = 128,
//                              256 (P + C) <= 512 x 128 at BM = 64; static_assert below), else setmaxnreg.inc waits
//                              forever (seen: a 112 / 200 build hung).  Quarter rows: 72 / 216 (56 / 224: 2-3% slower)
#ifndef SPARSETRT_SM90_PREGS
#define SPARSETRT_SM90_PREGS 72
#define SPARSETRT_SM90_CREGS 216
#endif
#ifndef SPARSETRT_SM90_PREGS64
#define SPARSETRT_SM90_PREGS64 56
#define SPARSETRT_SM90_CREGS64 200
#endif
#if SPARSETRT_SM90_TRACE
// g_sm90_trace[cta][slot]: 0 globaltimer and 1 clock at the CTA's start, 2 globaltimer and 3 clock at the consumers' end;
// item k at 4 + 6k: producer start, first stage's buffer free, last stage issued, consumer first stage full, (unused: a
// stamp at the last wgmma's retirement as well made ptxas serialise the wgmmas), epilogue done; 62 producer done.
// g_sm90_stage[cta][stage it][issue start, issued] for CTAs 0-3 (the producer's thread 0).
constexpr int kTraceSlots = 64;
__device__ unsigned long long g_sm90_trace[1024 * kTraceSlots];
__device__ unsigned long long g_sm90_stage[4 * 256 * 4];
__device__ __forceinline__ void trace_stamp(unsigned long long* at, bool global_time = false) {
  unsigned long long v;
  if (global_time)
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(v));
  else
    asm volatile("mov.u64 %0, %%clock64;" : "=l"(v));
  *at = v;
}
#define SM90_TRACE(cond, slot)                                                                    \
  do {                                                                                            \
    if ((cond) && blockIdx.x < 1024 && (slot) < kTraceSlots)                                      \
      trace_stamp(g_sm90_trace + blockIdx.x * kTraceSlots + (slot));                              \
  } while (0)
#define SM90_STAGE(cond, it, j)                                                                   \
  do {                                                                                            \
    if ((cond) && blockIdx.x < 4 && (it) < 256) trace_stamp(g_sm90_stage + (blockIdx.x * 256 + (it)) * 4 + (j)); \
  } while (0)
#else
#define SM90_TRACE(cond, slot) \
  do {                         \
  } while (0)
#define SM90_STAGE(cond, it, j) \
  do {                          \
  } while (0)
#endif

// ---------------------------------------------------------------------------------------------------
// PTX helpers
// ---------------------------------------------------------------------------------------------------
__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
}
__device__ __forceinline__ void mbar_fence_init() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\nWAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT;\n}\n" ::"r"(bar), "r"(parity) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Arrives on `bar` once all of this thread's earlier cp.async have landed (counts as one expected arrival).
__device__ __forceinline__ void cp_async_arrive_noinc(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
// Tensor-memory-accelerator copies (sm_90): a 2-D box of a tensor map, or a contiguous run of bytes, into shared
// memory; completion counts bytes on `bar` (complete_tx), announced beforehand with mbar_expect_tx.
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.expect_tx.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const void* tmap, int c0, int c1, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
      "l"(tmap), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
}
__device__ __forceinline__ void bulk_load(uint32_t dst, const void* src, uint32_t bytes, uint32_t bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
               "l"(src), "r"(bytes), "r"(bar)
               : "memory");
}
// Bulk store shared -> global (the TMA unit, not the load/store path), and waiting until its source was read.
__device__ __forceinline__ void bulk_store(void* dst, uint32_t src, uint32_t bytes) {
  asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;\n" ::"l"(dst), "r"(src), "r"(bytes)
               : "memory");
}
// A 2-D box of shared memory into a tensor map's global tensor (parts of the box outside the tensor are not written).
__device__ __forceinline__ void tma_store_2d(const void* tmap, int c0, int c1, uint32_t src) {
  asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%1, %2}], [%3];\n" ::"l"(tmap), "r"(c0),
               "r"(c1), "r"(src)
               : "memory");
}
__device__ __forceinline__ void bulk_commit() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
// Waits until at most N of this thread's bulk groups still read their shared-memory source.
template <int N = 0>
__device__ __forceinline__ void bulk_wait_read() {
  asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void bulk_wait_all() { asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// cp.async writes shared memory through the generic proxy; wgmma reads it through the async proxy.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

template <int kRegs>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}

// Shared-memory matrix descriptor (PTX "matrix descriptor"): address, LBO and SBO in 16-byte units.
enum Swizzle : uint64_t { kSwizzle128 = 1, kSwizzle32 = 3 };
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr, uint32_t lbo, uint32_t sbo, Swizzle swizzle) {
  return (uint64_t)((addr >> 4) & 0x3FFF) | ((uint64_t)((lbo >> 4) & 0x3FFF) << 16) |
         ((uint64_t)((sbo >> 4) & 0x3FFF) << 32) | ((uint64_t)swizzle << 62);
}

// Four 8x8 b16 matrices, transposed on the way out: lane 8i+j gives the address of row j of matrix i.
__device__ __forceinline__ void stmatrix_x4_trans(uint32_t addr, uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(r0),
               "r"(r1), "r"(r2), "r"(r3)
               : "memory");
}
__device__ __forceinline__ void stmatrix_x4(uint32_t addr, uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(r0), "r"(r1),
               "r"(r2), "r"(r3)
               : "memory");
}
__device__ __forceinline__ uint32_t ld_shared_u32(uint32_t addr) {
  uint32_t v;
  asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(v) : "r"(addr));
  return v;
}
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  const T a = from_float<T>(lo), b = from_float<T>(hi);
  return (uint32_t)(*reinterpret_cast<const uint16_t*>(&a)) | ((uint32_t)(*reinterpret_cast<const uint16_t*>(&b)) << 16);
}

// ---------------------------------------------------------------------------------------------------
// CTA tile: 1 (BM = 128) or 2 (BM = 64) producer + 2 consumer warpgroups, BM rows x 256 tokens, 64 kept
// columns per stage.
//   BM = 128: consumer c multiplies rows 64c..64c+63 by all 256 tokens (m64n256k32); both share the epilogue
//   BM = 64:  both consumers multiply the 64 rows, consumer c by tokens 128c..128c+127 (m64n128k32); each has
//             an epilogue tile of its own
// ---------------------------------------------------------------------------------------------------
constexpr int kMaxDynamicSmem = 227 * 1024;   // sm_90 per-block opt-in limit
// Producer warpgroups: with 2, warpgroup p loads k32 step p of every stage (twice the gather issue width of
// one).  Two only for BM = 64: 512 threads cap ptxas at 128 registers, too few for the m64n256 accumulators
// of BM = 128 (setmaxnreg moves registers at run time, not the compile-time cap).  tools/ablate_sm90.py
// builds both counts for BM = 64 to compare.
#ifndef SPARSETRT_SM90_PRODUCERS_BM64
#define SPARSETRT_SM90_PRODUCERS_BM64 2
#endif

template <int BM>
struct Sm90Shape {
  static_assert(BM == 64 || BM == 128, "the wgmma kernel runs CTAs of 64 or 128 rows");
  static constexpr int kProducers = BM == 128 ? 1 : SPARSETRT_SM90_PRODUCERS_BM64;
  static_assert(kProducers == 1 || kProducers == 2, "one or two producer warpgroups");
  static constexpr int kThreads = 128 * (kProducers + 2);
  static constexpr int kTokens = 256;
  static constexpr int kWgTokens = BM == 128 ? 256 : 128;   // N of each consumer's wgmma
  static constexpr int kAccRegs = kWgTokens / 2;
  static constexpr int kKept = 64;                          // kept columns per stage
  static constexpr int kIdxAhead = SPARSETRT_SM90_IDX_AHEAD;   // stages of kept indices in flight per producer lane
  static constexpr int kBBytes = kKept * kTokens * 2;
  static constexpr int kAStepBytes = BM * 32;               // one k32 step of compressed values
  static constexpr int kEStepBytes = BM * 4;                // one k32 step of metadata words
  static constexpr int kABytes = 2 * kAStepBytes;
  static constexpr int kEBytes = 2 * kEStepBytes;
  static constexpr int kStageBytes = (kBBytes + kABytes + kEBytes + 1023) / 1024 * 1024;
  // Epilogue: 64 tokens per round; [token][row] with rows padded by 8 halves (16-byte rows, conflict-free stmatrix)
  static constexpr int kGroupRows = BM;                     // rows of one epilogue group (consumers sharing tokens)
  static constexpr int kGroups = BM == 128 ? 1 : 2;
  static constexpr int kOutPitch = kGroupRows + 8;
  // Feature-major output (YT[N, M]): the tile is [rows][64 tokens + 8] instead, so each row's tokens are contiguous
  static constexpr int kOutPitchFm = 64 + 8;
  static constexpr int kOutGroupBytes = (64 * kOutPitch > kGroupRows * kOutPitchFm ? 64 * kOutPitch : kGroupRows * kOutPitchFm) * 2;
  static constexpr int kOutBytes = kGroups * kOutGroupBytes;
  static constexpr int kFitStages = (kMaxDynamicSmem - 2048 - kOutBytes) / kStageBytes;
  static constexpr int kStages = kFitStages > SPARSETRT_SM90_MAX_STAGES ? SPARSETRT_SM90_MAX_STAGES : kFitStages;
  static constexpr int kOutOffset = kStages * kStageBytes;
  static constexpr int kBarrierOffset = kOutOffset + kOutBytes;
  static constexpr int kRingWordOffset = kBarrierOffset + 2 * kStages * 8;   // the CTA's per-tile map ring (16 B)
  static constexpr int kSmemBytes = kRingWordOffset + 16 + 1024;   // + slack to align the base
  // setmaxnreg.inc waits until the CTA's registers allow it: the split must fit what the launch bound gives the CTA
  static_assert(BM == 128 ? 128 * SPARSETRT_SM90_PREGS + 256 * SPARSETRT_SM90_CREGS <= 384 * 168
                          : 256 * SPARSETRT_SM90_PREGS64 + 256 * SPARSETRT_SM90_CREGS64 <= 512 * 128,
                "setmaxnreg split over the CTA's register file");
  static_assert(kStages <= 6, "the per-tile map ring (8 slots) is safe for at most 6 stages in flight");
  static_assert(kSmemBytes <= kMaxDynamicSmem, "shared memory over the sm_90 limit");
};

}  // namespace sm90
}  // namespace sparsetrt

#include "sm90_schedule.cuh"   // WorkItem, Schedule, TailSplit: they need Sm90Shape

namespace sparsetrt {
namespace sm90 {

// ---------------------------------------------------------------------------------------------------
// Producer warpgroup: per stage, A (4 or 2 chunks per thread), E (first BM/2 threads), B (16 rows per warp).
// `it` counts stages across the CTA's items (stage buffer it % kStages, phase (it / kStages) & 1).
// kAblate (timing experiments only, tools/ablate_sm90.py; the shipped kernels use 0): 1 = no B gather,
// 2 = no wgmma, 3 = no A (compressed values) loads, 4 = no epilogue global stores, 5 = no epilogue.  Leaving one
// side out and timing the rest shows which side bounds the kernel.
// ---------------------------------------------------------------------------------------------------
// How a stage's compressed values (A) and metadata (E) reach shared memory:
//   kLoadCpAsync  every producer thread cp.asyncs its 16-byte chunks (any tile; the path before 2026-12-02)
//   kLoadTmaA     one thread per producer warpgroup: A as a box of a tensor map (16 values x BM rows; the map's 32-byte
//                 swizzle is the layout wgmma reads, and its zero fill covers an odd last stage), E as bulk copies.
//                 It takes A and E off the load/store path that the activation gather saturates: 6-17% faster at the
//                 large shapes (H200, docs/KERNEL_NOTES.md v6h).  The map views the values as [tiles * tile_rows, kept / 2],
//                 so it serves formats whose tiles all keep the same `kept` columns (HiNM).
// (Gathering the rows by TMA as well, as 64-token boxes of a map over XT, was correct but 1.5-2.7x slower: small boxes
// are slow; removed with v7, docs/KERNEL_NOTES.md v6h.)
// The shipped kernels pick kLoadTmaA or kLoadCpAsync per launch (tile_sparse_gemm_sm90).
enum LoadMode : int { kLoadCpAsync = 0, kLoadTmaA = 1 };
// A CUtensorMap's 128 bytes (cuTensorMapEncodeTiled, trt_plugins/launch.py): passed by value as a __grid_constant__
// kernel parameter, so a launch needs no device memory for it and a captured CUDA graph keeps its own copy.
struct alignas(64) TensorMap {
  uint64_t opaque[16];
};
struct TmaMaps {
  const void* a = nullptr;   // values map (kLoadTmaA); null: every item loads A with cp.async
  int kept = 0;              // the kept count per tile the values map was built for
  const void* y = nullptr;   // Y map (token-major Y[M, N], 64 features x 32 tokens boxes, 128-byte swizzle); null: the
                             // epilogue stores Y with 16-byte st.global
};

// Per-tile values maps (TVW: tiles keep different counts, so no single map views them all).  The launch passes the
// values map as a template (values_map_kept = kTileMapsKept); the CTA claims a ring of kMapSlots global-memory copies
// per producer warpgroup (a lock per ring, so concurrent launches never share one) and, one work item ahead, rewrites
// a copy with tensormap.replace for that item's tile: its address, its [tile_rows, kept / 2] extent and row pitch.
// A copy is rewritten at the start of item k for item k + 1; it last served item k - 7, whose last stage is at least
// 7 stages back, and the producer has already waited for the stage kStages (<= 6) + 1 back to be consumed, so those
// loads have landed.
constexpr int kTileMapsKept = -1;
// Only for layers with K >= kTileMapsMinK: rewriting a map costs each item a few hundred cycles of the producer's
// first warp, which the K = 768 / 1024 layers' 6-16 stages per item do not earn back (H200, docs/KERNEL_NOTES.md v6j:
// 3-7% slower there, 4-11% faster from K = 3072 on).
constexpr int kTileMapsMinK = 2048;
constexpr int kMapRings = 256, kMapSlots = 8;
__device__ TensorMap g_tile_maps[kMapRings][2][kMapSlots];
__device__ int g_tile_map_owner[kMapRings];

__device__ __forceinline__ int claim_map_ring() {
  uint32_t smid;
  asm volatile("mov.u32 %0, %%smid;\n" : "=r"(smid));
  for (int i = 0; i < kMapRings; ++i) {
    const int r = (int)((smid + i) % kMapRings);
    if (atomicCAS(&g_tile_map_owner[r], 0, 1) == 0) return r;
  }
  return -1;   // none free: this CTA loads the values with cp.async
}
// The item's tile into a global copy of the template, then released to the tensor-map proxy.
template <typename T>
__device__ __forceinline__ void write_tile_map(const Problem<T>& p, TensorMap* slot, int tile) {
  const int k_begin = p.k_offsets[tile], kept = p.k_offsets[tile + 1] - k_begin;
  if (kept <= 0) return;   // no stages: the map is not used
  const uint64_t g = __cvta_generic_to_global(slot);
  const T* addr = p.values + (size_t)p.tile_rows * k_begin / 2;
  asm volatile("tensormap.replace.tile.global_address.global.b1024.b64 [%0], %1;\n" ::"l"(g), "l"(addr) : "memory");
  asm volatile("tensormap.replace.tile.global_dim.global.b1024.b32 [%0], 0, %1;\n" ::"l"(g), "r"(kept / 2) : "memory");
  asm volatile("tensormap.replace.tile.global_dim.global.b1024.b32 [%0], 1, %1;\n" ::"l"(g), "r"(p.tile_rows) : "memory");
  asm volatile("tensormap.replace.tile.global_stride.global.b1024.b64 [%0], 0, %1;\n" ::"l"(g),
               "l"((uint64_t)kept / 2 * sizeof(T)) : "memory");
  asm volatile("fence.proxy.tensormap::generic.release.gpu;\n" ::: "memory");
}
__device__ __forceinline__ void acquire_tile_map(const TensorMap* slot) {
  asm volatile("fence.proxy.tensormap::generic.acquire.gpu [%0], 128;\n" ::"l"(slot) : "memory");
}

template <typename T, int BM, int kAblate, int kLoad = kLoadCpAsync, bool kSplit = false>
__device__ __forceinline__ void produce_item(const Problem<T>& p, const WorkItem& wi, uint32_t base, uint32_t full_bar,
                                             uint32_t empty_bar, int& it, const TmaMaps& tma = {}, int trace_k = 0,
                                             int parts = 1) {
  using S = Sm90Shape<BM>;
  SM90_TRACE(threadIdx.x == 0, 4 + 6 * trace_k);
  const int pw = threadIdx.x / 128, t = threadIdx.x % 128, warp = t / 32, lane = t % 32;
  const int k_begin = p.k_offsets[wi.tile], kept = p.k_offsets[wi.tile + 1] - k_begin;
  // the item's k32 steps (a piece of them for a split tail item): stage s loads steps step0 + 2s, step0 + 2s + 1
  const PieceSteps piece = kSplit ? piece_steps(kept / 32, wi, parts) : PieceSteps{0, kept / 32};
  const int step0 = piece.first, ksteps = piece.count, stages = (ksteps + 1) / 2;
  const int item_cols = kSplit ? 32 * ksteps : kept;   // kept columns this item loads
  // A: one producer: chunk c = t + 128 i -> row c / 4, step (c / 2) & 1, half c & 1 (4 threads read a row's
  // 64 bytes); two: producer pw loads step pw, chunk c -> row c / 2, half c & 1.
  constexpr int kAChunks = (S::kProducers == 1 ? 2 : 1) * BM * 2 / 128;
  const T* a_rows = p.values + (size_t)p.tile_rows * k_begin / 2 + (size_t)wi.row_block * BM * (kept / 2);
  const T* a_src[kAChunks];
  uint32_t a_dst[kAChunks];
  int a_step[kAChunks];
#pragma unroll
  for (int i = 0; i < kAChunks; ++i) {
    const int c = t + 128 * i, row = S::kProducers == 1 ? c / 4 : c / 2, h = c & 1;
    const int kk = S::kProducers == 1 ? (c / 2) & 1 : pw;
    a_step[i] = kk;
    a_src[i] = a_rows + (size_t)row * (kept / 2) + (step0 + kk) * 16 + h * 8;
    a_dst[i] = S::kBBytes + kk * S::kAStepBytes + row * 32 + ((h ^ ((row >> 2) & 1)) * 16);
  }
  // E: thread t < BM/2 (BM/4 with two producers) copies 16 bytes: step t / (BM/4) (pw), words 4 (t % (BM/4)).
  const bool e_on = t < (S::kProducers == 1 ? BM / 2 : BM / 4);
  const int e_kk = S::kProducers == 1 ? (t / (BM / 4)) & 1 : pw;
  const uint32_t* e_src = p.meta + (size_t)p.tile_rows * k_begin / 32 + (size_t)(step0 + e_kk) * p.tile_rows +
                          wi.row_block * BM + (t % (BM / 4)) * 4;
  const uint32_t e_dst = S::kBBytes + S::kABytes + e_kk * S::kEStepBytes + (t % (BM / 4)) * 16;
  // B (the gathered activations): warp w of producer pw gathers kRows consecutive kept rows of a stage from first_row
  // (one producer: 16w; two: 32pw + 8w, the rows of step pw).  Each 8-lane group moves one 128-byte line (64 tokens;
  // the lane's 16-byte chunk is lane % 8) of its own row per cp.async, so one instruction covers 4 rows of one 64-token
  // block: group g takes kLaneRows = kRows / 4 consecutive rows (4 at BM = 128, 2 at BM = 64) and all 4 token blocks of
  // each.  A lane loads its rows' indices itself (one int4 / int2, kIdxAhead stages ahead) and turns each into a 32-bit
  // byte offset (the launch layer checks K * ldx < 2^31 and a 16-byte aligned k_index): a row costs a multiply, an add
  // and 4 cp.async.  History (docs/KERNEL_NOTES.md v7, v8): until v6k one lane per row loaded its index and 16
  // shuffles per warp and stage spread them; in v7 each instruction moved one whole row (32 lanes, 16 indices per lane);
  // these quarter rows are 6-7% faster (V64 10-11%) than v7, rows of 32 tokens (4 lanes each) 11% slower.
  constexpr int kRows = S::kKept / 4 / S::kProducers;   // kept rows per warp and stage
  constexpr int kLaneRows = kRows / 4;                  // kept rows (indices) per 8-lane group and stage
  static_assert(kLaneRows == 4 || kLaneRows == 2, "a group's kept indices load as one int4 or int2");
  // (Measured and not kept, docs/KERNEL_NOTES.md v8: an instruction's 4 rows consecutive in kept order, 1-2% slower;
  // or taken from the 4 warps' ranges, 1.3% slower.)
  const int first_row = S::kProducers == 1 ? 16 * warp : 32 * pw + 8 * warp;
  const int lane_row0 = kLaneRows * (lane / 8);   // the group's first row, relative to first_row
  const int b_chunk = lane & 7;
  const int tok = wi.m0 + (lane % 8) * 8;   // the lane's token in 64-token block 0; block b adds 64 b
  const bool b_on = tok < p.M;   // ldx % 8 == 0, so a chunk starting below M ends within the row
  const char* b_src = reinterpret_cast<const char*>(p.xt + (b_on ? tok : 0));
  const uint32_t row_bytes = (uint32_t)p.ldx * (uint32_t)sizeof(T);
  // Kept row R of a stage sits at R * 128 in each 64-token block, its chunk c at (c ^ (R & 7)) * 16 (first_row % 8 == 0).
  const uint32_t b_dst = first_row * 128;
  // first_row + kRows <= 32 for the rows of the first k32 step; the second step's rows exist only when `second`
  const bool b_second_step = first_row >= 32;
  // k_begin % 32 == 0: aligned for the vector load
  const int* kidx = p.k_index + k_begin + 32 * step0 + first_row + lane_row0;
  // Rows past the item's steps (an odd last stage's second step) read index 0: a valid address, zero-filled anyway.
  struct StageRows {
    int v[kLaneRows];
  };
  auto stage_rows = [&](int s) {
    StageRows r;
    const bool in = s < stages && s * S::kKept + first_row + lane_row0 < item_cols;   // all of a group's rows, or none
    const int* at = kidx + s * S::kKept;
    if constexpr (kLaneRows == 4) {
      const int4 q = in ? __ldg(reinterpret_cast<const int4*>(at)) : make_int4(0, 0, 0, 0);
      r.v[0] = q.x, r.v[1] = q.y, r.v[2] = q.z, r.v[3] = q.w;
    } else {
      const int2 q = in ? __ldg(reinterpret_cast<const int2*>(at)) : make_int2(0, 0);
      r.v[0] = q.x, r.v[1] = q.y;
    }
    return r;
  };
  StageRows ring[S::kIdxAhead];
#pragma unroll
  for (int d = 0; d < S::kIdxAhead; ++d) ring[d] = stage_rows(d);
  for (int s = 0; s < stages; ++s, ++it) {
    const int st = it % S::kStages;
    const StageRows now = ring[0];
#pragma unroll
    for (int d = 0; d + 1 < S::kIdxAhead; ++d) ring[d] = ring[d + 1];
    ring[S::kIdxAhead - 1] = stage_rows(s + S::kIdxAhead);
    if (it >= S::kStages) mbar_wait(empty_bar + 8 * st, ((it / S::kStages) - 1) & 1);
    SM90_TRACE(threadIdx.x == 0 && s == 0, 5 + 6 * trace_k);
    SM90_STAGE(threadIdx.x == 0, it, 0);
    const uint32_t sb = base + st * S::kStageBytes;
    // An odd last stage has one k32 step: its second step gets zero values and zero activations (and a copy
    // of the first step's valid metadata), so consumers always issue two wgmmas and never branch between them.
    // (A piece's odd last stage may end inside the tile: its TMA box then reads the next piece's values, which
    // meet zero activations.)
    const bool second = ksteps - 2 * s >= 2;
    if (kLoad == kLoadCpAsync) {
      if (kAblate != 3) {
#pragma unroll
        for (int i = 0; i < kAChunks; ++i) cp_async_16(sb + a_dst[i], a_src[i] + s * 32, a_step[i] == 0 || second);
      }
      if (e_on) cp_async_16(sb + e_dst, e_src + (size_t)s * 2 * p.tile_rows - (second ? 0 : e_kk * p.tile_rows), true);
    } else if (t == 0) {   // one thread per producer warpgroup: its k32 steps' A boxes and E runs, byte count first
      constexpr int kSteps = S::kProducers == 1 ? 2 : 1;
      mbar_expect_tx(full_bar + 8 * st, kSteps * (S::kAStepBytes + S::kEStepBytes));
      const int arow = (tma.kept == kTileMapsKept ? 0 : wi.tile * p.tile_rows) + wi.row_block * BM;   // per-tile map: rows of the tile
      const uint32_t* e0 = p.meta + (size_t)p.tile_rows * k_begin / 32 + (size_t)step0 * p.tile_rows +
                           (size_t)s * 2 * p.tile_rows + wi.row_block * BM;
#pragma unroll
      for (int q = 0; q < kSteps; ++q) {
        const int kk = S::kProducers == 1 ? q : pw;
        // past the kept values (the absent second step of an odd last stage) the map reads zeros
        tma_load_2d(sb + S::kBBytes + kk * S::kAStepBytes, tma.a, s * 32 + 16 * kk + 16 * step0, arow,
                    full_bar + 8 * st);
        bulk_load(sb + S::kBBytes + S::kABytes + kk * S::kEStepBytes, (kk == 1 && second) ? e0 + p.tile_rows : e0,
                  S::kEStepBytes, full_bar + 8 * st);
      }
    }
    const bool on = b_on && (!b_second_step || second);
#pragma unroll
    for (int j = 0; j < kLaneRows; ++j) {
      const uint32_t off = (uint32_t)now.v[j] * row_bytes;
      const int r = lane_row0 + j;
      const uint32_t dst = sb + b_dst + r * 128 + ((b_chunk ^ (r & 7)) * 16);
#pragma unroll
      for (int b = 0; b < 4; ++b) {   // 64-token block b
        const bool on_b = on && (b == 0 || tok + 64 * b < p.M);
        if (kAblate != 1) cp_async_16(dst + b * 8192, b_src + (on_b ? 64 * b * (int)sizeof(T) : 0) + off, on_b);
      }
    }
    cp_async_arrive_noinc(full_bar + 8 * st);
    SM90_STAGE(threadIdx.x == 0, it, 1);
  }
  SM90_TRACE(threadIdx.x == 0, 6 + 6 * trace_k);
}

// ---------------------------------------------------------------------------------------------------
// Consumer warpgroup c (0, 1): one item's wgmma main loop, then its epilogue.
// ---------------------------------------------------------------------------------------------------
// Named barrier of an epilogue group: both consumers for BM = 128 (id 1), consumer c alone for BM = 64 (id 2 + c);
// kPerConsumer: consumer c alone for BM = 128 too, where each consumer handles only its own rows (epilogue_tma_y).
template <int BM, bool kPerConsumer = false>
__device__ __forceinline__ void group_sync(int c) {
  if (BM == 128 && !kPerConsumer)
    asm volatile("bar.sync 1, 256;\n" ::: "memory");
  else
    asm volatile("bar.sync %0, 128;\n" ::"r"(2 + c) : "memory");
}

// act(acc + bias) of two 8-token blocks of a consumer's accumulators (rows lo and lo + 8), as the four stmatrix words.
template <typename T, int ACT>
__device__ __forceinline__ void pack_fragment(const float* a0, float b_lo, float b_hi, uint32_t& r0, uint32_t& r1,
                                              uint32_t& r2, uint32_t& r3) {
  r0 = pack2<T>(activate<ACT>(a0[0] + b_lo), activate<ACT>(a0[1] + b_lo));
  r1 = pack2<T>(activate<ACT>(a0[2] + b_hi), activate<ACT>(a0[3] + b_hi));
  r2 = pack2<T>(activate<ACT>(a0[4] + b_lo), activate<ACT>(a0[5] + b_lo));
  r3 = pack2<T>(activate<ACT>(a0[6] + b_hi), activate<ACT>(a0[7] + b_hi));
}

// Token-major Y by TMA stores (tma.y, contiguous rows): the accumulators leave in rounds of 32 tokens through two
// alternating shared buffers; per round thread 0 of each consumer stores that consumer's 64-feature sub-tile as one box
// of the Y map ([32 tokens][64 features], 128-byte swizzle: chunk c of token n at n * 128 + (c ^ (n & 7)) * 16).
// The stores run on the TMA unit while the group fills the other buffer, and the last round's while the next item's
// wgmmas run; the 16-byte st.global they replace shared the load/store path with the gather.  Tokens past M are
// outside the map and are not written.  Each consumer syncs, waits and stores on its own (BM = 128 too: its rows are
// sub-tile c of the buffer), so one consumer's late wgmmas do not hold up the other's epilogue (2-3% at the short-K
// shapes, docs/KERNEL_NOTES.md v6k).
template <typename T, int BM, int ACT>
__device__ __forceinline__ void epilogue_tma_y(const WorkItem& wi, uint32_t base, const void* y_map,
                                               const float* acc, float b_lo, float b_hi, int row0, int tok0,
                                               int my_tok, int mj, int my_row, int c) {
  using S = Sm90Shape<BM>;
  constexpr int kSubBytes = 32 * 128;                 // one sub-tile: 32 tokens x 64 features
  constexpr int kBufBytes = (BM / 64) * kSubBytes;    // one round's buffer
  static_assert(2 * kBufBytes <= S::kOutGroupBytes, "two round buffers fit the epilogue tile");
  const uint32_t out_base = base + S::kOutOffset + (BM == 128 ? 0 : c * S::kOutGroupBytes);
  // lane's stmatrix row: token my_tok (+16 per q) of the round, features my_row .. my_row + 7 (chunk my_row % 64 / 8)
  const uint32_t lane_off = (my_row / 64) * kSubBytes + my_tok * 128 + ((((my_row % 64) / 8) ^ mj) * 16);
  const bool issuer = threadIdx.x % 128 == 0;   // the consumer's thread whose bulk groups these stores are
  const int sub = my_row / 64;                  // this consumer's sub-tile (c for BM = 128, 0 for BM = 64)
#pragma unroll
  for (int r = 0; r < S::kWgTokens / 32; ++r) {
    const uint32_t buf = out_base + (r & 1) * kBufBytes;
    if (issuer) bulk_wait_read<1>();   // the store from this buffer (two rounds ago) has read it
    group_sync<BM, true>(c);
#pragma unroll
    for (int q = 0; q < 2; ++q) {
      const float* a0 = acc + 8 * (2 * r + q);   // tokens 32r + 16q .. +15 of this consumer
      uint32_t r0, r1, r2, r3;
      pack_fragment<T, ACT>(a0, b_lo, b_hi, r0, r1, r2, r3);
      stmatrix_x4_trans(buf + lane_off + q * 16 * 128, r0, r1, r2, r3);
    }
    fence_proxy_async();   // the stmatrix writes (generic proxy) before the TMA (async proxy) reads them
    group_sync<BM, true>(c);
    if (issuer) {
      tma_store_2d(y_map, row0 + 64 * sub, wi.m0 + tok0 + 32 * r, buf + sub * kSubBytes);
      bulk_commit();
    }
  }
}

// kBulkY (timing experiment, tools/ablate_sm90.py): token-major Y with contiguous rows leaves the epilogue tile by
// bulk copies (one 2·BM-byte run per token, issued by 64 threads) instead of 16-byte loads and stores.
template <typename T, int BM, int ACT, int kAblate, bool kYFm, bool kBulkY = false, bool kSplit = false>
__device__ __forceinline__ void consume_item(const Problem<T>& p, const WorkItem& wi, uint32_t base, uint8_t* smem,
                                             uint32_t full_bar, uint32_t empty_bar, int& it, const TmaMaps& tma,
                                             int trace_k = 0, const Schedule<BM, kSplit>* sched = nullptr,
                                             const TailSplit& split = {}) {
  using S = Sm90Shape<BM>;
  constexpr int kN = S::kWgTokens;
  const int c = threadIdx.x / 128 - S::kProducers, t = threadIdx.x % 128, warp = t / 32, lane = t % 32;
  const int kept = p.k_offsets[wi.tile + 1] - p.k_offsets[wi.tile];
  const int parts = kSplit ? sched->parts : 1;
  const int stages = ((kSplit ? piece_steps(kept / 32, wi, parts).count : kept / 32) + 1) / 2;   // a piece: maybe 0
  const int slab = BM == 128 ? 64 * c : 0;          // first CTA row of this consumer
  const int tok0 = BM == 128 ? 0 : kN * c;          // first CTA token of this consumer
  const uint32_t a_off = S::kBBytes + slab * 32;
  const uint32_t b_off = (tok0 / 64) * 8192;
  const uint32_t e_off = S::kBBytes + S::kABytes + ((slab / 16 + warp) * 16 + (lane >> 2) * 2 + (lane & 1)) * 4;

  // Epilogue operands, loaded now so their latency hides behind the main loop.
  const int* rows = p.row_index + wi.tile * p.tile_rows + wi.row_block * BM;
  const int r_lo = slab + 16 * warp + (lane >> 2);
  const float b_lo = p.has_bias ? to_float(p.bias[rows[r_lo]]) : 0.f;
  const float b_hi = p.has_bias ? to_float(p.bias[rows[r_lo + 8]]) : 0.f;
  const int row0 = rows[0];
  bool contiguous = true;   // each warp checks all BM rows itself: no barrier needed
#pragma unroll
  for (int r = lane; r < BM; r += 32) contiguous &= (rows[r] == row0 + r);
  contiguous = __all_sync(0xffffffffu, contiguous);

  float acc[S::kAccRegs];
#pragma unroll
  for (int i = 0; i < S::kAccRegs; ++i) acc[i] = 0.f;
#if SPARSETRT_SM90_TRACE
  if (stages > 0) {   // the first stage's data is in (a stamp inside the loop would serialise its wgmmas)
    mbar_wait(full_bar + 8 * (it % S::kStages), (it / S::kStages) & 1);
    SM90_TRACE(threadIdx.x == 128 * S::kProducers, 7 + 6 * trace_k);
  }
#endif
  for (int s = 0; s < stages; ++s, ++it) {
    const int st = it % S::kStages;
    mbar_wait(full_bar + 8 * st, (it / S::kStages) & 1);
    fence_proxy_async();
    const uint32_t sb = base + st * S::kStageBytes;
    const uint32_t e0 = ld_shared_u32(sb + e_off), e1 = ld_shared_u32(sb + e_off + S::kEStepBytes);
    wgmma_fence();
    if (kAblate != 2) {
      WgmmaSp<T, kN>::run(acc, smem_desc(sb + a_off, 16, 256, kSwizzle32),
                          smem_desc(sb + b_off, 8192, 1024, kSwizzle128), e0);
      WgmmaSp<T, kN>::run(acc, smem_desc(sb + a_off + S::kAStepBytes, 16, 256, kSwizzle32),
                          smem_desc(sb + b_off + 32 * 128, 8192, 1024, kSwizzle128), e1);
    } else {
      acc[0] += __uint_as_float(e0 ^ e1);   // keep the metadata loads alive
    }
    wgmma_commit();
    wgmma_wait<1>();   // the previous stage's wgmmas retired: its buffer can be refilled
    if (s > 0) mbar_arrive(empty_bar + 8 * ((it - 1) % S::kStages));
  }
  wgmma_wait<0>();
  if (!kSplit || stages > 0) mbar_arrive(empty_bar + 8 * ((it - 1) % S::kStages));   // the item's last stage
  if (kSplit && wi.part >= 0) {   // a piece of a split tail item: writers hand over their sums, the owner adds them
    if (wi.part + 1 < parts) {
      partials_store<S::kAccRegs>(split, sched->tail, parts, wi.part * sched->tail + wi.tail_index, c, t, acc);
      return;
    }
    partials_add<S::kAccRegs>(split, sched->tail, parts, wi.tail_index, c, t, acc);
  }
  if (kAblate == 5) {   // no epilogue (a store that never happens keeps the accumulators alive)
    if (acc[0] == -1.2345e30f) p.y[threadIdx.x] = from_float<T>(acc[S::kAccRegs - 1]);
    return;
  }

  const int gt = BM == 128 ? threadIdx.x - 128 * S::kProducers : t, gthreads = BM == 128 ? 256 : 128;
  const int mi = lane / 8, mj = lane % 8;   // stmatrix: lane 8i + j addresses row j of the i-th 8x8 matrix
  const int my_row = slab + 16 * warp + 8 * (mi & 1);   // matrix i: rows +8 (i & 1), tokens +8 (i >> 1)
  if (!kYFm && kAblate == 0 && tma.y != nullptr && contiguous) {
    epilogue_tma_y<T, BM, ACT>(wi, base, tma.y, acc, b_lo, b_hi, row0, tok0, mj + 8 * (mi >> 1), mj, my_row, c);
    return;
  }
  if (t == 0) bulk_wait_read();   // an earlier item's TMA stores (epilogue_tma_y, per consumer) may still read the tile

  // ---- epilogue: act(acc + bias) -> a shared tile -> 16-byte stores, four rounds of 64 tokens -------------
  // Round r covers this consumer's tokens 64r..64r+63 (4 pairs of 8-token blocks).  For BM = 128 both consumers
  // write their 64 rows of the same tokens; for BM = 64 each consumer has its own tile.  Token-major Y[M, N]:
  // stmatrix.trans into [64 tokens][rows]; feature-major YT[N, M] (kYFm): stmatrix into [rows][64 tokens].
  const uint32_t out_base = base + S::kOutOffset + (BM == 128 ? 0 : c * S::kOutGroupBytes);
  const T* out_s = reinterpret_cast<const T*>(smem + S::kOutOffset + (BM == 128 ? 0 : c * S::kOutGroupBytes));
  const uint32_t st_addr = kYFm ? out_base + ((my_row + mj) * S::kOutPitchFm + 8 * (mi >> 1)) * 2
                                : out_base + ((8 * (mi >> 1) + mj) * S::kOutPitch + my_row) * 2;
  const uint32_t q_step = kYFm ? 16 * 2 : 16 * S::kOutPitch * 2;   // the next pair of 8-token blocks
  const bool vec_out = kYFm ? (p.M % 8 == 0) && ((reinterpret_cast<uintptr_t>(p.y) & 15) == 0)
                            : contiguous && (row0 % 8 == 0) && (p.N % 8 == 0) && ((reinterpret_cast<uintptr_t>(p.y) & 15) == 0);
  const bool bulk = kBulkY && !kYFm && vec_out;
#pragma unroll
  for (int r = 0; r < kN / 64; ++r) {
    if (kBulkY && gt < 64) bulk_wait_read();   // the previous round's bulk copies have read the tile
    group_sync<BM>(c);   // the previous round's (or item's) readers are done with the tile
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const float* a0 = acc + 8 * (4 * r + q);   // blocks 2jb, 2jb+1 of jb = 4r + q: acc[8jb .. 8jb+7]
      uint32_t r0, r1, r2, r3;
      pack_fragment<T, ACT>(a0, b_lo, b_hi, r0, r1, r2, r3);
      if (kYFm)
        stmatrix_x4(st_addr + q * q_step, r0, r1, r2, r3);
      else
        stmatrix_x4_trans(st_addr + q * q_step, r0, r1, r2, r3);
    }
    if (kBulkY) fence_proxy_async();   // the stmatrix writes, before the bulk copies (async proxy) read them
    group_sync<BM>(c);
    if (kAblate == 4) continue;   // no global stores (the shared tile is still written)
    const int m_base = wi.m0 + tok0 + 64 * r;
    if (bulk) {
      if (gt < 64 && m_base + gt < p.M) {
        bulk_store(p.y + (size_t)(m_base + gt) * p.N + row0, out_base + gt * S::kOutPitch * 2, BM * 2);
        bulk_commit();
      }
    } else if (kYFm) {   // row rr of the tile -> YT row rows[rr] (the scatter is per row here), 8 tokens per chunk
      for (int i = gt; i < BM * 8; i += gthreads) {
        const int rr = i / 8, m = m_base + (i % 8) * 8;
        const T* src = out_s + rr * S::kOutPitchFm + (i % 8) * 8;
        T* dst = p.y + (size_t)rows[rr] * p.M + m;
        if (vec_out && m < p.M) {
          *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
        } else {
#pragma unroll
          for (int e = 0; e < 8; ++e)
            if (m + e < p.M) dst[e] = src[e];
        }
      }
    } else if (vec_out) {
      constexpr int kChunks = BM / 8;
      for (int i = gt; i < 64 * kChunks; i += gthreads) {
        const int n = i / kChunks, ch = i % kChunks, m = m_base + n;
        if (m < p.M)
          *reinterpret_cast<uint4*>(p.y + (size_t)m * p.N + row0 + ch * 8) =
              *reinterpret_cast<const uint4*>(out_s + n * S::kOutPitch + ch * 8);
      }
    } else {   // TVW / restored permutations: scatter through row_index
      for (int i = gt; i < 64 * BM; i += gthreads) {
        const int n = i / BM, rr = i % BM, m = m_base + n;
        if (m < p.M) p.y[(size_t)m * p.N + rows[rr]] = out_s[n * S::kOutPitch + rr];
      }
    }
  }
  // The tile's last readers are done before a later item's epilogue_tma_y (which syncs per consumer) refills it
  if (BM == 128) group_sync<BM>(c);
}

// ---------------------------------------------------------------------------------------------------
// The kernel body: a persistent grid (at most one CTA per SM); the producer warpgroup streams the stages of
// the CTA's GEMM items, the consumers multiply them and also write the pruned-rows items.
// ---------------------------------------------------------------------------------------------------
// kYFm: write Y feature-major, YT[N, M] (row n of YT holds output feature n for all M tokens), the layout the
// next layer's gather reads, so a chain of sparse layers needs no transpose in between.
// kLoad: kLoadAuto (the shipped kernels) takes A by TMA when the values map covers every tile, by cp.async
// otherwise; a LoadMode forces one (experiments).
constexpr int kLoadAuto = -1;
// kSplit, split: the *_split entry points, which take the launch's tail split (sm90_schedule.cuh).
template <typename T, int BM, int ACT, int kAblate = 0, bool kYFm = false, int kLoad = kLoadAuto, bool kBulkY = false,
          bool kSplit = false>
__device__ __forceinline__ void tile_sparse_gemm_sm90(const Problem<T>& p, const TmaMaps& tma = {},
                                                      const TailSplit& split = {}) {
  using S = Sm90Shape<BM>;
  const Schedule<BM, kSplit> sched(p, split);
  extern __shared__ __align__(1024) uint8_t smem90[];
  uint8_t* smem = smem90 + ((1024 - (smem_u32(smem90) & 1023)) & 1023);   // swizzle atoms need 1024-byte alignment
  const uint32_t base = smem_u32(smem);
  const uint32_t full_bar = base + S::kBarrierOffset, empty_bar = full_bar + 8 * S::kStages;
  // Per-tile maps for BM = 128 only: at BM = 64 the 128-register cap of 512 threads made the extra loop spill
  constexpr bool kTileMaps = kLoad == kLoadAuto && BM == 128;
  if (threadIdx.x == 0) {
    for (int s = 0; s < S::kStages; ++s) {
      mbar_init(full_bar + 8 * s, 128 * S::kProducers);   // one cp.async arrival per producer thread
      mbar_init(empty_bar + 8 * s, 256);   // one arrival per consumer thread
    }
    mbar_fence_init();
  }
  __syncthreads();
#if SPARSETRT_SM90_TRACE
  if (threadIdx.x == 0) {
    trace_stamp(g_sm90_trace + blockIdx.x * kTraceSlots, true);
    trace_stamp(g_sm90_trace + blockIdx.x * kTraceSlots + 1);
  }
#endif
  int it = 0;   // stages produced / consumed so far by this CTA (the same sequence on both sides)
  if (threadIdx.x < 128 * S::kProducers) {
    setmaxnreg_dec<S::kProducers == 1 ? SPARSETRT_SM90_PREGS : SPARSETRT_SM90_PREGS64>();
    // Auto: TMA for the values when the map covers every tile (k_offsets[t] = t * kept for all t; each producer warp
    // checks on its own), else cp.async for all.  Two separate loops, not a choice per item: the choice's live
    // registers would cost the producer's cp.async loop its schedule (measured at 56 registers: TVW 3-17% slower).
    bool tma_all = kLoad == kLoadAuto && tma.a != nullptr && tma.kept > 0;
    if (tma_all) {
      for (int t = threadIdx.x % 32; t <= p.num_tiles; t += 32) tma_all &= p.k_offsets[t] == t * tma.kept;
      tma_all = __all_sync(0xffffffffu, tma_all);
    }
    // Tiles the values map does not cover (or a template map, kept = kTileMapsKept): per-tile maps.  The producer
    // claims the ring itself (the consumers do not wait for it) and shares it through shared memory.
    int ring = -1;
    if (kTileMaps && !tma_all && tma.a != nullptr && p.K >= kTileMapsMinK) {
      if (threadIdx.x == 0) *reinterpret_cast<volatile int*>(smem + S::kRingWordOffset) = claim_map_ring();
      asm volatile("bar.sync 4, 128;\n" ::: "memory");
      ring = *reinterpret_cast<volatile int*>(smem + S::kRingWordOffset);
    }
    constexpr int kOther = kLoad == kLoadAuto ? kLoadCpAsync : kLoad;
    if (tma_all) {
      for (int w = blockIdx.x, k = 0; w < sched.units; w += gridDim.x, ++k)
        produce_item<T, BM, kAblate, kLoadTmaA, kSplit>(p, sched.item(w, p.num_tiles), base, full_bar, empty_bar, it, tma, k,
                                                sched.parts);
    } else if (ring >= 0) {   // per-tile maps (TVW)
      const int pw = threadIdx.x / 128, t = threadIdx.x % 128;
      TensorMap* slots = g_tile_maps[ring][pw];
      if (t == 0) {
        for (int s = 0; s < kMapSlots; ++s) slots[s] = *reinterpret_cast<const TensorMap*>(tma.a);
        if ((int)blockIdx.x < sched.units) write_tile_map(p, slots, sched.item(blockIdx.x, p.num_tiles).tile);
      }
      TmaMaps item_map = tma;
      item_map.kept = kTileMapsKept;   // the item's map views its own tile
      for (int w = blockIdx.x, k = 0; w < sched.units; w += gridDim.x, ++k) {
        item_map.a = slots + k % kMapSlots;
        if (t == 0) {
          if (w + (int)gridDim.x < sched.units)
            write_tile_map(p, slots + (k + 1) % kMapSlots, sched.item(w + gridDim.x, p.num_tiles).tile);
          acquire_tile_map(slots + k % kMapSlots);
        }
        produce_item<T, BM, kAblate, kLoadTmaA, kSplit>(p, sched.item(w, p.num_tiles), base, full_bar, empty_bar, it, item_map,
                                                k, sched.parts);
      }
      if (threadIdx.x == 0) {   // every load that read the ring has landed: hand the ring back
        for (int i = it - 1; i >= 0 && i >= it - S::kStages; --i) mbar_wait(full_bar + 8 * (i % S::kStages), (i / S::kStages) & 1);
        __threadfence();
        atomicExch(&g_tile_map_owner[ring], 0);
      }
    } else {
      for (int w = blockIdx.x, k = 0; w < sched.units; w += gridDim.x, ++k)
        produce_item<T, BM, kAblate, kOther, kSplit>(p, sched.item(w, p.num_tiles), base, full_bar, empty_bar, it, tma, k,
                                                sched.parts);
    }
    cp_async_wait_all();
    SM90_TRACE(threadIdx.x == 0, 62);
  } else {
    setmaxnreg_inc<S::kProducers == 1 ? SPARSETRT_SM90_CREGS : SPARSETRT_SM90_CREGS64>();
    for (int w = blockIdx.x, k = 0; w < sched.total; w += gridDim.x, ++k) {
      const WorkItem wi = sched.item(w, p.num_tiles);
      if (wi.fill >= 0)
        fill_pruned<T, S::kTokens, ACT, kYFm>(p, wi.fill, sched.m_tiles, threadIdx.x - 128 * S::kProducers, 256);
      else
        consume_item<T, BM, ACT, kAblate, kYFm, kBulkY, kSplit>(p, wi, base, smem, full_bar, empty_bar, it, tma, k,
                                                        &sched, split);
      SM90_TRACE(threadIdx.x == 128 * S::kProducers, 9 + 6 * k);
    }
#if SPARSETRT_SM90_TRACE
    if (threadIdx.x == 128 * S::kProducers) {
      trace_stamp(g_sm90_trace + blockIdx.x * kTraceSlots + 2, true);
      trace_stamp(g_sm90_trace + blockIdx.x * kTraceSlots + 3);
    }
#endif
    if (kBulkY || tma.y != nullptr) bulk_wait_all();   // the TMA stores are done before the CTA's memory goes
  }
}

}  // namespace sm90
}  // namespace sparsetrt
