"""Build hook: compile the CUDA kernels into trt_plugins/kernels/ when nvcc is available, so wheels
ship the fatbin. Without nvcc the package still installs; the launch layer then compiles at first use
(or reports that no kernel binary is available)."""

import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithKernels(build_py):
    def run(self):
        root = Path(__file__).resolve().parent
        sources = list((root / "cuda").glob("*.cu*")) + [root / "cuda" / "build.py"]
        manifest = root / "trt_plugins" / "kernels" / "manifest.json"
        stale = not manifest.exists() or any(s.stat().st_mtime > manifest.stat().st_mtime for s in sources)
        if shutil.which("nvcc") and (root / "cuda" / "build.py").exists() and stale:
            subprocess.run([sys.executable, str(root / "cuda" / "build.py")], check=True)
        else:
            print("sparsetrt: nvcc not found; the wheel will not contain prebuilt kernels", file=sys.stderr)
        super().run()


setup(cmdclass={"build_py": BuildWithKernels})
