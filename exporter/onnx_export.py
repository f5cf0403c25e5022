"""Export a model with SparseLinear layers to ONE ONNX file with sparsetrt custom nodes + local functions.

    export_onnx(model, example_inputs, "model.onnx")

Each `SparseLinear` (the `sparsetrt::tile_sparse_linear` torch.library op) becomes

    X [..., K] → Reshape [M, K] → Transpose → XT [K, M] → sparsetrt::<Op>(XT, values, meta, k_index,
    k_offsets, row_index, bias) → Y [M, N] → Reshape [..., N]

with the compressed tensors as initializers, the attributes of `trt_plugins.fields`, and a local function
`sparsetrt::<Op>` (exporter/onnx_functions.py) that computes the same Y with standard ops.  The graph is
produced by `torch.onnx.export(..., dynamo=True)` with a custom translation of our op written in
onnxscript; batch and sequence dimensions stay dynamic.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from torch import nn

from trt_plugins import fields

from . import modules
from .formats.tilesparse import FormatError
from .modules import SparseLinear

IR_VERSION = 10             # what onnxruntime ≥ 1.20 and TensorRT ≥ 10.7 read
METADATA_PREFIX = "sparsetrt."
OPSET = 18                  # the default opset of torch.onnx's dynamo exporter; the function bodies use it


class ExportError(ValueError):
    """A model or layer that cannot be exported; the message names the layer and the reason."""


@dataclass(frozen=True)
class LayerExport:
    name: str
    attrs: fields.LayerAttrs
    pattern: str
    index_order: str
    dtype: str


def _op_type(module: SparseLinear) -> str:
    """HiNM / 2:4 → HiNMLinear, TVW → TVWLinear, TW → TWLinear (from the pattern recorded on the layer,
    else from the tensors: dense tiles are TW, uniform kept widths HiNM, otherwise TVW)."""
    pattern = str(module.pattern)
    if not module.two_four:
        return "TWLinear"
    if pattern.startswith("HiNM") or pattern == "2:4":
        return "HiNMLinear"
    if pattern.startswith("TVW"):
        return "TVWLinear"
    return "HiNMLinear" if module.format.uniform_kept is not None else "TVWLinear"


def describe_layer(name: str, module: SparseLinear, input_dtype: torch.dtype | None = None) -> LayerExport:
    """Check that one SparseLinear can be exported and return its node attributes (ExportError if not)."""
    where = f"layer '{name}'"
    try:
        fmt = module.format
        fmt.name = name
        fmt.validate()
    except FormatError as err:
        raise ExportError(f"{where}: compressed tensors are inconsistent: {err}") from None
    dtype = str(module.values.dtype).removeprefix("torch.")
    if dtype not in fields.MODEL_DTYPES:
        raise ExportError(f"{where}: values dtype {dtype} is not exportable (expected one of {fields.MODEL_DTYPES})")
    if input_dtype is not None and input_dtype != module.values.dtype:
        raise ExportError(f"{where}: the layer's values are {dtype} but its input is "
                          f"{str(input_dtype).removeprefix('torch.')}; cast the whole model (model.to(dtype)) first")
    if module.bias is not None and module.bias.dtype != module.values.dtype:
        raise ExportError(f"{where}: bias is {module.bias.dtype} but values are {module.values.dtype}")
    if module.activation not in fields.ACTIVATIONS:
        raise ExportError(f"{where}: activation {module.activation!r} has no ONNX/plugin form "
                          f"(expected one of {sorted(fields.ACTIVATIONS)})")
    if fmt.nnz > fields.INT32_MAX or module.out_features * module.in_features > fields.INT32_MAX:
        raise ExportError(f"{where}: {module.out_features}x{module.in_features} with {fmt.nnz} stored values overflows "
                          "the int32 indices of the node and its reference function")
    try:
        attrs = fields.make_attrs(_op_type(module), out_features=module.out_features,
                                  in_features=module.in_features, tile_rows=module.tile_rows,
                                  num_tiles=fmt.num_tiles, activation=module.activation, where=where)
    except fields.FieldError as err:
        raise ExportError(str(err)) from None
    return LayerExport(name, attrs, str(module.pattern), str(module.index_order), dtype)


def _onnx_functions():
    """The onnxscript side (local functions, translation), imported only when exporting: `import exporter`
    must work where onnxscript is not installed (the GPU machine)."""
    try:
        from . import onnx_functions
    except ImportError as err:
        raise ImportError(f"the ONNX export needs onnxscript (pip install onnxscript): {err}") from None
    return onnx_functions


def default_dynamic_shapes(example_inputs: Sequence[torch.Tensor]) -> tuple:
    """Every dimension but the last (features) dynamic: dim 0 'batch', dim 1 'seq', further dims 'dimI'."""
    names = ("batch", "seq")
    out = []
    for t in example_inputs:
        dims = {i: torch.export.Dim(names[i] if i < 2 else f"dim{i}", min=1, max=2**20) for i in range(t.dim() - 1)}
        out.append(dims)
    return tuple(out)


def _collect_layers(model: nn.Module) -> dict[str, SparseLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, SparseLinear)}


def export_onnx(model: nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor], path: str | Path, *,
                dynamic_shapes=None, input_names: Sequence[str] | None = None,
                output_names: Sequence[str] | None = None, metadata: Mapping[str, str] | None = None,
                check: bool = True) -> onnx.ModelProto:
    """Export `model` (eval mode, CPU) to `path`; returns the saved ModelProto.

    `example_inputs` fix ranks and feature sizes only: batch and sequence dims are exported dynamic
    (`default_dynamic_shapes`) unless `dynamic_shapes` says otherwise.  Runs the full onnx.checker and
    shape inference unless `check=False`.  Raises ExportError naming the layer for anything the format,
    the op or the plugins cannot carry."""
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    example_inputs = tuple(example_inputs)
    sparse = _collect_layers(model)
    if not sparse:
        raise ExportError("the model has no SparseLinear layer (prune it with sparsify() first)")
    first_dtype = example_inputs[0].dtype if example_inputs and example_inputs[0].is_floating_point() else None
    layers = {name: describe_layer(name, m, first_dtype) for name, m in sparse.items()}
    zero_biased = []
    try:
        for m in sparse.values():   # a fixed kernel signature: give bias-less layers a zero bias
            if m.bias is None:
                m.bias = torch.zeros(m.out_features, dtype=m.values.dtype, device=m.values.device)
                zero_biased.append(m)
        proto = _export(model.eval(), example_inputs, layers, dynamic_shapes, input_names, output_names)
    finally:
        for m in zero_biased:
            m.bias = None
    _finish(proto, layers, metadata)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    large = proto.ByteSize() > 1_800_000_000
    onnx.save_model(proto, str(path), save_as_external_data=large, location=path.name + ".data" if large else None)
    if check:
        check_model(path)
    return proto


def _export(model, example_inputs, layers, dynamic_shapes, input_names, output_names) -> onnx.ModelProto:
    if dynamic_shapes is None:
        dynamic_shapes = default_dynamic_shapes(example_inputs)
    if output_names is None:   # stable names for Polygraphy and the PyTorch runner
        with torch.no_grad():
            out = model(*example_inputs)
        count = len(out) if isinstance(out, (tuple, list)) else 1
        output_names = ["output"] if count == 1 else [f"output_{i}" for i in range(count)]
    with torch.no_grad():
        with modules.exporting():   # SparseLinear refuses the feature-major layouts while this runs
            ep = torch.export.export(model, example_inputs, dynamic_shapes=dynamic_shapes, strict=False)
    buffers = dict(ep.graph_signature.inputs_to_buffers)
    by_values = {ph: layers[fqn.rsplit(".", 1)[0]] for ph, fqn in buffers.items()
                 if fqn.endswith(".values") and fqn.rsplit(".", 1)[0] in layers}
    functions = _onnx_functions()
    table = {torch.ops.sparsetrt.tile_sparse_linear.default: functions.translation(by_values)}
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)   # the exporter warns about every torchvision op it cannot register
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            program = torch.onnx.export(ep, example_inputs, dynamo=True, custom_translation_table=table,
                                        opset_version=OPSET, input_names=input_names,
                                        output_names=output_names, optimize=True, verbose=False)
    finally:
        quiet.setLevel(level)
    return program.model_proto


def _finish(proto: onnx.ModelProto, layers: Mapping[str, LayerExport], metadata: Mapping[str, str] | None) -> None:
    """Add one local function per op type used, the custom opset, IR version and provenance metadata."""
    onnx_functions = _onnx_functions()
    used = {layer.attrs.op_type: layer for layer in layers.values()}
    kept = [f for f in proto.functions if f.domain != fields.DOMAIN]
    del proto.functions[:]
    proto.functions.extend(kept)
    for op_type, layer in sorted(used.items()):
        proto.functions.append(onnx_functions.function_proto(op_type, layer.attrs.spec.two_four, layer.attrs.to_onnx()))
    imports = {o.domain: o for o in proto.opset_import}
    if fields.DOMAIN not in imports:
        proto.opset_import.append(onnx.helper.make_opsetid(fields.DOMAIN, fields.DOMAIN_VERSION))
    _name_dynamic_dims(proto.graph)
    proto.ir_version = IR_VERSION
    proto.producer_name = "sparsetrt"
    info = {name: {"op": x.attrs.op_type, "pattern": x.pattern, "index_order": x.index_order, "dtype": x.dtype,
                   "shape": [x.attrs.out_features, x.attrs.in_features], "tiles": x.attrs.num_tiles}
            for name, x in layers.items()}
    meta = {f"{METADATA_PREFIX}layers": json.dumps(info), f"{METADATA_PREFIX}format_version": "1"}
    meta.update({k if k.startswith(METADATA_PREFIX) else METADATA_PREFIX + k: str(v) for k, v in (metadata or {}).items()})
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in meta.items():
        if key in existing:
            existing[key].value = value
        else:
            proto.metadata_props.add(key=key, value=value)


def _name_dynamic_dims(graph: onnx.GraphProto) -> None:
    """torch.export calls dynamic dims s0, s77, ...; name them after the input positions (batch, seq) so
    shape profiles and Polygraphy shapes can refer to them."""
    names: dict[str, str] = {}
    for value in graph.input:
        for i, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_param") and dim.dim_param not in names:
                wanted = ("batch", "seq")[i] if i < 2 else f"dim{i}"
                names[dim.dim_param] = wanted if wanted not in names.values() else f"{wanted}_{len(names)}"
    for value in (*graph.input, *graph.output, *graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in names:
                dim.dim_param = names[dim.dim_param]


def check_model(path: str | Path) -> onnx.ModelProto:
    """Full onnx.checker plus strict shape inference (through our local functions)."""
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
