"""TensorRT plugins for the sparsetrt custom ONNX ops (HiNMLinear, TVWLinear).

`import trt_plugins` needs neither TensorRT nor a GPU: the op definitions, shape/type/field logic
(`fields`), the enqueue-level runtime (`plugin_runtime`) and the launch planner import lazily.
`register()` registers the plugins with TensorRT's plugin registry (one call, idempotent) and raises
`TensorRTUnavailable` when TensorRT is missing or too old.  Design notes: trt_plugins/README.md.
"""

from __future__ import annotations

from .fields import DOMAIN, NAMESPACE, OPS, FieldError

MIN_TENSORRT = (10, 9)     # tensorrt.plugin with aot_impl; the ONNX parser prefers plugins since 10.7


class TensorRTUnavailable(RuntimeError):
    """TensorRT (the `tensorrt` Python package, >= 10.9) is not importable here."""


def tensorrt_version() -> tuple[int, ...] | None:
    """The importable TensorRT version, or None."""
    try:
        import tensorrt
    except ImportError:
        return None
    return tuple(int(p) for p in tensorrt.__version__.split(".")[:3] if p.isdigit())


def register(impls: tuple[str, ...] = ("jit", "aot")) -> list[str]:
    """Register every sparsetrt plugin with TensorRT; returns their ids ('sparsetrt::HiNMLinear', ...).

    `impls`: the implementations to attach — 'jit' (Python launch) and/or 'aot' (PTX in the engine).  With
    both, networks choose with the PREFER_AOT/JIT_PYTHON_PLUGINS creation flag (trt_plugins.build does)."""
    version = tensorrt_version()
    if version is None:
        raise TensorRTUnavailable("TensorRT is not installed (pip install 'sparsetrt[tensorrt]', TensorRT >= "
                                  f"{'.'.join(map(str, MIN_TENSORRT))}); the ONNX file still runs in ONNX Runtime")
    if version < MIN_TENSORRT:
        raise TensorRTUnavailable(f"TensorRT {'.'.join(map(str, version))} is too old: the plugins use tensorrt.plugin "
                                  f"with aot_impl (>= {'.'.join(map(str, MIN_TENSORRT))})")
    from .plugin import register_all

    return register_all(tuple(impls))


__all__ = ["DOMAIN", "NAMESPACE", "OPS", "FieldError", "TensorRTUnavailable", "register", "tensorrt_version"]
