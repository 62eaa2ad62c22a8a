"""Datasets as plain arrays, and the deterministic splits every step shares.

    splits = load_splits(DataConfig(source="digits"))
    splits.train.x.shape  # (N, C, H, W) float32 in the model's input space

Every source yields float32 images ``(N, C, H, W)`` and optional int64 labels.
Pixel values are scaled to [0, 1]; any mean/std normalisation of the default
models lives inside the model graph, so serving clients send raw pixels.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

log = logging.getLogger(__name__)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


class DataError(ValueError):
    """A dataset is missing, malformed, or does not fit the model."""


class DataConfig(BaseModel):
    """Where the held-out and fine-tuning data come from, and how it is split."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["fashion-mnist", "digits", "npz", "folder"] = "fashion-mnist"
    path: Path | None = None
    image_size: tuple[int, int] | None = Field(None, description="folder: resize to (H, W)")
    channels: Literal[1, 3] = Field(3, description="folder: 1 = greyscale, 3 = RGB")
    mean: tuple[float, ...] | None = Field(None, description="folder/npz: subtract per channel")
    std: tuple[float, ...] | None = Field(None, description="folder/npz: divide per channel")
    num_classes: int | None = Field(None, ge=2, description="needed only when labels are absent")
    seed: int = 0
    calibration_size: int = Field(1000, ge=1)
    validation_size: int = Field(5000, ge=1)
    test_fraction: float = Field(0.2, gt=0, lt=1, description="used when a source has no test split")

    @model_validator(mode="after")
    def _needs_path(self) -> DataConfig:
        if self.source in ("npz", "folder") and self.path is None:
            raise ValueError(f"data.path is required when data.source is {self.source!r}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("data.mean and data.std must be given together")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError("data.std values must be positive")
        return self


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray  # (N, C, H, W) float32
    y: np.ndarray | None  # (N,) int64, or None when the data has no labels

    def __len__(self) -> int:
        return len(self.x)

    def take(self, index: np.ndarray | slice) -> Dataset:
        return Dataset(self.x[index], None if self.y is None else self.y[index])


@dataclass(frozen=True)
class Splits:
    """train (fine-tuning), calibration (int8), validation (early checks), test (the menu)."""

    train: Dataset
    calibration: Dataset
    validation: Dataset
    test: Dataset
    classes: tuple[str, ...]
    fingerprint: str  # sha256 over every split, part of each artifact's cache key

    @property
    def labelled(self) -> bool:
        return self.test.y is not None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.test.x.shape[1:])  # type: ignore[return-value]


