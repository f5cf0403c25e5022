#!/usr/bin/env bash
# The unfinished 2-CTA cluster experiment (docs/KERNEL_NOTES.md "v10") in one device call, hang-safe first:
#   build   (no GPU needed) apply tools/cuda/sm90_cluster_multicast.patch to a copy of the tree and build its
#           hang-debug and plain cubins into $OUT
#   probe   tools/cluster_probe.py on each variant's hang-debug build (waits give up after ~0.2 s: a deadlock cannot
#           hang the call): the multicast one, local values (no multicast), per-thread releases and solo (nothing
#           crosses CTAs)
#   ab      the A/B of the plain multicast, local-values and solo builds against the shipped cubin (HiNM V128)
#   tests   only if the multicast build's probe was clean: the GPU suite on the patched copy with the plain build as its Hopper
#           cubin (this checkout is not modified)
# Usage (repo root):  bash tools/cluster_try.sh [build]      (on the device: source .device-kit/install.sh first)
#   `ab` stops after the A/B; CLUSTER_CUBINS=DIR takes the variants' cubins (V.cubin, V_debug.cubin) from DIR instead of
#   building them
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
# variants: the multicast build, and those that split the question (docs/KERNEL_NOTES.md v10): local values (the
# cluster's pairing and barriers, no multicast), per-thread releases, and solo (the cluster launch and pairing only:
# nothing crosses CTAs); each as a hang-debug and a plain cubin
declare -A variant_flags=([cluster]="" [local]="-DSPARSETRT_SM90_CLUSTER_LOCAL_A=1" [thread]="-DSPARSETRT_SM90_CLUSTER_THREAD_ARRIVALS=1"
                          [solo]="-DSPARSETRT_SM90_CLUSTER_SOLO=1")
variants=(cluster local thread solo)
if [ -n "${CLUSTER_CUBINS:-}" ]; then   # built earlier (`bash tools/cluster_try.sh build` on a machine with nvcc)
  for v in "${variants[@]}"; do cp "$CLUSTER_CUBINS/${v}_debug.cubin" "$CLUSTER_CUBINS/$v.cubin" "$OUT/" || exit 2; done
  echo "using the cubins built in $CLUSTER_CUBINS"
else
  for v in "${variants[@]}"; do
    # shellcheck disable=SC2086
    nvcc "${flags[@]}" ${variant_flags[$v]} -DSPARSETRT_SM90_HANG_DEBUG=1 -o "$OUT/${v}_debug.cubin" || exit 2
    # shellcheck disable=SC2086
    nvcc "${flags[@]}" ${variant_flags[$v]} -o "$OUT/$v.cubin" || exit 2
  done
  echo "built ${variants[*]} (plain and _debug) in $OUT"
fi
[ "${1:-}" = build ] && exit 0

# the copy runs with this checkout's built kernels (ignored by git), its Hopper cubin replaced only for the tests
[ -f "$root/trt_plugins/kernels/sparsetrt_kernels_sm90a.cubin" ] || (cd "$root" && python3 cuda/build.py --arch 90) || exit 2
cp -r "$root/trt_plugins/kernels" "$work/trt_plugins/"
cd "$work" || exit 2
export PYTHONPATH="$work${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 SPARSETRT_TAIL_SPLIT=0 SPARSETRT_SM90_CLUSTER=2
shipped=trt_plugins/kernels/sparsetrt_kernels_sm90a.cubin
clean=()
for v in "${variants[@]}"; do   # every variant's probe, so one call tells which of them races
  echo "== probe: $v"
  timeout 60 python3 tools/cluster_probe.py "$OUT/${v}_debug.cubin" && clean+=("$v")
done
echo "clean probes: ${clean[*]:-none}"
# the times stand even where outputs differ (ab_sm90 exits 1 then)
timeout 240 python3 tools/ab_sm90.py "ship=$shipped" "cluster=$OUT/cluster.cubin" "local=$OUT/local.cubin" "solo=$OUT/solo.cubin" \
  --patterns hinm128 --rounds 3 --out "$OUT/ab_cluster.json" | tail -n 14
[ "${#clean[@]}" -gt 0 ] && [ "${clean[0]}" = cluster ] || { echo "the multicast build is not clean: stop"; exit 1; }
[ "${1:-}" = ab ] && exit 0
cp "$OUT/cluster.cubin" "$shipped"
OUT="$OUT/gpu" timeout 420 bash tools/run_gpu_tests.sh
