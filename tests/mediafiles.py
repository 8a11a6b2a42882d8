"""Small real media files for tests, written with the standard library: a PNG of seeded random pixels, a WAV of
a tone. The same calls as tests/mediamodels.py's `png` and `wav` (the tiny vision model's files), which can
take their place."""

from __future__ import annotations

import io
import math
import random
import struct
import wave
import zlib


def png(width: int, height: int, seed: int = 0) -> bytes:
    """A valid RGB PNG of `width` × `height` seeded random pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rng = random.Random(seed)
    rows = b"".join(b"\x00" + rng.randbytes(width * 3) for _ in range(height))  # filter type 0, then the pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def wav(seconds: float, *, hz: float = 440.0, rate: int = 16_000) -> bytes:
    """A mono 16-bit PCM WAV of a sine tone."""
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        samples = (int(0.3 * 32767 * math.sin(2 * math.pi * hz * i / rate)) for i in range(int(seconds * rate)))
        file.writeframes(b"".join(struct.pack("<h", s) for s in samples))
    return out.getvalue()
