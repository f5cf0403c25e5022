"""`sparsetrt validate` through Polygraphy on the CPU: ONNX Runtime (local functions) vs our PyTorch runner,
per-dtype tolerances, a mismatch is caught, and the CLI's exit codes."""

import copy
import json

import pytest
import torch

from exporter.checkpoint import save_model
from exporter.cli import main
from trt_plugins import tensorrt_version
from trt_plugins.validate import TOLERANCES, TorchRunner, concrete_shapes, input_metadata, validate

from .export_cases import DTYPES, MODELS, PATTERNS, build, exported

MLP_SPEC = {"zoo": "mlp", "kwargs": {"d_in": 128, "hidden": 96, "d_out": 64}}


@pytest.mark.parametrize("model_name,pattern,dtype", [(m, p, d) for m in MODELS for p in PATTERNS for d in DTYPES])
def test_polygraphy_onnxrt_vs_pytorch_cpu(model_name, pattern, dtype):
    path, model = exported(model_name, pattern, dtype)
    report = validate(path, model, runners=["onnxrt", "torch"], device="cpu", batch=3, seq=7, iterations=2, seed=11)
    assert report.passed, report.rows
    assert report.runners == ["onnxrt", "torch"] and len(report.rows) == 2
    assert report.shapes == {"x": (3, 128) if model_name == "mlp" else (3, 7, 64)}
    atol, rtol = TOLERANCES[str(DTYPES[dtype]).removeprefix("torch.")]
    assert all(r.atol == atol and r.rtol == rtol and r.runner == "torch-cpu" for r in report.rows)


def test_mismatch_is_reported():
    path, model = exported("mlp", "hinm", "fp32")
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.fc2.values[:8] += 0.5
    report = validate(path, broken, runners=["onnxrt", "torch"], device="cpu")
    assert not report.passed and not any(r.passed for r in report.rows)
    assert max(r.max_abs for r in report.rows) > 1e-2


def test_torch_runner_speaks_polygraphy():
    import onnx

    path, model = exported("encoder", "hinm", "fp32")
    proto = onnx.load(str(path))
    meta = input_metadata(proto)
    assert list(meta.keys()) == ["x"] and list(meta["x"].shape) == [None, None, 64]
    assert concrete_shapes(proto, 4, 9) == {"x": (4, 9, 64)}
    with TorchRunner(model, meta, ["output"], "cpu") as runner:
        x = torch.randn(4, 9, 64)
        out = runner.infer({"x": x.numpy()})
    with torch.no_grad():
        assert torch.equal(torch.from_numpy(out["output"]), model(x))


# ---- CLI --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    ckpt, onnx_path = root / "mlp.safetensors", root / "mlp.fp16.onnx"
    args = ["--model", "mlp", "--model-args", json.dumps(MLP_SPEC["kwargs"]), "--pattern", "tvw:tile=32",
            "--sparsity", "0.7", "-q"]
    assert main(["prune", *args, "-o", str(ckpt)]) == 0
    assert main(["export", str(ckpt), "--dtype", "fp16", "-o", str(onnx_path), "-q"]) == 0
    return root, ckpt, onnx_path


def test_cli_prune_export_validate(cli_files, capsys):
    root, _, onnx_path = cli_files
    report = root / "report.json"
    code = main(["validate", str(onnx_path), "--batch", "4", "--seq", "3", "--report-json", str(report)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PASS" in out and "onnxrt" in out and "torch-cpu" in out
    data = json.loads(report.read_text())
    assert data["passed"] and data["dtype"] == "float16" and data["shapes"] == {"x": [4, 128]}


def test_cli_mismatch_exit_1(cli_files, tmp_path, capsys):
    root, ckpt, onnx_path = cli_files
    from exporter.checkpoint import load_model

    model, _ = load_model(ckpt)
    with torch.no_grad():
        model.fc1.values.mul_(1.5)
    bad = tmp_path / "bad.safetensors"
    save_model(model, bad, MLP_SPEC)
    assert main(["validate", str(onnx_path), "--checkpoint", str(bad), "-q"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_cli_without_a_reference_model_exit_2(tmp_path, capsys):
    import onnx

    path, _ = exported("mlp", "hinm", "fp32")
    proto = onnx.load(str(path))           # exported by the API: no checkpoint recorded
    assert not any(p.key == "sparsetrt.checkpoint" for p in proto.metadata_props)
    assert main(["validate", str(path), "--runners", "onnxrt"]) == 2
    assert "nothing to compare" in capsys.readouterr().err


@pytest.mark.skipif(tensorrt_version() is not None, reason="TensorRT is installed here")
def test_cli_missing_tensorrt_exit_3(cli_files, capsys):
    _, _, onnx_path = cli_files
    assert main(["build", str(onnx_path)]) == 3
    assert "tensorrt is not installed" in capsys.readouterr().err
    assert main(["validate", str(onnx_path), "--runners", "onnxrt,tensorrt"]) == 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cli_cuda_without_gpu_exit_3(cli_files):
    _, _, onnx_path = cli_files
    assert main(["validate", str(onnx_path), "--device", "cuda", "-q"]) == 3


def test_cli_help_has_examples(capsys):
    for command in ("export", "build", "validate"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "examples:" in capsys.readouterr().out


def test_export_records_source_and_dtype(cli_files):
    import onnx

    _, ckpt, onnx_path = cli_files
    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert meta["sparsetrt.checkpoint"] == str(ckpt.resolve()) and meta["sparsetrt.dtype"] == "float16"
    layers = json.loads(meta["sparsetrt.layers"])
    assert {v["op"] for v in layers.values()} == {"TVWLinear"}


def test_build_model_matches_cli_export():
    assert build("mlp", "hinm").fc1.in_features == MLP_SPEC["kwargs"]["d_in"]
