// The Hopper kernel's persistent schedule (included by tile_sparse_gemm_sm90.cuh after Sm90Shape):
//   WorkItem      one unit of work: a GEMM item (token slice x tile x row block), a piece of one, or pruned rows
//   Schedule      which unit CTA b runs in its k-th round: unit b + k * gridDim.x
//   TailSplit     the last partial wave's items, split along K into pieces that run on otherwise idle SMs
//   partials_*    how the pieces of a split item meet: fp32 partial sums through global memory
//
// Why a tail split: the grid is one CTA per SM, so a layer of G items runs in ceil(G / P) rounds and the last round
// keeps only G % P of the P SMs busy.  Splitting each of those R = G % P items into `parts` pieces of K
// (R * parts <= P) ends the round after about 1 / parts of an item, plus the cost of meeting: each piece but one
// stores its fp32 accumulators (128 KB per CTA tile) and raises a flag; the last piece, the owner, waits for the
// flags, adds the partial sums in a fixed order and runs the epilogue (bias, activation, stores) as an unsplit item
// would.  The launch layer asks for it only for single-round launches (G < P, small M): after whole rounds the last
// round's fewer CTAs run faster on their own and the split measured slower (docs/KERNEL_NOTES.md v9).
//
// Deadlock freedom: writers never wait, and they are the lower-numbered units, so their CTAs are dispatched before
// the owners' (the grid is at most one CTA per SM; with fewer SMs free, an owner spins only once every lower CTA has
// started).  Each CTA runs at most one tail unit (the host asks for a split only when the whole rounds fill the grid
// and R * parts <= gridDim.x; the kernel checks again and runs unsplit otherwise).
//
// Flags: one 64-bit word per (writer slot, consumer warpgroup), set to the launch's nonce after the slot's stores
// and cleared by the owner once seen.  The workspace comes from the caching allocator, uninitialised, so a stale
// flag is a word that differs from this launch's nonce (a new 64-bit value per launch: tail_split.nonce() in
// trt_plugins/tail_split.py).
#pragma once

