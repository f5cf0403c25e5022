#!/usr/bin/env python3
"""Compile the CUDA kernels with nvcc into trt_plugins/kernels/ (no GPU needed).

Outputs (ignored by git, shipped in the wheel, built by CI on every run):
  sparsetrt_kernels.fatbin   SASS for sm_80, sm_86, sm_89, sm_90 + compute_80 PTX (JIT for newer GPUs)
  sparsetrt_kernels_sm90.ptx PTX for sm_90, embedded by the TensorRT AOT plugin
  sparsetrt_kernels_sm90a.cubin  the Hopper wgmma.sp kernels (kernels_sm90.cu; sm_90a only, when 90 is built)
  *.cu, *.cuh                sources, for the compile-at-first-use fallback

Usage: python cuda/build.py [--arch 80,86,89,90] [--out DIR] [--check]   (--check: also print ptxas usage)
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = ["kernels.cu", "kernels_sm90.cu"]
HEADERS = ["tile_sparse_gemm.cuh", "tile_sparse_gemm_sm90.cuh", "sm90_schedule.cuh", "wgmma_sp.cuh"]
SM90A_CUBIN = "sparsetrt_kernels_sm90a.cubin"
SM90A_GENCODE = "-gencode=arch=compute_90a,code=sm_90a"   # wgmma / setmaxnreg need the arch-specific target
DEFAULT_ARCHS = ("80", "86", "89", "90")
NVCC_FLAGS = ["-std=c++17", "-O3", "--use_fast_math", "-lineinfo"]


def nvcc() -> str:
    path = shutil.which("nvcc")
    if path is None:
        raise SystemExit("cuda/build.py: nvcc not found on PATH (install the CUDA toolkit, >= 12.5)")
    return path


def run(cmd: list[str]) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"cuda/build.py: command failed ({result.returncode}):\n  {' '.join(cmd)}\n{result.stderr}")
    return result.stderr


def build(out: Path, archs: tuple[str, ...], check: bool = False) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    src = HERE / SOURCES[0]
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs] + ["-gencode=arch=compute_80,code=compute_80"]
    fatbin = out / "sparsetrt_kernels.fatbin"
    log = run([nvcc(), *NVCC_FLAGS, "--threads", "0", *gencode, "-fatbin", str(src), "-o", str(fatbin)]
              + (["-Xptxas", "-v"] if check else []))
    ptx = out / "sparsetrt_kernels_sm90.ptx"
    run([nvcc(), *NVCC_FLAGS, "-arch=compute_90", "-ptx", str(src), "-o", str(ptx)])
    outputs = [fatbin, ptx]
    entries90: list[str] = []
    if "90" in archs:
        cubin = out / SM90A_CUBIN
        log += run([nvcc(), *NVCC_FLAGS, SM90A_GENCODE, "-cubin", str(HERE / SOURCES[1]), "-o", str(cubin)]
                   + (["-Xptxas", "-v"] if check else []))
        entries90 = sorted(set(re.findall(rb"tsgemm90_\w+?_(?:none|relu|gelu)(?:_yfm)?(?:_split)?(?![\w])", cubin.read_bytes())))
        outputs.append(cubin)
    for name in SOURCES + HEADERS:
        shutil.copyfile(HERE / name, out / name)
    entries = sorted(set(re.findall(r"^\.visible \.entry (\w+)\(", ptx.read_text(), flags=re.M)))
    version = subprocess.run([nvcc(), "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
    manifest = out / "manifest.json"
    manifest.write_text(json.dumps({"archs": [f"sm_{a}" for a in archs], "ptx": "compute_80 (in fatbin), compute_90",
                                    "entries": entries, "sm90a_entries": [e.decode() for e in entries90],
                                    "nvcc": version}, indent=1))
    if check:
        print(log)
    return [*outputs, manifest]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default=",".join(DEFAULT_ARCHS), help="comma-separated SM versions")
    parser.add_argument("--out", default=str(HERE.parent / "trt_plugins" / "kernels"))
    parser.add_argument("--check", action="store_true", help="print ptxas register/shared-memory usage")
    args = parser.parse_args(argv)
    outputs = build(Path(args.out), tuple(a.strip() for a in args.arch.split(",") if a.strip()), args.check)
    for path in outputs:
        print(f"built {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
