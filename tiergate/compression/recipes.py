"""Compression recipes: one config class per method, one registered handler each.

    RECIPES["pruned"] = PruneChannels(ratio=0.5)
    handler_for(PruneChannels(ratio=0.5))  # -> the function that applies it

A new method is a new config class here (added to ``Recipe``) plus one function
decorated with ``@torch_step(NewConfig)`` or ``@onnx_step(NewConfig)``; nothing
dispatches on a ``method`` string by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tiergate.compression.train import Fit

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from tiergate.compression.data import Dataset, Splits


class _Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QuantizeInt8(_Recipe):
    """ONNX Runtime static quantization, QDQ, per-channel weights (U8S8 by default)."""

    method: Literal["int8"] = "int8"
    calibration_samples: int = Field(512, ge=1)
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    activations: Literal["uint8", "int8"] = "uint8"  # uint8 ran far faster than int8 on x86
    per_channel: bool = True


class PruneChannels(_Recipe):
    """Structured channel pruning with torch-pruning, then a distilled fine-tune."""

    method: Literal["prune"] = "prune"
    ratio: float = Field(0.5, gt=0, lt=1, description="fraction of channels removed per layer")
    importance: Literal["l1", "l2"] = "l1"
    finetune: Fit = Fit(epochs=3, lr=0.02)


class Distill(_Recipe):
    """A narrower, shallower ResNet student trained with Hinton distillation."""

    method: Literal["distill"] = "distill"
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    width: int = Field(16, ge=1)
    fit: Fit = Fit(epochs=10, lr=0.1, schedule="onecycle", alpha=0.9, temperature=4.0)


class LowRank(_Recipe):
    """SVD factorisation of each k x k convolution into k x k (rank r) + 1 x 1 convolutions,
    r the smallest rank keeping ``energy`` of the squared singular values."""

    method: Literal["lowrank"] = "lowrank"
    energy: float = Field(0.9, gt=0, le=1)
    finetune: Fit = Fit(epochs=1, lr=0.01)


Recipe = Annotated[QuantizeInt8 | PruneChannels | Distill | LowRank, Field(discriminator="method")]


@dataclass
class BuildContext:
    """What a handler may use besides its own config."""

    splits: Splits
    base: nn.Module  # the fp32 base, eval mode
    finetune: Dataset  # the training pool shared by every fine-tune
    teacher_logits: Callable[[], np.ndarray]  # the base's logits on ``finetune``, computed once
    input_mean: tuple[float, ...] | None  # normalisation a fresh student must bake in
    input_std: tuple[float, ...] | None
    details: dict[str, Any]  # a handler records what it did (ranks, channels kept, ...)


TorchHandler = Callable[[Any, "nn.Module", BuildContext], "nn.Module"]
OnnxHandler = Callable[[Any, Path, Path, BuildContext], None]
_TORCH_HANDLERS: dict[type[_Recipe], TorchHandler] = {}
_ONNX_HANDLERS: dict[type[_Recipe], OnnxHandler] = {}


def torch_step(config_type: type[_Recipe]) -> Callable[[TorchHandler], TorchHandler]:
    """Register a handler that turns a torch module into another torch module."""

    def register(handler: TorchHandler) -> TorchHandler:
        _TORCH_HANDLERS[config_type] = handler
        return handler

    return register


def onnx_step(config_type: type[_Recipe]) -> Callable[[OnnxHandler], OnnxHandler]:
    """Register a handler that rewrites an ONNX file (so it must come last in a recipe)."""

    def register(handler: OnnxHandler) -> OnnxHandler:
        _ONNX_HANDLERS[config_type] = handler
        return handler

    return register


def is_onnx_step(recipe: _Recipe) -> bool:
    return type(recipe) in _ONNX_HANDLERS


def torch_handler(recipe: _Recipe) -> TorchHandler:
    return _TORCH_HANDLERS[type(recipe)]


def onnx_handler(recipe: _Recipe) -> OnnxHandler:
    return _ONNX_HANDLERS[type(recipe)]


def default_recipes() -> dict[str, Recipe]:
    return {"int8": QuantizeInt8(), "pruned": PruneChannels(), "distilled": Distill(), "lowrank": LowRank()}
