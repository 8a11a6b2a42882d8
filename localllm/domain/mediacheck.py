"""What an image or audio clip is, read from its first bytes, and the bounds it is held to before anything
decodes it (docs/limits.md, docs/multimodal.md).

A decompression bomb is small on the wire and huge decoded: a 100-byte PNG may declare 50,000 × 50,000
pixels (7.5 GB as RGB). The runner's decoders (stb_image for images, miniaudio for audio) allocate what the
header declares, so the header is read here, in the daemon, and a request whose media would decode past the
bounds is a 400 naming the part, as is a payload that is not valid base64, is cut short, or is no format the
runner reads. Pure functions of bytes: no decoder runs here.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import unquote_to_bytes

from . import limits
from .errors import InvalidRequest
from .media import Media, MediaKind

IMAGE_FORMATS = ("png", "jpeg", "gif", "bmp")  # what the runner decodes (stb_image)
AUDIO_FORMATS = ("wav", "mp3", "flac")  # what the runner decodes (miniaudio)
# WebP is recognised (its size is read) but refused: the runner's decoder needs ffmpeg for it


@dataclass(frozen=True)
class MediaInfo:
    """A media file's format and the size its header declares (pixels for an image, seconds for audio)."""

    format: str
    width: int = 0
    height: int = 0
    seconds: float = 0.0


def decode_base64(text: str, source: str, *, kind: MediaKind) -> bytes:
    """The bytes of a base64 payload (standard alphabet, padding required, whitespace allowed as MIME's line
    breaks are), refused before decoding when it would be past the item's byte bound."""
    bound = _item_bound(kind)
    size = len(text) // 4 * 3
    if size > bound + bound // 64:  # refused before decoding (MIME's line breaks may pad the text a little)
        _too_big(source, kind, size, bound)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        try:  # MIME's line breaks (whitespace), taken out only when there are some: a copy of a large text
            data = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest(
                f"{source}: the {kind} is not valid base64 (cut short, or not base64 at all)", field=source
            ) from None
    if len(data) > bound:
        _too_big(source, kind, len(data), bound)
    if not data:
        raise InvalidRequest(f"{source}: the {kind} is empty", field=source)
    return data


def data_url(url: str, source: str, *, kind: MediaKind) -> bytes:
    """The bytes of a `data:` URL (`data:image/png;base64,...`; percent-encoded without `;base64`)."""
    header, comma, payload = url.partition(",")
    if not comma or not header.lower().startswith("data:"):
        raise InvalidRequest(f"{source}: a data URL is data:<media type>;base64,<data>", field=source)
    if header.lower().endswith(";base64"):
        return decode_base64(payload, source, kind=kind)
    data = unquote_to_bytes(payload)
    if not data:
        raise InvalidRequest(f"{source}: the {kind} is empty", field=source)
    return data


def _too_big(source: str, kind: MediaKind, size: int, bound: int) -> NoReturn:
    raise InvalidRequest(
        f"{source}: the {kind} is {size} bytes, more than the {limits.size_text(bound)} allowed for one {kind}",
        field=source,
    )


def _item_bound(kind: MediaKind) -> int:
    return limits.IMAGE_MAX_BYTES if kind == "image" else limits.AUDIO_MAX_BYTES


def check_all(items: Sequence[Media]) -> None:
    """The bounds of one request's media: how many, their bytes together, and each item (`check`)."""
    if len(items) > limits.MEDIA_MAX_ITEMS:
        first = items[limits.MEDIA_MAX_ITEMS]
        raise InvalidRequest(
            f"{first.source}: the request holds {len(items)} images and audio clips, more than the "
            f"{limits.MEDIA_MAX_ITEMS} allowed",
            field=first.source,
        )
    total = 0
    for item in items:
        check(item)
        total += len(item.data)
        if total > limits.MEDIA_REQUEST_MAX_BYTES:
            raise InvalidRequest(
                f"{item.source}: the request's images and audio add up to more than the "
                f"{limits.size_text(limits.MEDIA_REQUEST_MAX_BYTES)} allowed",
                field=item.source,
            )


