"""Numerical validation of an exported model with Polygraphy's Comparator.

Runners (the first is the reference every other runner is compared with):
  * `onnxrt`   — ONNX Runtime on the CPU, running the file as it is (our local functions);
  * `torch`    — `TorchRunner`, our Polygraphy runner that executes the source PyTorch sparse model:
                 on the GPU through our kernels when one is present (fp16/bf16), else on the CPU;
  * `tensorrt` — a TensorRT engine with our plugins registered, when `tensorrt` is importable.
Inputs are fresh random tensors whose dynamic dims (batch, seq) differ from the export example.
Tolerances are per dtype (TOLERANCES); a result row per runner pair and output, pass/fail overall.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata

# (atol, rtol) per activation dtype; Polygraphy's elementwise check fails an element only when it
# exceeds both.  fp32: the reference body and PyTorch differ by summation order only (~1e-7).  fp16:
# one fp16 ulp at |y| ~ 4 is 4e-3 and layers compound it; bf16 has 8 bits of mantissa.
TOLERANCES: dict[str, tuple[float, float]] = {"float32": (1e-5, 1e-5), "float16": (1e-2, 1e-2),
                                              "bfloat16": (6e-2, 6e-2)}
RUNNERS = ("onnxrt", "torch", "tensorrt")


class ValidationError(RuntimeError):
    """A runner could not be set up (distinct from a numerical mismatch)."""


@dataclass
class Row:
    reference: str
    runner: str
    output: str
    iteration: int
    max_abs: float
    max_rel: float
    atol: float
    rtol: float
    passed: bool


@dataclass
class Report:
    model: str
    dtype: str
    shapes: dict[str, tuple[int, ...]]
    runners: list[str]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(r.passed for r in self.rows)

    def table(self):
        from rich.table import Table

        status = "[green]PASS[/green]" if self.passed else "[red]FAIL[/red]"
        table = Table(title=f"{self.model} ({self.dtype}): {status}")
        for col in ("reference", "runner", "output", "iter", "max |Δ|", "max rel", "atol", "rtol", "result"):
            table.add_column(col, justify="right" if col not in ("reference", "runner", "output") else "left")
        for r in self.rows:
            table.add_row(r.reference, r.runner, r.output, str(r.iteration), f"{r.max_abs:.3e}", f"{r.max_rel:.3e}",
                          f"{r.atol:g}", f"{r.rtol:g}", "[green]pass[/green]" if r.passed else "[red]FAIL[/red]")
        return table

    def to_dict(self) -> dict:
        return {"model": self.model, "dtype": self.dtype, "passed": self.passed, "runners": self.runners,
                "shapes": {k: list(v) for k, v in self.shapes.items()}, "notes": self.notes,
                "rows": [vars(r) for r in self.rows]}


def input_metadata(model: onnx.ModelProto) -> TensorMetadata:
    """Names, numpy dtypes and shapes (None for dynamic dims) of the graph inputs."""
    inits = {i.name for i in model.graph.initializer}
    meta = TensorMetadata()
    for value in model.graph.input:
        if value.name in inits:
            continue
        tt = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        meta.add(value.name, onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type), shape)
    return meta


def concrete_shapes(model: onnx.ModelProto, batch: int, seq: int) -> dict[str, tuple[int, ...]]:
    """Input shapes with dynamic dims set: dims named 'seq' (or the second dynamic dim) = seq, others batch."""
    inits = {i.name for i in model.graph.initializer}
    out = {}
    for value in model.graph.input:
        if value.name in inits:
            continue
        dims, dynamic = [], 0
        for d in value.type.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
                continue
            dims.append(seq if d.dim_param == "seq" or (d.dim_param != "batch" and dynamic == 1) else batch)
            dynamic += 1
        out[value.name] = tuple(dims)
    return out


def make_feeds(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]], iterations: int, seed: int
               ) -> list[OrderedDict]:
    meta = input_metadata(model)
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(iterations):
        feed = OrderedDict()
        for name, (dtype, _) in meta.items():
            dtype = np.dtype(dtype.numpy() if hasattr(dtype, "numpy") else dtype)
            if dtype.kind != "f":
                raise ValidationError(f"input '{name}' has type {dtype}; validate feeds float inputs only")
            feed[name] = rng.standard_normal(tuple(shapes[name])).astype(dtype)
        feeds.append(feed)
    return feeds


class TorchRunner(BaseRunner):
    """Runs the source PyTorch model (SparseLinear layers: our kernels on CUDA fp16/bf16, the reference
    math otherwise) with the ONNX file's input and output names."""

    def __init__(self, model, input_meta: TensorMetadata, output_names: Sequence[str], device: str = "cpu",
                 name: str | None = None) -> None:
        super().__init__(name=name, prefix="torch-runner")
        self.model, self.input_meta, self.output_names, self.device = model, input_meta, list(output_names), device
        self.kernel_launches = 0

    def activate_impl(self) -> None:
        self.model = self.model.to(self.device).eval()

    def get_input_metadata_impl(self) -> TensorMetadata:
        return self.input_meta

    def infer_impl(self, feed_dict):
        import torch

        from . import launch

        before = launch.LAUNCH_COUNT
        start = time.perf_counter()
        with torch.no_grad():
            args = [torch.from_numpy(np.ascontiguousarray(feed_dict[name])).to(self.device) for name in self.input_meta]
            out = self.model(*args)
            outs = list(out) if isinstance(out, (tuple, list)) else [out]
            if self.device.startswith("cuda"):
                torch.cuda.synchronize()
        self.inference_time = time.perf_counter() - start
        self.kernel_launches += launch.LAUNCH_COUNT - before
        if len(outs) != len(self.output_names):
            raise ValidationError(f"the PyTorch model returned {len(outs)} outputs, the ONNX file has {len(self.output_names)}")
        return OrderedDict((n, o.detach().cpu().numpy()) for n, o in zip(self.output_names, outs, strict=True))

    def deactivate_impl(self) -> None:
        pass


