// Tile-sparse GEMM on sparse tensor cores: Y[M, N] = act(X · Wᵀ + b) with W in the TileSparse format
// (docs/FORMAT.md) and X given feature-major as XT[K, ldx] (token m of input k at XT[k*ldx + m]).
//
// Layers (CUTLASS-style, outermost last):
//   ptx helpers      cp.async / ldmatrix / mma.sp wrappers
//   CtaShape<BM>     the CTA tile: BM weight rows x 128/256 tokens, 32 kept columns per pipeline stage
//   load_stage       global -> shared: A (compressed values) and E (metadata) by cp.async, B by a
//                    gather of kept rows of XT (one contiguous 256-byte run of tokens per kept index)
//   mma_stage        shared -> registers (ldmatrix) -> mma.sp.m16n8k32 into fp32 accumulators
//   epilogue         bias + activation, staged through shared memory, scattered to output features
//                    through row_index (vector stores when the CTA's rows are contiguous)
//   fill_pruned      CTAs past the GEMM work write bias to output features no tile covers
//
// Work order: one 1-D grid, tile-fastest: CTA i takes token slice i / (tiles * sub) and tile row
// block i % (tiles * sub).  Tiles are stored longest first (TW/TVW), so within each token slice long
// tiles start first and short ones fill in behind them.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

