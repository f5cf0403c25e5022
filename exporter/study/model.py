"""The study's classifier: a small ViT-style transformer made of nn.Linear layers (all prunable).

    tokens [B, T, P] → embed (Linear P→d) + learned positions → L × zoo.EncoderBlock → mean over tokens
    → head (Linear d→classes)

Pruned: every projection inside the blocks (q, k, v, o, fc1, fc2) — `PRUNABLE`.  Kept dense, as in the
papers: `embed` (K = patch size, 4 or 49, too narrow for the K ≥ 32 tiles) and `head` (N = 10 classes,
not a multiple of the 16-row tile; the last layer is the most sensitive and is a rounding error of the
weights).  Default sizes: d_model 128, 4 heads, FFN 512, 2 blocks → pruned layers of N×K = 128×128
(q/k/v/o), 512×128 (fc1) and 128×512 (fc2), which every pattern accepts with tiles / vectors of 32.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..zoo import EncoderBlock

PRUNABLE = ("blocks.*",)
DENSE = ("embed", "head")


@dataclass(frozen=True)
class ModelConfig:
    d_model: int = 128
    heads: int = 4
    ffn: int = 512
    layers: int = 2

    def to_dict(self) -> dict:
        return asdict(self)


class StudyClassifier(nn.Module):
    def __init__(self, tokens: int, patch_dim: int, classes: int, config: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        self.tokens, self.patch_dim, self.classes, self.config = tokens, patch_dim, classes, config
        d = config.d_model
        self.embed = nn.Linear(patch_dim, d)
        self.pos = nn.Parameter(torch.randn(tokens, d) * 0.02)
        self.blocks = nn.ModuleList(EncoderBlock(d, config.heads, config.ffn) for _ in range(config.layers))
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1:] != (self.tokens, self.patch_dim):
            raise ValueError(f"StudyClassifier: expected input [batch, {self.tokens}, {self.patch_dim}], "
                             f"got {list(x.shape)}")
        h = self.embed(x) + self.pos
        for block in self.blocks:
            h = block(h)
        return self.head(h.mean(1))

    def spec(self) -> dict:
        """Everything needed to rebuild the architecture (stored in checkpoints)."""
        return {"model": "StudyClassifier", "tokens": self.tokens, "patch_dim": self.patch_dim,
                "classes": self.classes, "config": self.config.to_dict()}

    @classmethod
    def from_spec(cls, spec: dict) -> StudyClassifier:
        return cls(int(spec["tokens"]), int(spec["patch_dim"]), int(spec["classes"]), ModelConfig(**spec["config"]))
