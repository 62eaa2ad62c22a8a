"""Hostile images: the container limits, the decode budget and its threads, and properties
over generated PNGs/JPEGs, against the decoder and the real HTTP app (real ORT, no Ray)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import struct
import threading

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from tests.support.images import (
    ancillary,
    chunk,
    hostile_images,
    idat,
    ihdr,
    inflating,
    jpeg,
    jpeg_segment,
    png,
    with_scans_repeated,
    with_segments,
)
from tests.support.replicas import replica_for
from tiergate.profiles.tiers import Tier
from tiergate.serving.config import ServingConfig
from tiergate.serving.errors import InvalidRequest, ServingError, TooLarge
from tiergate.serving.http import create_app
from tiergate.serving.http.errors import status_of
from tiergate.serving.inputs import InputDecoder

DECODER = InputDecoder((1, 28, 28))  # the default limits
BOMB = inflating(50 << 20)  # 50 KB that inflate to 50 MB
TIERS = {"accurate": Tier(max_latency_ms=1000.0, min_accuracy=0.5)}


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _small_png(*extra: bytes) -> bytes:
    return png(ihdr(8, 8), *extra, idat(8, 8))


@pytest.mark.parametrize(
    "bomb",
    [
        chunk(b"zTXt", b"Comment\0\0" + BOMB),
        chunk(b"iTXt", b"Comment\0\1\0en\0\0" + BOMB),
        chunk(b"iCCP", b"icc\0\0" + BOMB),
    ],
    ids=["zTXt", "iTXt", "iCCP"],
)
def test_ancillary_chunk_that_inflates_large_is_too_large(bomb):
    """A 50 KB text or colour-profile chunk inflating to 50 MB is a 413 naming the metadata limit."""
    with pytest.raises(TooLarge, match="limits.max_image_metadata_bytes; at") as raised:
        DECODER.from_base64(_b64(_small_png(bomb)))
    assert raised.value.field == "image"


@pytest.mark.parametrize("kind", [b"tEXt", b"eXIf", b"prVt"])
def test_large_uncompressed_ancillary_chunk_is_too_large(kind):
    """A 300 KiB plain text, EXIF or private ancillary chunk is a 413 (metadata limit)."""
    with pytest.raises(TooLarge, match="max_image_metadata_bytes"):
        DECODER.from_base64(_b64(_small_png(ancillary(kind, 300 << 10, compressed=False))))


def test_flood_of_chunks_is_too_large():
    """5000 tiny text chunks are a 413 naming the chunk limit."""
    with pytest.raises(TooLarge, match="more than 4096 chunks"):
        DECODER.from_base64(_b64(_small_png(chunk(b"tEXt", b"k\0v") * 5000)))


def test_declared_decoded_size_over_the_byte_limit_is_too_large():
    """A 16-bit RGBA PNG within the pixel limit but decoding to 128 MiB is a 413 from its header."""
    with pytest.raises(TooLarge, match="limits.max_image_bytes"):
        DECODER.from_base64(_b64(png(ihdr(4096, 4096, bits=16, colour=6), chunk(b"IDAT", inflating(4096)))))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (png(chunk(b"IHDR", b"\0\0\0\x08\0\0"), idat(8, 8)), "IHDR chunk has 6 bytes"),
        (png(ihdr(8, 8, bits=7), idat(8, 8)), "bit depth 7 is not valid"),
        (png(ihdr(8, 8), chunk(b"acTL", struct.pack(">II", 2, 0)), chunk(b"fcTL", b"\0" * 10), idat(8, 8)),
         "cannot decode the image"),
        (png(ihdr(8, 8), idat(8, 8))[:-20], "truncated in its IDAT chunk"),
    ],
    ids=["short IHDR", "bad bit depth", "short APNG fcTL", "cut in a chunk"],
)  # fmt: skip
def test_broken_png_headers_are_invalid(raw, message):
    """A truncated IHDR or APNG frame header (Pillow raised a bare ValueError), a bad bit
    depth or a cut chunk is a 422 naming the problem."""
    with pytest.raises(InvalidRequest, match=message) as raised:
        DECODER.from_base64(_b64(raw))
    assert raised.value.field == "image"


def test_jpeg_with_many_scans_is_too_large():
    """A progressive JPEG with 20 extra scans (each a pass over the image) is a 413 naming the limit."""
    with pytest.raises(TooLarge, match="limits.max_jpeg_scans"):
        DECODER.from_base64(_b64(with_scans_repeated(jpeg(progressive=True), 20)))


def test_jpeg_with_large_app_segments_is_too_large():
    """Ten 64 KiB APP1 segments are a 413 naming the metadata limit."""
    raw = with_segments(jpeg(), *[jpeg_segment(0xE1, b"\0" * 65_533)] * 10)
    with pytest.raises(TooLarge, match="JPEG metadata exceeds"):
        DECODER.from_base64(_b64(raw))


def test_jpeg_with_a_long_run_of_fill_bytes_is_too_large():
    """6 MiB of 0xFF fill before a marker (Pillow reads them one by one) is a 413 (metadata limit)."""
    raw = jpeg()
    with pytest.raises(TooLarge, match="max_image_metadata_bytes; at fill bytes"):
        DECODER.from_base64(_b64(raw[:2] + b"\xff" * (6 << 20) + raw[2:]))


def test_decode_over_its_time_budget_is_too_large():
    """A decode whose clock passes the budget stops at its next read with a 413 naming the budget."""
    ticks = itertools.count(0.0, 1.0)  # each look at the clock: one second later
    decoder = InputDecoder((1, 28, 28), clock=lambda: next(ticks))
    with pytest.raises(TooLarge, match="budget of 1000 ms"):
        decoder.from_base64(_b64(_small_png()))


def test_images_decode_on_the_decoders_own_threads():
    """from_base64_off_loop decodes on the decoder's threads, not the event loop's default pool."""
    threads: list[str] = []
    decoder = InputDecoder((1, 28, 28), clock=lambda: threads.append(threading.current_thread().name) or 0.0)

    async def decode_two():
        return await asyncio.gather(*(decoder.from_base64_off_loop(_b64(_small_png())) for _ in range(2)))

    assert all(x.shape == (1, 1, 28, 28) for x in asyncio.run(decode_two()))
    assert threads and all(name.startswith("decode-image") for name in threads)


@settings(derandomize=True, max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_images())
def test_any_image_is_a_tensor_or_a_4xx(raw):
    """Every generated PNG/JPEG gives a finite (1, 1, 28, 28) tensor in [0, 1] or a 4xx domain error."""
    try:
        x = DECODER.from_base64(_b64(raw))
    except ServingError as error:
        assert 400 <= status_of(error) < 500 and error.field == "image"
        assert len(str(error)) < 300
        return
    assert x.shape == (1, 1, 28, 28) and np.isfinite(x).all() and 0.0 <= x.min() <= x.max() <= 1.0


# -- through the real app ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def replica(tiny_menu):
    """One replica for every example; each call runs its own event loop, so the replica's
    loop-lag check (which would see the time between examples as lag) is set out of reach."""
    serving = ServingConfig(admission={"max_loop_lag_ms": 1e9})
    return replica_for(tiny_menu, TIERS, variants=["fp32"], serving=serving)


def _predict(replica, images: list[bytes]) -> list[httpx.Response]:
    """POST each image to /v1/predict in turn on one app."""

    async def go():
        transport = httpx.ASGITransport(app=create_app(replica))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [await client.post("/v1/predict", json={"image": _b64(raw)}) for raw in images]

    return asyncio.run(go())


def test_app_answers_an_inflating_text_chunk_with_413_then_serves(replica):
    """Over HTTP a zTXt bomb gets a small 413 naming the field, and a normal image after it a 200."""
    bomb, normal = _predict(replica, [_small_png(chunk(b"zTXt", b"k\0\0" + BOMB)), _small_png()])
    assert bomb.status_code == 413 and bomb.json()["field"] == "image" and len(bomb.content) < 400
    assert normal.status_code == 200


@settings(derandomize=True, max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_images())
def test_app_answers_any_image_with_200_or_4xx(replica, raw):
    """Over HTTP every generated image gets a 200 or a small 4xx JSON error naming the field."""
    (response,) = _predict(replica, [raw])
    assert response.status_code == 200 or (
        400 <= response.status_code < 500
        and response.json()["field"] == "image"
        and len(response.content) < 400
    )
