// extern "C" entry points of the tile-sparse GEMM: one per (dtype, CTA rows BM, activation).
// Parameter order = the ONNX node's inputs (xt, values, meta, k_index, k_offsets, row_index, bias),
// then the output, then scalars — what TensorRT's AOT plugin launch passes.
#include "tile_sparse_gemm.cuh"

using namespace sparsetrt;

#define SPARSETRT_GEMM(NAME, T, BM, ACT)                                                                  \
  extern "C" __global__ void __launch_bounds__(CtaShape<BM>::kThreads)                                    \
      NAME(const T* xt, const T* values, const uint32_t* meta, const int* k_index, const int* k_offsets, \
           const int* row_index, const T* bias, T* y, int M, int ldx, int K, int N, int num_tiles,        \
           int tile_rows, int has_bias) {                                                                 \
    const Problem<T> p{xt, values, meta, k_index, k_offsets, row_index, bias, y,                          \
                       M,  ldx,    K,    N,       num_tiles, tile_rows, has_bias};                        \
    tile_sparse_gemm<T, BM, ACT>(p);                                                                      \
  }

#define SPARSETRT_GEMM_ACTS(DT, T, BM)                 \
  SPARSETRT_GEMM(tsgemm_##DT##_bm##BM##_none, T, BM, kNone) \
  SPARSETRT_GEMM(tsgemm_##DT##_bm##BM##_relu, T, BM, kRelu) \
  SPARSETRT_GEMM(tsgemm_##DT##_bm##BM##_gelu, T, BM, kGelu)

SPARSETRT_GEMM_ACTS(f16, __half, 32)
SPARSETRT_GEMM_ACTS(f16, __half, 64)
SPARSETRT_GEMM_ACTS(f16, __half, 128)
SPARSETRT_GEMM_ACTS(bf16, __nv_bfloat16, 32)
SPARSETRT_GEMM_ACTS(bf16, __nv_bfloat16, 64)
SPARSETRT_GEMM_ACTS(bf16, __nv_bfloat16, 128)

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
