"""ONNX local functions: the exact reference of our custom sparse ops, written in onnxscript.

Every sparse layer is exported as ONE custom node (domain `sparsetrt`, op `HiNMLinear`, `TVWLinear` or
`TWLinear`) and the model also carries a local function of the same name whose body recomputes the
layer from the compressed tensors with standard ONNX ops.  ONNX Runtime runs that body; TensorRT
(≥ 10.7) runs our plugin when one is registered under the op's name and inlines the body otherwise.

Node (and function) signature, shared with the plugins (`trt_plugins.fields`):
    inputs  xt [K, M] (activations, feature-major), values, meta, k_index, k_offsets, row_index, bias [N]
    output  y  [M, N] (token-major)
    attrs   tile_rows and activation (0 none, 1 relu, 2 gelu) are read by the body; the others
            (out_features, in_features, num_tiles, the pattern parameter, plugin_version, plugin_namespace)
            are declared so that every attribute on the node belongs to the function.

Why the body looks the way it does (it must also parse in TensorRT, which inlines it):
  * all index arithmetic is int32 on non-negative numbers, except the metadata words: those are the
    uint32 bit patterns stored as int32, and are split into 16-bit halves with a division whose result
    is corrected for sign, so the decode is right whether an integer Div truncates or floors;
  * no bit operators (BitShift/BitwiseAnd on uint32 or int64 are poorly supported); nibbles come from
    Div/Mod by powers of two on non-negative int32;
  * the weight is decompressed with one ScatterElements into a dense fp32 W[N, K] and applied with a
    MatMul (in fp32 like the PyTorch reference, whatever the model dtype);
  * the activation is selected with Where so one body serves every activation attribute value;
  * GELU is the erf form written out (the Gelu op needs opset 20; the exporter writes opset 18).
The tile index of every stored value comes from a CumSum over markers at the tile starts, so tiles of
different kept widths (TVW/TW) need no loop and no [nnz, T] comparison matrix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnxscript
from onnxscript import FLOAT, INT32
from onnxscript import opset18 as op

from trt_plugins import fields

if TYPE_CHECKING:
    from .onnx_export import LayerExport

DOMAIN = fields.DOMAIN
DOMAIN_VERSION = fields.DOMAIN_VERSION
OPSET = 18            # = onnx_export.OPSET, the default opset of torch.onnx's dynamo exporter

_sparsetrt = onnxscript.values.Opset(DOMAIN, DOMAIN_VERSION)

# int32 constants (globals become Constant nodes in the body)
I0 = np.array(0, dtype=np.int32)
I1 = np.array(1, dtype=np.int32)
I2 = np.array(2, dtype=np.int32)
I4 = np.array(4, dtype=np.int32)
I8 = np.array(8, dtype=np.int32)
I16 = np.array(16, dtype=np.int32)
I32 = np.array(32, dtype=np.int32)
I65536 = np.array(65536, dtype=np.int32)
POW16 = np.array([1, 16, 256, 4096], dtype=np.int32)     # nibble j of a 16-bit half is (h / 16^j) % 16
POW4 = np.array([1, 4], dtype=np.int32)                   # nibble = p0 | p1 << 2
AXIS0 = np.array(0, dtype=np.int32)
F0 = np.array(0.0, dtype=np.float32)
F1 = np.array(1.0, dtype=np.float32)
FHALF = np.array(0.5, dtype=np.float32)
FSQRT1_2 = np.array(0.7071067811865476, dtype=np.float32)
ACT_RELU = np.array(1, dtype=np.int64)
ACT_GELU = np.array(2, dtype=np.int64)
START0 = np.array([0], dtype=np.int64)
START1 = np.array([1], dtype=np.int64)
END_LAST = np.array([-1], dtype=np.int64)
END_ALL = np.array([2**62], dtype=np.int64)
LAST = np.array(-1, dtype=np.int64)


@onnxscript.script(_sparsetrt, default_opset=op)
def tile_sparse_24(xt, values, meta: INT32, k_index: INT32, k_offsets: INT32, row_index: INT32, bias,
                   tile_rows: int, activation: int):
    """2:4 tiles (HiNM, TVW, 2:4): y[M, N] = act(X · Wᵀ + b) with W decompressed from the tiles."""
    rows = op.Cast(op.Constant(value_int=tile_rows), to=INT32.dtype)
    k_dim = op.Cast(op.Shape(xt, start=0, end=1), to=INT32.dtype)                # [1]
    starts = op.Slice(k_offsets, START0, END_LAST)                               # k_offsets[t]
    kept = op.Sub(op.Slice(k_offsets, START1, END_ALL), starts)                  # Kt per tile
    vstart_all = op.Div(op.Mul(k_offsets, rows), I2)                              # value offsets, T+1
    vstart = op.Slice(vstart_all, START0, END_LAST)                               # first value of tile t
    idx = op.Range(I0, op.Gather(vstart_all, LAST), I1)                         # one entry per stored value
    marks = op.ScatterElements(op.Mul(idx, I0), vstart, op.Add(op.Mul(vstart, I0), I1), axis=0)
    tile = op.Sub(op.CumSum(marks, AXIS0), I1)                                    # tile of each value
    start_t = op.Gather(starts, tile)
    local = op.Sub(idx, op.Gather(vstart, tile))
    half_kt = op.Div(op.Gather(kept, tile), I2)
    r = op.Div(local, half_kt)                                                    # row in the tile
    j = op.Mod(local, half_kt)                                                    # stored slot in the row
    grp = op.Div(j, I2)                                                           # 2:4 group in the tile
    slot = op.Mod(j, I2)
    # metadata word [s][q][g][t] of (row r, group grp), docs/FORMAT.md
    step = op.Div(grp, I8)
    half_sel = op.Div(op.Mod(grp, I8), I4)
    nib_idx = op.Mod(grp, I4)
    q = op.Div(r, I16)
    hi_rows = op.Div(op.Mod(r, I16), I8)
    lane = op.Mod(r, I8)
    word_idx = op.Add(op.Div(op.Mul(start_t, rows), I32),
                      op.Add(op.Mul(op.Add(op.Mul(op.Add(op.Mul(step, op.Div(rows, I16)), q), I8), lane), I2),
                             half_sel))
    word = op.Gather(meta, word_idx)
    low = op.Sub(word, op.Mul(op.Div(word, I65536), I65536))
    low = op.Where(op.Less(low, I0), op.Add(low, I65536), low)
    high = op.Div(op.Sub(word, low), I65536)                                      # exact division
    high = op.Where(op.Less(high, I0), op.Add(high, I65536), high)
    half16 = op.Where(op.Equal(hi_rows, I1), high, low)
    nibble = op.Mod(op.Div(half16, op.Gather(POW16, nib_idx)), I16)
    pos = op.Mod(op.Div(nibble, op.Gather(POW4, slot)), I4)
    col = op.Gather(k_index, op.Add(start_t, op.Add(op.Mul(grp, I4), pos)))
    out = op.Gather(row_index, op.Add(op.Mul(tile, rows), r))
    flat = op.Add(op.Mul(out, k_dim), col)
    n_by_k = op.Mul(op.Shape(row_index), op.Shape(xt, start=0, end=1))
    w = op.ScatterElements(op.Expand(F0, n_by_k), flat, op.Cast(values, to=FLOAT.dtype), axis=0)
    w = op.Reshape(w, op.Concat(op.Shape(row_index), op.Shape(xt, start=0, end=1), axis=0))
    x = op.Cast(op.Transpose(xt, perm=[1, 0]), to=FLOAT.dtype)
    y = op.Add(op.MatMul(x, op.Transpose(w, perm=[1, 0])), op.Cast(bias, to=FLOAT.dtype))
    act = op.Constant(value_int=activation)
    gelu = op.Mul(op.Mul(y, FHALF), op.Add(op.Erf(op.Mul(y, FSQRT1_2)), F1))
    y = op.Where(op.Equal(act, ACT_RELU), op.Max(y, F0), op.Where(op.Equal(act, ACT_GELU), gelu, y))
    return op.CastLike(y, xt)


@onnxscript.script(_sparsetrt, default_opset=op)
def tile_dense(xt, values, meta: INT32, k_index: INT32, k_offsets: INT32, row_index: INT32, bias,
               tile_rows: int, activation: int):
    """Dense tiles (TW): each tile stores [R, Kt] values over its kept columns; meta is empty."""
    rows = op.Cast(op.Constant(value_int=tile_rows), to=INT32.dtype)
    k_dim = op.Cast(op.Shape(xt, start=0, end=1), to=INT32.dtype)
    starts = op.Slice(k_offsets, START0, END_LAST)
    kept = op.Sub(op.Slice(k_offsets, START1, END_ALL), starts)
    vstart_all = op.Mul(k_offsets, rows)
    vstart = op.Slice(vstart_all, START0, END_LAST)
    idx = op.Range(I0, op.Gather(vstart_all, LAST), I1)   # one entry per stored value
    marks = op.ScatterElements(op.Mul(idx, I0), vstart, op.Add(op.Mul(vstart, I0), I1), axis=0)
    tile = op.Sub(op.CumSum(marks, AXIS0), I1)
    local = op.Sub(idx, op.Gather(vstart, tile))
    kt = op.Gather(kept, tile)
    r = op.Div(local, kt)
    c = op.Mod(local, kt)
    col = op.Gather(k_index, op.Add(op.Gather(starts, tile), c))
    out = op.Gather(row_index, op.Add(op.Mul(tile, rows), r))
    flat = op.Add(op.Mul(out, k_dim), col)
    n_by_k = op.Mul(op.Shape(row_index), op.Shape(xt, start=0, end=1))
    w = op.ScatterElements(op.Expand(F0, n_by_k), flat, op.Cast(values, to=FLOAT.dtype), axis=0)
    w = op.Reshape(w, op.Concat(op.Shape(row_index), op.Shape(xt, start=0, end=1), axis=0))
    x = op.Cast(op.Transpose(xt, perm=[1, 0]), to=FLOAT.dtype)
    y = op.Add(op.MatMul(x, op.Transpose(w, perm=[1, 0])), op.Cast(bias, to=FLOAT.dtype))
    act = op.Constant(value_int=activation)
    gelu = op.Mul(op.Mul(y, FHALF), op.Add(op.Erf(op.Mul(y, FSQRT1_2)), F1))
    y = op.Where(op.Equal(act, ACT_RELU), op.Max(y, F0), op.Where(op.Equal(act, ACT_GELU), gelu, y))
    return op.CastLike(y, xt)


def function_proto(op_type: str, two_four: bool, attributes: dict[str, object]) -> onnx.FunctionProto:
    """The local function for `op_type`: the reference body renamed, with every node attribute declared
    (ONNX wants the attributes a call passes to be the function's; only two are read by the body)."""
    body = (tile_sparse_24 if two_four else tile_dense).to_function_proto()
    proto = onnx.FunctionProto()
    proto.CopyFrom(body)
    proto.name = op_type
    proto.domain = DOMAIN
    proto.doc_string = (f"Reference of sparsetrt::{op_type}: decompress the TileSparse tensors "
                        f"({'2:4' if two_four else 'dense'} tiles) and apply them; see exporter/onnx_functions.py.")
    for node in proto.node:   # body names repeat in every inlined copy; let the consumer name them
        node.name = ""
    declared = set(proto.attribute) | {a.name for a in proto.attribute_proto}
    for name in attributes:
        if name not in declared:
            proto.attribute.append(name)
    return proto


# ---- the translation of the torch op ------------------------------------------------------------------
def _op_schema(op_type: str) -> onnx.defs.OpSchema:
    """Schema of a custom node, only for onnxscript's recorder (never registered with onnx)."""
    schema = onnx.defs.OpSchema
    float_types = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"]
    inputs = [schema.FormalParameter(n, "tensor(int32)" if n in fields.INT32_INPUTS else "T")
              for n in fields.INPUTS]
    attrs = [schema.Attribute(a, schema.AttrType.INT, "") for a in fields.int_attribute_names(op_type)]
    attrs += [schema.Attribute(a, schema.AttrType.STRING, "") for a in ("plugin_version", "plugin_namespace")]
    return schema(op_type, fields.DOMAIN, DOMAIN_VERSION, inputs=inputs,
                  outputs=[schema.FormalParameter("y", "T")], type_constraints=[("T", float_types, "")],
                  attributes=attrs)


def translation(layers_by_values: Mapping[str, LayerExport]):
    """The onnxscript translation of `sparsetrt::tile_sparse_linear` for this export: the layer is found
    from the placeholder name of its `values` buffer (torch.export names it after the module path)."""
    ops = {name: onnxscript.values.Op(_sparsetrt, name, _op_schema(name)) for name in fields.OPS}

    def tile_sparse_linear(x, values, meta, k_index, k_offsets, row_index, bias, out_features, tile_rows,
                           two_four, activation):
        layer = layers_by_values.get(values.name)
        if layer is None or bias is None:
            from .onnx_export import ExportError

            raise ExportError(f"sparsetrt::tile_sparse_linear on '{values.name}': not a registered SparseLinear buffer "
                              "(the op must be called through SparseLinear modules of the exported model)")
        attrs = layer.attrs
        if (out_features, tile_rows, activation) != (attrs.out_features, attrs.tile_rows, attrs.activation_name):
            from .onnx_export import ExportError

            raise ExportError(f"layer '{layer.name}': the op call ({out_features}, {tile_rows}, {activation!r}) "
                              "disagrees with the module's attributes")
        rank = len(x.shape)
        x2 = x if rank == 2 else op.Reshape(x, op.Constant(value_ints=[-1, attrs.in_features]))
        xt = op.Transpose(x2, perm=[1, 0])
        y = ops[attrs.op_type](xt, values, meta, k_index, k_offsets, row_index, bias, **attrs.to_onnx())
        if rank == 2:
            return y
        lead = op.Shape(x, start=0, end=rank - 1)
        return op.Reshape(y, op.Concat(lead, op.Constant(value_ints=[attrs.out_features]), axis=0))

    return tile_sparse_linear
