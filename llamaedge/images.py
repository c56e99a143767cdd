"""Image bytes before any decoder sees them: the format by magic bytes, the dimensions from
the header, and the limits of llamaedge/limits.py checked on both. Pure Python: the runtime
checks an image here before the engine's projector (mtmd's stb_image) decodes it, so that a
small file that would decode to a huge bitmap is refused unread.

WebP is the exception: mtmd decodes it only through ffmpeg, which llama-cpp-python's wheel is
built without, so the host decodes it here with Pillow (`decode_webp`, the one module that
imports Pillow) and gives mtmd the bitmap."""

from __future__ import annotations

import io
import struct

from llamaedge.limits import IMAGE_BYTES_MAX, IMAGE_PIXELS_MAX

# The formats read, by first bytes: what mtmd decodes without ffmpeg (stb_image), and WebP
# (RIFF....WEBP, `is_webp`), which decode_webp decodes.
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
          (b"BM", "bmp"))
SUPPORTED = "PNG, JPEG, WebP, GIF (its first frame; a WebP's too) or BMP"
# The start code of a lossy WebP's key frame (VP8, RFC 6386 9.1), and a lossless one's
# signature byte (VP8L).
_VP8_START = b"\x9d\x01\x2a"
_VP8L_SIGNATURE = 0x2F


class ImageError(ValueError):
    """Bytes that are not an image this host reads, or one over a limit; the message says
    which (and names the limit)."""


def image_format(data: bytes) -> str | None:
    """The format of an image this host reads, by its magic bytes; None for anything else."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    return "webp" if is_webp(data) else None


def is_webp(data: bytes) -> bool:
    return len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of a PNG, GIF, BMP or JPEG; None when it cannot be read."""
    kind = image_format(data)
    try:
        if kind == "png" and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if kind == "gif":
            return struct.unpack("<HH", data[6:10])
        if kind == "bmp":
            width, height = struct.unpack("<ii", data[18:26])
            return abs(width), abs(height)
        if kind == "jpeg":
            return _jpeg_dimensions(data)
        if kind == "webp":
            return _webp_dimensions(data)
    except struct.error:
        return None
    return None


def _jpeg_dimensions(data: bytes) -> tuple[int, int] | None:
    """From the first start-of-frame segment (SOF0..SOF15 but DHT, JPG and DAC)."""
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        if marker == 0xD8 or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        i += 2 + length
    return None


def _webp_dimensions(data: bytes) -> tuple[int, int] | None:
    """From the first chunk (the WebP container spec): a lossy frame's header (VP8), a lossless
    one's (VP8L), or the extended format's canvas (VP8X: animations, alpha, metadata)."""
    if len(data) < 30:
        return None
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == _VP8_START:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF  # the top two bits are the scaling
    if chunk == b"VP8L" and data[20] == _VP8L_SIGNATURE:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def decode_webp(data: bytes, *, pixels_max: int = IMAGE_PIXELS_MAX) -> tuple[int, int, bytes]:
    """A WebP (its first frame, if animated) as (width, height, RGB bytes, row by row), as
    mtmd_bitmap_init takes a bitmap. ImageError when Pillow cannot decode it, or when the size
    Pillow reads from it is over `pixels_max` (checked before the pixels are decoded)."""
    from PIL import Image  # (only when a WebP comes, not at every start)

    # What Pillow raises for a file it cannot read (UnidentifiedImageError is an OSError;
    # some decoders raise SyntaxError or EOFError on a broken stream).
    failures = (OSError, ValueError, EOFError, SyntaxError)
    try:
        image = Image.open(io.BytesIO(data), formats=["WEBP"])  # reads the header only
    except failures as exc:
        raise _undecodable(exc) from exc
    with image:
        width, height = image.size
        if width * height > pixels_max:
            raise _over_pixels(width, height, pixels_max)
        try:
            return width, height, image.convert("RGB").tobytes()  # the first frame: Image.open's
        except failures as exc:
            raise _undecodable(exc) from exc


def _over_pixels(width: int, height: int, pixels_max: int) -> ImageError:
    return ImageError(f"the image is {width}x{height} pixels, over the limit of {pixels_max} pixels (image_pixels_max)")


def _undecodable(exc: BaseException) -> ImageError:
    return ImageError(f"the WebP image could not be decoded (corrupt or truncated): {exc}")


def check_image(data: bytes, *, bytes_max: int = IMAGE_BYTES_MAX, pixels_max: int = IMAGE_PIXELS_MAX) -> str:
    """The format of `data`; ImageError when it is not an image this host reads or is over
    a limit."""
    if len(data) > bytes_max:
        raise ImageError(f"the image is {len(data)} bytes, over the limit of {bytes_max} (image_bytes_max)")
    kind = image_format(data)
    if kind is None:
        raise ImageError(f"the data is not an image of a supported format ({SUPPORTED})")
    size = dimensions(data)
    if size is None:
        raise ImageError(f"the {kind.upper()} image's header cannot be read (corrupt or truncated)")
    width, height = size
    if width * height > pixels_max:
        raise _over_pixels(width, height, pixels_max)
    return kind
