"""Small built-in models for the quickstart, tests and the examples (random init; trained in examples/)."""

from __future__ import annotations

import math

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, d_in: int = 256, hidden: int = 512, d_out: int = 128) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class EncoderBlock(nn.Module):
    """Post-LN transformer encoder block built from nn.Linear (so every projection can be sparsified)."""

    def __init__(self, d_model: int = 256, heads: int = 4, ffn: int = 1024) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"EncoderBlock: d_model={d_model} is not a multiple of heads={heads}")
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(d_model, d_model) for _ in range(4))
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.fc1, self.act, self.fc2 = nn.Linear(d_model, ffn), nn.GELU(), nn.Linear(ffn, d_model)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        h = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, s, h, d // h).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // h), dim=-1)
        return self.o((att @ v).transpose(1, 2).reshape(b, s, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln1(x + self.attention(x))
        return self.ln2(x + self.fc2(self.act(self.fc1(x))))


class Encoder(nn.Module):
    def __init__(self, d_model: int = 256, heads: int = 4, ffn: int = 1024, layers: int = 2) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(EncoderBlock(d_model, heads, ffn) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


MODELS = {"mlp": MLP, "encoder": Encoder}


def build(name: str, **kwargs) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"unknown built-in model '{name}'; expected one of {sorted(MODELS)}")
    return MODELS[name](**kwargs)


def example_input(name: str, model: nn.Module, batch: int = 2, seq: int = 16) -> torch.Tensor:
    """A random input of the right feature size for a built-in model."""
    if name == "mlp":
        return torch.randn(batch, model.fc1.in_features)
    return torch.randn(batch, seq, model.blocks[0].q.in_features)
