"""Sibling fusion (exporter.siblings): q, k, v into one layer computes the same function, dense, pruned and permuted."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from exporter import sparsify
from exporter.patterns import TVW, HiNM, PatternError
from exporter.permute import Gyro, permute_model
from exporter.siblings import LinearGroup, LinearSlice, fuse_siblings, sibling_groups
from exporter.zoo import MLP, Encoder

QKV = [[f"blocks.{i}.{p}" for p in "qkv"] for i in range(2)]


def linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if type(m) is nn.Linear]


def unfused_masked_reference(original: nn.Module, results, fused: dict[str, list[str]]) -> nn.Module:
    """The original (unfused, unpermuted) model with the same kept weights: a fused layer's mask rows go back to
    its members in order."""
    ref = copy.deepcopy(original)
    for r in results:
        members = fused.get(r.name, [r.name])
        row = 0
        for m in members:
            w = ref.get_submodule(m).weight
            with torch.no_grad():
                w.mul_(r.mask[row:row + w.shape[0]].to(w.dtype))
            row += w.shape[0]
        assert row == r.mask.shape[0]
    return ref


@pytest.mark.parametrize("traced_by", ["fx", "export"])
def test_auto_groups_are_qkv_and_fusion_keeps_the_function(traced_by):
    torch.manual_seed(0)
    model = Encoder(d_model=64, heads=2, ffn=128, layers=2).eval()
    x = torch.randn(3, 5, 64)                                   # odd batch and sequence
    example = (x,) if traced_by == "export" else None
    assert sibling_groups(model, linear_names(model), example) == QKV
    original = copy.deepcopy(model)
    fused = fuse_siblings(model, example_inputs=example)
    assert fused == {f"blocks.{i}.q_k_v.linear": QKV[i] for i in range(2)}
    assert isinstance(model.blocks[0].q, LinearSlice) and isinstance(model.blocks[0].q_k_v, LinearGroup)
    assert model.blocks[0].q_k_v.linear.weight.shape == (192, 64)
    # every weight once in the state dict, under the group
    keys = list(model.state_dict())
    assert "blocks.0.q_k_v.linear.weight" in keys and not any(k.startswith("blocks.0.q.") for k in keys)
    with torch.no_grad():
        torch.testing.assert_close(model(x), original(x), rtol=1e-5, atol=1e-5)
        x2 = torch.randn(1, 9, 64, dtype=torch.float64)
        torch.testing.assert_close(model.double()(x2), original.double()(x2), rtol=1e-12, atol=1e-12)


def test_members_called_with_different_or_modified_inputs_recompute():
    torch.manual_seed(1)
    q, k = nn.Linear(16, 8), nn.Linear(16, 4, bias=False)
    parent = nn.Module()
    parent.q, parent.k = copy.deepcopy(q), copy.deepcopy(k)
    fuse_siblings(parent, [["q", "k"]])
    a, b = torch.randn(5, 16), torch.randn(5, 16)
    with torch.no_grad():
        torch.testing.assert_close(parent.q(a), q(a))
        torch.testing.assert_close(parent.k(b), k(b))           # another input: not the cached result
        torch.testing.assert_close(parent.q(a), q(a))
        a.mul_(2)                                                # in place: the version changed
        torch.testing.assert_close(parent.k(a), k(a))
        assert parent.q_k._cache is not None                     # q has not taken its slice of this input yet
        torch.testing.assert_close(parent.q(a), q(a))
        assert parent.q_k._cache is None                         # every member served: the cache is dropped
    assert torch.equal(parent.q_k.linear.bias[8:], torch.zeros(4))   # k has no bias: zeros


def test_sparsify_fused_hinm_and_tvw_keep_members_sparsity():
    torch.manual_seed(2)
    for pattern in (HiNM(64), TVW(tile=64)):
        model = Encoder(d_model=128, heads=4, ffn=256, layers=2).eval()
        x = torch.randn(2, 7, 128)
        original = copy.deepcopy(model)
        report = sparsify(model, pattern, 0.75, fuse_siblings=True, progress=False)
        assert report.fused == {f"blocks.{i}.q_k_v.linear": QKV[i] for i in range(2)}
        assert "fused" in report.to_dict()
        names = [r.name for r in report.layers]
        assert names[0] == "blocks.0.q_k_v.linear" and "blocks.0.q" not in names
        assert report.achieved == pytest.approx(0.75, abs=0.02)
        ref = copy.deepcopy(original)
        fuse_siblings(ref, QKV)
        masks = {n: (m.format.mask()) for n, m in model.named_modules() if hasattr(m, "format")}
        for n, mask in masks.items():
            with torch.no_grad():
                ref.get_submodule(n).weight.mul_(mask.to(torch.float32))
        with torch.no_grad():
            torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)


def test_permuted_fused_encoder_equals_unfused_unpermuted_same_masks():
    """The fused q_k_v layer's blocks mix rows of q, k and v; its output is restored by the row_index scatter, and
    the model computes what the original unfused model computes with the same kept weights."""
    torch.manual_seed(3)
    model = Encoder(d_model=128, heads=4, ffn=256, layers=2).eval()
    x = torch.randn(2, 16, 128)
    original = copy.deepcopy(model)
    report = permute_model(model, HiNM(64), 0.75, Gyro(seed=0), example_inputs=(x,), progress=False,
                           fuse_siblings=True)
    fused = {f"blocks.{i}.q_k_v.linear": QKV[i] for i in range(2)}
    assert set(fused) <= set(report.output_handling)
    assert report.output_handling["blocks.0.q_k_v.linear"] == "restored by row_index"
    assert report.output_handling["blocks.0.fc1"] == "absorbed by blocks.0.fc2"
    rows = model.blocks[0].q_k_v.linear.row_index.long().view(-1, 64)
    assert any(len(set((r // 128).tolist())) > 1 for r in rows), "no block mixes rows of q, k and v"
    assert report.retained >= report.no_perm
    ref = unfused_masked_reference(original, report.layers, fused)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)


def test_fused_encoder_exports_to_onnx_and_runs(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from exporter.onnx_export import export_onnx

    torch.manual_seed(4)
    model = Encoder(d_model=128, heads=4, ffn=256, layers=1).eval()
    x = torch.randn(2, 9, 128)
    sparsify(model, HiNM(64), 0.75, permutation=Gyro(seed=0), fuse_siblings=True, progress=False)
    path = tmp_path / "fused.onnx"
    export_onnx(model, (x,), path)
    proto = onnx.load(str(path))
    sparse_nodes = [n for n in proto.graph.node if n.domain not in ("", "ai.onnx")]
    assert len(sparse_nodes) == 4                                # q_k_v, o, fc1, fc2: one node for q, k, v
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.numpy()}
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(session.run(None, feed)[0]), model(x), rtol=1e-4, atol=1e-4)


def test_bad_groups_name_the_layer_and_what_was_expected():
    model = Encoder(d_model=64, heads=2, ffn=128, layers=1)
    with pytest.raises(PatternError, match="'blocks.0.nope' does not exist"):
        fuse_siblings(copy.deepcopy(model), [["blocks.0.q", "blocks.0.nope"]])
    with pytest.raises(PatternError, match="'blocks.0.fc2' has in_features=128"):
        fuse_siblings(copy.deepcopy(model), [["blocks.0.q", "blocks.0.fc2"]])
    with pytest.raises(PatternError, match="at least two distinct layers"):
        fuse_siblings(copy.deepcopy(model), [["blocks.0.q"]])
    with pytest.raises(PatternError, match="appear in two groups"):
        fuse_siblings(copy.deepcopy(model), [["blocks.0.q", "blocks.0.k"], ["blocks.0.k", "blocks.0.v"]])
    with pytest.raises(PatternError, match="is a LayerNorm, expected an nn.Linear"):
        fuse_siblings(copy.deepcopy(model), [["blocks.0.q", "blocks.0.ln1"]])
    two = Encoder(d_model=64, heads=2, ffn=128, layers=2)
    with pytest.raises(PatternError, match="same parent module"):
        fuse_siblings(two, [["blocks.0.q", "blocks.1.q"]])
    with pytest.raises(PatternError, match="not selected for pruning"):
        sparsify(copy.deepcopy(model), HiNM(32), 0.75, exclude=["*.k"], fuse_siblings=[["blocks.0.q", "blocks.0.k"]],
                 progress=False)
    with pytest.raises(PatternError, match="must be 'auto' or lists"):
        fuse_siblings(copy.deepcopy(model), "qkv")


def test_nothing_to_fuse_leaves_the_model_alone():
    model = MLP(32, 64, 16)
    before = copy.deepcopy(model)
    assert fuse_siblings(model) == {}
    assert [n for n, _ in model.named_modules()] == [n for n, _ in before.named_modules()]
