// Hopper (sm_90a) tile-sparse GEMM on wgmma.mma_async.sp: the same problem and the same TileSparse bytes
// as tile_sparse_gemm.cuh (Y[M, N] = act(X · Wᵀ + b), X given feature-major as XT[K, ldx]), for tiles whose
// height is a multiple of 64 (one wgmma is 64 weight rows).
//
// Layers (CUTLASS-style, outermost last):
//   ptx helpers       mbarrier, wgmma fence/commit/wait, smem descriptors, setmaxnreg, stmatrix
//   Sm90Shape<BM>     the CTA tile: BM weight rows x 256 tokens, 64 kept columns (2 wgmma k32 steps) per stage
//   producer          warpgroup 0: cp.async of A (compressed values), E (metadata) and B (a gather of kept rows
//                     of XT, one 512-byte run of tokens per kept index) into a stage; completion arrives on the
//                     stage's `full` mbarrier (cp.async.mbarrier.arrive.noinc)
//   consumers         warpgroups 1, 2: wait `full`, wgmma.sp from shared memory into fp32 registers, release the
//                     stage on `empty` once the wgmmas reading it retired
//   epilogue          bias + activation, stmatrix.trans into a [tokens][rows] shared tile, 16-byte stores (or the
//                     row_index scatter), as in the mma.sp kernel
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
__device__ __forceinline__ void cp_async_16_u32(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}
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
__device__ __forceinline__ void consumers_sync() { asm volatile("bar.sync 1, 256;\n" ::: "memory"); }
// AND of `v` over the 256 consumer threads (named barrier 1; the producer warpgroup may have exited).
__device__ __forceinline__ bool consumers_and(bool v) {
  uint32_t r;
  asm volatile("{\n.reg .pred p, q;\nsetp.ne.u32 p, %1, 0;\nbar.red.and.pred q, 1, 256, p;\nselp.u32 %0, 1, 0, q;\n}\n"
               : "=r"(r)
               : "r"((uint32_t)v)
               : "memory");
  return r != 0;
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
// CTA tile: 3 warpgroups (1 producer, 2 consumers), BM rows x 256 tokens, 64 kept columns per stage.
//   BM = 128: consumer c multiplies rows 64c..64c+63 by all 256 tokens (m64n256k32)
//   BM = 64:  both consumers multiply the 64 rows, consumer c by tokens 128c..128c+127 (m64n128k32)
// ---------------------------------------------------------------------------------------------------
constexpr int kMaxDynamicSmem = 227 * 1024;   // sm_90 per-block opt-in limit

template <int BM>
struct Sm90Shape {
  static_assert(BM == 64 || BM == 128, "the wgmma kernel runs CTAs of 64 or 128 rows");
  static constexpr int kThreads = 384;
  static constexpr int kTokens = 256;
  static constexpr int kWgTokens = BM == 128 ? 256 : 128;   // N of each consumer's wgmma
  static constexpr int kAccRegs = kWgTokens / 2;
  static constexpr int kKept = 64;                          // kept columns per stage
  static constexpr int kBBytes = kKept * kTokens * 2;
  static constexpr int kAStepBytes = BM * 32;               // one k32 step of compressed values
  static constexpr int kEStepBytes = BM * 4;                // one k32 step of metadata words
  static constexpr int kABytes = 2 * kAStepBytes;
  static constexpr int kEBytes = 2 * kEStepBytes;
  static constexpr int kStageBytes = (kBBytes + kABytes + kEBytes + 1023) / 1024 * 1024;
  static constexpr int kOutPitch = BM + 8;                  // halves per token row: 16-byte rows, no bank conflicts
  static constexpr int kOutBytes = kTokens * kOutPitch * 2;
  static constexpr int kFitStages = (kMaxDynamicSmem - 2048) / kStageBytes;
  static constexpr int kStages = kFitStages > 6 ? 6 : kFitStages;
  static constexpr int kPipeBytes = kStages * kStageBytes;
  static constexpr int kBarrierOffset = kPipeBytes > kOutBytes ? kPipeBytes : kOutBytes;
  static constexpr int kSmemBytes = kBarrierOffset + 2 * kStages * 8 + 1024;   // + slack to align the base
  static_assert(kSmemBytes <= kMaxDynamicSmem, "shared memory over the sm_90 limit");
};

// ---------------------------------------------------------------------------------------------------
// Producer warpgroup: per stage, A (4 or 2 chunks per thread), E (first BM/2 threads), B (16 rows per warp).
// ---------------------------------------------------------------------------------------------------
// kAblate (timing experiments only, tools/ablate_sm90.py; the shipped kernels use 0): 1 = no B gather,
// 2 = no wgmma.  Leaving one side out and timing the rest shows which side bounds the kernel.
template <typename T, int BM, int kAblate = 0>
__device__ __forceinline__ void produce(const Problem<T>& p, int row_block, int m0, uint32_t base,
                                        uint32_t full_bar, uint32_t empty_bar, int k_begin, int kept) {
  using S = Sm90Shape<BM>;
  const int t = threadIdx.x, warp = t / 32, lane = t % 32;
  const int ksteps = kept / 32, stages = (ksteps + 1) / 2;
  // A: chunk c = t + 128 i -> row c / 4, step (c / 2) & 1, half c & 1: 4 threads read a row's 64 bytes.
  constexpr int kAChunks = 2 * BM * 2 / 128;
  const T* a_rows = p.values + (size_t)p.tile_rows * k_begin / 2 + (size_t)row_block * BM * (kept / 2);
  const T* a_src[kAChunks];
  uint32_t a_dst[kAChunks];
  int a_step[kAChunks];
#pragma unroll
  for (int i = 0; i < kAChunks; ++i) {
    const int c = t + 128 * i, row = c / 4, kk = (c / 2) & 1, h = c & 1;
    a_step[i] = kk;
    a_src[i] = a_rows + (size_t)row * (kept / 2) + kk * 16 + h * 8;
    a_dst[i] = S::kBBytes + kk * S::kAStepBytes + row * 32 + ((h ^ ((row >> 2) & 1)) * 16);
  }
  // E: thread t < BM/2 copies 16 bytes: step t / (BM/4), words 4 (t % (BM/4)) of the CTA's BM words.
  const bool e_on = t < BM / 2;
  const int e_kk = (t / (BM / 4)) & 1;
  const uint32_t* e_src = p.meta + (size_t)p.tile_rows * k_begin / 32 + (size_t)e_kk * p.tile_rows + row_block * BM +
                          (t % (BM / 4)) * 4;
  const uint32_t e_dst = S::kBBytes + S::kABytes + e_kk * S::kEStepBytes + (t % (BM / 4)) * 16;
  // B: lane = 16-byte chunk (8 tokens) of the CTA's 256 tokens; warp w gathers kept rows w + 4j, j < 16.
  const int tok = m0 + lane * 8;
  const bool b_on = tok < p.M;   // ldx % 8 == 0, so a chunk starting below M ends within the row
  const T* b_src = p.xt + (b_on ? tok : 0);
  // Kept row warp + 4j of a stage: row & 7 = warp + 4 (j & 1), so two swizzled chunk offsets cover all j.
  const uint32_t b_dst = (lane / 8) * 8192 + warp * 128;
  const uint32_t b_swz[2] = {(uint32_t)(((lane & 7) ^ warp) * 16), (uint32_t)(((lane & 7) ^ (warp + 4)) * 16)};
  const int* kidx = p.k_index + k_begin;
  // Lane l < 16 holds the index of kept row warp + 4l of a stage; row j's index is shuffled from lane j.
  auto stage_indices = [&](int s) {
    const int r = s * S::kKept + warp + 4 * (lane & 15);
    return (s < stages && r < kept) ? __ldg(kidx + r) : 0;
  };
  int idx_next = stage_indices(0);
  for (int s = 0; s < stages; ++s) {
    const int st = s % S::kStages;
    const int nk = ksteps - 2 * s >= 2 ? 2 : 1;
    const int idx_now = idx_next;
    idx_next = stage_indices(s + 1);   // one stage ahead: the index load latency hides behind this stage
    if (s >= S::kStages) mbar_wait(empty_bar + 8 * st, ((s / S::kStages) - 1) & 1);
    const uint32_t sb = base + st * S::kStageBytes;
    // An odd last stage has one k32 step: its second step gets zero values and zero activations (and a copy
    // of the first step's valid metadata), so consumers always issue two wgmmas and never branch between them.
    const bool second = nk == 2;
#pragma unroll
    for (int i = 0; i < kAChunks; ++i) cp_async_16_u32(sb + a_dst[i], a_src[i] + s * 32, a_step[i] == 0 || second);
    if (e_on) cp_async_16_u32(sb + e_dst, e_src + (size_t)s * 2 * p.tile_rows - (second ? 0 : e_kk * p.tile_rows), true);
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const int idx = __shfl_sync(0xffffffffu, idx_now, j);
      const bool on = b_on && (j < 8 || second);   // rows warp + 4j >= 32 belong to the second step
      if (kAblate != 1)
        cp_async_16_u32(sb + b_dst + j * 512 + b_swz[j & 1], on ? b_src + (size_t)idx * p.ldx : p.xt, on);
    }
    cp_async_arrive_noinc(full_bar + 8 * st);
  }
  cp_async_wait_all();
}

