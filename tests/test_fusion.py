"""Activation fusion into SparseLinear computes the same function."""

import torch
from torch import nn

from exporter import HiNM, SparseLinear, sparsify
from exporter.fusion import fuse_activations
from exporter.zoo import Encoder


def test_fuse_encoder_and_sequential(rng):
    torch.manual_seed(0)
    enc = Encoder(d_model=64, heads=2, ffn=128, layers=2).eval()
    seq = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.GELU(approximate="tanh"), nn.Linear(64, 32))
    for model, x in ((enc, torch.randn(3, 5, 64, generator=rng)), (seq, torch.randn(7, 64, generator=rng))):
        sparsify(model, HiNM(vector=32), 0.75, progress=False)
        with torch.no_grad():
            before = model(x)
        fused = fuse_activations(model)
        with torch.no_grad():
            after = model(x)
        torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
        if model is enc:
            assert fused == ["blocks.0.fc1", "blocks.1.fc1"] and isinstance(enc.blocks[0].act, nn.Identity)
        else:   # tanh-approximate GELU is not what the kernel computes: left alone
            assert fused == ["0"] and isinstance(seq[3], nn.GELU) and isinstance(seq[2], SparseLinear)
            assert seq[2].activation == "none"
