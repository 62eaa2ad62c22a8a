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
from typing import Annotated, Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import FailFast, Strict, TypeAdapter, ValidationError

from tiergate.serving.config import LimitsConfig
from tiergate.serving.errors import InvalidRequest, TooLarge
from tiergate.serving.images import check_container

# What Pillow raises on broken or hostile data, opening or decoding it (its plugins parse
# with struct and zlib, and index into what they read)
_PILLOW_ERRORS = (
    OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError,
    struct.error, zlib.error, MemoryError,
)  # fmt: skip

MAX_NESTING = 6  # the deepest nested list a tensor's values may come in
_FLOAT = Annotated[float, Strict()]  # a JSON number: an int or a float, not a bool or a string


def _nested_numbers(depth: int) -> TypeAdapter:
    """pydantic-core's strict check of a ``depth``-deep nested list of JSON numbers, stopping
    at the first wrong value; measured faster than numpy's own conversion of the same lists."""
    kind: Any = _FLOAT
    for _ in range(depth):
        kind = Annotated[list[kind], FailFast()]
    return TypeAdapter(kind)


_NESTED = {depth: _nested_numbers(depth) for depth in range(1, MAX_NESTING + 1)}
_JSON_TYPES = {str: "a string", bool: "a boolean", type(None): "null", dict: "an object", list: "a list"}


def nesting(values: object) -> int:
    """How deeply ``values`` nests lists, read along its first elements (0: not a list)."""
    depth = 0
    while isinstance(values, list) and depth <= MAX_NESTING:
        depth += 1
        if not values:
            break
        values = values[0]
    return depth


def numbers(values: object, field: str, depth: int | None = None) -> np.ndarray:
    """``values``, nested lists of JSON numbers ``depth`` deep, as a float32 array; a string,
    boolean, null or a list out of place anywhere is refused, naming its position."""
    depth = nesting(values) if depth is None else depth
    if not 1 <= depth <= MAX_NESTING:
        raise InvalidRequest(
            f"{field}: must be nested lists of numbers (at most {MAX_NESTING} deep)", field=field
        )
    try:
        checked = _NESTED[depth].validate_python(values)
    except ValidationError as error:
        raise InvalidRequest(_wrong_value(error.errors()[0], field), field=field) from None
    try:
        with np.errstate(over="ignore"):  # past float32's range becomes inf, refused as not finite
            return np.asarray(checked, dtype=np.float32)
    except ValueError:  # ragged: rows of different lengths
        raise InvalidRequest(f"{field}: must be a rectangular nested list of numbers", field=field) from None


def _wrong_value(issue: dict[str, Any], field: str) -> str:
    """The first wrong value's position and JSON type (never the value: it may be huge)."""
    position = field + "".join(f"[{index}]" for index in issue["loc"])
    value = issue["input"]
    if issue["type"] == "list_type":
        return f"{position}: expected a list of numbers here, got {_JSON_TYPES.get(type(value), 'a number')}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{position}: the integer is beyond float range"
    return f"{position}: must be a JSON number, got {_JSON_TYPES.get(type(value), type(value).__name__)}"


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
        """One image ``[C, H, W]`` or a batch ``[N, C, H, W]`` of JSON numbers, checked: the
        image count before anything is built, then each value's type (not a string, boolean
        or null), then the shape and finiteness."""
        depth = nesting(values)
        images = len(values) if depth == 4 and isinstance(values, list) else 1
        if images > self.limits.max_batch_images:
            raise InvalidRequest(
                f"{field}: batch of {images} exceeds the limit of {self.limits.max_batch_images}", field=field
            )
        array = numbers(values, field, depth)
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
            raise InvalidRequest(
                f"{field}: contains NaN or infinite values (or values beyond float32 range)", field=field
            )
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
