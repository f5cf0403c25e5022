"""`polygraphy` with the sparsetrt plugins registered in-process.

Polygraphy's `--plugins` only dlopens shared libraries; our plugins are Python (tensorrt.plugin), so they
must be registered in the process that builds the engine.  This module does that, then hands the command
line to Polygraphy unchanged:

    python -m trt_plugins.plugin_polygraphy run model.onnx --onnxrt --trt --atol 1e-2 --rtol 1e-2 ...

Polygraphy creates networks without the PREFER_AOT/JIT_PYTHON_PLUGINS flags, so exactly one implementation
is registered: AOT when our PTX has TensorRT's AOT-order entry points, else JIT (override with
SPARSETRT_PLUGIN_IMPL=aot|jit).  Without TensorRT it only warns (an `--onnxrt`-only run still works).
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    from polygraphy.tools._main import main as polygraphy_main

    from . import TensorRTUnavailable, register

    impl = os.environ.get("SPARSETRT_PLUGIN_IMPL", "auto")
    if impl == "auto":
        from .build import aot_available

        impl = "aot" if aot_available() else "jit"
    try:
        ids = register((impl,))
        print(f"sparsetrt: registered {', '.join(ids)} ({impl})", file=sys.stderr)
    except TensorRTUnavailable as err:
        print(f"sparsetrt: plugins not registered: {err}", file=sys.stderr)
    sys.argv = ["polygraphy", *(sys.argv[1:] if argv is None else argv)]
    return polygraphy_main()


if __name__ == "__main__":
    sys.exit(main())
