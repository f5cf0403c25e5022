"""The kernels compile for every target (CI has nvcc but no GPU): checks what cuda/build.py produced."""

import json
import shutil

import pytest

from trt_plugins import launch

needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH: kernels cannot be built here")


@needs_nvcc
def test_build_outputs_cover_every_kernel_and_target():
    manifest_path = launch.KERNEL_DIR / "manifest.json"
    assert manifest_path.is_file(), "run `python cuda/build.py` (the package install does it when nvcc exists)"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["archs"] == ["sm_80", "sm_86", "sm_89", "sm_90"]
    expected = {launch.kernel_name(d, bm, a) + suffix for d in launch.DTYPES for bm in launch.CTA_ROWS
                for a in launch.ACTIVATIONS for suffix in ("", "_aot")}
    assert expected <= set(manifest["entries"]), expected - set(manifest["entries"])
    assert (launch.KERNEL_DIR / launch.FATBIN).stat().st_size > 1_000_000
    ptx = launch.ptx_path().read_text()
    assert "mma.sp::ordered_metadata.sync.aligned.m16n8k32" in ptx and "cp.async.cg.shared.global" in ptx


@needs_nvcc
def test_sm90a_cubin_has_every_wgmma_kernel():
    manifest = json.loads((launch.KERNEL_DIR / "manifest.json").read_text())
    expected = {launch.sm90_kernel_name(d, bm, a, yfm) + split for d in launch.DTYPES for bm in (64, 128)
                for a in launch.ACTIVATIONS for yfm in (False, True) for split in ("", "_split")}
    assert set(manifest["sm90a_entries"]) == expected
    cubin = (launch.KERNEL_DIR / launch.SM90A_CUBIN).read_bytes()
    assert all(name.encode() in cubin for name in expected)


def test_generated_wgmma_wrappers_are_current():
    import importlib.util

    path = launch.Path(__file__).resolve().parents[1] / "cuda" / "gen_wgmma_sp.py"
    spec = importlib.util.spec_from_file_location("gen_wgmma_sp", path)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.OUT.read_text() == gen.render(), "run `python cuda/gen_wgmma_sp.py`"


@needs_nvcc
def test_sm90_shape_constants_match_the_launch_layer(tmp_path):
    """Compile a host program against the kernel header (no GPU needed to run it) and compare the shared
    memory sizes the kernel assumes with the ones the launch layer asks for."""
    import subprocess

    cuda_dir = launch.Path(__file__).resolve().parents[1] / "cuda"
    src = tmp_path / "shape.cu"
    src.write_text('#include "tile_sparse_gemm_sm90.cuh"\n#include <cstdio>\nusing namespace sparsetrt::sm90;\n'
                   'int main() { printf("%d %d %d %d %d %d %d\\n", Sm90Shape<64>::kSmemBytes, Sm90Shape<128>::kSmemBytes, '
                   'Sm90Shape<64>::kThreads, Sm90Shape<128>::kThreads, Sm90Shape<128>::kTokens, '
                   '16 * PartialsLayout<Sm90Shape<64>::kAccRegs>::kSlotFloat4s, '
                   '16 * PartialsLayout<Sm90Shape<128>::kAccRegs>::kSlotFloat4s); }\n')
    exe = tmp_path / "shape"
    subprocess.run([shutil.which("nvcc"), "-std=c++17", f"-I{cuda_dir}", str(src), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    assert list(map(int, out)) == [launch.sm90_shared_bytes(64), launch.sm90_shared_bytes(128),
                                   launch.sm90_threads(64), launch.sm90_threads(128), launch.SM90_TOKENS,
                                   launch.tail_split.slot_bytes(64), launch.tail_split.slot_bytes(128)]


@needs_nvcc
def test_cubin_text_diff_names_the_kernel_whose_machine_code_changed(tmp_path):
    """tools/cubin_text_diff.py (machine-code identity of a refactor, no GPU): the shipped cubin matches itself, and a
    copy with one byte of one kernel's code flipped differs in exactly that kernel's code."""
    from tools import cubin_text_diff

    cubin = launch.KERNEL_DIR / launch.SM90A_CUBIN
    before = cubin_text_diff.kernels(cubin)
    name = launch.sm90_kernel_name("float16", 128, "none")
    assert set(before) == set(json.loads((launch.KERNEL_DIR / "manifest.json").read_text())["sm90a_entries"])
    assert all(len(s[".nv.info."]) > 0 for s in before.values())   # every kernel's launch attributes were found
    data = bytearray(cubin.read_bytes())
    code = before[name][".text."]
    at = data.find(code) + len(code) // 2   # every kernel's code is distinct, so find() lands in its own section
    data[at] ^= 0xFF
    changed = tmp_path / "changed.cubin"
    changed.write_bytes(bytes(data))
    assert cubin_text_diff.main([str(cubin), str(cubin)]) == 0
    assert cubin_text_diff.main([str(cubin), str(changed)]) == 1
    after = cubin_text_diff.kernels(changed)
    assert [(k, pre) for k in before for pre in before[k] if before[k][pre] != after[k][pre]] == [(name, ".text.")]
    with pytest.raises(SystemExit, match="not a 64-bit ELF"):
        cubin_text_diff.sections(launch.KERNEL_DIR / "manifest.json")