// ---------------------------------------------------------------------------------------------------
// Consumer warpgroup c (0, 1): the wgmma main loop, then the epilogue (shared with the other consumer).
// ---------------------------------------------------------------------------------------------------
template <typename T, int BM, int ACT, int kAblate = 0>
__device__ __forceinline__ void consume(const Problem<T>& p, int tile, int row_block, int m0, uint8_t* smem,
                                        uint32_t full_bar, uint32_t empty_bar, int kept) {
  using S = Sm90Shape<BM>;
  const uint32_t base = smem_u32(smem);
  constexpr int kN = S::kWgTokens;
  const int c = threadIdx.x / 128 - 1, t = threadIdx.x % 128, warp = t / 32, lane = t % 32;
  const int ksteps = kept / 32, stages = (ksteps + 1) / 2;
  const int slab = BM == 128 ? 64 * c : 0;          // first CTA row of this consumer
  const int tok0 = BM == 128 ? 0 : kN * c;          // first CTA token of this consumer
  const uint32_t a_off = S::kBBytes + slab * 32;
  const uint32_t b_off = (tok0 / 64) * 8192;
  const uint32_t e_off = S::kBBytes + S::kABytes + ((slab / 16 + warp) * 16 + (lane >> 2) * 2 + (lane & 1)) * 4;

  float acc[S::kAccRegs];
#pragma unroll
  for (int i = 0; i < S::kAccRegs; ++i) acc[i] = 0.f;

  for (int s = 0; s < stages; ++s) {
    const int st = s % S::kStages;
    mbar_wait(full_bar + 8 * st, (s / S::kStages) & 1);
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
    if (s > 0) mbar_arrive(empty_bar + 8 * ((s - 1) % S::kStages));
  }
  wgmma_wait<0>();
  consumers_sync();    // both consumers are done reading the pipeline buffers the epilogue tile overlays

  // ---- epilogue: act(acc + bias) -> [tokens][rows] tile via stmatrix.trans -> token-major stores --------
  const int* rows = p.row_index + tile * p.tile_rows + row_block * BM;
  const int r_lo = slab + 16 * warp + (lane >> 2);
  const float b_lo = p.has_bias ? to_float(p.bias[rows[r_lo]]) : 0.f;
  const float b_hi = p.has_bias ? to_float(p.bias[rows[r_lo + 8]]) : 0.f;
  // lane 8i + j addresses token j of the i-th 8x8 matrix: i & 1 = high rows (+8), i >> 1 = second token block.
  const int mi = lane / 8, mj = lane % 8;
  const uint32_t st_addr = base + ((tok0 + 8 * (mi >> 1) + mj) * S::kOutPitch + slab + 16 * warp + 8 * (mi & 1)) * 2;
#pragma unroll
  for (int jb = 0; jb < kN / 16; ++jb) {   // pairs of 8-token blocks
    const float* a0 = acc + 8 * jb;        // block 2jb: acc[8jb .. 8jb+3], block 2jb+1: acc[8jb+4 .. 8jb+7]
    stmatrix_x4_trans(st_addr + jb * 16 * S::kOutPitch * 2,
                      pack2<T>(activate<ACT>(a0[0] + b_lo), activate<ACT>(a0[1] + b_lo)),
                      pack2<T>(activate<ACT>(a0[2] + b_hi), activate<ACT>(a0[3] + b_hi)),
                      pack2<T>(activate<ACT>(a0[4] + b_lo), activate<ACT>(a0[5] + b_lo)),
                      pack2<T>(activate<ACT>(a0[6] + b_hi), activate<ACT>(a0[7] + b_hi)));
  }
  const int ct = threadIdx.x - 128;   // 0..255 over both consumers
  bool contiguous = true;
  for (int r = ct; r < BM; r += 256) contiguous &= (rows[r] == rows[0] + r);
  contiguous = consumers_and(contiguous);   // also the barrier between the stmatrix writes and the reads below
  const int row0 = rows[0];
  const T* out_s = reinterpret_cast<const T*>(smem);
  const bool vec_out = contiguous && (row0 % 8 == 0) && (p.N % 8 == 0) && ((reinterpret_cast<uintptr_t>(p.y) & 15) == 0);
  if (vec_out) {
    constexpr int kChunks = BM / 8;
    for (int i = ct; i < S::kTokens * kChunks; i += 256) {
      const int n = i / kChunks, ch = i % kChunks, m = m0 + n;
      if (m < p.M)
        *reinterpret_cast<uint4*>(p.y + (size_t)m * p.N + row0 + ch * 8) =
            *reinterpret_cast<const uint4*>(out_s + n * S::kOutPitch + ch * 8);
    }
  } else {   // TVW / restored permutations: scatter through row_index
    for (int i = ct; i < S::kTokens * BM; i += 256) {
      const int n = i / BM, r = i % BM, m = m0 + n;
      if (m < p.M) p.y[(size_t)m * p.N + rows[r]] = out_s[n * S::kOutPitch + r];
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// The kernel body: grid order and pruned-row CTAs as in the mma.sp kernel; 1 CTA (384 threads) per SM.
// ---------------------------------------------------------------------------------------------------
template <typename T, int BM, int ACT, int kAblate = 0>
__device__ __forceinline__ void tile_sparse_gemm_sm90(const Problem<T>& p) {
  using S = Sm90Shape<BM>;
  const int m_tiles = (p.M + S::kTokens - 1) / S::kTokens;
  const int sub_tiles = p.tile_rows / BM;
  const int gemm_ctas = p.num_tiles * sub_tiles * m_tiles;
  if ((int)blockIdx.x >= gemm_ctas) {
    fill_pruned<T, S::kTokens, S::kThreads, ACT>(p, blockIdx.x - gemm_ctas, m_tiles);
    return;
  }
  const int m0 = (blockIdx.x / (p.num_tiles * sub_tiles)) * S::kTokens;   // tile-fastest, as in the mma.sp kernel
  const int lin = blockIdx.x % (p.num_tiles * sub_tiles);
  const int tile = lin / sub_tiles, row_block = lin % sub_tiles;
  extern __shared__ __align__(1024) uint8_t smem90[];
  uint8_t* smem = smem90 + ((1024 - (smem_u32(smem90) & 1023)) & 1023);   // swizzle atoms need 1024-byte alignment
  const uint32_t base = smem_u32(smem);
  const uint32_t full_bar = base + S::kBarrierOffset, empty_bar = full_bar + 8 * S::kStages;
  const int k_begin = p.k_offsets[tile], kept = p.k_offsets[tile + 1] - k_begin;
  if (threadIdx.x == 0) {
    for (int s = 0; s < S::kStages; ++s) {
      mbar_init(full_bar + 8 * s, 128);    // one cp.async arrival per producer thread
      mbar_init(empty_bar + 8 * s, 256);   // one arrival per consumer thread
    }
    mbar_fence_init();
  }
  __syncthreads();
  if (threadIdx.x < 128) {
    setmaxnreg_dec<56>();
    produce<T, BM, kAblate>(p, row_block, m0, base, full_bar, empty_bar, k_begin, kept);
  } else {
    setmaxnreg_inc<224>();
    consume<T, BM, ACT, kAblate>(p, tile, row_block, m0, smem, full_bar, empty_bar, kept);
  }
}

}  // namespace sm90
}  // namespace sparsetrt
