"""Build a TensorRT engine from an exported ONNX file: register the plugins, parse, build with a profile.

    build_engine("model.onnx", "model.engine")                       # TensorRT + our plugins
    build_engine("model.onnx", plugins=False)                        # TensorRT inlines the local functions
    build_engine("model.onnx", backend="tensorrt_rtx", plugins=False)  # TensorRT-RTX (no plugin support)

Everything except `_build` is plain Python (profiles from the ONNX dims, the pre-parse checks) and is
tested without TensorRT; `_build` is the thin layer that talks to the TensorRT API.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from . import FieldError, TensorRTUnavailable, fields

BACKENDS = {"tensorrt": "tensorrt", "tensorrt_rtx": "tensorrt_rtx"}
DEFAULT_RANGES = {"batch": (1, 8, 32), "seq": (1, 128, 512)}
PLUGIN_IMPLS = ("auto", "aot", "jit")


class BuildError(RuntimeError):
    """Parsing or building failed; the message carries the parser's errors."""


@dataclass
class BuildResult:
    engine: bytes
    backend: str
    plugins: list[str]
    profile: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]
    plugin_impl: str
    layers: dict[str, int] = field(default_factory=dict)     # parsed network: layer type -> count
    notes: list[str] = field(default_factory=list)


def profile_shapes(model: onnx.ModelProto, ranges: Mapping[str, Sequence[int]] | None = None
                   ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) per graph input: fixed dims as they are, named dynamic dims from `ranges`
    (keys = dim names such as 'batch', 'seq'; unknown names use the 'batch' range)."""
    ranges = {**DEFAULT_RANGES, **(ranges or {})}
    inits = {i.name for i in model.graph.initializer}
    out = {}
    for value in model.graph.input:
        if value.name in inits:
            continue
        lo, opt, hi = [], [], []
        for i, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                for lst in (lo, opt, hi):
                    lst.append(int(dim.dim_value))
                continue
            name = dim.dim_param or ("batch" if i == 0 else "seq")
            r = ranges.get(name, ranges["batch"])
            if len(r) != 3 or not 1 <= r[0] <= r[1] <= r[2]:
                raise ValueError(f"shape range for '{name}' must be MIN,OPT,MAX with 1 <= MIN <= OPT <= MAX, got {tuple(r)}")
            lo.append(int(r[0]))
            opt.append(int(r[1]))
            hi.append(int(r[2]))
        out[value.name] = (tuple(lo), tuple(opt), tuple(hi))
    return out


def plugin_plan(model: onnx.ModelProto, plugins: bool) -> list[str]:
    """Which nodes a plugin will run, after checking the file (exporter.onnx_inspect) and that every
    plugin node is something the kernels can run.  Raises with a hint instead of a failed parse."""
    from exporter.onnx_inspect import sparse_nodes

    nodes = sparse_nodes(model)
    if not plugins:
        return []
    planned = []
    for node in nodes:
        if not node.attrs.spec.has_plugin:
            continue   # TW: TensorRT inlines the local function
        try:
            fields.check_kernel_problem(node.attrs, node.dtype, where=node.name)
        except FieldError as err:
            raise BuildError(f"{err}. Use --no-plugins to build with the reference local functions inlined.") from None
        planned.append(node.name)
    return planned


def aot_available() -> bool:
    """True when our PTX carries the AOT-order entry points TensorRT's AOT launch needs."""
    from . import launch

    try:
        ptx = launch.ptx_path().read_text()
    except Exception:
        return False
    names = fields.ptx_entries(ptx)
    return any(n.endswith(fields.AOT_KERNEL_SUFFIX) for n in names)


def import_backend(backend: str):
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {backend!r}")
    try:
        return importlib.import_module(BACKENDS[backend])
    except ImportError:
        pip = "tensorrt" if backend == "tensorrt" else "tensorrt-rtx-cu13"
        raise TensorRTUnavailable(f"{backend} is not installed (pip install {pip}); building an engine needs it") from None


