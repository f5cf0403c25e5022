// Tile-sparse GEMM on sparse tensor cores: Y[M, N] = act(X · Wᵀ + b) with W in the TileSparse format
// (docs/FORMAT.md) and X given feature-major as XT[K, ldx] (token m of input k at XT[k*ldx + m]).
//
// Layers (CUTLASS-style, outermost last):
//   ptx helpers      cp.async / ldmatrix / mma.sp wrappers
//   CtaShape<BM>     the CTA tile: BM weight rows x 128 tokens, 32 kept columns per pipeline stage
//   load_stage       global -> shared: A (compressed values) and E (metadata) by cp.async, B by a
//                    gather of kept rows of XT (one contiguous 256-byte run of tokens per kept index)
//   mma_stage        shared -> registers (ldmatrix) -> mma.sp.m16n8k32 into fp32 accumulators
//   epilogue         bias + activation, staged through shared memory, scattered to output features
//                    through row_index (vector stores when the CTA's rows are contiguous)
//   fill_pruned      CTAs past the GEMM work write bias to output features no tile covers
//
// Work order: one 1-D grid; CTA i takes tile i / (sub * m_tiles).  Tiles are stored longest first
// (TW/TVW), so long tiles start first and short ones fill the tail of the launch.
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

// 16-byte async copy; src_bytes = 0 zero-fills the destination without reading the source.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src),
               "r"(valid ? 16 : 0));
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
// CTA tile shape
// ---------------------------------------------------------------------------------------------------
constexpr int kTokensPerCta = 128;   // BN
constexpr int kKeptPerStage = 32;    // one mma.sp m16n8k32 step of kept columns
constexpr int kStages = 4;           // cp.async pipeline depth
constexpr int kWarpRows = 32;        // warp tile: 32 weight rows (2 x m16) ...
constexpr int kWarpTokens = 64;      // ... x 64 tokens (8 x n8)

