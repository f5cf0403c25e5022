// extern "C" entry points of the Hopper (sm_90a) tile-sparse GEMM: one per (dtype, CTA rows BM, activation).
// The mma.sp kernels' parameters (kernels.cu), framed by two tensor maps (first, by value: a CUtensorMap must be
// 64-byte aligned), the compressed values' and Y's, and at the end the kept count per tile the values map was built
// for (0 = no map, every item loads its values with cp.async; -1 = the map is a template the kernel turns into one map
// per tile, sm90::kTileMapsKept) and whether the Y map is valid (0 = the epilogue stores Y with st.global), then the
// tail split's workspace, nonce, split items and pieces per item (sm90_schedule.cuh; null workspace: no split).
// trt_plugins/launch.py builds the maps.
// Built for sm_90a only (wgmma and setmaxnreg); trt_plugins/launch.py picks these on compute capability 9.0.
#include "tile_sparse_gemm_sm90.cuh"

using namespace sparsetrt;

#define SPARSETRT_GEMM90(NAME, T, BM, ACT, YFM, SPLIT)                                                       \
  extern "C" __global__ void __launch_bounds__(sm90::Sm90Shape<BM>::kThreads, 1)                          \
      NAME(const __grid_constant__ sm90::TensorMap values_map, const __grid_constant__ sm90::TensorMap y_map, \
           const T* xt, const T* values, const uint32_t* meta, const int* k_index, const int* k_offsets,      \
           const int* row_index, const T* bias, T* y, int M, int ldx, int K, int N, int num_tiles,            \
           int tile_rows, int has_bias, int values_map_kept, int y_map_valid, void* split_ws,                \
           unsigned long long split_nonce, int split_tail, int split_parts) {                                \
    const Problem<T> p{xt, values, meta, k_index, k_offsets, row_index, bias, y,                          \
                       M,  ldx,    K,    N,       num_tiles, tile_rows, has_bias};                        \
    sm90::TmaMaps tma;                                                                                    \
    tma.a = values_map_kept != 0 ? &values_map : nullptr;                                                 \
    tma.kept = values_map_kept;                                                                           \
    tma.y = y_map_valid && !YFM ? &y_map : nullptr;                                                       \
    const sm90::TailSplit split{split_ws, split_nonce, split_tail, split_parts};                          \
    sm90::tile_sparse_gemm_sm90<T, BM, ACT, 0, YFM, sm90::kLoadAuto, false, SPLIT>(p, tma, split);        \
  }

// *_yfm: the same GEMM writing Y feature-major, YT[N, M] (the layout the next sparse layer gathers from).
// *_split: the same GEMMs running the last partial round's items in pieces (the tail split; the launch layer picks
// these only for launches it splits, so the others keep the code they had before the split existed).
#define SPARSETRT_GEMM90_YFM(DT, T, BM, ACT, ACT_ENUM, SUFFIX, SPLIT)                              \
  SPARSETRT_GEMM90(tsgemm90_##DT##_bm##BM##_##ACT##SUFFIX, T, BM, ACT_ENUM, false, SPLIT)         \
  SPARSETRT_GEMM90(tsgemm90_##DT##_bm##BM##_##ACT##_yfm##SUFFIX, T, BM, ACT_ENUM, true, SPLIT)
#define SPARSETRT_GEMM90_ACTS(DT, T, BM)                      \
  SPARSETRT_GEMM90_YFM(DT, T, BM, none, kNone, , false)              \
  SPARSETRT_GEMM90_YFM(DT, T, BM, relu, kRelu, , false)              \
  SPARSETRT_GEMM90_YFM(DT, T, BM, gelu, kGelu, , false)              \
  SPARSETRT_GEMM90_YFM(DT, T, BM, none, kNone, _split, true)         \
  SPARSETRT_GEMM90_YFM(DT, T, BM, relu, kRelu, _split, true)         \
  SPARSETRT_GEMM90_YFM(DT, T, BM, gelu, kGelu, _split, true)

#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || !defined(__CUDA_ARCH__)
SPARSETRT_GEMM90_ACTS(f16, __half, 64)
SPARSETRT_GEMM90_ACTS(f16, __half, 128)
SPARSETRT_GEMM90_ACTS(bf16, __nv_bfloat16, 64)
SPARSETRT_GEMM90_ACTS(bf16, __nv_bfloat16, 128)
#endif
