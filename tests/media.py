"""Media files for tests, made here byte by byte with the standard library: a real PNG (zlib-compressed rows,
CRCs; seeded random pixels or one colour), a PNG whose header declares more pixels than it holds (a
decompression bomb's shape), WAV clips of a tone, data URLs."""

from __future__ import annotations

import base64
import io
import math
import random
import struct
import wave
import zlib


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(
    width: int = 2,
    height: int = 2,
    seed: int = 0,
    *,
    rgb: tuple[int, int, int] | None = None,
    declared: tuple[int, int] | None = None,
) -> bytes:
    """A valid `width` × `height` RGB PNG: seeded random pixels, or all of colour `rgb`; `declared` puts another
    size in its header (a bomb: the few rows it holds compress to almost nothing, its header asks for billions
    of pixels)."""
    w, h = declared or (width, height)
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    rng = random.Random(seed)
    colour = bytes(rgb) * width if rgb is not None else b""
    rows = b"".join(b"\0" + (colour or rng.randbytes(width * 3)) for _ in range(height))  # filter 0, the pixels
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")


def wav(seconds: float, *, hz: float = 440.0, rate: int = 16_000) -> bytes:
    """A mono 16-bit PCM WAV of `seconds` of a sine tone (silence with `hz` 0)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        n = int(seconds * rate)
        if hz:
            samples = (int(0.3 * 32767 * math.sin(2 * math.pi * hz * i / rate)) for i in range(n))
            file.writeframes(b"".join(struct.pack("<h", s) for s in samples))
        else:
            file.writeframes(b"\0\0" * n)
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{b64(data)}"


def jpeg_header(width: int, height: int) -> bytes:
    """A JPEG's markers as a decoder meets them (SOI, APP0, SOF0 with the size, SOS, EOI): no real scan data."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" + b"\0" * 16 + b"\xff\xd9"


def gif_header(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0) + b";"


def bmp_header(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, -height, 1, 24, 0, 0, 0, 0, 0, 0)
    pixels = b"\0" * 4
    size = 14 + len(info) + len(pixels)
    return b"BM" + struct.pack("<IHHI", size, 0, 0, 14 + len(info)) + info + pixels
