"""lowrank: factorise each k x k convolution W (Cout, Cin, k, k) by SVD of its
(Cout, Cin*k*k) matrix into a k x k convolution to r channels followed by a 1 x 1
convolution back to Cout, where r keeps ``energy`` of the squared singular values.
A layer is replaced only when that cuts its multiply-adds."""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from tiergate.compression.recipes import BuildContext, LowRank, torch_step
from tiergate.compression.train import fit, recalibrate_batchnorm

log = logging.getLogger(__name__)


def factorise(conv: nn.Conv2d, energy: float) -> nn.Sequential | None:
    """The two-convolution replacement for ``conv``, or None when it would not be cheaper."""
    if conv.groups != 1 or conv.kernel_size == (1, 1):
        return None
    out_channels, in_channels, kh, kw = conv.weight.shape
    matrix = conv.weight.detach().reshape(out_channels, -1)  # (Cout, Cin*k*k)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    kept = torch.cumsum(s**2, 0) / torch.sum(s**2)
    rank = int(torch.searchsorted(kept, torch.tensor(energy)).item()) + 1
    if rank * (in_channels * kh * kw + out_channels) >= out_channels * in_channels * kh * kw:
        return None
    root = torch.sqrt(s[:rank])
    first = nn.Conv2d(in_channels, rank, (kh, kw), conv.stride, conv.padding, conv.dilation, bias=False)
    first.weight.data = (root[:, None] * vh[:rank]).reshape(rank, in_channels, kh, kw)
    second = nn.Conv2d(rank, out_channels, 1, bias=conv.bias is not None)
    second.weight.data = (u[:, :rank] * root[None]).reshape(out_channels, rank, 1, 1)
    if conv.bias is not None:
        second.bias.data = conv.bias.detach().clone()
    return nn.Sequential(first, second)


@torch_step(LowRank)
def low_rank(config: LowRank, model: nn.Module, ctx: BuildContext) -> nn.Module:
    model = copy.deepcopy(model).eval()
    replaced, total = 0, 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d):
                total += 1
                replacement = factorise(child, config.energy)
                if replacement is not None:
                    setattr(parent, name, replacement)
                    replaced += 1
    if replaced == 0:
        raise ValueError(f"lowrank: no convolution gets cheaper at energy {config.energy}")
    ctx.details.update(factorised_convs=replaced, convs=total)
    log.info("lowrank: factorised %d of %d convolutions", replaced, total)
    recalibrate_batchnorm(model, ctx.finetune.x[:4096])
    return fit(model, ctx.finetune, config.finetune, teacher_logits=ctx.teacher_logits(), desc="lowrank")