namespace sparsetrt {
namespace sm90 {

struct WorkItem {
  int tile, row_block, m0;   // GEMM items
  int fill;                  // >= 0: index of a pruned-rows item (64 rows x 256 tokens of act(bias)), else -1
  int part = -1;             // tail split: piece `part` of `parts` (parts - 1 is the owner), else -1
  int tail_index = 0;        // tail split: which of the R split items
};

// The launch's tail-split request (kernel parameters; ws == nullptr or parts < 2: no split).
struct TailSplit {
  void* ws = nullptr;        // flags (2 per writer slot) then the partial-sum slots; trt_plugins/tail_split.py
  unsigned long long nonce = 0;
  int tail = 0, parts = 1;   // the last `tail` GEMM items run in `parts` pieces each
};

// The k32 steps [first, first + count) of piece `part` of `parts` of an item with `steps` steps: floors of an even
// split, so the owner (the last piece) has the most and its writers tend to finish first.
struct PieceSteps {
  int first, count;
};
__device__ __forceinline__ PieceSteps piece_steps(int steps, const WorkItem& wi, int parts) {
  if (wi.part < 0) return {0, steps};
  const int first = wi.part * steps / parts;
  return {first, (wi.part + 1) * steps / parts - first};
}

// kSplit: the entry points that take a tail split (the *_split kernels); without it the schedule is the plain one
// (units = gemm_items), and the kernels compile exactly as before the split existed.
template <int BM, bool kSplit>
struct Schedule {
  int m_tiles, sub_tiles, gemm_items, total;
  int whole;            // items [0, whole) run whole
  int tail = 0;         // items [whole, gemm_items) run in `parts` pieces: units whole + u, u = part * tail + index
  int parts = 1;
  int units;            // GEMM units; units [units, total) are pruned-rows items
  template <typename T>
  __device__ Schedule(const Problem<T>& p, const TailSplit& split) {
    m_tiles = (p.M + Sm90Shape<BM>::kTokens - 1) / Sm90Shape<BM>::kTokens;
    sub_tiles = p.tile_rows / BM;
    gemm_items = p.num_tiles * sub_tiles * m_tiles;
    if constexpr (kSplit) {
      const int grid = (int)gridDim.x;
      // the host's request, if it keeps every CTA to at most one tail unit (else: unsplit)
      const bool ok = split.ws != nullptr && split.parts > 1 && split.tail > 0 && split.tail <= gemm_items &&
                      split.tail * split.parts <= grid && (gemm_items - split.tail) % grid == 0;
      tail = ok ? split.tail : 0;
      parts = ok ? split.parts : 1;
    }
    whole = gemm_items - tail;
    units = whole + tail * parts;
    const int pruned = p.N - p.num_tiles * p.tile_rows;
    total = units + m_tiles * ((pruned + 63) / 64);
  }
  // Tile-fastest, as in the mma.sp kernel: the CTAs running together share one token slice of XT and stream
  // the compressed weights; within a token slice tiles run in file order (TW/TVW: longest first).
  __device__ WorkItem item(int w, int num_tiles) const {
    if (w >= units) return {0, 0, 0, w - units};
    int g = w, part = -1, tail_index = 0;
    if (kSplit && w >= whole) {
      tail_index = (w - whole) % tail;
      part = (w - whole) / tail;
      g = whole + tail_index;
    }
    const int lin = g % (num_tiles * sub_tiles);
    return {lin / sub_tiles, lin % sub_tiles, (g / (num_tiles * sub_tiles)) * Sm90Shape<BM>::kTokens, -1, part,
            tail_index};
  }
};

// ---- meeting of the pieces: consumer warpgroup c's accumulators (kAccRegs per thread) ------------------------
// Slot layout: [slot][warpgroup c][kAccRegs / 4][128 threads] float4, so each store and load of a warp is 512
// contiguous bytes.  Flags: [slot][c] 64-bit words, before the slots.
template <int kAccRegs>
struct PartialsLayout {
  static constexpr int kSlotFloat4s = 2 * (kAccRegs / 4) * 128;
  __device__ static unsigned long long* flag(const TailSplit& s, int slot, int c) {
    return reinterpret_cast<unsigned long long*>(s.ws) + 2 * slot + c;
  }
  __device__ static float4* slot(const TailSplit& s, int tail, int parts, int slot, int c) {
    // the flags' bytes rounded up to 256, so the slots are aligned for float4 (and whole L2 sectors)
    const size_t flag_bytes = ((size_t)16 * tail * (parts - 1) + 255) / 256 * 256;
    return reinterpret_cast<float4*>(reinterpret_cast<char*>(s.ws) + flag_bytes) + (size_t)slot * kSlotFloat4s +
           c * (kAccRegs / 4) * 128;
  }
};

// Writer piece: store the warpgroup's accumulators, then (thread 0, after the group's stores) raise its flag.
// bar.sync 2 + c: the warpgroup's own named barrier (as group_sync<BM, true> in tile_sparse_gemm_sm90.cuh).
template <int kAccRegs>
__device__ __forceinline__ void partials_store(const TailSplit& s, int tail, int parts, int slot, int c, int t,
                                               const float* acc) {
  float4* dst = PartialsLayout<kAccRegs>::slot(s, tail, parts, slot, c) + t;
#pragma unroll
  for (int i = 0; i < kAccRegs / 4; ++i)
    __stcg(dst + i * 128, make_float4(acc[4 * i], acc[4 * i + 1], acc[4 * i + 2], acc[4 * i + 3]));
  asm volatile("bar.sync %0, 128;\n" ::"r"(2 + c) : "memory");
  if (t == 0) {
    // the group's stores (ordered before this thread by the barrier) are visible GPU-wide before the flag
    asm volatile("fence.acq_rel.gpu;\n" ::: "memory");
    asm volatile("st.relaxed.gpu.global.u64 [%0], %1;\n" ::"l"(PartialsLayout<kAccRegs>::flag(s, slot, c)),
                 "l"(s.nonce) : "memory");
  }
}

// Owner piece: wait for the writers' flags (thread 0), then every thread adds their partial sums in writer order.
template <int kAccRegs>
__device__ __forceinline__ void partials_add(const TailSplit& s, int tail, int parts, int tail_index, int c, int t,
                                             float* acc) {
  if (t == 0) {
    for (int part = 0; part + 1 < parts; ++part) {
      unsigned long long* f = PartialsLayout<kAccRegs>::flag(s, part * tail + tail_index, c);
      unsigned long long v;
      do {
        asm volatile("ld.acquire.gpu.global.u64 %0, [%1];\n" : "=l"(v) : "l"(f) : "memory");
      } while (v != s.nonce);
      asm volatile("st.relaxed.gpu.global.u64 [%0], %1;\n" ::"l"(f), "l"(0ull) : "memory");
    }
  }
  asm volatile("bar.sync %0, 128;\n" ::"r"(2 + c) : "memory");
  // writer `part`'s slot is part * tail + tail_index: consecutive writers' slots are `tail` slots apart
  const float4* src = PartialsLayout<kAccRegs>::slot(s, tail, parts, tail_index, c) + t;
  const size_t writer_step = (size_t)tail * PartialsLayout<kAccRegs>::kSlotFloat4s;
  for (int part = 0; part + 1 < parts; ++part, src += writer_step) {
#pragma unroll
    for (int i = 0; i < kAccRegs / 4; ++i) {
      const float4 v = __ldcg(src + i * 128);
      acc[4 * i] += v.x, acc[4 * i + 1] += v.y, acc[4 * i + 2] += v.z, acc[4 * i + 3] += v.w;
    }
  }
}

}  // namespace sm90
}  // namespace sparsetrt
