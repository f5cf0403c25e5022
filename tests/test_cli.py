"""The `sparsetrt` command line: prune writes a checkpoint that reloads into the same function."""

import json

import pytest
import torch

from exporter import SparseLinear
from exporter.checkpoint import load_model
from exporter.cli import main


def test_prune_writes_loadable_checkpoint(tmp_path):
    out = tmp_path / "mlp.safetensors"
    report = tmp_path / "report.json"
    assert main(["prune", "--model", "mlp", "--pattern", "hinm:vector=64", "--sparsity", "0.75", "-o", str(out),
                 "--report-json", str(report), "-q"]) == 0
    model, spec = load_model(out)
    assert spec["zoo"] == "mlp" and isinstance(model.fc1, SparseLinear)
    assert abs(json.loads(report.read_text())["achieved"] - 0.75) < 0.02
    assert model(torch.randn(3, 256)).shape == (3, 128)


def test_prune_config_file(tmp_path):
    cfg = tmp_path / "prune.yaml"
    cfg.write_text("model: encoder\nmodel_args: {d_model: 64, ffn: 128, heads: 2, layers: 1}\npattern: tvw:tile=32\n"
                   "sparsity: 0.8\nexclude: ['*.o']\n")
    out = tmp_path / "enc.safetensors"
    assert main(["prune", "--config", str(cfg), "-o", str(out), "-q"]) == 0
    model, _ = load_model(out)
    assert isinstance(model.blocks[0].q, SparseLinear) and not isinstance(model.blocks[0].o, SparseLinear)
    cfg.write_text(cfg.read_text() + "fuse_siblings: true\n")
    assert main(["prune", "--config", str(cfg), "-o", str(out), "-q"]) == 0
    assert "fused" in load_model(out)[1]
    assert main(["prune", "--config", str(cfg), "--no-fuse-siblings", "-o", str(out), "-q"]) == 0   # the CLI wins
    assert "fused" not in load_model(out)[1]
    cfg.write_text(cfg.read_text().replace("fuse_siblings: true", "fuse_siblings: sometimes"))
    assert main(["prune", "--config", str(cfg), "-o", str(out), "-q"]) == 2


def test_prune_fuse_siblings_checkpoint_reloads_fused_and_exports(tmp_path):
    """--fuse-siblings: q, k, v pruned as one layer; the checkpoint reloads into the fused structure, computes what
    the original unfused model computes with the same kept weights, and exports one custom node for q, k and v."""
    onnx = pytest.importorskip("onnx")
    from exporter import zoo

    args = {"d_model": 64, "ffn": 128, "heads": 2, "layers": 1}
    out = tmp_path / "enc.safetensors"
    assert main(["prune", "--model", "encoder", "--model-args", json.dumps(args), "--pattern", "hinm:vector=64",
                 "--fuse-siblings", "-o", str(out), "-q"]) == 0
    model, spec = load_model(out)
    assert spec["fused"] == {"blocks.0.q_k_v.linear": ["blocks.0.q", "blocks.0.k", "blocks.0.v"]}
    fused = model.blocks[0].q_k_v.linear
    assert isinstance(fused, SparseLinear) and fused.format.shape == (192, 64)
    torch.manual_seed(0)                                          # the CLI's default seed: the original weights
    ref = zoo.build("encoder", **args).eval()
    mask = fused.format.mask()
    with torch.no_grad():
        for i, member in enumerate("qkv"):
            getattr(ref.blocks[0], member).weight.mul_(mask[64 * i:64 * (i + 1)].float())
        for name in ("o", "fc1", "fc2"):
            getattr(ref.blocks[0], name).weight.mul_(getattr(model.blocks[0], name).format.mask().float())
        x = torch.randn(2, 5, 64)
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)
    onnx_path = tmp_path / "enc.onnx"
    assert main(["export", str(out), "-o", str(onnx_path), "-q"]) == 0
    nodes = [n for n in onnx.load(str(onnx_path)).graph.node if n.domain not in ("", "ai.onnx")]
    assert len(nodes) == 4