def onnxrt_runner(path: str | Path):
    import onnxruntime as ort
    from polygraphy.backend.onnxrt import OnnxrtRunner

    options = ort.SessionOptions()
    options.log_severity_level = 3   # constant-folding notices are not findings
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return OnnxrtRunner(session, name="onnxrt")


def tensorrt_runner(path: str | Path, shapes: Mapping[str, Sequence[int]], plugins: bool = True):
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    from .build import build_engine

    ranges = {}
    for dims in shapes.values():
        if len(dims) >= 1:
            ranges["batch"] = (1, dims[0], max(dims[0], 8))
        if len(dims) >= 3:
            ranges["seq"] = (1, dims[1], max(dims[1], 64))
    result = build_engine(path, plugins=plugins, ranges=ranges)
    return TrtRunner(EngineFromBytes(result.engine), name="tensorrt"), result


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValidationError("--device cuda: no CUDA GPU is visible")
    return device


def validate(onnx_path: str | Path, torch_model=None, *, runners: Sequence[str] | None = None, device: str = "auto",
             batch: int = 3, seq: int = 5, iterations: int = 2, seed: int = 0, atol: float | None = None,
             rtol: float | None = None, plugins: bool = True, verbose: bool = False) -> Report:
    """Compare the runners on the same random inputs; `runners=None` uses onnxrt, torch (when a model is
    given) and tensorrt (when importable)."""
    from polygraphy.comparator import Comparator
    from polygraphy.logger import G_LOGGER

    from exporter.onnx_inspect import sparse_nodes

    from . import fields, tensorrt_version

    onnx_path = Path(onnx_path)
    model = onnx.load(str(onnx_path))
    nodes = sparse_nodes(model)            # a corrupted file fails here, naming the node
    dtype = nodes[0].dtype if nodes else "float32"
    shapes = concrete_shapes(model, batch, seq)
    if runners is None:
        runners = ["onnxrt"] + (["torch"] if torch_model is not None else []) + \
                  (["tensorrt"] if tensorrt_version() is not None else [])
    unknown = set(runners) - set(RUNNERS)
    if unknown:
        raise ValueError(f"unknown runner(s) {sorted(unknown)}; expected {RUNNERS}")
    report = Report(str(onnx_path), dtype, shapes, list(runners))
    built = []
    for name in runners:
        if name == "onnxrt":
            built.append(onnxrt_runner(onnx_path))
        elif name == "torch":
            if torch_model is None:
                raise ValidationError("the torch runner needs the source model (a checkpoint)")
            dev = resolve_device(device)
            built.append(TorchRunner(torch_model, input_metadata(model), [o.name for o in model.graph.output], dev,
                                     name=f"torch-{dev.split(':')[0]}"))
        else:
            use_plugins = plugins and dtype in fields.KERNEL_DTYPES
            if plugins and not use_plugins:
                report.notes.append(f"tensorrt: {dtype} model, so no plugins (the kernels run fp16/bf16): "
                                    "TensorRT inlines the reference local functions")
            runner, result = tensorrt_runner(onnx_path, shapes, use_plugins)
            report.notes.append(f"tensorrt: plugins {result.plugins or 'none'} ({result.plugin_impl})")
            report.notes.extend(result.notes)
            built.append(runner)
    if len(built) < 2:
        raise ValidationError(f"need at least two runners to compare, got {list(runners)}")
    default_atol, default_rtol = TOLERANCES.get(dtype, TOLERANCES["float32"])
    atol, rtol = atol if atol is not None else default_atol, rtol if rtol is not None else default_rtol
    feeds = make_feeds(model, shapes, iterations, seed)
    with G_LOGGER.verbosity(G_LOGGER.INFO if verbose else G_LOGGER.ERROR):
        results = Comparator.run(built, data_loader=feeds)
        compare = _simple_compare(atol, rtol)
        accuracy = Comparator.compare_accuracy(results, compare_func=compare,
                                               comparisons=[(0, i) for i in range(1, len(built))])
    report.rows = _rows(accuracy, atol, rtol)
    for r in built:
        if isinstance(r, TorchRunner):
            report.notes.append(f"{r.name}: {r.kernel_launches} sparse-kernel launches"
                                + ("" if r.kernel_launches else " (reference math: CPU, fp32 or no pycuda/kernels)"))
    return report


def _simple_compare(atol: float, rtol: float):
    try:   # Polygraphy >= 0.53 (CompareFunc.simple is deprecated there)
        from polygraphy.comparator import SimpleCompareFunc
    except ImportError:
        from polygraphy.comparator import CompareFunc

        return CompareFunc.simple(atol=atol, rtol=rtol, check_error_stat="elemwise")
    return SimpleCompareFunc(atol=atol, rtol=rtol, check_error_stat="elemwise")


def _rows(accuracy, atol: float, rtol: float) -> list[Row]:
    """Flatten Polygraphy's accuracy results (one per compare function) into table rows."""
    results = [accuracy] if hasattr(accuracy, "items") else list(accuracy)   # one AccuracyResult, or a list
    rows = []
    for result in results:
        for (ref, other), iterations in result.items():
            for i, outputs in enumerate(iterations):
                for out_name, r in outputs.items():
                    rows.append(Row(ref, other, out_name, i, float(r.max_absdiff), float(r.max_reldiff), atol, rtol,
                                    bool(r)))
    return rows
