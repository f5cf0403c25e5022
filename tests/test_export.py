"""ONNX export: one custom node per sparse layer + a local function; ONNX Runtime runs the file as it is and
matches the PyTorch CPU reference on fresh inputs of other batch/sequence sizes."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from exporter import export_onnx
from exporter.onnx_export import check_model
from trt_plugins import fields

from .export_cases import DTYPES, MODELS, PATTERNS, REL_TOL, build, exported, fresh_input, rel_err

CASES = [(m, p, d) for m in MODELS for p in PATTERNS for d in DTYPES]


def run_ort(path, x: torch.Tensor) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


@pytest.mark.parametrize("model_name,pattern,dtype", CASES)
def test_onnxruntime_matches_pytorch(model_name, pattern, dtype, rng):
    path, model = exported(model_name, pattern, dtype)
    x = fresh_input(model_name, DTYPES[dtype], rng)
    with torch.no_grad():
        ref = model(x)
    got = run_ort(path, x)
    assert got.shape == tuple(ref.shape) and got.dtype == ref.numpy().dtype
    err = rel_err(got, ref)
    assert err <= REL_TOL[DTYPES[dtype]], f"{model_name}/{pattern}/{dtype}: max rel error {err:.2e}"


@pytest.mark.parametrize("model_name,pattern", [(m, p) for m in MODELS for p in PATTERNS])
def test_graph_structure(model_name, pattern):
    path, model = exported(model_name, pattern, "fp32")
    proto = onnx.load(str(path))
    check_model(path)   # full checker + strict shape inference through the local functions
    inits = {i.name for i in proto.graph.initializer}
    sparse = [n for n in proto.graph.node if n.domain == fields.DOMAIN]
    n_layers = sum(1 for m in model.modules() if type(m).__name__ == "SparseLinear")
    assert len(sparse) == n_layers
    op_type = {"hinm": "HiNMLinear", "hinm_permuted": "HiNMLinear", "nm": "HiNMLinear", "tvw": "TVWLinear",
               "tw": "TWLinear"}[pattern]
    assert {n.op_type for n in sparse} == {op_type}
    assert {(f.domain, f.name) for f in proto.functions} == {(fields.DOMAIN, op_type)}
    assert {o.domain: o.version for o in proto.opset_import}[fields.DOMAIN] == 1
    for node in sparse:
        assert len(node.input) == 7 and all(name in inits for name in node.input[1:])   # weights are initializers
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["plugin_version"] == b"1" and attrs["plugin_namespace"] == b"sparsetrt"
        fields.parse_attributes(node.op_type, {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()})
        assert all(a.type in (onnx.AttributeProto.INT, onnx.AttributeProto.STRING) for a in node.attribute)
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == (["batch", 128] if model_name == "mlp" else ["batch", "seq", 64])
    out_dims = [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert out_dims[0] == "batch" and proto.graph.output[0].name == "output"


def test_permuted_case_really_permutes():
    _, model = exported("mlp", "hinm_permuted", "fp32")
    fmt = model.fc1.format
    assert fmt.index_order == "free" and not torch.equal(fmt.row_index, torch.arange(fmt.shape[0], dtype=torch.int32))
    cols = fmt.tile_columns(0)
    assert bool((torch.diff(cols) < 0).any())


@pytest.mark.parametrize("model_name", list(MODELS))
def test_tvw_case_has_uneven_tiles_and_pruned_rows(model_name):
    _, model = exported(model_name, "tvw", "fp32")
    fmts = [m.format for m in model.modules() if type(m).__name__ == "SparseLinear"]
    assert any(f.num_tiles * f.tile_rows < f.shape[0] for f in fmts)     # bias-only output rows
    if model_name == "mlp":
        assert model.fc1.format.uniform_kept is None                     # tiles of different kept widths


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_fused_activation(activation, dtype, rng, tmp_path):
    model = build("mlp", "hinm").to(DTYPES[dtype])
    model.fc1.activation = activation      # the op applies it; the model's own GELU steps aside
    model.act = torch.nn.Identity()
    path = tmp_path / "act.onnx"
    export_onnx(model, torch.randn(2, 128).to(DTYPES[dtype]), path)
    node = next(n for n in onnx.load(str(path)).graph.node if n.domain == fields.DOMAIN)
    assert onnx.helper.get_attribute_value(next(a for a in node.attribute if a.name == "activation")) == \
        fields.ACTIVATIONS[activation]
    x = torch.randn(9, 128, generator=rng).to(DTYPES[dtype])
    with torch.no_grad():
        ref = model(x)
    assert rel_err(run_ort(path, x), ref) <= REL_TOL[DTYPES[dtype]]


def test_bias_less_layer_gets_zero_bias_and_model_is_restored(tmp_path, rng):
    model = build("mlp", "hinm")
    model.fc2.bias = None
    path = tmp_path / "nobias.onnx"
    export_onnx(model, torch.randn(2, 128), path)
    assert model.fc2.bias is None
    proto = onnx.load(str(path))
    node = [n for n in proto.graph.node if n.domain == fields.DOMAIN][1]
    bias = onnx.numpy_helper.to_array(next(i for i in proto.graph.initializer if i.name == node.input[6]))
    assert bias.shape == (64,) and not bias.any()
    x = torch.randn(4, 128, generator=rng)
    with torch.no_grad():
        assert rel_err(run_ort(path, x), model(x)) <= 1e-5


def test_batch_of_one_and_long_sequence(rng):
    path, model = exported("encoder", "hinm", "fp32")
    x = torch.randn(1, 33, 64, generator=rng)
    with torch.no_grad():
        assert rel_err(run_ort(path, x), model(x)) <= 1e-5