def check(item: Media) -> MediaInfo:
    """One item within its bounds, of a format the runner reads, whole as far as its header tells."""
    where = item.source
    bound = _item_bound(item.kind)
    if len(item.data) > bound:
        raise InvalidRequest(
            f"{where}: the {item.kind} is {len(item.data)} bytes, more than the {limits.size_text(bound)} allowed",
            field=where,
        )
    info = sniff(item.data, where)
    if info is None:
        wanted = IMAGE_FORMATS if item.kind == "image" else AUDIO_FORMATS
        raise InvalidRequest(
            f"{where}: not an {item.kind} this server reads (it takes {', '.join(f.upper() for f in wanted)})",
            field=where,
        )
    if item.kind == "image":
        if info.format not in IMAGE_FORMATS:
            what = "WebP images are not supported" if info.format == "webp" else f"a {info.format} file is no image"
            raise InvalidRequest(f"{where}: {what}: send PNG, JPEG, GIF or BMP", field=where)
        _check_pixels(info, where)
    else:
        if info.format not in AUDIO_FORMATS:
            raise InvalidRequest(f"{where}: a {info.format} file is no audio clip: send WAV, MP3 or FLAC", field=where)
        if info.seconds > limits.AUDIO_MAX_SECONDS:
            raise InvalidRequest(
                f"{where}: the audio lasts {info.seconds:.1f} s, more than the {limits.AUDIO_MAX_SECONDS:g} s allowed",
                field=where,
            )
    return info


def _check_pixels(info: MediaInfo, where: str) -> None:
    if info.width <= 0 or info.height <= 0:
        raise InvalidRequest(f"{where}: the image declares a size of {info.width} × {info.height}", field=where)
    side = limits.IMAGE_MAX_SIDE
    pixels = info.width * info.height
    if info.width > side or info.height > side or pixels > limits.IMAGE_MAX_PIXELS:
        raise InvalidRequest(
            f"{where}: the image declares {info.width} × {info.height} pixels, more than the "
            f"{limits.IMAGE_MAX_PIXELS:,} pixels ({side} on a side) allowed",
            field=where,
        )


