// Timing experiments on the Hopper kernel (tools/ablate_sm90.py): the fp16 kernels with one side left out.
//   abl0 = the shipped kernel, abl1 = no activation gather, abl2 = no wgmma, abl3 = no compressed-value loads,
//   abl4 = no epilogue global stores, abl5 = no epilogue;
//   tma1[n]_bm128 = A and E by TMA (n: no wgmma), taking the values map (global memory) after the usual parameters;
//   tmaauto = the shipped choice of load mode;
//   cpa = the cp.async loads forced.  Not shipped.
// Build with -DSPARSETRT_SM90_PRODUCERS_BM64=1 for the one-producer variant of the BM = 64 kernels.
#include "../../cuda/tile_sparse_gemm_sm90.cuh"

using namespace sparsetrt;

// The mma.sp kernels' parameters and the Problem they make, shared by every variant below.
#define ABLATION_PARAMS                                                                                 \
  const __half *xt, const __half *values, const uint32_t *meta, const int *k_index, const int *k_offsets, \
      const int *row_index, const __half *bias, __half *y, int M, int ldx, int K, int N, int num_tiles,   \
      int tile_rows, int has_bias
#define ABLATION_PROBLEM                                                                                \
  const Problem<__half> p{xt, values, meta, k_index, k_offsets, row_index, bias, y,                      \
                          M,  ldx,    K,    N,       num_tiles, tile_rows, has_bias}
#define ABLATION_KERNEL(NAME, BM, EXTRA)                                                                 \
  extern "C" __global__ void __launch_bounds__(sm90::Sm90Shape<BM>::kThreads, 1) NAME(ABLATION_PARAMS EXTRA)

#define ABLATION(NAME, BM, ABL)                                                                          \
  ABLATION_KERNEL(NAME, BM, ) {                                                                          \
    ABLATION_PROBLEM;                                                                                    \
    sm90::tile_sparse_gemm_sm90<__half, BM, kNone, ABL>(p);                                              \
  }

// TMA experiments: the values map (in global memory) after the usual parameters
#define TMA_ABLATION(NAME, LOAD, ABL)                                                                    \
  ABLATION_KERNEL(NAME, 128, ARGS_TMA) {                                                                 \
    ABLATION_PROBLEM;                                                                                    \
    sm90::TmaMaps tma;                                                                                   \
    tma.a = tmap_a;                                                                                      \
    tma.kept = k_offsets[1] - k_offsets[0];   /* HiNM: every tile keeps as many as the first */          \
    sm90::tile_sparse_gemm_sm90<__half, 128, kNone, ABL, false, LOAD>(p, tma);                           \
  }
#define ARGS_TMA , const void *tmap_a

// The shipped kernel's cp.async loop on its own (without the choice of load mode next to it)
#define FORCED_LOAD(NAME, BM, LOAD)                                                                      \
  ABLATION_KERNEL(NAME, BM, ) {                                                                          \
    ABLATION_PROBLEM;                                                                                    \
    sm90::tile_sparse_gemm_sm90<__half, BM, kNone, 0, false, LOAD>(p);                                   \
  }

// The epilogue's Y tile by bulk copies (kBulkY), with cp.async or the shipped choice of loads
#define BULK_Y(NAME, LOAD)                                                                               \
  ABLATION_KERNEL(NAME, 128, ) {                                                                         \
    ABLATION_PROBLEM;                                                                                    \
    sm90::tile_sparse_gemm_sm90<__half, 128, kNone, 0, false, LOAD, true>(p);                            \
  }
#define TMA_BULK_Y(NAME)                                                                                 \
  ABLATION_KERNEL(NAME, 128, ARGS_TMA) {                                                                 \
    ABLATION_PROBLEM;                                                                                    \
    sm90::TmaMaps tma;                                                                                   \
    tma.a = tmap_a;                                                                                      \
    tma.kept = k_offsets[1] - k_offsets[0];                                                              \
    sm90::tile_sparse_gemm_sm90<__half, 128, kNone, 0, false, sm90::kLoadAuto, true>(p, tma);            \
  }

#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || !defined(__CUDA_ARCH__)
ABLATION(abl0_bm128, 128, 0)
ABLATION(abl1_bm128, 128, 1)
ABLATION(abl2_bm128, 128, 2)
ABLATION(abl3_bm128, 128, 3)
ABLATION(abl4_bm128, 128, 4)
ABLATION(abl5_bm128, 128, 5)
TMA_ABLATION(tma1_bm128, 1, 0)
TMA_ABLATION(tma1n_bm128, 1, 2)
TMA_ABLATION(tmaauto_bm128, sm90::kLoadAuto, 0)
FORCED_LOAD(cpa_bm128, 128, sm90::kLoadCpAsync)
BULK_Y(cpabulky_bm128, sm90::kLoadCpAsync)
TMA_BULK_Y(tmabulky_bm128)
ABLATION(abl0_bm64, 64, 0)
ABLATION(abl1_bm64, 64, 1)
ABLATION(abl2_bm64, 64, 2)
#endif
