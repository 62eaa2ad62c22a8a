"""Check an encoded PNG or JPEG against the request limits before Pillow decodes it.

The walk reads only the container's chunk (PNG) or segment (JPEG) headers, and inflates
compressed PNG text and colour profiles at most up to the limit, so a small hostile file
(a text chunk that inflates to gigabytes, a flood of chunks, huge declared dimensions, a
JPEG with thousands of progressive scans) is refused for a named limit before any pixel is
decoded. What the walk passes, Pillow still decodes under its own guards.

    fmt = check_container(raw, limits, field="image")   # "PNG" or "JPEG", else raises
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass

from PIL import PngImagePlugin

from tiergate.serving.config import LimitsConfig
from tiergate.serving.errors import InvalidRequest, TooLarge

# Pillow's own guards on PNG text and colour profiles, inflated. They are module settings, so
# process-wide: set once here to the most LimitsConfig.max_image_metadata_bytes allows (the
# walk below enforces the configured limit first; these only back it up).
PngImagePlugin.MAX_TEXT_CHUNK = 1 << 20
PngImagePlugin.MAX_TEXT_MEMORY = 1 << 20

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
# PNG colour type -> (channels, allowed bit depths)
_PNG_COLOURS = {
    0: (1, {1, 2, 4, 8, 16}),
    2: (3, {8, 16}),
    3: (1, {1, 2, 4, 8}),
    4: (2, {8, 16}),
    6: (4, {8, 16}),
}
# JPEG start-of-frame markers (all but DHT C4, JPG C8, DAC CC)
_JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# the next marker after entropy-coded data: 0xFF not followed by stuffing (00), a restart
# marker (D0-D7) or fill (FF)
_JPEG_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_JPEG_FILL = re.compile(rb"\xff+")


@dataclass
class _Walk:
    """What one walk has counted so far, against the limits."""

    limits: LimitsConfig
    field: str
    fmt: str
    chunks: int = 0
    metadata_bytes: int = 0

    def chunk(self, name: str) -> None:
        self.chunks += 1
        if self.chunks > self.limits.max_image_chunks:
            what = "chunks" if self.fmt == "PNG" else "segments"
            raise TooLarge(
                f"{self.field}: {self.fmt} has more than {self.limits.max_image_chunks} {what} "
                f"(serving.limits.max_image_chunks; at {name})",
                field=self.field,
            )

    def metadata(self, name: str, size: int) -> None:
        self.metadata_bytes += size
        if self.metadata_bytes > self.limits.max_image_metadata_bytes:
            raise TooLarge(
                f"{self.field}: {self.fmt} metadata exceeds {self.limits.max_image_metadata_bytes} bytes "
                f"(serving.limits.max_image_metadata_bytes; at {name})",
                field=self.field,
            )

    def dimensions(self, width: int, height: int, channels: int, bits: int) -> None:
        if width == 0 or height == 0:
            raise InvalidRequest(
                f"{self.field}: {self.fmt} declares {width}x{height} pixels", field=self.field
            )
        if width * height > self.limits.max_image_pixels:
            raise TooLarge(
                f"{self.field}: {width}x{height} pixels exceeds the limit of {self.limits.max_image_pixels}",
                field=self.field,
            )
        decoded = (width * channels * bits + 7) // 8 * height
        if decoded > self.limits.max_image_bytes:
            raise TooLarge(
                f"{self.field}: {width}x{height} pixels of {channels} x {bits} bits decode to {decoded} "
                f"bytes, over the limit of {self.limits.max_image_bytes} (serving.limits.max_image_bytes)",
                field=self.field,
            )

    def broken(self, problem: str) -> InvalidRequest:
        return InvalidRequest(
            f"{self.field}: cannot decode the image: {self.fmt} {problem}", field=self.field
        )


def check_container(raw: bytes, limits: LimitsConfig, field: str = "image") -> str:
    """The image's format, ``"PNG"`` or ``"JPEG"``, once its container is within ``limits``;
    else :class:`TooLarge` (a limit, named) or :class:`InvalidRequest` (not PNG/JPEG, broken)."""
    if raw.startswith(PNG_SIGNATURE):
        _walk_png(raw, _Walk(limits, field, "PNG"))
        return "PNG"
    if raw.startswith(JPEG_SIGNATURE):
        _walk_jpeg(raw, _Walk(limits, field, "JPEG"))
        return "JPEG"
    raise InvalidRequest(f"{field}: not a PNG or JPEG image", field=field)


def _walk_png(raw: bytes, walk: _Walk) -> None:
    """Each chunk: length, type, data, CRC; IHDR first, up to IEND (what follows is ignored)."""
    pos = len(PNG_SIGNATURE)
    while pos < len(raw):  # a PNG that ends without IEND is left to Pillow
        if pos + 8 > len(raw):
            raise walk.broken(f"is truncated in a chunk header at byte {pos}")
        length, kind = struct.unpack_from(">I4s", raw, pos)
        name = kind.decode("latin-1")
        if not kind.isalpha():
            raise walk.broken(f"has a chunk of invalid type {kind!r} at byte {pos}")
        if length > len(raw) - pos - 12:
            raise walk.broken(f"is truncated in its {name} chunk")
        data = raw[pos + 8 : pos + 8 + length]
        walk.chunk(name)
        if (pos == len(PNG_SIGNATURE)) != (kind == b"IHDR"):
            raise walk.broken("must start with one IHDR chunk")
        if kind == b"IHDR":
            _png_header(data, walk)
        elif kind[:1].islower():  # ancillary: nothing the pixels need
            walk.metadata(name, _inflated_size(kind, data, walk))
        elif kind == b"IEND":
            return
        pos += 12 + length


def _png_header(data: bytes, walk: _Walk) -> None:
    if len(data) != 13:
        raise walk.broken(f"IHDR chunk has {len(data)} bytes, not 13")
    width, height, bits, colour = struct.unpack_from(">IIBB", data)
    channels, depths = _PNG_COLOURS.get(colour, (0, set()))
    if bits not in depths:
        raise walk.broken(f"colour type {colour} with bit depth {bits} is not valid")
    walk.dimensions(width, height, channels, bits)


def _inflated_size(kind: bytes, data: bytes, walk: _Walk) -> int:
    """An ancillary chunk's size once Pillow has read it: compressed text (zTXt, iTXt) and
    colour profiles (iCCP) inflated, but never past the metadata limit."""
    start = _compressed_start(kind, data)
    if start is None:
        return len(data)
    room = walk.limits.max_image_metadata_bytes - walk.metadata_bytes
    try:
        inflated = zlib.decompressobj().decompress(data[start:], room + 1)
    except zlib.error:
        raise walk.broken(f"{kind.decode()} chunk is not valid zlib data") from None
    return start + len(inflated)


def _compressed_start(kind: bytes, data: bytes) -> int | None:
    """Where the zlib stream of a zTXt, iCCP or compressed iTXt chunk starts (None: no
    stream). zTXt/iCCP: name NUL method stream; iTXt: keyword NUL flag method language NUL
    translated-keyword NUL text."""
    if kind in (b"zTXt", b"iCCP"):
        end = data.find(b"\0")
        return end + 2 if end >= 0 else None
    if kind == b"iTXt":
        keyword = data.find(b"\0")
        if keyword < 0 or data[keyword + 1 : keyword + 2] != b"\1":
            return None
        language = data.find(b"\0", keyword + 3)
        translated = data.find(b"\0", language + 1) if language >= 0 else -1
        return translated + 1 if translated >= 0 else None
    return None


def _walk_jpeg(raw: bytes, walk: _Walk) -> None:
    """Each marker segment up to EOI; after a scan header, past its entropy-coded data.
    Fill bytes before a marker count as metadata."""
    pos, scans = 2, 0
    while pos < len(raw):  # a JPEG cut short is left to Pillow, which refuses it
        if raw[pos] != 0xFF:
            raise walk.broken(f"has no marker at byte {pos}")
        fill = _JPEG_FILL.match(raw, pos).end() - 1 - pos  # 0xFF bytes before the marker's own
        if fill:  # Pillow reads them one at a time: they count as metadata
            walk.metadata("fill bytes", fill)
            pos += fill
        marker = raw[pos + 1] if pos + 1 < len(raw) else 0xD9
        walk.chunk(f"marker 0x{marker:02X}")
        if marker == 0xD9:  # EOI
            return
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # no length
            pos += 2
            continue
        if pos + 4 > len(raw):
            return
        (length,) = struct.unpack_from(">H", raw, pos + 2)
        segment = raw[pos + 4 : pos + 2 + length]
        pos += 2 + length
        if marker in _JPEG_SOF:
            _jpeg_frame(segment, walk)
        elif 0xE0 <= marker <= 0xEF or marker == 0xFE:  # APPn, COM
            walk.metadata(f"marker 0x{marker:02X}", len(segment))
        elif marker == 0xDA:  # SOS: a scan; its data runs to the next marker
            scans += 1
            if scans > walk.limits.max_jpeg_scans:
                raise TooLarge(
                    f"{walk.field}: JPEG has more than {walk.limits.max_jpeg_scans} scans "
                    "(serving.limits.max_jpeg_scans)",
                    field=walk.field,
                )
            found = _JPEG_NEXT_MARKER.search(raw, pos)
            pos = found.start() if found else len(raw)


def _jpeg_frame(segment: bytes, walk: _Walk) -> None:
    if len(segment) < 6:
        raise walk.broken("frame header is truncated")
    bits, height, width, components = struct.unpack_from(">BHHB", segment)
    walk.dimensions(width, height, max(components, 1), max(bits, 8))
