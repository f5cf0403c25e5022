"""Read the sparse layers back out of an exported ONNX file and check them before anything runs it.

`sparse_nodes(model)` finds every sparsetrt custom node, checks its attributes (`trt_plugins.fields`),
that each weight input is an initializer of the right type, that the op's local function is present,
and rebuilds the TileSparse weight and validates it (docs/FORMAT.md) — so a missing or corrupted
initializer (metadata that keeps 3 of 4, an input index out of range, a truncated tensor) or a wrong
attribute fails with an error naming the node, the tensor or the attribute, instead of a wrong answer
or a crash inside ONNX Runtime or TensorRT.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from trt_plugins import fields

from .formats.tilesparse import FormatError, TileSparseWeight


class OnnxModelError(ValueError):
    """An ONNX file whose sparsetrt nodes cannot be trusted; the message names the node and the culprit."""


@dataclass
class SparseNode:
    name: str
    attrs: fields.LayerAttrs
    weight: TileSparseWeight
    bias: torch.Tensor
    dtype: str                  # the activation/value dtype ('float32', 'float16', 'bfloat16')
    inputs: list[str]           # the node's input names (xt first)


def _to_torch(init: onnx.TensorProto, where: str, tensor: str) -> torch.Tensor:
    try:
        arr = numpy_helper.to_array(init)
    except Exception as err:   # truncated raw_data, missing external file, ...
        raise OnnxModelError(f"{where}: initializer '{init.name}' ({tensor}) cannot be read: {err}") from None
    if arr.dtype.name == "bfloat16":   # ml_dtypes: reinterpret the bits
        return torch.from_numpy(np.ascontiguousarray(arr).view(np.int16).copy()).view(torch.bfloat16)
    try:
        return torch.from_numpy(np.ascontiguousarray(arr).copy())
    except TypeError:
        raise OnnxModelError(f"{where}: initializer '{init.name}' ({tensor}) has type {arr.dtype.name}") from None


def _attributes(node: onnx.NodeProto) -> dict[str, object]:
    out = {}
    for a in node.attribute:
        value = onnx.helper.get_attribute_value(a)
        out[a.name] = value.decode() if isinstance(value, bytes) else value
    return out


def sparse_nodes(model: onnx.ModelProto | str | Path) -> list[SparseNode]:
    """Every sparsetrt node of the main graph, checked (OnnxModelError on the first problem)."""
    if not isinstance(model, onnx.ModelProto):
        path = Path(model)
        if not path.is_file():
            raise OnnxModelError(f"{path}: no such file")
        try:
            model = onnx.load(str(path))
        except Exception as err:
            raise OnnxModelError(f"{path}: not a readable ONNX file ({err})") from None
    inits = {i.name: i for i in model.graph.initializer}
    functions = {(f.domain, f.name) for f in model.functions}
    out = []
    for index, node in enumerate(model.graph.node):
        if node.domain != fields.DOMAIN:
            continue
        where = f"node '{node.name or f'#{index}'}' ({node.op_type})"
        out.append(_check_node(node, where, inits, functions))
    return out


def _check_node(node: onnx.NodeProto, where: str, inits: dict, functions: set) -> SparseNode:
    try:
        attrs = fields.parse_attributes(node.op_type, _attributes(node), where)
    except fields.FieldError as err:
        raise OnnxModelError(str(err)) from None
    if (fields.DOMAIN, node.op_type) not in functions:
        raise OnnxModelError(f"{where}: the file has no local function {fields.DOMAIN}::{node.op_type} "
                             "(ONNX Runtime and TensorRT without plugins need it)")
    if len(node.input) != len(fields.INPUTS) or len(node.output) != 1:
        raise OnnxModelError(f"{where}: expected inputs {fields.INPUTS} and one output, got "
                             f"{len(node.input)} inputs and {len(node.output)} outputs")
    tensors = {}
    for role, name in zip(fields.INPUTS[1:], node.input[1:], strict=True):
        if name not in inits:
            raise OnnxModelError(f"{where}: input '{role}' ('{name}') is not an initializer in the file "
                                 "(missing or computed); the compressed tensors must be stored constants")
        tensors[role] = _to_torch(inits[name], where, role)
    dtype = str(tensors["values"].dtype).removeprefix("torch.")
    try:
        fields.check_types([dtype, *(str(tensors[r].dtype).removeprefix("torch.") for r in fields.INPUTS[1:]), dtype],
                           attrs, for_kernel=False, where=where)
    except fields.FieldError as err:
        raise OnnxModelError(str(err)) from None
    weight = TileSparseWeight((attrs.out_features, attrs.in_features), attrs.tile_rows, attrs.spec.two_four,
                              tensors["values"].reshape(-1), tensors["meta"].reshape(-1),
                              tensors["k_index"].reshape(-1), tensors["k_offsets"].reshape(-1),
                              tensors["row_index"].reshape(-1), index_order="free",   # the node does not say
                              name=f"{node.name or node.output[0]} ({node.op_type})")
    for role in fields.INPUTS[1:]:
        if tensors[role].dim() != 1:
            raise OnnxModelError(f"{where}: initializer '{role}' must be 1-D, got shape {tuple(tensors[role].shape)}")
    try:
        weight.validate()
    except FormatError as err:
        raise OnnxModelError(f"ONNX {err} — the initializer is corrupted or does not match the node's attributes") from None
    if weight.num_tiles != attrs.num_tiles:
        raise OnnxModelError(f"{where}: attribute 'num_tiles' = {attrs.num_tiles} but k_offsets holds {weight.num_tiles} tiles")
    if tuple(tensors["bias"].shape) != (attrs.out_features,):
        raise OnnxModelError(f"{where}: input 'bias' has shape {tuple(tensors['bias'].shape)}, expected ({attrs.out_features},)")
    return SparseNode(where, attrs, weight, tensors["bias"], dtype, list(node.input))