def build_engine(onnx_path: str | Path, engine_path: str | Path | None = None, *, plugins: bool = True,
                 backend: str = "tensorrt", ranges: Mapping[str, Sequence[int]] | None = None,
                 plugin_impl: str = "auto", workspace_mb: int | None = None, verbose: bool = False) -> BuildResult:
    """Parse `onnx_path` into a network (plugins registered unless `plugins=False`) and build a serialized
    engine with one optimization profile over the dynamic dims; write it to `engine_path` if given."""
    if plugin_impl not in PLUGIN_IMPLS:
        raise ValueError(f"plugin_impl must be one of {PLUGIN_IMPLS}, got {plugin_impl!r}")
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path}: no such file")
    trt = import_backend(backend)
    if plugins and backend == "tensorrt_rtx":
        raise BuildError("TensorRT-RTX cannot host plugin layers; build with plugins=False (--no-plugins)")
    model = onnx.load(str(onnx_path))
    planned = plugin_plan(model, plugins)
    notes = []
    registered: list[str] = []
    if plugins:
        from . import register

        registered = register()
        if plugin_impl == "auto":
            plugin_impl = "aot" if aot_available() else "jit"
            if plugin_impl == "jit":
                notes.append("JIT plugin implementation (the engine calls back into Python): the PTX has no "
                             "AOT-order entry points yet")
    shapes = profile_shapes(model, ranges)
    engine, layers = _build(trt, onnx_path, shapes, plugins and bool(planned), plugin_impl, workspace_mb, verbose)
    if engine_path is not None:
        Path(engine_path).parent.mkdir(parents=True, exist_ok=True)
        Path(engine_path).write_bytes(engine)
    if plugins and not planned:
        notes.append("no node runs a plugin (TW layers only): TensorRT inlined the local functions")
    return BuildResult(engine, backend, registered if planned else [], shapes, plugin_impl if planned else "none",
                       layers, notes)


def _network_flags(trt, use_plugins: bool, plugin_impl: str) -> int:
    flags = 0
    names = trt.NetworkDefinitionCreationFlag.__members__
    if "STRONGLY_TYPED" in names:   # types follow the ONNX graph (always on in TensorRT 11)
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    wanted = {"aot": "PREFER_AOT_PYTHON_PLUGINS", "jit": "PREFER_JIT_PYTHON_PLUGINS"}.get(plugin_impl)
    if use_plugins and wanted in names:   # both implementations exist: say which one to use
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, wanted))
    return flags


def _logger(trt, verbose: bool):
    """TensorRT's logger minus one warning per inlined local-function node: the parser names body nodes
    after their outputs, which repeat in every inlined copy ("A node named ... already exists")."""

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.limit = trt.ILogger.Severity.VERBOSE if verbose else trt.ILogger.Severity.WARNING

        def log(self, severity, msg) -> None:
            if severity <= self.limit and (verbose or "already exists, the output tensors" not in msg):
                print(f"[TensorRT] {str(severity).rsplit('.', 1)[-1]}: {msg}", file=sys.stderr)

    return Logger()


def _build(trt, onnx_path: Path, shapes, use_plugins: bool, plugin_impl: str, workspace_mb: int | None,
           verbose: bool) -> tuple[bytes, dict[str, int]]:
    logger = _logger(trt, verbose)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, use_plugins, plugin_impl))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuildError(f"{onnx_path}: the TensorRT ONNX parser failed:\n  " + "\n  ".join(errors))
    layers: dict[str, int] = {}
    for i in range(network.num_layers):
        kind = str(network.get_layer(i).type).rsplit(".", 1)[-1]
        layers[kind] = layers.get(kind, 0) + 1
    config = builder.create_builder_config()
    if workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if tensor.name not in shapes:
            raise BuildError(f"network input '{tensor.name}' has no shape range")
        profile.set_shape(tensor.name, *shapes[tensor.name])
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BuildError(f"{onnx_path}: TensorRT could not build an engine (see the log above)")
    return bytes(serialized), layers
