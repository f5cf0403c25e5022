"""Saliency scores that drive mask selection: magnitude |w| or first-order Taylor |w · ∂L/∂w|."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn


def weight_param(module: nn.Module) -> torch.Tensor:
    """The trainable weight: the unmasked original when a mask parametrization is attached."""
    if hasattr(module, "parametrizations") and "weight" in module.parametrizations:
        return module.parametrizations.weight.original
    return module.weight


def weight_2d(module: nn.Module) -> torch.Tensor:
    """The weight as the [out, in] matrix both papers prune (Conv2d: [C_out, C_in·k_h·k_w])."""
    w = weight_param(module)
    return w.reshape(w.shape[0], -1)


def magnitude(layers: Mapping[str, nn.Module]) -> dict[str, torch.Tensor]:
    return {name: weight_2d(m).detach().abs().float().cpu() for name, m in layers.items()}


def taylor(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    data: Iterable,
    loss_fn: Callable[[nn.Module, object], torch.Tensor],
    max_batches: int | None = None,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Σ over batches of |w · ∂L/∂w|.  `loss_fn(model, batch)` returns a scalar loss."""
    from tqdm.auto import tqdm

    scores = {name: torch.zeros_like(weight_2d(m), dtype=torch.float32, device="cpu") for name, m in layers.items()}
    was_training = model.training
    model.train()
    seen = 0
    for batch in tqdm(data, desc="taylor saliency", total=max_batches, disable=not progress, leave=False):
        if max_batches is not None and seen >= max_batches:
            break
        model.zero_grad(set_to_none=True)
        loss = loss_fn(model, batch)
        if not torch.is_tensor(loss) or loss.dim() != 0:
            raise ValueError("taylor saliency: loss_fn must return a scalar tensor")
        loss.backward()
        for name, m in layers.items():
            w = weight_param(m)
            if w.grad is None:
                raise ValueError(f"taylor saliency: layer '{name}' received no gradient from loss_fn")
            scores[name] += (w.detach() * w.grad).reshape(scores[name].shape).abs().float().cpu()
        seen += 1
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    if seen == 0:
        raise ValueError("taylor saliency: the data loader yielded no batches")
    return scores
