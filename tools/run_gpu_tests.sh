#!/usr/bin/env bash
# GPU tests and compute-sanitizer checks.  Run from the repo root on a CUDA machine (the device):
#   bash tools/run_gpu_tests.sh [pytest args...]
# On the project's lent GPU machine, stage the kit first (../shared/device/stage.sh) and send
# .device-kit and trt_plugins/kernels along; logs go to $OUT (default out/gpu).
set -uo pipefail
OUT="${OUT:-out/gpu}"
mkdir -p "$OUT"
if [ -f .device-kit/install.sh ]; then source .device-kit/install.sh || exit 3; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
[ -f trt_plugins/kernels/sparsetrt_kernels.fatbin ] || python3 cuda/build.py --arch 90 || exit 2
status=0
python3 -m pytest -q -rs -m gpu tests/ "$@" 2>&1 | tee "$OUT/gpu_tests.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
for tool in memcheck racecheck synccheck; do
  compute-sanitizer --tool "$tool" --kernel-name kns=tsgemm --error-exitcode 9 \
    python3 tools/kernel_sweep.py > "$OUT/sanitizer_$tool.log" 2>&1
  rc=$?
  echo "compute-sanitizer $tool: exit $rc ($(grep -cE '^=========.*(Error|error|hazard)' "$OUT/sanitizer_$tool.log") error lines) — $(tail -n 2 "$OUT/sanitizer_$tool.log" | tr '\n' ' ')"
  [ "$rc" -eq 0 ] || status=1
done
exit "$status"