template <int BM>
struct CtaShape {
  static_assert(BM % kWarpRows == 0, "BM must be a multiple of 32");
  static constexpr int kWarpsM = BM / kWarpRows;
  static constexpr int kWarpsN = kTokensPerCta / kWarpTokens;
  static constexpr int kThreads = kWarpsM * kWarpsN * 32;
  static constexpr int kABytes = BM * (kKeptPerStage / 2) * 2;        // BM rows x 16 compressed halves
  static constexpr int kEBytes = BM * 4;                              // one metadata word per row
  static constexpr int kBBytes = kKeptPerStage * kTokensPerCta * 2;   // 32 gathered rows x 128 tokens
  static constexpr int kStageBytes = kABytes + kEBytes + kBBytes;
  static constexpr int kPipeBytes = kStages * kStageBytes;
  static constexpr int kOutPitch = BM + 8;                            // halves per token, padded
  static constexpr int kOutBytes = kTokensPerCta * kOutPitch * 2;
  static constexpr int kSmemBytes = kPipeBytes > kOutBytes ? kPipeBytes : kOutBytes;
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
// Pruned output features: Y[m, row] = bias[row] (or 0) for the rows past the tiles.
// ---------------------------------------------------------------------------------------------------
template <typename T, int BM>
__device__ void fill_pruned(const Problem<T>& p, int fill_cta, int m_tiles) {
  const int covered = p.num_tiles * p.tile_rows;
  const int m0 = (fill_cta % m_tiles) * kTokensPerCta;
  const int r0 = (fill_cta / m_tiles) * 64;
  for (int i = threadIdx.x; i < 64 * kTokensPerCta; i += CtaShape<BM>::kThreads) {
    const int r = r0 + i % 64, m = m0 + i / 64;
    if (covered + r < p.N && m < p.M) {
      const int row = p.row_index[covered + r];
      p.y[(size_t)m * p.N + row] = p.has_bias ? p.bias[row] : from_float<T>(0.f);
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// The GEMM CTA
// ---------------------------------------------------------------------------------------------------
template <typename T, int BM, int ACT>
__device__ void tile_sparse_gemm(const Problem<T>& p) {
  using Shape = CtaShape<BM>;
  extern __shared__ __align__(128) uint8_t smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int m_tiles = (p.M + kTokensPerCta - 1) / kTokensPerCta;
  const int sub_tiles = p.tile_rows / BM;
  const int gemm_ctas = p.num_tiles * sub_tiles * m_tiles;
  if ((int)blockIdx.x >= gemm_ctas) {
    fill_pruned<T, BM>(p, blockIdx.x - gemm_ctas, m_tiles);
    return;
  }
  const int m0 = (blockIdx.x % m_tiles) * kTokensPerCta;
  const int tile_lin = blockIdx.x / m_tiles;
  const int tile = tile_lin / sub_tiles, row_block = tile_lin % sub_tiles;
  const int k_begin = p.k_offsets[tile];
  const int kept = p.k_offsets[tile + 1] - k_begin;
  const int steps = kept / kKeptPerStage;
  // First compressed value / metadata word of this CTA's rows (offsets: docs/FORMAT.md).
  const T* a_rows = p.values + (size_t)p.tile_rows * k_begin / 2 + (size_t)row_block * BM * (kept / 2);
  const uint32_t* e_rows = p.meta + (size_t)p.tile_rows * k_begin / 32 + row_block * BM;
  const int* kidx = p.k_index + k_begin;
  // 16-byte gathers need 16-byte aligned rows of XT; otherwise fall back to element loads.
  const bool xt_vec = ((p.ldx & 7) == 0) && ((reinterpret_cast<uintptr_t>(p.xt) & 15) == 0);

  auto stage_ptr = [&](int buf) { return smem + buf * Shape::kStageBytes; };

  auto load_stage = [&](int step, int buf) {
    uint8_t* st = stage_ptr(buf);
    T* a_s = reinterpret_cast<T*>(st);
    uint32_t* e_s = reinterpret_cast<uint32_t*>(st + Shape::kABytes);
    T* b_s = reinterpret_cast<T*>(st + Shape::kABytes + Shape::kEBytes);
    // A: 2 x 16 B per row; chunk swizzled by (row / 4) & 1 so ldmatrix rows hit distinct banks.
    for (int c = tid; c < BM * 2; c += Shape::kThreads) {
      const int row = c >> 1, h = c & 1;
      cp_async_16(a_s + row * 16 + ((h ^ ((row >> 2) & 1)) * 8), a_rows + (size_t)row * (kept / 2) + step * 16 + h * 8,
                  true);
    }
    // E: BM words of this k step are contiguous in the fragment-ordered metadata.
    for (int c = tid; c < BM / 4; c += Shape::kThreads)
      cp_async_16(e_s + c * 4, e_rows + (size_t)step * p.tile_rows + c * 4, true);
    // B: kept row k of XT, 128 tokens = 16 chunks; chunk swizzled by row & 7 for ldmatrix.trans.
    for (int c = tid; c < kKeptPerStage * 16; c += Shape::kThreads) {
      const int row = c >> 4, ch = c & 15;
      const int k = __ldg(kidx + step * kKeptPerStage + row);
      const int m = m0 + ch * 8;
      T* dst = b_s + row * kTokensPerCta + ((ch ^ (row & 7)) * 8);
      const T* src = p.xt + (size_t)k * p.ldx + m;
      if (xt_vec) {
        cp_async_16(dst, m < p.M ? src : p.xt, m < p.M);
      } else {
        uint16_t v[8];
        const uint16_t* s16 = reinterpret_cast<const uint16_t*>(src);
#pragma unroll
        for (int j = 0; j < 8; ++j) v[j] = (m + j < p.M) ? s16[j] : 0;
        *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(v);
      }
    }
  };

  const int warp_m = warp % Shape::kWarpsM, warp_n = warp / Shape::kWarpsM;
  float acc[2][8][4];
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int ni = 0; ni < 8; ++ni)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[mi][ni][j] = 0.f;

  auto mma_stage = [&](int buf) {
    const uint8_t* st = stage_ptr(buf);
    const T* a_s = reinterpret_cast<const T*>(st);
    const uint32_t* e_s = reinterpret_cast<const uint32_t*>(st + Shape::kABytes);
    const T* b_s = reinterpret_cast<const T*>(st + Shape::kABytes + Shape::kEBytes);
    uint32_t a[2][4], e[2];
#pragma unroll
    for (int mi = 0; mi < 2; ++mi) {
      const int row = warp_m * kWarpRows + mi * 16 + (lane & 15), h = lane >> 4;
      ldmatrix_x4(a[mi], a_s + row * 16 + ((h ^ ((row >> 2) & 1)) * 8));
      e[mi] = e_s[warp_m * kWarpRows + mi * 16 + (lane >> 2) * 2 + (lane & 1)];
    }
#pragma unroll
    for (int ni = 0; ni < 8; ++ni) {
      const int chunk = warp_n * 8 + ni;   // 8-token chunk; lane = kept row (matrix lane/8 = rows 8j..8j+7)
      uint32_t b[4];
      ldmatrix_x4_trans(b, b_s + lane * kTokensPerCta + ((chunk ^ (lane & 7)) * 8));
#pragma unroll
      for (int mi = 0; mi < 2; ++mi) MmaSp<T>::run(acc[mi][ni], a[mi], b, e[mi]);
    }
  };

  // Main loop: kStages-1 stages in flight ahead of the one being multiplied.
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < steps) load_stage(s, s);
    cp_async_commit();
  }
  for (int s = 0; s < steps; ++s) {
    cp_async_wait<kStages - 2>();
    __syncthreads();   // stage s landed for all threads; everyone is done with stage s-1's buffer
    const int next = s + kStages - 1;
    if (next < steps) load_stage(next, next % kStages);
    cp_async_commit();
    mma_stage(s % kStages);
  }
  cp_async_wait<0>();
  __syncthreads();

  // Epilogue: bias + activation into a [tokens][rows] shared tile, then store token-major.
  T* out_s = reinterpret_cast<T*>(smem);
  const int* rows = p.row_index + tile * p.tile_rows + row_block * BM;
  const int g = lane >> 2, q = lane & 3;
#pragma unroll
  for (int mi = 0; mi < 2; ++mi) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = warp_m * kWarpRows + mi * 16 + h * 8 + g;
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
  for (int r = tid; r < BM; r += Shape::kThreads) contiguous &= (rows[r] == rows[0] + r);
  contiguous = __syncthreads_and(contiguous);   // also the barrier before reading out_s
  const int row0 = rows[0];
  const bool vec_out = contiguous && (row0 % 8 == 0) && (p.N % 8 == 0) &&
                       ((reinterpret_cast<uintptr_t>(p.y) & 15) == 0);
  if (vec_out) {
    constexpr int kChunks = BM / 8;
    for (int c = tid; c < kTokensPerCta * kChunks; c += Shape::kThreads) {
      const int n = c / kChunks, ch = c % kChunks, m = m0 + n;
      if (m < p.M)
        *reinterpret_cast<uint4*>(p.y + (size_t)m * p.N + row0 + ch * 8) =
            *reinterpret_cast<const uint4*>(out_s + n * Shape::kOutPitch + ch * 8);
    }
  } else {
    for (int c = tid; c < kTokensPerCta * BM; c += Shape::kThreads) {
      const int n = c / BM, r = c % BM, m = m0 + n;
      if (m < p.M) p.y[(size_t)m * p.N + rows[r]] = out_s[n * Shape::kOutPitch + r];
    }
  }
}

}  // namespace sparsetrt
