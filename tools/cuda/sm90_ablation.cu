// Timing experiments on the Hopper kernel (tools/ablate_sm90.py): the fp16 kernels with one side left out.
//   abl0 = the shipped kernel, abl1 = no activation gather, abl2 = no wgmma.  Not shipped.
// Build with -DSPARSETRT_SM90_PRODUCERS_BM64=1 for the one-producer variant of the BM = 64 kernels.
#include "../../cuda/tile_sparse_gemm_sm90.cuh"

using namespace sparsetrt;

#define ABLATION(NAME, BM, ABL)                                                                          \
  extern "C" __global__ void __launch_bounds__(sm90::Sm90Shape<BM>::kThreads, 1)                                                   \
      NAME(const __half* xt, const __half* values, const uint32_t* meta, const int* k_index,             \
           const int* k_offsets, const int* row_index, const __half* bias, __half* y, int M, int ldx,    \
           int K, int N, int num_tiles, int tile_rows, int has_bias) {                                   \
    const Problem<__half> p{xt, values, meta, k_index, k_offsets, row_index, bias, y,                    \
                            M,  ldx,    K,    N,       num_tiles, tile_rows, has_bias};                  \
    sm90::tile_sparse_gemm_sm90<__half, BM, kNone, ABL>(p);                                              \
  }

#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || !defined(__CUDA_ARCH__)
ABLATION(abl0_bm128, 128, 0)
ABLATION(abl1_bm128, 128, 1)
ABLATION(abl2_bm128, 128, 2)
ABLATION(abl0_bm64, 64, 0)
ABLATION(abl1_bm64, 64, 1)
ABLATION(abl2_bm64, 64, 2)
#endif
