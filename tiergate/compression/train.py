"""Training loops shared by the base model and by the fine-tunes after compression.

    fit(model, splits.train, Fit(epochs=3), teacher_logits=cached)  # Hinton KD
    fit(model, splits.train, Fit(epochs=5, schedule="onecycle"))    # plain CE

Runs in bf16 autocast with channels-last tensors where the CPU has bf16 units (much
faster than fp32 training there); exported models are always fp32.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from tiergate.compression.data import Dataset
from tiergate.compression.progress import progress

log = logging.getLogger(__name__)


class Fit(BaseModel):
    """How to train: epochs, optimiser settings, augmentation, distillation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: float = Field(1.0, gt=0, description="fractions allowed: 0.5 = half a pass")
    batch_size: int = Field(128, ge=1)
    lr: float = Field(0.05, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["onecycle", "cosine"] = "cosine"
    shift_px: int = Field(0, ge=0, description="random translation, pixels")
    flip: bool = False
    temperature: float = Field(4.0, gt=0, description="distillation softmax temperature")
    alpha: float = Field(0.9, ge=0, le=1, description="weight of the distillation term")
    max_samples: int | None = Field(None, ge=1, description="cap on training samples used")
    seed: int = 0


def bf16_available() -> bool:
    """True when this CPU trains faster in bf16 (AMX or AVX512-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def fit(
    model: nn.Module,
    data: Dataset,
    config: Fit,
    teacher_logits: np.ndarray | None = None,
    desc: str = "train",
) -> nn.Module:
    """Train ``model`` in place on ``data``; distil from ``teacher_logits`` (N, K) when given."""
    if data.y is None and teacher_logits is None:
        raise ValueError("fit: training needs labels or teacher logits")
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    x = torch.from_numpy(data.x)
    y = None if data.y is None else torch.from_numpy(data.y)
    soft = None if teacher_logits is None else torch.from_numpy(teacher_logits).float()
    if config.max_samples is not None and config.max_samples < len(x):
        keep = torch.randperm(len(x), generator=generator)[: config.max_samples]
        x, y = x[keep], None if y is None else y[keep]
        soft = None if soft is None else soft[keep]
    steps_per_epoch = math.ceil(len(x) / config.batch_size)
    total_steps = max(1, round(steps_per_epoch * config.epochs))
    optimiser = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=0.9, nesterov=True,
        weight_decay=config.weight_decay,
    )  # fmt: skip
    scheduler = _scheduler(optimiser, config, total_steps)
    use_bf16 = bf16_available()
    model.train()
    if use_bf16:
        model.to(memory_format=torch.channels_last)
    step, progress_bar = 0, progress(total=total_steps, desc=desc, unit="step")
    while step < total_steps:
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), config.batch_size):
            if step >= total_steps:
                break
            index = order[start : start + config.batch_size]
            batch = _augment(x[index], config, generator)
            if use_bf16:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
                logits = model(batch)
            loss = _loss(logits.float(), None if y is None else y[index],
                         None if soft is None else soft[index], config)  # fmt: skip
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            scheduler.step()
            step += 1
            progress_bar.update()
            progress_bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    progress_bar.close()
    model.to(memory_format=torch.contiguous_format)
    return model.eval()


def _scheduler(optimiser: torch.optim.Optimizer, config: Fit, total_steps: int):
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimiser, config.lr, total_steps=total_steps)
    warmup = max(1, total_steps // 20)  # a short warm-up keeps fine-tunes of pruned nets stable

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimiser, factor)


def _augment(batch: torch.Tensor, config: Fit, generator: torch.Generator) -> torch.Tensor:
    if config.shift_px:
        pad = config.shift_px
        padded = F.pad(batch, (pad, pad, pad, pad))
        dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=generator).tolist()
        batch = padded[:, :, dy : dy + batch.shape[2], dx : dx + batch.shape[3]]
    if config.flip:
        flip = torch.rand(len(batch), generator=generator) < 0.5
        batch = torch.where(flip[:, None, None, None], batch.flip(3), batch)
    return batch


def _loss(
    logits: torch.Tensor, labels: torch.Tensor | None, teacher: torch.Tensor | None, config: Fit
) -> torch.Tensor:
    if teacher is None:
        return F.cross_entropy(logits, labels)
    t = config.temperature
    distill = F.kl_div(
        F.log_softmax(logits / t, dim=1), F.log_softmax(teacher / t, dim=1),
        reduction="batchmean", log_target=True,
    ) * t * t  # fmt: skip
    if labels is None:
        return distill
    return config.alpha * distill + (1 - config.alpha) * F.cross_entropy(logits, labels)


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """fp32 logits (N, K) of ``model`` on ``x`` (N, C, H, W)."""
    model.eval()
    outputs = [
        model(torch.from_numpy(x[start : start + batch_size])).float().numpy()
        for start in range(0, len(x), batch_size)
    ]
    return np.concatenate(outputs)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> None:
    """Recompute BatchNorm running statistics on ``x``; pruning and factorisation shift them."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the whole pass
    model.train()
    for start in range(0, len(x), batch_size):
        model(torch.from_numpy(x[start : start + batch_size]))
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.eval()
