// extern "C" entry points of the tile-sparse GEMM: one per (dtype, CTA rows BM, activation).
// Parameter order = the ONNX node's inputs (xt, values, meta, k_index, k_offsets, row_index, bias),
// then the output, then scalars — what TensorRT's AOT plugin launch passes.
#include "tile_sparse_gemm.cuh"

using namespace sparsetrt;

#define SPARSETRT_GEMM(NAME, T, BM, ACT)                                                                  \
  extern "C" __global__ void __launch_bounds__(CtaShape<BM>::kThreads, 2)                                    \
      NAME(const T* xt, const T* values, const uint32_t* meta, const int* k_index, const int* k_offsets, \
           const int* row_index, const T* bias, T* y, int M, int ldx, int K, int N, int num_tiles,        \
           int tile_rows, int has_bias) {                                                                 \
    const Problem<T> p{xt, values, meta, k_index, k_offsets, row_index, bias, y,                          \
                       M,  ldx,    K,    N,       num_tiles, tile_rows, has_bias};                        \
    tile_sparse_gemm<T, BM, ACT>(p);                                                                      \
  }

// TensorRT AOT order: inputs, int scalars, then the output; <= 48 KB shared memory (see CtaShape).
#define SPARSETRT_GEMM_AOT(NAME, T, BM, ACT)                                                              \
  extern "C" __global__ void __launch_bounds__(CtaShape<BM>::kThreads, 2)                                 \
      NAME##_aot(const T* xt, const T* values, const uint32_t* meta, const int* k_index,                  \
                 const int* k_offsets, const int* row_index, const T* bias, int M, int ldx, int K, int N, \
                 int num_tiles, int tile_rows, int has_bias, T* y) {                                      \
    const Problem<T> p{xt, values, meta, k_index, k_offsets, row_index, bias, y,                          \
                       M,  ldx,    K,    N,       num_tiles, tile_rows, has_bias};                        \
    tile_sparse_gemm<T, BM, ACT, true>(p);                                                                \
  }

#define SPARSETRT_GEMM_BOTH(NAME, T, BM, ACT) SPARSETRT_GEMM(NAME, T, BM, ACT) SPARSETRT_GEMM_AOT(NAME, T, BM, ACT)

