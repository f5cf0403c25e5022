"""Plugin logic without TensorRT: attributes, shapes, types/formats, launch and AOT arguments, profiles,
and what happens when TensorRT is missing.  TensorRT-only tests carry @pytest.mark.tensorrt."""

import subprocess
import sys

import onnx
import pytest

import trt_plugins
from trt_plugins import fields, launch, plugin_runtime
from trt_plugins.build import BuildError, plugin_plan, profile_shapes
from trt_plugins.fields import FieldError

from .export_cases import exported

HINM = fields.make_attrs("HiNMLinear", out_features=256, in_features=320, tile_rows=64, num_tiles=4, activation="gelu")
TVW = fields.make_attrs("TVWLinear", out_features=512, in_features=256, tile_rows=128, num_tiles=2, activation="none")
TW = fields.make_attrs("TWLinear", out_features=96, in_features=64, tile_rows=32, num_tiles=3, activation="relu")


def shapes_for(attrs, m, kept_total):
    width = 2 if attrs.spec.two_four else 1
    return [(attrs.in_features, m), (attrs.tile_rows * kept_total // width,),
            (attrs.tile_rows * kept_total // 32 if attrs.spec.two_four else 0,), (kept_total,),
            (attrs.num_tiles + 1,), (attrs.out_features,), (attrs.out_features,)]


def test_import_needs_no_tensorrt_or_pycuda():
    code = ("import sys, trt_plugins, trt_plugins.fields, trt_plugins.plugin_runtime, trt_plugins.build, "
            "trt_plugins.validate; bad = [m for m in ('tensorrt', 'pycuda', 'tensorrt_rtx') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_register_without_tensorrt_is_a_clear_error():
    if trt_plugins.tensorrt_version() is not None:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(trt_plugins.TensorRTUnavailable, match="TensorRT is not installed"):
        trt_plugins.register()


def test_activation_codes_match_the_launch_layer():
    assert fields.ACTIVATIONS == launch.ACTIVATIONS


def test_onnx_attributes_round_trip():
    attrs = HINM.to_onnx()
    assert attrs == {"out_features": 256, "in_features": 320, "tile_rows": 64, "num_tiles": 4, "activation": 2,
                     "vector": 64, "plugin_version": "1", "plugin_namespace": "sparsetrt"}
    assert fields.parse_attributes("HiNMLinear", attrs) == HINM
    assert TVW.to_onnx()["tile"] == 128 and TW.to_onnx()["tile"] == 32
    assert HINM.activation_name == "gelu" and HINM.spec.plugin_id == "sparsetrt::HiNMLinear"
    # TensorRT hands STRING fields over as bytes; the parser's defaults apply when they are absent
    raw = {k: v for k, v in attrs.items() if not k.startswith("plugin_")}
    assert fields.parse_attributes("HiNMLinear", {**raw, "plugin_namespace": b"sparsetrt"}) == HINM
    assert fields.parse_attributes("HiNMLinear", raw) == HINM


@pytest.mark.parametrize("change,message", [
    ({"activation": True}, "'activation' must be an integer"),
    ({"tile_rows": 24, "vector": 24}, "'tile_rows' = 24 must be a positive multiple of 16"),
    ({"num_tiles": 0}, "'num_tiles' = 0"),
    ({"out_features": -1}, "'out_features' = -1 is outside"),
    ({"vector": 128}, "'vector' = 128 must equal tile_rows = 64"),
])
def test_bad_attributes(change, message):
    with pytest.raises(FieldError, match=message):
        fields.parse_attributes("HiNMLinear", {**HINM.to_onnx(), **change}, where="node 'x'")


def test_unknown_op_and_activation():
    with pytest.raises(FieldError, match="not a sparsetrt op"):
        fields.op_spec("BlockLinear")
    with pytest.raises(FieldError, match="activation 'swish'"):
        fields.make_attrs("TVWLinear", out_features=64, in_features=64, tile_rows=32, num_tiles=1, activation="swish")


def test_output_shape_is_generic():
    assert fields.output_shape((320, 37), HINM) == (37, 256)

    class Sym:   # stands in for a TensorRT shape expression
        pass

    m = Sym()
    assert fields.output_shape((320, m), HINM)[0] is m


def test_input_shapes():
    good = shapes_for(HINM, 37, 4 * 96)
    fields.check_input_shapes(good, HINM)
    bad = list(good)
    bad[2] = (good[2][0] - 1,)
    with pytest.raises(FieldError, match=r"input 'meta' has \d+ elements, expected \d+"):
        fields.check_input_shapes(bad, HINM)
    with pytest.raises(FieldError, match="'xt' has K = 321 rows, attribute in_features = 320"):
        fields.check_input_shapes([(321, 37), *good[1:]], HINM)
    with pytest.raises(FieldError, match="'xt' must be 2-D"):
        fields.check_input_shapes([(320, 3, 37), *good[1:]], HINM)
    with pytest.raises(FieldError, match="expected 7 inputs"):
        fields.check_input_shapes(good[:6], HINM)
    tw = shapes_for(TW, 5, 3 * 32)
    fields.check_input_shapes(tw, TW)
    assert tw[2] == (0,)    # dense tiles carry no metadata


def test_types_and_formats():
    ok = ["float16", "float16", "int32", "int32", "int32", "int32", "float16", "float16"]
    fields.check_types(ok, HINM)
    fields.check_types([d.replace("float16", "bfloat16") for d in ok], HINM)
    fp32 = [d.replace("float16", "float32") for d in ok]
    with pytest.raises(FieldError, match="activation type float32 is not supported by the plugin.*without the plugins"):
        fields.check_types(fp32, HINM)
    fields.check_types(fp32, HINM, for_kernel=False)   # the reference function takes fp32
    with pytest.raises(FieldError, match="input 'meta' must be int32, got int64"):
        fields.check_types(ok[:2] + ["int64"] + ok[3:], HINM)
    with pytest.raises(FieldError, match="'bias' is bfloat16 but the activation 'xt' is float16"):
        fields.check_types(ok[:6] + ["bfloat16", "float16"], HINM)
    assert fields.supports_combination(ok, ["LINEAR"] * 8, HINM)
    assert not fields.supports_combination(ok, ["LINEAR"] * 7 + ["HWC"], HINM)
    assert not fields.supports_combination(fp32, ["LINEAR"] * 8, HINM)
    assert fields.AUTOTUNE_TYPES.count(",") == 7


def test_problem_from_enqueue_shapes():
    dtypes = ["bfloat16", "bfloat16", "int32", "int32", "int32", "int32", "bfloat16", "bfloat16"]
    p = fields.problem(shapes_for(HINM, 37, 4 * 96), dtypes, HINM)
    assert p == fields.Problem(M=37, K=320, N=256, ldx=37, tile_rows=64, num_tiles=4, dtype="bfloat16", activation="gelu")
    wrong_tiles = shapes_for(HINM, 37, 4 * 96)
    wrong_tiles[4] = (4,)
    with pytest.raises(FieldError, match="input 'k_offsets' has 4 elements, expected 5"):
        fields.problem(wrong_tiles, dtypes, HINM)


def test_kernel_problem_checks():
    fields.check_kernel_problem(HINM, "float16")
    with pytest.raises(FieldError, match="no plugin"):
        fields.check_kernel_problem(TW, "float16")
    with pytest.raises(FieldError, match="tile_rows = 48; the kernels need a multiple of 32"):
        fields.check_kernel_problem(fields.make_attrs("HiNMLinear", out_features=96, in_features=64, tile_rows=48,
                                                      num_tiles=2, activation="none"), "float16")
    with pytest.raises(FieldError, match="float32"):
        fields.check_kernel_problem(HINM, "float32")


def test_runtime_rejects_bad_calls_before_touching_the_gpu():
    shapes = shapes_for(HINM, 37, 4 * 96)
    dtypes = ["float16", "float16", "int32", "int32", "int32", "int32", "float16"]
    inputs = [plugin_runtime.DeviceTensor(0x1000 * (i + 1), s, d) for i, (s, d) in enumerate(zip(shapes, dtypes, strict=True))]
    with pytest.raises(FieldError, match=r"output 'y' has shape \(36, 256\), expected \(37, 256\)"):
        plugin_runtime.enqueue(inputs, plugin_runtime.DeviceTensor(0x9000, (36, 256), "float16"), HINM, stream=0)
    with pytest.raises(FieldError, match="'y' is float32"):
        plugin_runtime.enqueue(inputs, plugin_runtime.DeviceTensor(0x9000, (37, 256), "float32"), HINM, stream=0)


@pytest.mark.parametrize("attrs", [HINM, TVW, fields.make_attrs("TVWLinear", out_features=1024, in_features=768,
                                                                 tile_rows=128, num_tiles=5, activation="relu")])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_aot_grid_is_linear_in_token_tiles(attrs, dtype):
    ctas, tokens = fields.ctas_per_token_tile(attrs, dtype, launch.plan)
    for m in (1, tokens - 1, tokens, tokens + 1, 5 * tokens + 3, 10_000):
        expected = launch.plan(m, attrs.in_features, attrs.out_features, attrs.tile_rows, attrs.num_tiles, dtype,
                               attrs.activation_name).grid[0]
        assert -(-m // tokens) * ctas == expected, m


def test_aot_scalar_args():
    assert fields.aot_scalar_args((320, 37), HINM) == [37, 37, 320, 256, 4, 64, 1]


def test_ptx_entry_parsing_on_our_ptx():
    entries = fields.ptx_entries(launch.ptx_path().read_text())
    name = launch.plan(64, 320, 256, 64, 4, "float16", "none").kernel_name
    assert entries[name] == ("u64",) * 8 + ("u32",) * 7     # JIT/torch order: inputs, y, scalars
    with pytest.raises(FieldError, match="has parameters"):
        fields.check_aot_entry(f".visible .entry {name}_aot(\n .param .u64 a,\n .param .u32 b\n)", name + "_aot")


def test_ptx_has_entries_in_tensorrts_aot_order():
    """TensorRT's AOT launch passes (inputs, int scalars, outputs); the kernels need entries in that order."""
    ptx = launch.ptx_path().read_text()
    names = [launch.kernel_name(d, bm, a) for d in launch.DTYPES for bm in launch.CTA_ROWS for a in launch.ACTIVATIONS]
    missing = [fields.aot_kernel_name(n) for n in names if fields.aot_kernel_name(n) not in fields.ptx_entries(ptx)]
    if len(missing) == len(names):
        pytest.skip("cuda/kernels.cu has no AOT-order entry points yet (<name>_aot); the plugin builds with its "
                    "JIT implementation until then — see trt_plugins/README.md")
    assert not missing
    for n in names:
        fields.check_aot_entry(ptx, fields.aot_kernel_name(n))


# ---- build logic without TensorRT ---------------------------------------------------------------------
def test_profile_shapes_from_onnx_dims():
    path, _ = exported("encoder", "hinm", "fp16")
    model = onnx.load(str(path))
    assert profile_shapes(model) == {"x": ((1, 1, 64), (8, 128, 64), (32, 512, 64))}
    assert profile_shapes(model, {"seq": (3, 5, 7)})["x"] == ((1, 3, 64), (8, 5, 64), (32, 7, 64))
    with pytest.raises(ValueError, match="MIN <= OPT <= MAX"):
        profile_shapes(model, {"batch": (4, 2, 8)})


def test_plugin_plan():
    fp16, _ = exported("encoder", "hinm", "fp16")
    assert len(plugin_plan(onnx.load(str(fp16)), plugins=True)) == 6
    fp32, _ = exported("encoder", "hinm", "fp32")
    with pytest.raises(BuildError, match="float32.*--no-plugins"):
        plugin_plan(onnx.load(str(fp32)), plugins=True)
    assert plugin_plan(onnx.load(str(fp32)), plugins=False) == []
    tw, _ = exported("mlp", "tw", "fp16")
    assert plugin_plan(onnx.load(str(tw)), plugins=True) == []   # TW: the local function runs


# ---- TensorRT (skipped here) ------------------------------------------------------------------------------
@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_builds_with_our_plugins(tmp_path):
    from trt_plugins.build import build_engine

    path, _ = exported("encoder", "hinm", "fp16")
    result = build_engine(path, tmp_path / "enc.engine", plugins=True, plugin_impl="jit")
    assert result.plugins == ["sparsetrt::HiNMLinear", "sparsetrt::TVWLinear"]
    assert result.layers.get("PLUGIN_V3", 0) == 6
