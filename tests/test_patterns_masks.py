"""Pattern configs (bad input), mask selection and achieved-sparsity accounting."""

import pytest
import torch
from torch import nn

from exporter import (
    NM,
    TVW,
    TW,
    Block,
    HiNM,
    PatternError,
    Unstructured,
    pattern_from_spec,
    select_masks,
    sparsify,
)


@pytest.mark.parametrize("make,message", [
    (lambda: HiNM(vector=48).check_shape("enc.fc1", (1000, 256)), "layer 'enc.fc1': output dimension N=1000 is not a multiple of the tile height 48"),
    (lambda: HiNM(vector=40), "multiple of 16"),
    (lambda: HiNM(n=1, m=4), "only n:m = 2:4"),
    (lambda: HiNM().check_sparsity("fc", 0.3), "layer 'fc'.*>= 0.5"),
    (lambda: TVW(tile=128).check_shape("head", (128, 16)), "layer 'head': input dimension K=16 is smaller than the kernel K step 32"),
    (lambda: TW(tile=0), "positive integer"),
    (lambda: TW(output_share=1.5), "output_share"),
    (lambda: NM(4, 4), "n must be smaller than m"),
    (lambda: NM(2, 4).check_shape("fc", (64, 70)), "K=70 is not a multiple of m=4"),
    (lambda: NM(2, 4).check_sparsity("fc", 0.75), "fixed sparsity of 0.5"),
    (lambda: Block(16).check_shape("fc", (64, 40)), "dimension K=40 is not a multiple of block size b=16"),
    (lambda: Unstructured().check_sparsity("fc", 1.0), "sparsity must be in"),
    (lambda: pattern_from_spec("diagonal"), "unknown pattern 'diagonal'"),
    (lambda: pattern_from_spec("hinm:vector"), "expected key=value"),
    (lambda: pattern_from_spec("hinm:rows=64"), "pattern 'hinm'"),
])
def test_bad_configs_have_specific_errors(make, message):
    with pytest.raises(PatternError, match=message):
        make()


def test_spec_parsing():
    assert pattern_from_spec("hinm:vector=128") == HiNM(vector=128)
    assert pattern_from_spec({"kind": "tvw", "tile": 64, "output_share": 0.25}) == TVW(tile=64, output_share=0.25)
    assert pattern_from_spec("tw:tile=64,score_norm=none") == TW(tile=64, score_norm="none")


@pytest.mark.parametrize("sparsity", [0.5, 0.75, 0.875])
@pytest.mark.parametrize("vector", [32, 64])
def test_hinm_accounting(sparsity, vector, rng):
    k = 32 * int(torch.randint(4, 12, (1,), generator=rng)) + int(torch.randint(0, 32, (1,), generator=rng))
    w = torch.randn(vector * 3, k, generator=rng)
    lm = select_masks({"fc": w.abs()}, HiNM(vector=vector), sparsity)["fc"]
    kept = {len(c) for c in lm.cols}
    assert len(kept) == 1 and kept.pop() % 32 == 0, "every block keeps the same multiple of 32 vectors"
    # rounding of kept vectors to the 32-step: |Δdensity| <= 16/K · 1/2, plus the K % 32 cap
    assert abs(lm.achieved - sparsity) <= 8 / k + (k % 32) / (2 * k) + 1e-9
    groups = lm.mask[:, torch.sort(lm.cols[0]).values][:vector].reshape(vector, -1, 4)
    assert (lm.mask[lm.rows[0][:, None], lm.cols[0][None, :]].reshape(vector, -1, 4).sum(-1) == 2).all()
    assert groups.numel()
    # nothing kept outside the block's vectors
    outside = torch.ones(k, dtype=torch.bool)
    outside[lm.cols[0]] = False
    assert not lm.mask[: vector, outside].any()


def test_hinm_keeps_the_highest_saliency_vectors(rng):
    w = torch.randn(64, 256, generator=rng) * 0.01
    w[:, 7] = 10.0   # a column every block must keep
    lm = select_masks({"fc": w.abs()}, HiNM(vector=32), 0.875)["fc"]
    assert all(7 in c.tolist() for c in lm.cols)


@pytest.mark.parametrize("pattern,sparsity", [(TW(tile=32, score_norm="none"), 0.6), (TVW(tile=32, score_norm="none"), 0.75),
                                              (TVW(tile=32, score_norm="none"), 0.875), (TVW(tile=32), 0.75),
                                              (TVW(tile=32, output_share=0.3, score_norm="none"), 0.8)])
