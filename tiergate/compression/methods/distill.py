"""distilled: a fresh, smaller ResNet trained on the base's soft targets (Hinton KD);
the teacher's logits are computed once and cached, so an epoch costs no teacher pass."""

from __future__ import annotations

import torch
from torch import nn

from tiergate.compression.models import ResNet
from tiergate.compression.recipes import BuildContext, Distill, torch_step
from tiergate.compression.train import fit


@torch_step(Distill)
def distill(config: Distill, model: nn.Module, ctx: BuildContext) -> nn.Module:
    teacher_logits = ctx.teacher_logits()
    torch.manual_seed(config.fit.seed)
    student = ResNet(
        blocks=config.blocks, width=config.width, in_channels=ctx.splits.input_shape[0],
        num_classes=teacher_logits.shape[1], mean=ctx.input_mean, std=ctx.input_std,
    )  # fmt: skip
    ctx.details.update(student_blocks=list(config.blocks), student_width=config.width)
    return fit(student, ctx.finetune, config.fit, teacher_logits=teacher_logits, desc="distilled")
