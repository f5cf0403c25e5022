"""Training and evaluation loops for the study (AdamW, warm-up + cosine learning rate, fixed seeds)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .data import Dataset


@dataclass(frozen=True)
class TrainConfig:
    """One budget for everything: every pattern gets the same `finetune_epochs` at `finetune_lr`."""

    dense_epochs: int = 30
    finetune_epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    finetune_lr: float = 5e-4
    weight_decay: float = 0.05
    warmup: float = 0.05           # fraction of steps with a linear warm-up
    prune_window: float = 0.5      # gradual stages are spread over this first fraction of fine-tuning

    def to_dict(self) -> dict:
        return asdict(self)


# Intra-op threads.  Measured on the 2-core machine while other jobs ran: one training step of the full
# model took 128 ms with 1 thread and 2,740 ms with 2 (OpenMP threads wait on a core someone else holds);
# on an idle machine 2 threads gain < 2×.  So 1 by default; `--threads 2` for an idle machine.
DEFAULT_THREADS = 1


def seed_everything(seed: int, threads: int | None = None) -> torch.Generator:
    """Seed torch's global RNG (init) and set the intra-op threads; returns a generator for batch order."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads or DEFAULT_THREADS)
    return torch.Generator().manual_seed(seed)


def lr_at(step: int, total: int, base: float, warmup: float) -> float:
    warm = max(1, round(total * warmup))
    if step < warm:
        return base * (step + 1) / warm
    return 0.5 * base * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    was = model.training
    model.eval()
    out = torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])
    model.train(was)
    return out


def evaluate(model: nn.Module, data: Dataset) -> float:
    """Top-1 test accuracy in [0, 1]."""
    return float((predict(model, data.x_test).argmax(1) == data.y_test).float().mean())


def train(model: nn.Module, data: Dataset, epochs: int, lr: float, cfg: TrainConfig, gen: torch.Generator, *,
          hooks: Sequence[tuple[int, Callable[[], None]]] = (), desc: str = "train", progress: bool = True) -> float:
    """Train in place; each hook `(step, fn)` runs `fn()` before optimiser step `step` (the pruning stages),
    in order.  Returns the last epoch's mean training loss."""
    from tqdm.auto import tqdm

    pending = sorted(hooks, key=lambda h: h[0])
    n = len(data.y_train)
    per_epoch = max(1, n // cfg.batch_size)          # drop the ragged last batch: equal-sized steps
    total = epochs * per_epoch
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    model.train()
    step, loss_sum = 0, 0.0
    with tqdm(total=total, desc=desc, disable=not progress, leave=False) as bar:
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen)
            loss_sum = 0.0
            for i in range(per_epoch):
                while pending and pending[0][0] <= step:
                    pending.pop(0)[1]()
                idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, total, lr, cfg.warmup)
                loss = nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += loss.item()
                step += 1
                bar.update()
            bar.set_postfix(loss=f"{loss_sum / per_epoch:.3f}")
    for _, late in pending:   # stages scheduled past the end (zero-epoch budgets) still run
        late()
    return loss_sum / per_epoch


def stage_steps(stages: int, epochs: int, data: Dataset, cfg: TrainConfig) -> list[int]:
    """Steps at which the gradual stages start: evenly over the first `prune_window` of fine-tuning, so the
    last stage (the final sparsity) always has the remaining fraction to recover."""
    total = epochs * max(1, len(data.y_train) // cfg.batch_size)
    window = total * cfg.prune_window
    return [round(i * window / stages) for i in range(stages)]