def test_tw_global_threshold(pattern, sparsity, rng):
    # layers with different weight scales (raw scores) or heavy-tailed columns (normalized scores):
    # the global threshold gives them different sparsities
    scores = {"a": torch.randn(64, 256, generator=rng).abs() * 2.0, "b": torch.randn(96, 320, generator=rng).abs(),
              "c": torch.randn(32, 512, generator=rng).abs() * 0.5}
    if pattern.score_norm == "mean":
        scores["c"] = scores["c"] * (torch.rand(1, 512, generator=rng) < 0.3) + 1e-3   # few important columns
    masks = select_masks(scores, pattern, sparsity)
    total = sum(s.numel() for s in scores.values())
    kept = sum(int(m.mask.sum()) for m in masks.values())
    tiles = sum(len(m.cols) for m in masks.values())
    assert tiles
    # K-rows are chosen globally in chunks of 32 (x G rows, /2 for 2:4): the total is within one chunk;
    # output features round to whole tiles per layer (G/2 features x K each)
    factor = 0.5 if isinstance(pattern, TVW) else 1.0
    slack = 32 * pattern.tile * factor
    if pattern.output_share:
        slack = slack * (1 + tiles) + sum(pattern.tile / 2 * s.shape[1] for s in scores.values())
    assert abs(kept - (1 - sparsity) * total) <= slack + 1
    achieved = sorted(m.achieved for m in masks.values())
    assert achieved[-1] - achieved[0] > 0.05, "global thresholds should spread sparsity across layers"
    for m in masks.values():
        assert all(len(c) % 32 == 0 for c in m.cols)
        if isinstance(pattern, TVW):
            for t, c in enumerate(m.cols):
                sub = m.mask[m.rows[t][:, None], c[None, :]]
                assert (sub.reshape(sub.shape[0], -1, 4).sum(-1) == 2).all()
        # kept K-rows differ between tiles of a layer (irregular at the global scale)
    assert len({len(c) for m in masks.values() for c in m.cols}) > 1


def test_score_norm_protects_small_scale_layers(rng):
    scores = {"wide": torch.rand(64, 1024, generator=rng) * 0.1, "narrow": torch.rand(64, 256, generator=rng)}
    raw = select_masks(scores, TVW(tile=32, score_norm="none"), 0.75)
    normed = select_masks(scores, TVW(tile=32), 0.75)
    # raw global threshold: the small-scale layer loses far more than the large-scale one keeps
    assert raw["wide"].achieved > 0.8 and raw["narrow"].achieved < 0.55
    assert abs(normed["wide"].achieved - 0.75) < 0.05 and abs(normed["narrow"].achieved - 0.75) < 0.05


def test_baselines(rng):
    s = torch.randn(64, 128, generator=rng).abs()
    un = select_masks({"fc": s}, Unstructured(), 0.8)["fc"]
    assert abs(un.achieved - 0.8) < 1e-3
    assert s[un.mask].min() >= s[~un.mask].max()
    blk = select_masks({"fc": s}, Block(16), 0.75)["fc"]
    assert blk.achieved == 0.75
    assert (blk.mask.reshape(4, 16, 8, 16).float().mean((1, 3)) % 1 == 0).all()
    nm = select_masks({"fc": s}, NM(1, 4), 0.75)["fc"]
    assert (nm.mask.reshape(64, -1, 4).sum(-1) == 1).all()


def test_sparsify_include_exclude_and_report(rng):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
    report = sparsify(model, HiNM(vector=32), 0.75, exclude=["4"], progress=False)
    assert [r.name for r in report.layers] == ["0", "2"]
    assert type(model[4]) is nn.Linear
    assert abs(report.achieved - 0.75) < 0.02
    d = report.to_dict()
    assert d["layers"][0]["shape"] == [128, 64]
    with pytest.raises(PatternError, match="no nn.Linear layer matches"):
        sparsify(model, HiNM(vector=32), 0.75, include=["nothing*"], progress=False)
    with pytest.raises(PatternError, match="layer '4'"):
        sparsify(nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)),
                 HiNM(vector=32), 0.75, progress=False)


def test_taylor_saliency(rng):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32))
    data = [(torch.randn(16, 64), torch.randint(0, 32, (16,))) for _ in range(3)]
    loss_fn = lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1])  # noqa: E731
    report = sparsify(model, TVW(tile=32), 0.75, saliency="taylor", data=data, loss_fn=loss_fn, progress=False)
    assert abs(report.achieved - 0.75) < 0.1
    with pytest.raises(ValueError, match="needs a data loader"):
        sparsify(nn.Sequential(nn.Linear(64, 64)), TVW(tile=32), 0.75, saliency="taylor", progress=False)
    with pytest.raises(ValueError, match="saliency must be"):
        sparsify(nn.Sequential(nn.Linear(64, 64)), TVW(tile=32), 0.75, saliency="random", progress=False)