def test_prune_with_gyro_reloads_to_the_in_process_model(tmp_path, capsys):
    """--permute gyro: the checkpoint holds the permuted layers (row_index / absorbed kept indices) and reloads into
    exactly the model that sparsify(..., permutation=Gyro(seed)) builds in process; the report shows the search."""
    from exporter import sparsify, zoo
    from exporter.permute import Gyro

    args = {"d_model": 128, "ffn": 256, "heads": 2, "layers": 1}
    out, report = tmp_path / "enc.safetensors", tmp_path / "report.json"
    assert main(["prune", "--model", "encoder", "--model-args", json.dumps(args), "--pattern", "hinm:vector=64",
                 "--permute", "gyro", "--permute-budget", "60", "--seed", "3", "-o", str(out),
                 "--report-json", str(report)]) == 0
    assert "gap to unstructured closed" in capsys.readouterr().out
    permutation = json.loads(report.read_text())["permutation"]
    assert permutation["method"] == "gyro" and permutation["retained"] >= permutation["no_perm"]
    model, spec = load_model(out)
    assert spec["permute"] == "gyro"
    torch.manual_seed(3)
    ref = zoo.build("encoder", **args).eval()
    sparsify(ref, "hinm:vector=64", 0.75, permutation=Gyro(seed=3, time_budget_s=60.0), progress=False)
    x = torch.randn(2, 7, 128)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)


def test_prune_bad_permute_options(tmp_path, capsys):
    cfg = tmp_path / "prune.toml"
    cfg.write_text('permute = "simulated_annealing"\n')
    assert main(["prune", "--config", str(cfg), "-q", "-o", str(tmp_path / "x")]) == 2
    assert "permute: expected one of ['none', 'gyro', 'channel_swap', 'random']" in capsys.readouterr().err
    cfg.write_text('permute = "gyro"\npermute_budget_s = -1\n')
    assert main(["prune", "--config", str(cfg), "-q", "-o", str(tmp_path / "x")]) == 2
    assert "permute_budget_s: expected a positive number of seconds, got -1" in capsys.readouterr().err


def test_fused_checkpoint_with_bad_groups_is_a_clear_error(tmp_path):
    from exporter import checkpoint
    from exporter.formats import FormatError

    out = tmp_path / "enc.safetensors"
    assert main(["prune", "--model", "encoder", "--model-args", '{"d_model": 64, "ffn": 128, "heads": 2, "layers": 1}',
                 "--pattern", "hinm:vector=64", "--fuse-siblings", "-o", str(out), "-q"]) == 0
    model, spec = load_model(out)
    spec["fused"] = {"blocks.0.q_k_v.linear": ["blocks.0.q", "blocks.0.nope"]}
    bad = tmp_path / "bad.safetensors"
    checkpoint.save_model(model, bad, spec)
    with pytest.raises(FormatError, match="cannot fuse the saved sibling groups again"):
        load_model(bad)


def test_prune_bad_input_exit_code(tmp_path, capsys):
    assert main(["prune", "--pattern", "hinm:vector=48", "-q", "-o", str(tmp_path / "x")]) == 2
    assert "layer 'fc1'" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("modle: mlp\n")
    assert main(["prune", "--config", str(bad), "-q"]) == 2
    assert "unknown key(s) ['modle']" in capsys.readouterr().err


def test_report_and_cpu_bench(tmp_path, capsys):
    ckpt = tmp_path / "mlp.safetensors"
    assert main(["prune", "--model", "mlp", "--pattern", "tvw:tile=64", "--sparsity", "0.75", "-o", str(ckpt), "-q"]) == 0
    report = tmp_path / "report.json"
    assert main(["report", str(ckpt), "--json", str(report)]) == 0
    info = json.loads(report.read_text())
    assert set(info["layers"]) == {"fc1", "fc2"}
    assert all(0 < v["compressed_bytes"] < v["dense_bytes"] for v in info["layers"].values())
    bench = tmp_path / "bench.json"
    assert main(["bench", str(ckpt), "--device", "cpu", "--batch", "3", "--reps", "2", "--warmup", "1",
                 "--json", str(bench)]) == 0
    result = json.loads(bench.read_text())
    assert result["rel_diff"] < 1e-5, "the sparse model must compute what its dense twin computes"
    assert set(result["ms"]) == {"dense (nn.Linear)", "sparse (SparseLinear)"}


def test_demo_quick(tmp_path):
    """The README's main command, reduced: train, prune (HiNM + gyro), fine-tune, export, validate."""
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--no-bench", "-q", "--out", str(out)]) == 0
    summary = json.loads(next(out.glob("*.json")).read_text())
    assert summary["reload_matches"] and summary["export"]["validate_passed"]
    assert abs(summary["achieved"] - 0.75) < 0.02
    assert summary["final_acc"] == summary["masked_acc"], "SparseLinear must compute what the masked model computes"
