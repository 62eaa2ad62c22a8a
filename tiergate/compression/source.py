"""Where the base model comes from: the built-in ResNet, a TorchScript file, or a
user's ``package.module:factory`` plus a state_dict.

    model = load_base(ModelConfig(source="torchscript", path=Path("model.ts")), splits)
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from tiergate.compression.data import Splits
from tiergate.compression.models import ResNet
from tiergate.compression.train import Fit, fit, predict_logits

log = logging.getLogger(__name__)

_META_KEY = "__meta__"


class ModelError(ValueError):
    """The base model cannot be loaded or does not fit the data."""


class ModelConfig(BaseModel):
    """The base classifier that every variant is derived from."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["resnet", "torchscript", "factory"] = "resnet"
    path: Path | None = Field(None, description="torchscript: the .ts/.pt file")
    factory: str | None = Field(None, description="factory: 'package.module:function'")
    factory_kwargs: dict[str, Any] = Field(default_factory=dict)
    weights: Path | None = Field(None, description="resnet/factory: trained weights file")
    name: str = Field("model", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    # resnet only
    blocks: tuple[int, ...] = (2, 2, 2, 2)
    width: int = Field(80, ge=1)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    train: Fit = Fit(epochs=5, lr=0.1, schedule="onecycle", shift_px=2)

    @model_validator(mode="after")
    def _source_fields(self) -> ModelConfig:
        if self.source == "torchscript" and self.path is None:
            raise ValueError("model.path is required when model.source is 'torchscript'")
        if self.source == "factory" and (self.factory is None or ":" not in self.factory):
            raise ValueError("model.factory must be 'package.module:function' for source 'factory'")
        return self


def build_resnet(config: ModelConfig, splits: Splits) -> ResNet:
    return ResNet(
        blocks=config.blocks, width=config.width, in_channels=splits.input_shape[0],
        num_classes=len(splits.classes), mean=config.mean, std=config.std,
    )  # fmt: skip


def load_base(config: ModelConfig, splits: Splits) -> nn.Module:
    """The fp32 base in eval mode, checked to accept the data's input shape."""
    if config.source == "torchscript":
        model = _load_torchscript(config.path)  # type: ignore[arg-type]
    elif config.source == "factory":
        model = _load_factory(config)
    else:
        model = build_resnet(config, splits)
        if config.weights is None or not config.weights.is_file():
            raise ModelError(
                f"model.weights: {config.weights} not found; run 'tiergate train-base' to create it"
            )
        model.load_state_dict(read_weights(config.weights)["state_dict"])
    model = model.float().eval()
    _check_shapes(model, splits)
    return model


def weights_digest(config: ModelConfig) -> str:
    """sha256 of whatever defines the base's weights, for cache keys: file contents, not
    their paths, so a moved checkout or another config file still hits the cache."""
    digest = hashlib.sha256(config.model_dump_json(exclude={"train", "path", "weights", "name"}).encode())
    for path in (config.path, config.weights):
        if path is not None and Path(path).is_file():
            digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def train_base(config: ModelConfig, splits: Splits, out: Path) -> dict[str, Any]:
    """Train the built-in ResNet on ``splits.train`` and save fp16 weights to ``out`` (.npz)."""
    if splits.train.y is None:
        raise ModelError("train-base needs labelled data")
    torch.manual_seed(config.train.seed)
    model = build_resnet(config, splits)
    fit(model, splits.train, config.train, desc="train-base")
    logits = predict_logits(model, splits.validation.x)
    accuracy = float((logits.argmax(1) == splits.validation.y).mean())
    meta = {
        "blocks": list(config.blocks), "width": config.width,
        "validation_accuracy": accuracy, "data_fingerprint": splits.fingerprint,
        "train": config.train.model_dump(mode="json"), "torch": str(torch.__version__),
    }  # fmt: skip
    save_weights(model, meta, out)
    log.info("train-base: validation accuracy %.4f, weights written to %s", accuracy, out)
    return meta


def save_weights(model: nn.Module, meta: dict[str, Any], path: Path) -> None:
    """fp16 tensors in a compressed .npz plus JSON metadata: no pickle, half the size."""
    arrays = {
        name: (tensor.half() if tensor.is_floating_point() else tensor).numpy()
        for name, tensor in model.state_dict().items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:  # np.savez_compressed would append ".npz" to a str path
        np.savez_compressed(handle, **arrays, **{_META_KEY: np.array(json.dumps(meta))})


def read_weights(path: Path) -> dict[str, Any]:
    """``{"state_dict", "meta"}`` from a .npz written by ``save_weights`` or a torch
    state_dict file (loaded with ``weights_only=True``); tensors come back as fp32."""
    if not Path(path).is_file():
        raise ModelError(f"model.weights: {path} not found")
    try:
        if Path(path).suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                meta = json.loads(str(archive[_META_KEY])) if _META_KEY in archive else {}
                state = {k: torch.from_numpy(archive[k].copy()) for k in archive if k != _META_KEY}
            payload: Any = {"state_dict": state, "meta": meta}
        else:
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # numpy, zipfile and torch raise many types for a bad file
        raise ModelError(f"model.weights: cannot read {path}: {error}") from error
    if not isinstance(payload, dict):
        raise ModelError(f"model.weights: {path} is not a weights file")
    state = payload.get("state_dict", payload)
    return {"state_dict": {k: v.float() for k, v in state.items()}, "meta": payload.get("meta", {})}


def _load_torchscript(path: Path) -> nn.Module:
    if not path.is_file():
        raise ModelError(f"model.path: TorchScript file {path} not found")
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as error:
        raise ModelError(f"model.path: {path} is not a TorchScript model: {error}") from error


def _load_factory(config: ModelConfig) -> nn.Module:
    module_name, _, attribute = config.factory.partition(":")  # type: ignore[union-attr]
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ModelError(f"model.factory: cannot import {config.factory}: {error}") from error
    model = factory(**config.factory_kwargs)
    if not isinstance(model, nn.Module):
        raise ModelError(f"model.factory: {config.factory} returned {type(model).__name__}")
    if config.weights is not None:
        try:
            model.load_state_dict(read_weights(config.weights)["state_dict"])
        except RuntimeError as error:
            raise ModelError(f"model.weights: does not fit {config.factory}: {error}") from error
    return model


def _check_shapes(model: nn.Module, splits: Splits) -> None:
    sample = torch.from_numpy(splits.test.x[:2])
    try:
        with torch.no_grad():
            logits = model(sample)
    except Exception as error:
        raise ModelError(
            f"model: does not accept inputs of shape {tuple(sample.shape[1:])} from the data: {error}"
        ) from error
    if logits.ndim != 2:
        raise ModelError(f"model: output must be (N, classes) logits, got shape {tuple(logits.shape)}")
    if splits.labelled and logits.shape[1] < len(splits.classes):
        raise ModelError(f"model: {logits.shape[1]} outputs but the data has {len(splits.classes)} classes")
