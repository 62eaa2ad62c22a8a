"""Hostile images for tests: PNG containers built chunk by chunk, JPEGs from Pillow then
mangled segment by segment, and Hypothesis strategies that mix them.

    png(ihdr(8, 8), chunk(b"zTXt", b"k\\0\\0" + inflating(50 << 20)), idat(8, 8))
    @given(hostile_images())  # bytes: PNG or JPEG, valid, broken or hostile
"""

from __future__ import annotations

import functools
import io
import re
import struct
import zlib

from hypothesis import strategies as st
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type -> channels; valid bit depths per colour type
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


# -- PNG, chunk by chunk ---------------------------------------------------------------------------
def chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    """One PNG chunk: length, type, data, CRC (the right one unless given)."""
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc & 0xFFFFFFFF)


def ihdr(width: int, height: int, bits: int = 8, colour: int = 0, interlace: int = 0) -> bytes:
    return chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bits, colour, 0, 0, interlace))


def scanlines(width: int, height: int, bits: int = 8, colour: int = 0, fill: int = 0x80) -> bytes:
    """The image's raw rows, each with filter byte 0 (none)."""
    row = (width * CHANNELS[colour] * bits + 7) // 8
    return (b"\0" + bytes([fill]) * row) * height


def idat(width: int, height: int, bits: int = 8, colour: int = 0, pieces: int = 1) -> bytes:
    """The image's data as ``pieces`` IDAT chunks."""
    data = zlib.compress(scanlines(width, height, bits, colour))
    step = max(1, -(-len(data) // pieces))
    return b"".join(chunk(b"IDAT", data[i : i + step]) for i in range(0, len(data), step))


def png(*chunks: bytes, end: bool = True) -> bytes:
    return PNG_SIGNATURE + b"".join(chunks) + (chunk(b"IEND", b"") if end else b"")


@functools.lru_cache(maxsize=8)
def inflating(size: int) -> bytes:
    """A small zlib stream that inflates to ``size`` zero bytes."""
    return zlib.compress(b"\0" * size, 9)


def ancillary(kind: bytes, size: int, compressed: bool) -> bytes:
    """An ancillary chunk of ``kind`` whose text/profile is ``size`` bytes, compressed or not."""
    body = inflating(size) if compressed else b"a" * size
    if kind == b"zTXt":
        return chunk(kind, b"Comment\0\0" + body)
    if kind == b"iCCP":
        return chunk(kind, b"icc\0\0" + body)
    if kind == b"iTXt":
        return chunk(kind, b"Comment\0" + (b"\1\0" if compressed else b"\0\0") + b"en\0\0" + body)
    return chunk(kind, b"Comment\0" + body if kind == b"tEXt" else body)


# -- JPEG, segment by segment ----------------------------------------------------------------------
def jpeg(width: int = 16, height: int = 16, mode: str = "RGB", progressive: bool = False) -> bytes:
    buffer = io.BytesIO()
    Image.linear_gradient("L").resize((width, height)).convert(mode).save(
        buffer, "JPEG", quality=80, progressive=progressive
    )
    return buffer.getvalue()


def jpeg_segment(marker: int, data: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(data) + 2) + data


def with_segments(raw: bytes, *segments: bytes) -> bytes:
    """``raw`` with ``segments`` right after its SOI marker."""
    return raw[:2] + b"".join(segments) + raw[2:]


def with_size(raw: bytes, width: int, height: int) -> bytes:
    """``raw`` with its frame header declaring ``width`` x ``height``."""
    sof = re.search(rb"\xff[\xc0-\xc2]", raw).start()
    return raw[: sof + 5] + struct.pack(">HH", height, width) + raw[sof + 9 :]


def with_scans_repeated(raw: bytes, times: int) -> bytes:
    """A progressive ``raw`` with its smallest scan (header and data) repeated ``times`` more."""
    starts = [m.start() for m in re.finditer(rb"\xff\xda", raw)]
    ends = [*starts[1:], len(raw) - 2]  # the last scan runs to EOI
    smallest = min(zip(starts, ends, strict=True), key=lambda span: span[1] - span[0])
    scan = raw[smallest[0] : smallest[1]]
    return raw[: starts[-1]] + scan * times + raw[starts[-1] :]


# -- Hypothesis strategies -------------------------------------------------------------------------
SIZES = st.one_of(st.integers(1, 48), st.sampled_from([0, 5000, 65_535, 1 << 20, 2**31 - 1, 2**32 - 1]))
INFLATED = st.sampled_from([16, 4 << 10, 300 << 10, 2 << 20, 50 << 20])


@st.composite
def ancillary_chunks(draw) -> bytes:
    kind = draw(st.sampled_from([b"tEXt", b"zTXt", b"iTXt", b"iCCP", b"eXIf", b"tIME", b"prVt"]))
    compressed = kind in (b"zTXt", b"iCCP") or (kind == b"iTXt" and draw(st.booleans()))
    size = draw(INFLATED if compressed else st.sampled_from([0, 16, 4 << 10, 300 << 10]))
    return ancillary(kind, size, compressed)


@st.composite
def pngs(draw) -> bytes:
    """A PNG, valid or not: colour types and bit depths (alpha, palette, 16-bit, invalid
    pairs), huge or zero declared dimensions, IDAT split or missing, ancillary chunks (some
    inflating to megabytes), chunk floods, truncation at any byte, a flipped byte (a bad CRC,
    a broken header)."""
    colour = draw(st.sampled_from([0, 2, 3, 4, 6, 1, 7]))
    odd_depths = (3, 32) if draw(st.sampled_from([False, False, False, True])) else ()
    bits = draw(st.sampled_from(DEPTHS.get(colour, (8,)) + odd_depths))
    width, height = draw(SIZES), draw(SIZES)
    small = 0 < width * height <= 64 * 64 and colour in CHANNELS
    data = (
        idat(width, height, bits, colour, draw(st.integers(1, 4)))
        if small
        else chunk(b"IDAT", inflating(4096))
    )
    before = draw(st.lists(ancillary_chunks(), max_size=3))
    if colour == 3 and draw(st.booleans()):
        before.append(chunk(b"PLTE", bytes(range(48))))
    flood = chunk(b"tEXt", b"k\0v") * draw(st.sampled_from([0, 0, 10, 5000]))
    header = ihdr(width, height, bits, colour, interlace=draw(st.sampled_from([0, 1])))
    raw = png(header, *before, flood, data, end=draw(st.sampled_from([True, True, True, False])))
    return _spoil(draw, raw, start=len(PNG_SIGNATURE))


@st.composite
def jpegs(draw) -> bytes:
    """A JPEG, valid or not: grey or colour, progressive or not, extra APP/COM segments (up
    to 64 KiB each, many of them), runs of fill bytes, scans repeated, huge or zero declared dimensions,
    truncation at any byte, a flipped byte."""
    progressive = draw(st.booleans())
    raw = jpeg(
        draw(st.integers(1, 40)), draw(st.integers(1, 40)), draw(st.sampled_from(["L", "RGB"])), progressive
    )
    marker = draw(st.sampled_from([0xE0, 0xE1, 0xE2, 0xED, 0xFE]))
    size, count = draw(st.sampled_from([(0, 0), (100, 1), (65_533, 1), (65_533, 10), (0, 5000)]))
    raw = with_segments(raw, *[jpeg_segment(marker, b"\0" * size)] * count)
    raw = with_segments(raw, b"\xff" * draw(st.sampled_from([0] * 6 + [100, 300 << 10])))  # fill bytes
    if progressive and draw(st.booleans()):
        raw = with_scans_repeated(raw, draw(st.sampled_from([1, 20])))
    if draw(st.booleans()):
        raw = with_size(
            raw, draw(SIZES.filter(lambda n: n < 1 << 16)), draw(SIZES.filter(lambda n: n < 1 << 16))
        )
    return _spoil(draw, raw, start=2)


def _spoil(draw, raw: bytes, start: int) -> bytes:
    """``raw`` left whole, cut at a byte, or with one byte after ``start`` changed."""
    how = draw(st.sampled_from(["whole", "whole", "cut", "flip"]))
    if how == "cut":
        return raw[: draw(st.integers(0, len(raw) - 1))]
    if how == "flip" and len(raw) > start:
        at = draw(st.integers(start, len(raw) - 1))
        return raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1 :]
    return raw


def hostile_images() -> st.SearchStrategy[bytes]:
    """PNGs and JPEGs, valid, broken or hostile."""
    return st.one_of(pngs(), jpegs())
