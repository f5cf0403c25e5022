#!/usr/bin/env bash
# The unfinished 2-CTA cluster experiment (docs/KERNEL_NOTES.md "v10") in one device call, hang-safe first:
#   build   (no GPU needed) apply tools/cuda/sm90_cluster_multicast.patch to a copy of the tree and build its
#           hang-debug and plain cubins into $OUT
#   probe   tools/cluster_probe.py on the hang-debug build (waits give up after ~0.2 s: a deadlock cannot hang the call)
#   ab      only if the probe is clean: the A/B against the shipped cubin at full size (HiNM V128, TVW G128)
#   tests   only if the A/B's outputs agree: the GPU suite on the patched copy with the plain build as its Hopper
#           cubin (this checkout is not modified)
# Usage (repo root):  bash tools/cluster_try.sh [build]      (on the device: source .device-kit/install.sh first)
#   `ab` stops after the A/B; CLUSTER_CUBINS=DIR takes cluster_debug.cubin and cluster.cubin from DIR instead of building them
set -uo pipefail
OUT="${OUT:-out/cluster}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
root="$(pwd)"
work="$(mktemp -d)"   # a patched copy of the sources: this checkout is never modified
trap 'rm -rf "$work"' EXIT
for part in cuda exporter trt_plugins tools tests examples pyproject.toml setup.py; do
  [ -e "$root/$part" ] && cp -r "$root/$part" "$work/"
done
rm -rf "$work/trt_plugins/kernels"   # built outputs: copied back below for the GPU steps
patch_file="$root/tools/cuda/sm90_cluster_multicast.patch"
if command -v git > /dev/null; then
  (cd "$work" && git apply "$patch_file") || exit 2
else
  (cd "$work" && patch -p1 < "$patch_file") || exit 2
fi
flags=(-std=c++17 -O3 --use_fast_math -gencode=arch=compute_90a,code=sm_90a -cubin "$work/cuda/kernels_sm90.cu"
       -DSPARSETRT_SM90_CLUSTER=2)
if [ -n "${CLUSTER_CUBINS:-}" ]; then   # built earlier (`bash tools/cluster_try.sh build` on a machine with nvcc)
  cp "$CLUSTER_CUBINS/cluster_debug.cubin" "$CLUSTER_CUBINS/cluster.cubin" "$OUT/" || exit 2
  echo "using the cubins built in $CLUSTER_CUBINS"
else
  nvcc "${flags[@]}" -DSPARSETRT_SM90_HANG_DEBUG=1 -o "$OUT/cluster_debug.cubin" || exit 2
  nvcc "${flags[@]}" -o "$OUT/cluster.cubin" || exit 2
  echo "built $OUT/cluster_debug.cubin and $OUT/cluster.cubin"
fi
[ "${1:-}" = build ] && exit 0

# the copy runs with this checkout's built kernels (ignored by git), its Hopper cubin replaced only for the tests
[ -f "$root/trt_plugins/kernels/sparsetrt_kernels_sm90a.cubin" ] || (cd "$root" && python3 cuda/build.py --arch 90) || exit 2
cp -r "$root/trt_plugins/kernels" "$work/trt_plugins/"
cd "$work" || exit 2
export PYTHONPATH="$work${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 SPARSETRT_TAIL_SPLIT=0 SPARSETRT_SM90_CLUSTER=2
shipped=trt_plugins/kernels/sparsetrt_kernels_sm90a.cubin
timeout 60 python3 tools/cluster_probe.py "$OUT/cluster_debug.cubin" || { echo "probe not clean: stop"; exit 1; }
timeout 240 python3 tools/ab_sm90.py "ship=$shipped" "cluster=$OUT/cluster.cubin" --patterns hinm128,tvw128 \
  --rounds 4 --out "$OUT/ab_cluster.json" | tail -n 20
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "A/B outputs differ: stop"; exit 1; }
[ "${1:-}" = ab ] && exit 0
cp "$OUT/cluster.cubin" "$shipped"
OUT="$OUT/gpu" timeout 420 bash tools/run_gpu_tests.sh
