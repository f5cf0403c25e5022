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
