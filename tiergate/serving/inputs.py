"""Turn request payloads into model input tensors, refusing bad ones with a named reason.

decoder = InputDecoder(input_shape=(1, 28, 28), limits=serving.limits)
batch = decoder.from_nested(payload["inputs"])  # (N, C, H, W) float32
batch = decoder.from_base64(payload["image"])   # (1, C, H, W)
batch = await decoder.from_base64_off_loop(payload["image"])  # the same, on the decoder's threads
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import struct
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from tiergate.serving.config import LimitsConfig
from tiergate.serving.errors import InvalidRequest, TooLarge
from tiergate.serving.images import check_container

# What Pillow raises on broken or hostile data, opening or decoding it (its plugins parse
# with struct and zlib, and index into what they read)
_PILLOW_ERRORS = (
    OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError,
    struct.error, zlib.error, MemoryError,
)  # fmt: skip


@dataclass(frozen=True)
class Preprocess:
    """How a decoded image becomes a tensor: channel mode, size, scale, normalisation."""

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


class InputDecoder:
    def __init__(
        self,
        input_shape: tuple[int, int, int],
        limits: LimitsConfig | None = None,
        preprocess: Preprocess | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.input_shape = tuple(input_shape)
        self.limits = limits or LimitsConfig()  # images per request, encoded bytes, pixels
        self.preprocess = preprocess or Preprocess()
        self.clock = clock  # times the image decode budget
        self._threads = ThreadPoolExecutor(
            self.limits.image_decode_threads, thread_name_prefix="decode-image"
        )

    def from_nested(self, values: object, field: str = "inputs") -> np.ndarray:
        """One image ``[C, H, W]`` or a batch ``[N, C, H, W]`` of numbers, checked."""
        try:
            array = np.asarray(values, dtype=np.float32)
        except (ValueError, TypeError, OverflowError):
            raise InvalidRequest(
                f"{field}: must be a rectangular nested list of float32-range numbers", field=field
            ) from None
        if array.size == 0:
            raise InvalidRequest(f"{field}: the batch is empty", field=field)
        return self.check_batch(array[None] if array.ndim == 3 else array, field)

    def check_batch(self, array: np.ndarray, field: str) -> np.ndarray:
        if array.ndim != 4:
            got = list(array.shape)
            raise InvalidRequest(
                f"{field}: expected [C, H, W] or {self._shape_text()}, got {got}", field=field
            )
        if len(array) == 0:
            raise InvalidRequest(f"{field}: the batch is empty", field=field)
        if len(array) > self.limits.max_batch_images:
            raise InvalidRequest(
                f"{field}: batch of {len(array)} exceeds the limit of {self.limits.max_batch_images}",
                field=field,
            )
        if tuple(array.shape[1:]) != self.input_shape:
            channels = array.shape[1]
            what = (
                f"{channels} channels, the model takes {self.input_shape[0]}"
                if channels != self.input_shape[0]
                else f"image size {list(array.shape[2:])}, the model takes {list(self.input_shape[1:])}"
            )
            raise InvalidRequest(f"{field}: wrong shape: {what} (expected {self._shape_text()})", field=field)
        if not np.isfinite(array).all():
            raise InvalidRequest(f"{field}: contains NaN or infinite values", field=field)
        return np.ascontiguousarray(array)

    async def from_base64_off_loop(self, text: str, field: str = "image") -> np.ndarray:
        """``from_base64`` on the decoder's own threads (``limits.image_decode_threads``), so
        slow or hostile images neither stall the event loop nor fill its default pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, self.from_base64, text, field)

    def from_base64(self, text: str, field: str = "image") -> np.ndarray:
        """A base64 PNG/JPEG, its container checked against the limits, then decoded within
        the time budget, converted, resized and scaled like the training data."""
        if len(text) > self.limits.max_body_bytes * 4 // 3 + 4:
            raise TooLarge(f"{field}: encoded image exceeds {self.limits.max_body_bytes} bytes", field=field)
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest(f"{field}: not valid base64", field=field) from None
        deadline = self.clock() + self.limits.image_decode_timeout_ms / 1000.0
        fmt = check_container(raw, self.limits, field)
        image = self._open(_BudgetedReader(raw, lambda: self._check_budget(deadline, field)), fmt, field)
        tensor = self._pixels(image, field)
        if self.preprocess.mean is not None and self.preprocess.std is not None:
            mean = np.asarray(self.preprocess.mean, np.float32).reshape(-1, 1, 1)
            std = np.asarray(self.preprocess.std, np.float32).reshape(-1, 1, 1)
            tensor = (tensor - mean) / std
        return np.ascontiguousarray(tensor[None], dtype=np.float32)

    def _open(self, reader: io.BytesIO, fmt: str, field: str) -> Image.Image:
        """Pillow's view of the image, its header read (``fmt`` is what the container walk found)."""
        try:
            image = Image.open(reader, formats=[fmt])
            width, height = image.size
        except Image.DecompressionBombError:
            raise TooLarge(f"{field}: image dimensions are too large", field=field) from None
        except UnidentifiedImageError:
            raise InvalidRequest(f"{field}: cannot decode the image: a broken {fmt}", field=field) from None
        except _PILLOW_ERRORS as error:
            raise InvalidRequest(f"{field}: cannot decode the image: {_short(error)}", field=field) from None
        if image.format not in ("PNG", "JPEG"):
            raise InvalidRequest(f"{field}: format {image.format} is not accepted (PNG or JPEG)", field=field)
        if width * height > self.limits.max_image_pixels:
            raise TooLarge(
                f"{field}: {width}x{height} pixels exceeds the limit of {self.limits.max_image_pixels}",
                field=field,
            )
        return image

    def _pixels(self, image: Image.Image, field: str) -> np.ndarray:
        """The decoded image as (C, H, W) in [0, 1], at the model's channels and size."""
        channels, height, width = self.input_shape
        try:
            if image.format == "JPEG":  # decode at the smallest DCT scale that still covers the size
                image.draft("L" if channels == 1 else "RGB", (width, height))
            image = image.convert("L" if channels == 1 else "RGB")
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32) / 255.0
        except Image.DecompressionBombError:
            raise TooLarge(f"{field}: image dimensions are too large", field=field) from None
        except _PILLOW_ERRORS as error:  # bad data surfaces only when decoding
            raise InvalidRequest(f"{field}: cannot decode the image: {_short(error)}", field=field) from None
        return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)

    def _check_budget(self, deadline: float, field: str) -> None:
        if self.clock() > deadline:
            raise TooLarge(
                f"{field}: decoding the image took longer than its budget of "
                f"{self.limits.image_decode_timeout_ms:g} ms (serving.limits.image_decode_timeout_ms)",
                field=field,
            )

    def _shape_text(self) -> str:
        return "[N, " + ", ".join(str(d) for d in self.input_shape) + "]"


class _BudgetedReader(io.BytesIO):
    """The encoded image as Pillow reads it: each read first checks the decode budget, so a
    slow decode stops at its next read (Pillow reads 64 KiB at a time) instead of holding
    its thread to the end (a thread cannot be stopped from outside)."""

    def __init__(self, raw: bytes, check: Callable[[], None]) -> None:
        super().__init__(raw)
        self._check = check

    def read(self, size: int | None = -1) -> bytes:
        self._check()
        return super().read(size)


def _short(error: Exception) -> str:
    """Pillow's message, kept short for the answer's body."""
    return str(error)[:200]