def sniff(data: bytes, where: str = "") -> MediaInfo | None:
    """The format of `data` and the size its header declares; None for no format known here; a header cut
    short or inconsistent is an `InvalidRequest` naming `where`."""
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            return _png(data)
        if data.startswith(b"\xff\xd8\xff"):
            return _jpeg(data)
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return _gif(data)
        if data.startswith(b"BM"):
            return _bmp(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
            return _wav(data)
        if data.startswith(b"fLaC"):
            return _flac(data)
        if data.startswith(b"ID3") or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
            return _mp3(data)
    except (struct.error, IndexError, _Broken) as exc:
        why = str(exc) if isinstance(exc, _Broken) else "its header is cut short"
        raise InvalidRequest(f"{where}: the file is damaged or truncated: {why}", field=where) from None
    return None


def _tail(data: bytes) -> bytes:
    """The end of a file, less the zero bytes some writers pad it with (only the last 4 KiB is copied)."""
    return data[-4096:].rstrip(b"\0")


class _Broken(Exception):
    """A header that cannot be right (read as a truncated or damaged file)."""


def _png(data: bytes) -> MediaInfo:
    if data[12:16] != b"IHDR":
        raise _Broken("a PNG's first chunk must be IHDR")
    width, height = struct.unpack(">II", data[16:24])
    if not _tail(data).endswith(b"IEND\xae\x42\x60\x82"):
        raise _Broken("the PNG has no IEND chunk at its end")
    return MediaInfo("png", width, height)


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(data: bytes) -> MediaInfo:
    i = 2
    while True:
        while data[i] != 0xFF:  # (bytes between segments are not allowed, but decoders skip them)
            i += 1
        while data[i] == 0xFF:
            i += 1
        marker = data[i]
        i += 1
        if marker == 0xD8 or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            continue  # no length
        if marker in (0xD9, 0xDA):
            raise _Broken("the JPEG has no frame header (SOF) before its image data")
        (length,) = struct.unpack(">H", data[i : i + 2])
        if marker in _SOF:
            height, width = struct.unpack(">HH", data[i + 3 : i + 7])
            if b"\xff\xd9" not in data[-64:]:
                raise _Broken("the JPEG has no end-of-image marker")
            return MediaInfo("jpeg", width, height)
        if length < 2:
            raise _Broken("a JPEG segment's length is less than 2")
        i += length


def _gif(data: bytes) -> MediaInfo:
    width, height = struct.unpack("<HH", data[6:10])
    if not _tail(data).endswith(b";"):
        raise _Broken("the GIF has no trailer at its end")
    return MediaInfo("gif", width, height)


def _bmp(data: bytes) -> MediaInfo:
    size, offset, header = struct.unpack("<I4xII", data[2:18])
    if header == 12:
        width, height = struct.unpack("<HH", data[18:22])
    else:
        width, height = struct.unpack("<ii", data[18:26])
    if offset >= len(data) or (size and size > len(data)):
        raise _Broken("the BMP is shorter than its header says")
    return MediaInfo("bmp", width, abs(height))


def _webp(data: bytes) -> MediaInfo:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return MediaInfo("webp", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L":
        (bits,) = struct.unpack("<I", data[21:25])
        return MediaInfo("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return MediaInfo("webp", width, height)
    raise _Broken("a WebP's first chunk must be VP8, VP8L or VP8X")


def _wav(data: bytes) -> MediaInfo:
    """Exact: the data chunk's bytes over the fmt chunk's byte rate."""
    i = 12
    rate = 0
    while i + 8 <= len(data):
        chunk, size = data[i : i + 4], struct.unpack("<I", data[i + 4 : i + 8])[0]
        if chunk == b"fmt ":
            (rate,) = struct.unpack("<I", data[i + 16 : i + 20])
        elif chunk == b"data":
            if not rate:
                raise _Broken("the WAV has no fmt chunk before its data (or a byte rate of 0)")
            if i + 8 + size > len(data) and size != 0xFFFFFFFF:
                raise _Broken(f"the WAV's data chunk says {size} bytes, the file holds {len(data) - i - 8}")
            held = min(size, len(data) - i - 8)
            return MediaInfo("wav", seconds=held / rate)
        i += 8 + size + (size & 1)
    raise _Broken("the WAV has no data chunk")


def _flac(data: bytes) -> MediaInfo:
    """From STREAMINFO: total samples over the sample rate (a stream that does not say is bounded by bytes)."""
    if data[4] & 0x7F != 0:
        raise _Broken("a FLAC's first metadata block must be STREAMINFO")
    (packed,) = struct.unpack(">Q", data[18:26])
    rate = packed >> 44
    samples = packed & ((1 << 36) - 1)
    if rate == 0:
        raise _Broken("the FLAC declares a sample rate of 0")
    return MediaInfo("flac", seconds=samples / rate)


_MP3_BITRATES = {  # kbit/s by bitrate index: MPEG-1 layer III, MPEG-2/2.5 layer III
    1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3(data: bytes) -> MediaInfo:
    """From the first frame: a Xing/Info header's frame count (VBR), else the bytes over the bitrate (CBR)."""
    i = 0
    if data.startswith(b"ID3"):
        size = data[6] << 21 | data[7] << 14 | data[8] << 7 | data[9]
        i = 10 + size + (10 if data[5] & 0x10 else 0)
    while data[i] != 0xFF or data[i + 1] & 0xE0 != 0xE0:  # padding before the first frame
        i += 1
        if i > 64 << 10:
            raise _Broken("no MP3 frame in the first 64 KiB")
    header = data[i + 1 : i + 4]
    version, layer = (header[0] >> 3) & 3, (header[0] >> 1) & 3
    bitrate_index, rate_index = header[1] >> 4, (header[1] >> 2) & 3
    if layer != 1 or version == 1 or bitrate_index in (0, 15) or rate_index == 3:
        raise _Broken("the MP3's first frame header is not a valid layer III header")
    rate = _MP3_RATES[version][rate_index]
    bitrate = _MP3_BITRATES[1 if version == 3 else 2][bitrate_index] * 1000
    per_frame = 1152 if version == 3 else 576
    mono = (header[2] >> 6) == 3
    side = (17 if mono else 32) if version == 3 else (9 if mono else 17)
    tag = data[i + 4 + side : i + 8 + side + 8]
    if tag[:4] in (b"Xing", b"Info") and tag[7] & 1:
        (frames,) = struct.unpack(">I", tag[8:12])
        return MediaInfo("mp3", seconds=frames * per_frame / rate)
    return MediaInfo("mp3", seconds=(len(data) - i) * 8 / bitrate)


def from_url(url: str, source: str, *, kind: MediaKind = "image") -> Media:
    """A media part given as a URL: a `data:` URL's bytes, or an `http(s)` URL left for the service to fetch
    where the operator allows it (`Media.url`); any other scheme is refused naming the part."""
    scheme = url[: url.find(":")].lower() if ":" in url else ""
    if scheme == "data":
        return Media(kind, data_url(url, source, kind=kind), source)
    if scheme in ("http", "https") and kind == "image":
        return Media(kind, b"", source, url=url)
    raise InvalidRequest(
        f"{source}: an {kind} URL must be a data URL (data:<media type>;base64,...)"
        + (" or an http(s) URL" if kind == "image" else ""),
        field=source,
    )
