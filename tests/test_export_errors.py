"""Bad input: a layer the export cannot carry, an ONNX file with a missing or corrupted initializer, wrong
or missing attributes.  Each gives a clear error naming the layer/node, the tensor or the attribute."""

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from exporter import ExportError, export_onnx
from exporter.cli import main
from exporter.onnx_inspect import OnnxModelError, sparse_nodes

from .export_cases import build, exported


# ---- export ---------------------------------------------------------------------------------------------
def test_unknown_activation_is_not_exportable(tmp_path):
    model = build("mlp", "hinm")
    model.fc1.activation = "swish"
    with pytest.raises(ExportError, match=r"layer 'fc1': activation 'swish'"):
        export_onnx(model, torch.randn(2, 128), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_feature_major_layouts_are_not_exportable(tmp_path):
    class Chain(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner.fc1(x, y_feature_major=True)

    model = Chain(build("mlp", "hinm"))
    with pytest.raises(ExportError, match=r"x_feature_major / y_feature_major.*default token-major"):
        export_onnx(model, torch.randn(2, 128), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_mixed_dtypes_are_not_exportable(tmp_path):
    model = build("mlp", "hinm")
    model.fc2.values = model.fc2.values.half()
    with pytest.raises(ExportError, match=r"layer 'fc2': .*float16.*input is float32"):
        export_onnx(model, torch.randn(2, 128), tmp_path / "m.onnx")


def test_inconsistent_layer_is_not_exportable(tmp_path):
    model = build("mlp", "hinm")
    model.fc1.k_index[3] = 1000          # outside K = 128
    with pytest.raises(ExportError, match=r"layer 'fc1'.*k_index.*out of range"):
        export_onnx(model, torch.randn(2, 128), tmp_path / "m.onnx")


def test_model_without_sparse_layers(tmp_path):
    with pytest.raises(ExportError, match="no SparseLinear"):
        export_onnx(torch.nn.Linear(4, 4), torch.randn(2, 4), tmp_path / "m.onnx")


def test_int32_overflow_is_refused():
    from trt_plugins.fields import FieldError, make_attrs

    with pytest.raises(FieldError, match="overflows the int32"):
        make_attrs("HiNMLinear", out_features=65536, in_features=65536, tile_rows=64, num_tiles=1, activation="none")


# ---- corrupted files ------------------------------------------------------------------------------------
def _load():
    path, _ = exported("mlp", "hinm", "fp32")
    return onnx.load(str(path))


def _first_sparse(proto):
    return next(n for n in proto.graph.node if n.domain == "sparsetrt")


def _initializer(proto, name):
    return next(i for i in proto.graph.initializer if i.name == name)


def _replace(proto, name, array):
    init = _initializer(proto, name)
    init.CopyFrom(numpy_helper.from_array(array, name))


def test_clean_file_passes_inspection():
    nodes = sparse_nodes(_load())
    assert [n.attrs.op_type for n in nodes] == ["HiNMLinear", "HiNMLinear"]
    assert nodes[0].weight.shape == (96, 128)


def test_missing_initializer():
    proto = _load()
    node = _first_sparse(proto)
    proto.graph.initializer.remove(_initializer(proto, node.input[2]))
    with pytest.raises(OnnxModelError, match=rf"node '{node.name}'.*input 'meta' \('{node.input[2]}'\) is not an initializer"):
        sparse_nodes(proto)


def test_meta_word_that_keeps_three_of_four():
    proto = _load()
    node = _first_sparse(proto)
    meta = numpy_helper.to_array(_initializer(proto, node.input[2])).copy()
    meta[5] = 0x0B   # nibble 0xB = (p0 3, p1 2): not two ascending positions of 4
    _replace(proto, node.input[2], meta)
    with pytest.raises(OnnxModelError, match=r"tensor 'meta': word 5 .*exactly 2 distinct positions"):
        sparse_nodes(proto)


def test_k_index_out_of_range():
    proto = _load()
    node = _first_sparse(proto)
    k_index = numpy_helper.to_array(_initializer(proto, node.input[3])).copy()
    k_index[0] = 128 + 7
    _replace(proto, node.input[3], k_index)
    with pytest.raises(OnnxModelError, match=r"tensor 'k_index': tile 0: input column out of range \[0, 128\)"):
        sparse_nodes(proto)


def test_truncated_values():
    proto = _load()
    node = _first_sparse(proto)
    values = numpy_helper.to_array(_initializer(proto, node.input[1]))
    _replace(proto, node.input[1], values[:-3].copy())
    with pytest.raises(OnnxModelError, match=r"tensor 'values': holds \d+ values, expected \d+"):
        sparse_nodes(proto)


def test_row_index_not_a_permutation():
    proto = _load()
    node = _first_sparse(proto)
    rows = numpy_helper.to_array(_initializer(proto, node.input[5])).copy()
    rows[1] = rows[0]
    _replace(proto, node.input[5], rows)
    with pytest.raises(OnnxModelError, match=r"tensor 'row_index': an output feature is written more than once"):
        sparse_nodes(proto)


def test_wrongly_typed_initializer():
    proto = _load()
    node = _first_sparse(proto)
    k_index = numpy_helper.to_array(_initializer(proto, node.input[3])).astype(np.int64)
    _replace(proto, node.input[3], k_index)
    with pytest.raises(OnnxModelError, match=r"input 'k_index' must be int32, got int64"):
        sparse_nodes(proto)


# ---- attributes -----------------------------------------------------------------------------------------
def _set_attr(node, name, value):
    for a in list(node.attribute):
        if a.name == name:
            node.attribute.remove(a)
    if value is not None:
        node.attribute.append(onnx.helper.make_attribute(name, value))


@pytest.mark.parametrize("name,value,message", [
    ("tile_rows", None, r"attribute 'tile_rows' is missing"),
    ("out_features", 128, r"tensor 'row_index': holds 96 entries, expected N = 128"),
    ("vector", 64, r"attribute 'vector' = 64 must equal tile_rows = 32"),
    ("activation", 9, r"attribute 'activation' = 9 is not one of"),
    ("num_tiles", 7, r"attribute 'num_tiles' = 7"),
    ("plugin_namespace", "other", r"attribute 'plugin_namespace' is 'other'"),
    ("plugin_version", "2", r"attribute 'plugin_version' is '2'"),
    ("in_features", 2**31, r"attribute 'in_features' = 2147483648 is outside"),
    ("tile_rows", 1.5, r"attribute 'tile_rows' must be an integer"),
])
def test_wrong_attributes(name, value, message):
    proto = _load()
    node = _first_sparse(proto)
    _set_attr(node, name, value)
    with pytest.raises(OnnxModelError, match=message):
        sparse_nodes(proto)


def test_unknown_sparsetrt_op():
    proto = _load()
    _first_sparse(proto).op_type = "BlockLinear"
    with pytest.raises(OnnxModelError, match=r"op 'BlockLinear' is not a sparsetrt op"):
        sparse_nodes(proto)


def test_missing_local_function():
    proto = _load()
    del proto.functions[:]
    with pytest.raises(OnnxModelError, match=r"no local function sparsetrt::HiNMLinear"):
        sparse_nodes(proto)


def test_cli_rejects_corrupted_file_with_exit_2(tmp_path, capsys):
    proto = _load()
    node = _first_sparse(proto)
    k_index = numpy_helper.to_array(_initializer(proto, node.input[3])).copy()
    k_index[0] = -1
    _replace(proto, node.input[3], k_index)
    path = tmp_path / "bad.onnx"
    onnx.save(proto, str(path))
    assert main(["validate", str(path)]) == 2
    assert "k_index" in capsys.readouterr().err
    assert main(["build", str(path), "--backend", "tensorrt_rtx", "--no-plugins"]) in (2, 3)   # 3: no TensorRT-RTX


def test_cli_missing_file_exit_2(tmp_path):
    assert main(["validate", str(tmp_path / "nope.onnx")]) == 2