namespace sparsetrt {

// ---------------------------------------------------------------------------------------------------
// PTX helpers
// ---------------------------------------------------------------------------------------------------
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte async copy through L2 only (.cg); src_bytes = 0 zero-fills the destination without reading
// the source.  (An L1-allocating .ca gather of activation rows was measured: 7.7% L1 hits, no gain.)
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {   // dst: shared address
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool valid) {
  cp_async_16(smem_u32(dst), src, valid);
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}

// D += A(16x32, 2:4 compressed to 16x16) * B(32x8); metadata e from lanes 4g+{0,1} (selector 0).
template <typename T>
struct MmaSp;
template <>
struct MmaSp<__half> {
  __device__ __forceinline__ static void run(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[4],
                                             uint32_t e) {
    asm volatile(
        "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9,%10,%11}, {%0,%1,%2,%3}, %12, 0x0;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(e));
  }
};
template <>
struct MmaSp<__nv_bfloat16> {
  __device__ __forceinline__ static void run(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[4],
                                             uint32_t e) {
    asm volatile(
        "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9,%10,%11}, {%0,%1,%2,%3}, %12, 0x0;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(e));
  }
};

__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

enum Activation { kNone = 0, kRelu = 1, kGelu = 2 };
template <int ACT>
__device__ __forceinline__ float activate(float v) {
  if (ACT == kRelu) return fmaxf(v, 0.f);
  if (ACT == kGelu) return 0.5f * v * (1.f + erff(v * 0.70710678118654752f));  // exact (erf) GELU
  return v;
}

// ---------------------------------------------------------------------------------------------------
// CTA tile shape: 4 warps; 64x64 warp tiles (32x64 for BM = 32); 32 kept columns per pipeline stage.
//   BM = 128: 2x2 warps, 128 tokens     BM = 64: 1x4 warps, 256 tokens     BM = 32: 1x4 warps, 256 tokens
// A gathered B tile feeds all BM rows, a loaded A tile all BN tokens.
// ---------------------------------------------------------------------------------------------------
constexpr int kKeptPerStage = 32;    // one mma.sp m16n8k32 step of kept columns
constexpr int kWarpTokens = 64;      // 8 x n8 per warp

// kLowSmem: at most 48 KB of dynamic shared memory (fewer stages), for launchers that cannot raise
// the per-kernel limit (TensorRT's AOT plugin launch).
template <int BM, bool kLowSmem = false>
struct CtaShape {
  static_assert(BM == 32 || BM == 64 || BM == 128, "BM must be 32, 64 or 128");
  static constexpr int kThreads = 128;
  static constexpr int kWarpRows = BM >= 64 ? 64 : 32;
  static constexpr int kMI = kWarpRows / 16;                          // m16 tiles per warp
  static constexpr int kWarpsM = BM / kWarpRows;
  static constexpr int kWarpsN = 4 / kWarpsM;
  static constexpr int kTokens = kWarpsN * kWarpTokens;                // BN
  static constexpr int kChunksPerRow = kTokens / 8;                    // 16-byte chunks per gathered row
  static constexpr int kStages = kLowSmem ? (BM == 128 ? 3 : 2) : (BM == 128 ? 6 : 4);   // ~75 KB: 2 CTAs/SM
  static constexpr int kABytes = BM * (kKeptPerStage / 2) * 2;        // BM rows x 16 compressed halves
  static constexpr int kEBytes = BM * 4;                              // one metadata word per row
  static constexpr int kBBytes = kKeptPerStage * kTokens * 2;         // 32 gathered rows x BN tokens
  static constexpr int kStageBytes = kABytes + kEBytes + kBBytes;
  static constexpr int kPipeBytes = kStages * kStageBytes;
  static constexpr int kGatherChunks = kKeptPerStage * kChunksPerRow / kThreads;   // per thread
  static constexpr int kOutPitch = BM + 8;                            // halves per token, padded
  static constexpr int kOutBytes = kTokens * kOutPitch * 2;
  static constexpr int kSmemBytes = kPipeBytes > kOutBytes ? kPipeBytes : kOutBytes;
  static_assert(!kLowSmem || kSmemBytes <= 48 * 1024, "low-smem variant must fit the default 48 KB");
};

// The problem, as the kernel sees it (device pointers + sizes); one struct keeps signatures short.
template <typename T>
struct Problem {
  const T* xt;             // [K, ldx] feature-major activations
  const T* values;         // TileSparse values
  const uint32_t* meta;    // TileSparse metadata words
  const int* k_index;      // kept input columns, tile after tile
  const int* k_offsets;    // [T+1]
  const int* row_index;    // [N] output feature per tile row; pruned features last
  const T* bias;           // [N] or unused
  T* y;                    // [M, N] token-major output
  int M, ldx, K, N, num_tiles, tile_rows, has_bias;
};

// ---------------------------------------------------------------------------------------------------
// Pruned output features: Y[m, row] = act(bias[row]) (act(0) without bias) for rows past the tiles.
// ---------------------------------------------------------------------------------------------------
// kTokens: the token tile of the GEMM kernel whose work this extends; threads tid of nthreads share the work.
// kYFm: Y is feature-major, YT[N, M] (the Hopper kernel's chaining output).
template <typename T, int kTokens, int ACT, bool kYFm = false>
__device__ void fill_pruned(const Problem<T>& p, int fill_cta, int m_tiles, int tid, int nthreads) {
  const int covered = p.num_tiles * p.tile_rows;
  const int m0 = (fill_cta % m_tiles) * kTokens;
  const int r0 = (fill_cta / m_tiles) * 64;
  for (int i = tid; i < 64 * kTokens; i += nthreads) {
    // consecutive threads write consecutive addresses: along features (Y) or along tokens (YT)
    const int r = r0 + (kYFm ? i / kTokens : i % 64), m = m0 + (kYFm ? i % kTokens : i / 64);
    if (covered + r < p.N && m < p.M) {
      const int row = p.row_index[covered + r];
      const size_t at = kYFm ? (size_t)row * p.M + m : (size_t)m * p.N + row;
      p.y[at] = from_float<T>(activate<ACT>(p.has_bias ? to_float(p.bias[row]) : 0.f));
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// The GEMM CTA.  kVecX: XT rows are 16-byte aligned (cp.async gathers); else element loads.
// Every per-thread address is computed once before the k loop; a stage only advances pointers.
// ---------------------------------------------------------------------------------------------------
template <typename T, int BM, int ACT, bool kVecX, bool kLowSmem>
__device__ __forceinline__ void gemm_cta(const Problem<T>& p, int tile, int row_block, int m0) {
  using Shape = CtaShape<BM, kLowSmem>;
  constexpr int kTokens = Shape::kTokens, kThreads = Shape::kThreads, kStages = Shape::kStages;
  constexpr int kMI = Shape::kMI;
  constexpr int kAChunks = BM * 2 / kThreads > 0 ? BM * 2 / kThreads : 1;   // 16 B chunks of A per thread
  extern __shared__ __align__(128) uint8_t smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int k_begin = p.k_offsets[tile];
  const int kept = p.k_offsets[tile + 1] - k_begin;
  const int steps = kept / kKeptPerStage;

  // ---- producer state (global -> shared) ------------------------------------------------------------
  // A: chunk c = tid + j*kThreads covers row c/2, half c%2 of the 32-byte compressed row slice.
  const T* a_src[kAChunks];
  uint32_t a_dst[kAChunks];
  bool a_on[kAChunks];
  const T* a_rows = p.values + (size_t)p.tile_rows * k_begin / 2 + (size_t)row_block * BM * (kept / 2);
#pragma unroll
  for (int j = 0; j < kAChunks; ++j) {
    const int c = tid + j * kThreads, row = c >> 1, h = c & 1;
    a_on[j] = c < BM * 2;
    a_src[j] = a_rows + (size_t)(a_on[j] ? row : 0) * (kept / 2) + h * 8;
    a_dst[j] = (row * 16 + ((h ^ ((row >> 2) & 1)) * 8)) * 2;
  }
  // E: BM words per step, contiguous; the first BM/4 threads copy 16 B each.
  const bool e_on = tid < BM / 4;
  const uint32_t* e_src = p.meta + (size_t)p.tile_rows * k_begin / 32 + row_block * BM + (e_on ? tid * 4 : 0);
  const uint32_t e_dst = Shape::kABytes + tid * 16;
  // B: chunk c = tid + j*kThreads covers kept row c / kChunksPerRow, tokens m0 + 8 * (c % kChunksPerRow).
  constexpr int kG = Shape::kGatherChunks;
  const int b_ch = tid % Shape::kChunksPerRow;          // the same for every j (kThreads % chunks == 0)
  const int b_m = m0 + b_ch * 8;
  const bool b_on = b_m < p.M;
  const T* b_src = p.xt + (b_on ? b_m : 0);
  uint32_t b_dst[kG];
#pragma unroll
  for (int j = 0; j < kG; ++j) {
    const int row = (tid + j * kThreads) / Shape::kChunksPerRow;
    b_dst[j] = Shape::kABytes + Shape::kEBytes + (row * kTokens + ((b_ch ^ (row & 7)) * 8)) * 2;
  }
  const int* kidx = p.k_index + k_begin + tid / Shape::kChunksPerRow;   // row of chunk j: + j*rows_per_pass
  constexpr int kRowsPerPass = kThreads / Shape::kChunksPerRow;

  using GatherIdx = int[kG];
  auto load_indices = [&](int step, GatherIdx& idx) {
#pragma unroll
    for (int j = 0; j < kG; ++j) idx[j] = step < steps ? __ldg(kidx + step * kKeptPerStage + j * kRowsPerPass) : 0;
  };
  auto load_stage = [&](int step, uint8_t* st, const GatherIdx& idx) {
#pragma unroll
    for (int j = 0; j < kAChunks; ++j)
      if (a_on[j]) cp_async_16(st + a_dst[j], a_src[j] + step * 16, true);
    if (e_on) cp_async_16(st + e_dst, e_src + (size_t)step * p.tile_rows, true);
#pragma unroll
    for (int j = 0; j < kG; ++j) {
      const T* src = b_src + (size_t)idx[j] * p.ldx;
      if (kVecX) {
        cp_async_16(st + b_dst[j], b_on ? src : p.xt, b_on);
      } else {
        uint16_t v[8];
        const uint16_t* s16 = reinterpret_cast<const uint16_t*>(src);
#pragma unroll
        for (int e = 0; e < 8; ++e) v[e] = (b_m + e < p.M) ? s16[e] : 0;
        *reinterpret_cast<uint4*>(st + b_dst[j]) = *reinterpret_cast<const uint4*>(v);
      }
    }
  };

  // ---- consumer state (shared -> registers -> mma.sp) ---------------------------------------------
  const int warp_m = warp % Shape::kWarpsM, warp_n = warp / Shape::kWarpsM;
  uint32_t a_ld[kMI], e_ld[kMI], b_ld[8];
#pragma unroll
  for (int mi = 0; mi < kMI; ++mi) {
    const int row = warp_m * Shape::kWarpRows + mi * 16 + (lane & 15), h = lane >> 4;
    a_ld[mi] = (row * 16 + ((h ^ ((row >> 2) & 1)) * 8)) * 2;
    e_ld[mi] = Shape::kABytes + (warp_m * Shape::kWarpRows + mi * 16 + (lane >> 2) * 2 + (lane & 1)) * 4;
  }
#pragma unroll
  for (int ni = 0; ni < 8; ++ni) {   // lane = kept row within the stage (ldmatrix matrix lane/8 = rows 8j..8j+7)
    const int chunk = warp_n * 8 + ni;
    b_ld[ni] = Shape::kABytes + Shape::kEBytes + (lane * kTokens + ((chunk ^ (lane & 7)) * 8)) * 2;
  }
  float acc[kMI][8][4];
#pragma unroll
  for (int mi = 0; mi < kMI; ++mi)
#pragma unroll
    for (int ni = 0; ni < 8; ++ni)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[mi][ni][j] = 0.f;

  auto mma_stage = [&](const uint8_t* st) {
    uint32_t a[kMI][4], e[kMI];
#pragma unroll
    for (int mi = 0; mi < kMI; ++mi) {
      ldmatrix_x4(a[mi], st + a_ld[mi]);
      e[mi] = *reinterpret_cast<const uint32_t*>(st + e_ld[mi]);
    }
#pragma unroll
    for (int ni = 0; ni < 8; ++ni) {
      uint32_t b[4];
      ldmatrix_x4_trans(b, st + b_ld[ni]);
#pragma unroll
      for (int mi = 0; mi < kMI; ++mi) MmaSp<T>::run(acc[mi][ni], a[mi], b, e[mi]);
    }
  };

  // ---- main loop: kStages-1 stages in flight ahead of the one being multiplied ----------------------
  // Iteration s: prefetch the indices of stage s+kStages+1, wait for stage s, multiply it, then issue the
  // gather of stage s+kStages-1 into the buffer everyone finished with before this iteration's barrier.
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    GatherIdx idx;
    load_indices(s, idx);
    if (s < steps) load_stage(s, smem + s * Shape::kStageBytes, idx);
    cp_async_commit();
  }
  // Index registers two iterations deep: `ready` feeds this iteration's gather, `next` the following
  // one, and the load for the one after is issued now, a whole iteration ahead of its use.
  GatherIdx idx_ready, idx_next;
  load_indices(kStages - 1, idx_ready);
  load_indices(kStages, idx_next);
  int read_buf = 0, write_buf = kStages - 1;
  for (int s = 0; s < steps; ++s) {
    GatherIdx idx_later;
    load_indices(s + kStages + 1, idx_later);
    cp_async_wait<kStages - 2>();
    __syncthreads();   // stage s landed for all threads; everyone is done with stage s-1's buffer
    mma_stage(smem + read_buf * Shape::kStageBytes);
    if (s + kStages - 1 < steps) load_stage(s + kStages - 1, smem + write_buf * Shape::kStageBytes, idx_ready);
    cp_async_commit();
#pragma unroll
    for (int j = 0; j < kG; ++j) {
      idx_ready[j] = idx_next[j];
      idx_next[j] = idx_later[j];
    }
    read_buf = read_buf == kStages - 1 ? 0 : read_buf + 1;
    write_buf = write_buf == kStages - 1 ? 0 : write_buf + 1;
  }
  cp_async_wait<0>();
  __syncthreads();

  // ---- epilogue: bias + activation into a [tokens][rows] shared tile, then store token-major -------
  T* out_s = reinterpret_cast<T*>(smem);
  const int* rows = p.row_index + tile * p.tile_rows + row_block * BM;
  const int g = lane >> 2, q = lane & 3;
#pragma unroll
  for (int mi = 0; mi < kMI; ++mi) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = warp_m * Shape::kWarpRows + mi * 16 + h * 8 + g;
      const float b = p.has_bias ? to_float(p.bias[rows[r]]) : 0.f;
#pragma unroll
      for (int ni = 0; ni < 8; ++ni)
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const int n = warp_n * kWarpTokens + ni * 8 + q * 2 + j;
          out_s[n * Shape::kOutPitch + r] = from_float<T>(activate<ACT>(acc[mi][ni][h * 2 + j] + b));
        }
    }
  }
  int contiguous = 1;
  for (int r = tid; r < BM; r += kThreads) contiguous &= (rows[r] == rows[0] + r);
  contiguous = __syncthreads_and(contiguous);   // also the barrier before reading out_s
  const int row0 = rows[0];
  const bool vec_out = contiguous && (row0 % 8 == 0) && (p.N % 8 == 0) &&
                       ((reinterpret_cast<uintptr_t>(p.y) & 15) == 0);
  if (vec_out) {
    constexpr int kChunks = BM / 8;
    for (int c = tid; c < kTokens * kChunks; c += kThreads) {
      const int n = c / kChunks, ch = c % kChunks, m = m0 + n;
      if (m < p.M)
        *reinterpret_cast<uint4*>(p.y + (size_t)m * p.N + row0 + ch * 8) =
            *reinterpret_cast<const uint4*>(out_s + n * Shape::kOutPitch + ch * 8);
    }
  } else {
    for (int c = tid; c < kTokens * BM; c += kThreads) {
      const int n = c / BM, r = c % BM, m = m0 + n;
      if (m < p.M) p.y[(size_t)m * p.N + rows[r]] = out_s[n * Shape::kOutPitch + r];
    }
  }
}

template <typename T, int BM, int ACT, bool kLowSmem = false>
__device__ void tile_sparse_gemm(const Problem<T>& p) {
  using Shape = CtaShape<BM, kLowSmem>;
  const int m_tiles = (p.M + Shape::kTokens - 1) / Shape::kTokens;
  const int sub_tiles = p.tile_rows / BM;
  const int gemm_ctas = p.num_tiles * sub_tiles * m_tiles;
  if ((int)blockIdx.x >= gemm_ctas) {
    fill_pruned<T, Shape::kTokens, ACT>(p, blockIdx.x - gemm_ctas, m_tiles, threadIdx.x, Shape::kThreads);
    return;
  }
  // Tile-fastest order: the CTAs running together share one token slice of XT and stream the
  // compressed weights, so L2 holds W plus a few XT slices rather than all of XT.  Within a token
  // slice, tiles run in file order (TW/TVW: longest first).
  const int m0 = (blockIdx.x / (p.num_tiles * sub_tiles)) * Shape::kTokens;
  const int tile_lin = blockIdx.x % (p.num_tiles * sub_tiles);
  // 16-byte gathers need 16-byte aligned rows of XT; otherwise element loads (decided once, per CTA).
  if (((p.ldx & 7) == 0) && ((reinterpret_cast<uintptr_t>(p.xt) & 15) == 0))
    gemm_cta<T, BM, ACT, true, kLowSmem>(p, tile_lin / sub_tiles, tile_lin % sub_tiles, m0);
  else
    gemm_cta<T, BM, ACT, false, kLowSmem>(p, tile_lin / sub_tiles, tile_lin % sub_tiles, m0);
}

}  // namespace sparsetrt