#define SPARSETRT_GEMM_ACTS(DT, T, BM)                      \
  SPARSETRT_GEMM_BOTH(tsgemm_##DT##_bm##BM##_none, T, BM, kNone) \
  SPARSETRT_GEMM_BOTH(tsgemm_##DT##_bm##BM##_relu, T, BM, kRelu) \
  SPARSETRT_GEMM_BOTH(tsgemm_##DT##_bm##BM##_gelu, T, BM, kGelu)

SPARSETRT_GEMM_ACTS(f16, __half, 32)
SPARSETRT_GEMM_ACTS(f16, __half, 64)
SPARSETRT_GEMM_ACTS(f16, __half, 128)
SPARSETRT_GEMM_ACTS(bf16, __nv_bfloat16, 32)
SPARSETRT_GEMM_ACTS(bf16, __nv_bfloat16, 64)
SPARSETRT_GEMM_ACTS(bf16, __nv_bfloat16, 128)

// X[M, K] -> XT[K, ldx] for 16-bit types (fp16/bf16 move as bits): 64x64 tiles through shared memory,
// 16-byte loads when X rows allow them, 16-byte stores when XT rows do.  Columns M..ldx-1 are not written.
extern "C" __global__ void __launch_bounds__(256) transpose16(const uint16_t* __restrict__ x, uint16_t* __restrict__ xt,
                                                           int M, int K, int ldx) {
  __shared__ uint32_t tile[64][33];   // [m][k/2]: 64 k as 32 words, +1 word so column reads spread over banks
  const int m0 = blockIdx.x * 64, k0 = blockIdx.y * 64, tid = threadIdx.x;
  const bool vec_in = (K % 8 == 0) && ((reinterpret_cast<uintptr_t>(x) & 15) == 0);
  const bool vec_out = (ldx % 8 == 0) && ((reinterpret_cast<uintptr_t>(xt) & 15) == 0);
  for (int c = tid; c < 512; c += 256) {   // 64 rows (m) x 8 chunks of 8 k
    const int r = c >> 3, ch = c & 7, m = m0 + r, k = k0 + ch * 8;
    uint32_t w[4] = {0u, 0u, 0u, 0u};
    if (m < M) {
      if (vec_in && k + 8 <= K) {
        const uint4 v = *reinterpret_cast<const uint4*>(x + (size_t)m * K + k);
        w[0] = v.x; w[1] = v.y; w[2] = v.z; w[3] = v.w;
      } else {
        for (int e = 0; e < 8; ++e)
          if (k + e < K) w[e >> 1] |= (uint32_t)x[(size_t)m * K + k + e] << (16 * (e & 1));
      }
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) tile[r][ch * 4 + j] = w[j];
  }
  __syncthreads();
  for (int c = tid; c < 512; c += 256) {   // 64 rows (k) x 8 chunks of 8 m
    const int kr = c >> 3, ch = c & 7, k = k0 + kr, m = m0 + ch * 8;
    if (k >= K || m >= M) continue;
    uint16_t v[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = (uint16_t)(tile[ch * 8 + e][kr >> 1] >> (16 * (kr & 1)));
    if (vec_out && m + 8 <= ldx) {
      *reinterpret_cast<uint4*>(xt + (size_t)k * ldx + m) = *reinterpret_cast<const uint4*>(v);
    } else {
      for (int e = 0; e < 8; ++e)
        if (m + e < M) xt[(size_t)k * ldx + m + e] = v[e];
    }
  }
}

// LayerNorm over the features of a feature-major tensor: Y[:, m] = LN(X[:, m]) for X, Y of shape [D, M]
// (row d of X at x + d * ldx).  Lets a model keep its residual stream in the layout our GEMM gathers from
// (PyTorch's layer_norm normalises the last dimension only).  A block takes 32 tokens (lane = token, warps
// stride over the features), caches its [D][32] slice in shared memory (D * 64 bytes, one read of X), then
// mean and variance in two passes over the cached slice (fp32), then the affine output.
template <typename T>
__device__ __forceinline__ void layernorm_fm(const T* __restrict__ x, const T* __restrict__ gamma,
                                             const T* __restrict__ beta, T* __restrict__ y, int D, int M, int ldx,
                                             int ldy, float eps) {
  extern __shared__ __align__(16) uint8_t ln_smem[];
  T* tile = reinterpret_cast<T*>(ln_smem);   // [D][32]
  __shared__ float part[8][32];
  __shared__ float stat[2][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, m = blockIdx.x * 32 + lane;
  const bool on = m < M;
  float acc = 0.f;
  for (int d = warp; d < D; d += 8) {
    const T v = on ? x[(size_t)d * ldx + m] : from_float<T>(0.f);
    tile[d * 32 + lane] = v;
    acc += to_float(v);
  }
#pragma unroll
  for (int pass = 0; pass < 2; ++pass) {   // pass 0: mean; pass 1: 1 / std from the centred values
    part[warp][lane] = acc;
    __syncthreads();
    if (warp == 0) {
      float total = 0.f;
#pragma unroll
      for (int w = 0; w < 8; ++w) total += part[w][lane];
      stat[pass][lane] = pass == 0 ? total / D : rsqrtf(total / D + eps);
    }
    __syncthreads();
    if (pass == 0) {
      const float mean = stat[0][lane];
      acc = 0.f;
      for (int d = warp; d < D; d += 8) {
        const float e = to_float(tile[d * 32 + lane]) - mean;
        acc += e * e;
      }
    }
  }
  if (!on) return;
  const float mean = stat[0][lane], rstd = stat[1][lane];
  for (int d = warp; d < D; d += 8)
    y[(size_t)d * ldy + m] =
        from_float<T>((to_float(tile[d * 32 + lane]) - mean) * rstd * to_float(gamma[d]) + to_float(beta[d]));
}

extern "C" __global__ void __launch_bounds__(256) layernorm_fm_f16(const __half* x, const __half* gamma,
                                                                  const __half* beta, __half* y, int D, int M,
                                                                  int ldx, int ldy, float eps) {
  layernorm_fm(x, gamma, beta, y, D, M, ldx, ldy, eps);
}
extern "C" __global__ void __launch_bounds__(256) layernorm_fm_bf16(const __nv_bfloat16* x, const __nv_bfloat16* gamma,
                                                                   const __nv_bfloat16* beta, __nv_bfloat16* y, int D,
                                                                   int M, int ldx, int ldy, float eps) {
  layernorm_fm(x, gamma, beta, y, D, M, ldx, ldy, eps);
}

// Residual add + LayerNorm of token-major rows, written in both layouts: Y[M, D] = LN(X + R) (the residual
// stream, token-major) and, when yt is given, YT[D, ldy] (feature-major: what the next sparse layer gathers), so
// a post-LN encoder needs no separate transpose after its LayerNorms.  R may be null (plain LayerNorm).  X + R is
// rounded to T first, as PyTorch's `ln(x + r)` on T tensors does; statistics in fp32, two passes over registers.
// A block takes kTok tokens, one warp per token at a time (16-byte accesses along D); the normalised rows also go
// to a shared tile of feature pairs, from which YT is written in runs of kTok tokens per feature row (the launch
// layer's default, 16 tokens, measured fastest of 8-64 at M = 16384, D = 1024).  Needs D % 8 == 0, D <= 256 * kVec, X, R, Y contiguous with 16-byte aligned rows:
// checked by the host (YT rows take 16-byte stores when ldy % 8 == 0, else 2-byte ones).
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T, int kVec, int kTok>
__device__ __forceinline__ void add_layernorm_dual(const T* __restrict__ x, const T* __restrict__ r,
                                                   const T* __restrict__ gamma, const T* __restrict__ beta,
                                                   T* __restrict__ y, T* __restrict__ yt, int M, int D, int ldy,
                                                   float eps) {
  extern __shared__ __align__(16) uint32_t ln_tile[];   // [kTok][pitch] words = feature pairs
  // pitch = 1 mod 4 words: the column reads below (token chunks 8 rows apart) spread over the banks
  const int pitch = D / 2 + 1;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, m0 = blockIdx.x * kTok;
  for (int tk = warp; tk < kTok; tk += blockDim.x / 32) {
    const int m = m0 + tk;
    if (m >= M) break;
    float v[kVec][8];
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      const int d = (i * 32 + lane) * 8;
      if (d < D) {
        const uint4 xa = *reinterpret_cast<const uint4*>(x + (size_t)m * D + d);
        const uint4 ra = r ? *reinterpret_cast<const uint4*>(r + (size_t)m * D + d) : make_uint4(0u, 0u, 0u, 0u);
        const T* xe = reinterpret_cast<const T*>(&xa);
        const T* re = reinterpret_cast<const T*>(&ra);
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          v[i][e] = to_float(from_float<T>(to_float(xe[e]) + to_float(re[e])));
          sum += v[i][e];
        }
      }
    }
    const float mean = warp_sum(sum) / D;
    float sq = 0.f;
#pragma unroll
    for (int i = 0; i < kVec; ++i)
      if ((i * 32 + lane) * 8 < D) {
#pragma unroll
        for (int e = 0; e < 8; ++e) sq += (v[i][e] - mean) * (v[i][e] - mean);
      }
    const float rstd = rsqrtf(warp_sum(sq) / D + eps);
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      const int d = (i * 32 + lane) * 8;
      if (d >= D) continue;
      const uint4 ga = *reinterpret_cast<const uint4*>(gamma + d), ba = *reinterpret_cast<const uint4*>(beta + d);
      const T* ge = reinterpret_cast<const T*>(&ga);
      const T* be = reinterpret_cast<const T*>(&ba);
      uint4 out;
      T* oe = reinterpret_cast<T*>(&out);
#pragma unroll
      for (int e = 0; e < 8; ++e) oe[e] = from_float<T>((v[i][e] - mean) * rstd * to_float(ge[e]) + to_float(be[e]));
      *reinterpret_cast<uint4*>(y + (size_t)m * D + d) = out;
      if (yt) {
        uint32_t* dst = ln_tile + tk * pitch + d / 2;
        dst[0] = out.x;
        dst[1] = out.y;
        dst[2] = out.z;
        dst[3] = out.w;
      }
    }
  }
  if (!yt) return;
  __syncthreads();
  // item = (feature pair p, chunk q of 8 tokens): words w[j] = features (2p, 2p + 1) of token 8q + j -> 16 bytes of
  // YT rows 2p and 2p + 1; a warp's items cover 32 / C pairs x all C = kTok / 8 chunks (contiguous runs per row)
  constexpr int kChunks = kTok / 8;
  for (int item = threadIdx.x; item < (D / 2) * kChunks; item += blockDim.x) {
    const int q = item % kChunks, pr = item / kChunks, mq = m0 + 8 * q;
    if (mq >= M) continue;
    uint32_t w[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) w[j] = ln_tile[(8 * q + j) * pitch + pr];   // rows past M: never stored
    T* d0 = yt + (size_t)(2 * pr) * ldy + mq;
    T* d1 = d0 + ldy;
    if (mq + 8 <= M && (ldy & 7) == 0) {
      uint4 lo, hi;
      lo.x = __byte_perm(w[0], w[1], 0x5410); hi.x = __byte_perm(w[0], w[1], 0x7632);
      lo.y = __byte_perm(w[2], w[3], 0x5410); hi.y = __byte_perm(w[2], w[3], 0x7632);
      lo.z = __byte_perm(w[4], w[5], 0x5410); hi.z = __byte_perm(w[4], w[5], 0x7632);
      lo.w = __byte_perm(w[6], w[7], 0x5410); hi.w = __byte_perm(w[6], w[7], 0x7632);
      *reinterpret_cast<uint4*>(d0) = lo;
      *reinterpret_cast<uint4*>(d1) = hi;
    } else {   // a tail chunk (or unaligned YT rows): token j is the low (row 2p) and high (row 2p + 1) half of w[j]
      uint16_t* e0 = reinterpret_cast<uint16_t*>(d0);
      uint16_t* e1 = reinterpret_cast<uint16_t*>(d1);
#pragma unroll
      for (int j = 0; j < 8; ++j)
        if (mq + j < M) {
          e0[j] = (uint16_t)(w[j] & 0xffffu);
          e1[j] = (uint16_t)(w[j] >> 16);
        }
    }
  }
}

#define SPARSETRT_ADD_LN(DT, T, VEC, TOK)                                                                        \
  extern "C" __global__ void __launch_bounds__(256) add_layernorm_##DT##_v##VEC##_t##TOK(                        \
      const T* x, const T* r, const T* gamma, const T* beta, T* y, T* yt, int M, int D, int ldy, float eps) {     \
    add_layernorm_dual<T, VEC, TOK>(x, r, gamma, beta, y, yt, M, D, ldy, eps);                                   \
  }
#define SPARSETRT_ADD_LN_TOKS(DT, T, VEC) \
  SPARSETRT_ADD_LN(DT, T, VEC, 8) SPARSETRT_ADD_LN(DT, T, VEC, 16) SPARSETRT_ADD_LN(DT, T, VEC, 32) SPARSETRT_ADD_LN(DT, T, VEC, 64)
#define SPARSETRT_ADD_LN_VECS(DT, T) \
  SPARSETRT_ADD_LN_TOKS(DT, T, 1) SPARSETRT_ADD_LN_TOKS(DT, T, 2) SPARSETRT_ADD_LN_TOKS(DT, T, 4) SPARSETRT_ADD_LN_TOKS(DT, T, 8)
SPARSETRT_ADD_LN_VECS(f16, __half)
SPARSETRT_ADD_LN_VECS(bf16, __nv_bfloat16)

// Layout probe (tests only): one mma.sp with per-lane fragments supplied by the host, so a test can
// confirm the A / B / metadata register layouts the format and the GEMM assume.
extern "C" __global__ void probe_mma_sp_f16(const uint32_t* a, const uint32_t* b, const uint32_t* e, float* d) {
  const int l = threadIdx.x;
  const uint32_t af[4] = {a[l * 4 + 0], a[l * 4 + 1], a[l * 4 + 2], a[l * 4 + 3]};
  const uint32_t bf[4] = {b[l * 4 + 0], b[l * 4 + 1], b[l * 4 + 2], b[l * 4 + 3]};
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  MmaSp<__half>::run(acc, af, bf, e[l]);
  for (int i = 0; i < 4; ++i) d[l * 4 + i] = acc[i];
}