def load_splits(config: DataConfig) -> Splits:
    """Load the configured source and split it deterministically by ``config.seed``."""
    train_pool, test, classes = _LOADERS[config.source](config)
    if config.num_classes is not None:
        if len(classes) > config.num_classes:
            raise DataError(
                f"data.num_classes is {config.num_classes} but labels go up to {len(classes) - 1}"
            )
        classes = classes + tuple(str(c) for c in range(len(classes), config.num_classes))
    if config.mean is not None and config.source in ("npz", "folder"):
        train_pool = _normalise(train_pool, config)
        test = None if test is None else _normalise(test, config)
    if test is None:
        train_pool, test = _split_off(train_pool, config.test_fraction, config.seed + 1)
    order = np.random.default_rng(config.seed).permutation(len(train_pool))
    n_cal = min(config.calibration_size, len(order) // 10)
    n_val = min(config.validation_size, len(order) // 5)
    if len(order) - n_cal - n_val < 1:
        raise DataError(f"data: {len(train_pool)} samples are too few to split")
    calibration = train_pool.take(order[:n_cal])
    validation = train_pool.take(order[n_cal : n_cal + n_val])
    train = train_pool.take(order[n_cal + n_val :])
    fingerprint = _fingerprint(train, calibration, validation, test)
    return Splits(train, calibration, validation, test, classes, fingerprint)


def _split_off(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    order = np.random.default_rng(seed).permutation(len(data))
    n_test = max(1, round(len(data) * fraction))
    return data.take(order[n_test:]), data.take(order[:n_test])


def _normalise(data: Dataset, config: DataConfig) -> Dataset:
    mean = np.asarray(config.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(config.std, np.float32).reshape(1, -1, 1, 1)
    if mean.shape[1] not in (1, data.x.shape[1]):
        raise DataError(f"data.mean has {mean.shape[1]} values for {data.x.shape[1]} channels")
    return Dataset(((data.x - mean) / std).astype(np.float32), data.y)


def _fingerprint(*datasets: Dataset) -> str:
    digest = hashlib.sha256()
    for data in datasets:
        digest.update(np.ascontiguousarray(data.x).tobytes())
        if data.y is not None:
            digest.update(np.ascontiguousarray(data.y).tobytes())
    return digest.hexdigest()


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def _load_fashion_mnist(config: DataConfig) -> tuple[Dataset, Dataset, tuple[str, ...]]:
    root = config.path or FASHION_MNIST_DIR
    files = {
        "train-x": "train-images-idx3-ubyte.gz", "train-y": "train-labels-idx1-ubyte.gz",
        "test-x": "t10k-images-idx3-ubyte.gz", "test-y": "t10k-labels-idx1-ubyte.gz",
    }  # fmt: skip
    missing = [name for name in files.values() if not (root / name).is_file()]
    if missing:
        raise DataError(
            f"data: Fashion-MNIST not found under {root} (missing {', '.join(missing)}); "
            "install the Debian package 'dataset-fashion-mnist' or use data.source=digits"
        )
    arrays = {key: _read_idx(root / name) for key, name in files.items()}

    def as_dataset(split: str) -> Dataset:
        x = arrays[f"{split}-x"].astype(np.float32)[:, None] / 255.0  # (N, 1, 28, 28)
        return Dataset(x, arrays[f"{split}-y"].astype(np.int64))

    return as_dataset("train"), as_dataset("test"), FASHION_MNIST_CLASSES


def _load_digits(config: DataConfig) -> tuple[Dataset, None, tuple[str, ...]]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]  # (1797, 1, 8, 8)
    return Dataset(x, bunch.target.astype(np.int64)), None, tuple(str(d) for d in range(10))


def _load_npz(config: DataConfig) -> tuple[Dataset, None, tuple[str, ...]]:
    assert config.path is not None
    try:
        archive = np.load(config.path)
    except (OSError, ValueError) as error:
        raise DataError(f"data.path: cannot read {config.path} as .npz: {error}") from error
    if "x" not in archive:
        raise DataError(f"data.path: {config.path} has no array 'x' (found {list(archive)})")
    x = np.asarray(archive["x"], np.float32)
    if x.ndim != 4:
        raise DataError(f"data.path: 'x' must be (N, C, H, W), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise DataError(f"data.path: 'x' in {config.path} holds NaN or infinite values")
    y = None
    if "y" in archive:
        y = np.asarray(archive["y"]).astype(np.int64).reshape(-1)
        if len(y) != len(x):
            raise DataError(f"data.path: 'y' has {len(y)} labels for {len(x)} images")
    n_classes = int(y.max()) + 1 if y is not None else 0
    return Dataset(x, y), None, tuple(str(c) for c in range(n_classes))


def _load_folder(config: DataConfig) -> tuple[Dataset, None, tuple[str, ...]]:
    from PIL import Image

    assert config.path is not None
    root = Path(config.path)
    if not root.is_dir():
        raise DataError(f"data.path: {root} is not a directory")
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    if not classes:
        raise DataError(f"data.path: {root} has no class sub-folders (one per class expected)")
    mode = "L" if config.channels == 1 else "RGB"
    images, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((root / name).iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            with Image.open(file) as image:
                image = image.convert(mode)
                if config.image_size is not None:
                    image = image.resize(config.image_size[::-1], Image.Resampling.BILINEAR)
                array = np.asarray(image, np.float32) / 255.0
            images.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
            labels.append(label)
    if not images:
        raise DataError(f"data.path: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise DataError(f"data.path: images differ in size {sorted(shapes)}; set data.image_size")
    return Dataset(np.stack(images), np.asarray(labels, np.int64)), None, classes


_LOADERS = {
    "fashion-mnist": _load_fashion_mnist,
    "digits": _load_digits,
    "npz": _load_npz,
    "folder": _load_folder,
}
