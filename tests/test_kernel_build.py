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
