"""pruned: remove whole channels with torch-pruning's dependency graph (so residual
additions stay consistent and the dense kernels really shrink), then recompute
BatchNorm statistics and fine-tune with distillation from the base."""

from __future__ import annotations

import copy
import logging

import torch
import torch_pruning as tp
from torch import nn

from tiergate.compression.recipes import BuildContext, PruneChannels, torch_step
from tiergate.compression.train import fit, recalibrate_batchnorm

log = logging.getLogger(__name__)


@torch_step(PruneChannels)
def prune_channels(config: PruneChannels, model: nn.Module, ctx: BuildContext) -> nn.Module:
    model = copy.deepcopy(model).eval()
    example = torch.from_numpy(ctx.splits.calibration.x[:2])
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1:]
    macs_before, params_before = tp.utils.count_ops_and_params(model, example)
    pruner = tp.pruner.BasePruner(
        model, example, importance=tp.importance.GroupMagnitudeImportance(
            p=1 if config.importance == "l1" else 2),
        pruning_ratio=config.ratio, ignored_layers=classifier,
    )  # fmt: skip
    pruner.step()
    macs_after, params_after = tp.utils.count_ops_and_params(model, example)
    ctx.details.update(macs_kept=macs_after / macs_before, params_kept=params_after / params_before)
    log.info("pruned: kept %.0f%% of MACs, %.0f%% of parameters",
             100 * macs_after / macs_before, 100 * params_after / params_before)  # fmt: skip
    # pruning shifts every activation distribution; stale statistics leave it at chance
    recalibrate_batchnorm(model, ctx.finetune.x[:4096])
    return fit(model, ctx.finetune, config.finetune, teacher_logits=ctx.teacher_logits(), desc="pruned")
