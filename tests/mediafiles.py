"""Small real media files for tests, written with the standard library: a PNG of one colour, a WAV of a tone."""

from __future__ import annotations

import io
import math
import struct
import wave
import zlib


def png(width: int = 8, height: int = 8, rgb: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    """A valid RGB PNG of `width` × `height` pixels, all `rgb`."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes(rgb) * width  # filter type 0, then the pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def wav(seconds: float = 0.25, rate: int = 16_000, hz: float = 440.0) -> bytes:
    """A mono 16-bit WAV of a sine tone."""
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        samples = (int(12_000 * math.sin(2 * math.pi * hz * i / rate)) for i in range(int(seconds * rate)))
        file.writeframes(b"".join(struct.pack("<h", s) for s in samples))
    return out.getvalue()
