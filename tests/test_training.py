"""Gradual pruning with frozen masks, staged schedule, finalize(), Conv2d masking."""

import pytest
import torch
from torch import nn

from exporter import TVW, HiNM, SparseLinear
from exporter.training import GradualPruner, gradual_schedule


def test_schedule():
    assert gradual_schedule(0.8) == [0.25, 0.4, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8]
    assert gradual_schedule(0.75, HiNM()) == [0.5, 0.6, 0.65, 0.7, 0.75]


def test_gradual_pruning_freezes_masks_and_finalizes(rng):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 32, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 6 * 6, 64), nn.ReLU(), nn.Linear(64, 32))
    pruner = GradualPruner(model, TVW(tile=32), 0.75)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    previous = None
    for sparsity in pruner.schedule:
        report = pruner.prune_to(sparsity)
        for _ in range(3):
            loss = model(torch.randn(8, 4, 8, 8, generator=rng)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            for name, m in pruner.layers.items():   # pruned weights receive no gradient
                grad = m.parametrizations.weight.original.grad
                assert (grad[~pruner.masks[name].mask.reshape(grad.shape)] == 0).all(), name
            opt.step()
        for name, m in pruner.layers.items():     # effective weights are zero where pruned
            assert (m.weight[~pruner.masks[name].mask.reshape(m.weight.shape)] == 0).all()
        if previous is not None:
            assert report.achieved >= previous - 0.02
        previous = report.achieved
    x = torch.randn(4, 4, 8, 8, generator=rng)
    with torch.no_grad():
        before = model(x)
    pruner.finalize()
    assert isinstance(model[3], SparseLinear) and isinstance(model[5], SparseLinear)
    assert isinstance(model[0], nn.Conv2d) and not hasattr(model[0], "parametrizations")
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)


def test_pruner_validates_early():
    model = nn.Sequential(nn.Linear(64, 100))
    with pytest.raises(ValueError, match="layer '0': output dimension N=100"):
        GradualPruner(model, HiNM(vector=32), 0.75)
    with pytest.raises(ValueError, match="no layer"):
        GradualPruner(model, HiNM(vector=32), 0.75, include=["x*"])
