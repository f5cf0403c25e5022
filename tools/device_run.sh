#!/usr/bin/env bash
# Everything the GPU machine does in one call: environment, SASS check, GPU tests + sanitizers,
# kernel and end-to-end benchmarks.  Short table last.  Usage on the device:  bash tools/device_run.sh [bench|tests|all|small]
# small: only the small-batch kernel benchmark (docs/small_m: 7 shapes at M = 64, 256, 1024).
set -uo pipefail
OUT="${OUT:-out/device}"
mkdir -p "$OUT"
what="${1:-all}"
source .device-kit/install.sh || exit 3
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
[ -f trt_plugins/kernels/sparsetrt_kernels.fatbin ] || python3 cuda/build.py --arch 90
cuobjdump --dump-sass --function tsgemm_f16_bm64_none trt_plugins/kernels/sparsetrt_kernels.fatbin > "$OUT/sass_f16_bm64.txt" 2>&1
echo "SASS tsgemm_f16_bm64_none (sm_90): $(grep -c 'HMMA' "$OUT/sass_f16_bm64.txt") HMMA ($(grep -c 'HMMA.*SP' "$OUT/sass_f16_bm64.txt") sparse), $(grep -c LDSM "$OUT/sass_f16_bm64.txt") LDSM, $(grep -c LDGSTS "$OUT/sass_f16_bm64.txt") LDGSTS, $(grep -cE 'LDL|STL' "$OUT/sass_f16_bm64.txt") local-memory ops"
cuobjdump --dump-sass --function tsgemm90_f16_bm128_none trt_plugins/kernels/sparsetrt_kernels_sm90a.cubin > "$OUT/sass90_f16_bm128.txt" 2>&1
echo "SASS tsgemm90_f16_bm128_none (sm_90a): $(grep -c 'HGMMA.SP' "$OUT/sass90_f16_bm128.txt") HGMMA.SP, $(grep -c LDGSTS "$OUT/sass90_f16_bm128.txt") LDGSTS, $(grep -c STSM "$OUT/sass90_f16_bm128.txt") STSM, $(grep -cE 'LDL|STL' "$OUT/sass90_f16_bm128.txt") local-memory ops"
python3 tools/wgmma_probe.py | tail -n 1
status=0
if [ "$what" = small ]; then
  python3 tools/bench_kernels.py --shapes 0,1,2,3,4,5,6 --m 64,256,1024 --out "$OUT/small_m" 2>&1 | tail -n 8
  exit 0
fi
if [ "$what" != bench ]; then
  OUT="$OUT" bash tools/run_gpu_tests.sh || status=1
  tail -n 3 "$OUT/gpu_tests.log"
fi
if [ "$what" != tests ]; then
  python3 tools/bench_kernels.py --out "$OUT" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log" | tail -n 8
  python3 tools/bench_e2e.py --out "$OUT" 2>&1 | tee "$OUT/bench_e2e.log" | tail -n 3
  python3 tools/bench_report.py --dir "$OUT"
fi
exit "$status"
