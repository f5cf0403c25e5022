"""A real TensorRT ONNX parser accepts our files: TensorRT-RTX (no plugin support) parses every exported
model — so it inlines our local functions — and builds an engine with a dynamic-shape profile.  It runs
on this CPU-only machine; it cannot run engines or host plugins (../shared/REFERENCES.md §5)."""

import pytest

from exporter.cli import main
from trt_plugins.build import BuildError, build_engine

from .export_cases import DTYPES, MODELS, PATTERNS, exported

pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (pip install tensorrt-rtx-cu13)")

RANGES = {"batch": (1, 4, 16), "seq": (1, 32, 128)}


@pytest.mark.parametrize("model_name,pattern,dtype", [(m, p, d) for m in MODELS for p in PATTERNS for d in DTYPES])
def test_rtx_parses_inlines_and_builds(model_name, pattern, dtype):
    path, model = exported(model_name, pattern, dtype)
    result = build_engine(path, backend="tensorrt_rtx", plugins=False, ranges=RANGES)
    assert len(result.engine) > 10_000 and result.plugins == [] and result.plugin_impl == "none"
    assert not any(kind.startswith("PLUGIN") for kind in result.layers), result.layers
    n_sparse = sum(1 for m in model.modules() if type(m).__name__ == "SparseLinear")
    # every sparse node became its inlined body: one weight scatter and one matmul per layer (at least)
    assert result.layers.get("SCATTER", 0) >= 2 * n_sparse and result.layers.get("MATRIX_MULTIPLY", 0) >= n_sparse
    feat = 128 if model_name == "mlp" else 64
    expected = ((1, feat), (4, feat), (16, feat)) if model_name == "mlp" else ((1, 1, feat), (4, 32, feat), (16, 128, feat))
    assert result.profile == {"x": expected}


def test_rtx_refuses_plugins():
    path, _ = exported("mlp", "hinm", "fp16")
    with pytest.raises(BuildError, match="cannot host plugin layers"):
        build_engine(path, backend="tensorrt_rtx", plugins=True)


def test_cli_build_with_rtx(tmp_path, capsys):
    path, _ = exported("encoder", "tvw", "fp16")
    engine = tmp_path / "enc.engine"
    assert main(["build", str(path), "-o", str(engine), "--backend", "tensorrt_rtx", "--no-plugins",
                 "--batch", "1,2,8", "--seq", "1,16,64"]) == 0
    assert engine.stat().st_size > 10_000
    assert "tensorrt_rtx" in capsys.readouterr().out
