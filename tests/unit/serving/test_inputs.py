from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from tiergate.serving.config import LimitsConfig
from tiergate.serving.errors import InvalidRequest, TooLarge
from tiergate.serving.inputs import InputDecoder, Preprocess

DECODER = InputDecoder(
    (1, 28, 28), LimitsConfig(max_batch_images=4, max_body_bytes=50_000, max_image_pixels=512 * 512)
)


def _png(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def test_single_image_and_batch_are_accepted():
    """[C, H, W] becomes a batch of one; [N, C, H, W] passes through as float32."""
    one = DECODER.from_nested(np.zeros((1, 28, 28)).tolist())
    many = DECODER.from_nested(np.ones((3, 1, 28, 28)).tolist())
    assert one.shape == (1, 1, 28, 28) and many.shape == (3, 1, 28, 28) and many.dtype == np.float32


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (np.zeros((3, 28, 28)).tolist(), "3 channels, the model takes 1"),
        (np.zeros((1, 1, 27, 28)).tolist(), "image size [27, 28]"),
        (np.zeros((28, 28)).tolist(), "expected [C, H, W]"),
        ([[[1.0, 2.0], [3.0]]], "rectangular"),
        ([[["a"]]], "inputs[0][0][0]: must be a JSON number, got a string"),
        (np.zeros((0, 1, 28, 28)).tolist(), "empty"),
        (np.zeros((5, 1, 28, 28)).tolist(), "batch of 5 exceeds the limit of 4"),
        (np.full((1, 28, 28), np.nan).tolist(), "NaN or infinite"),
        (np.full((1, 28, 28), np.inf).tolist(), "NaN or infinite"),
    ],
)
def test_bad_tensors_are_refused_with_the_reason(payload, message):
    """Wrong shape, channels, ragged lists, empty or oversized batches and NaN/Inf are
    invalid requests (422), naming the field."""
    with pytest.raises(InvalidRequest) as error:
        DECODER.from_nested(payload)
    assert message in str(error.value) and error.value.field == "inputs"


def test_png_is_converted_resized_and_scaled():
    """An RGB PNG of another size becomes one greyscale 28x28 image in [0, 1]."""
    tensor = DECODER.from_base64(_png(Image.new("RGB", (40, 30), (255, 255, 255))))
    assert tensor.shape == (1, 1, 28, 28) and np.allclose(tensor, 1.0)


def test_jpeg_with_normalisation():
    """A JPEG is accepted and normalised with the configured mean and std."""
    decoder = InputDecoder((3, 8, 8), preprocess=Preprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
    tensor = decoder.from_base64(_png(Image.new("RGB", (8, 8), (0, 0, 0)), "JPEG"))
    assert tensor.shape == (1, 3, 8, 8) and np.allclose(tensor, -1.0, atol=0.05)


@pytest.mark.parametrize(
    ("text", "message", "error"),
    [
        ("not base64!", "not valid base64", InvalidRequest),
        (base64.b64encode(b"hello world").decode(), "not a PNG or JPEG", InvalidRequest),
        (_png(Image.new("L", (8, 8)), "GIF"), "not a PNG or JPEG", InvalidRequest),  # never given to Pillow
        (_png(Image.new("L", (600, 600))), "exceeds the limit", TooLarge),
        ("A" * 80_000, "exceeds 50000 bytes", TooLarge),
    ],
)
def test_bad_images_are_refused(text, message, error):
    """Undecodable or non-PNG/JPEG images are invalid (422); too many pixels or bytes are too
    large (413); each named."""
    with pytest.raises(error) as raised:
        DECODER.from_base64(text)
    assert message in str(raised.value) and raised.value.field == "image"


def test_truncated_png_is_refused():
    """A PNG cut in half fails as undecodable instead of crashing."""
    full = base64.b64decode(_png(Image.new("L", (64, 64), 128)))
    with pytest.raises(InvalidRequest, match="cannot decode|not a PNG"):
        DECODER.from_base64(base64.b64encode(full[: len(full) // 2]).decode())


def test_decompression_bomb_header_is_refused_before_decoding():
    """A small file that declares enormous dimensions is refused from its header alone."""
    bomb = Image.new("1", (20_000, 20_000))  # 1-bit: tiny when compressed
    text = _png(bomb)
    assert len(text) < 100_000
    decoder = InputDecoder((1, 28, 28), LimitsConfig(max_body_bytes=1 << 20))
    with pytest.raises(TooLarge):
        decoder.from_base64(text)
