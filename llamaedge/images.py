"""Image bytes before any decoder sees them: the format by magic bytes, the dimensions from
the header, and the limits of llamaedge/limits.py checked on both. Pure Python: the runtime
checks an image here before the engine's projector (mtmd's stb_image) decodes it, so that a
small file that would decode to a huge bitmap is refused unread."""

from __future__ import annotations

import struct

from llamaedge.limits import IMAGE_BYTES_MAX, IMAGE_PIXELS_MAX

# What mtmd decodes without ffmpeg (stb_image), by first bytes. WebP needs ffmpeg in mtmd's
# helper, which llama-cpp-python's wheel is built without.
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
          (b"BM", "bmp"))
SUPPORTED = "PNG, JPEG, GIF (its first frame) or BMP"


class ImageError(ValueError):
    """Bytes that are not an image this host reads, or one over a limit; the message says
    which (and names the limit)."""


def image_format(data: bytes) -> str | None:
    """The format of an image mtmd can decode, by its magic bytes; None for anything else."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    return None


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


def check_image(data: bytes, *, bytes_max: int = IMAGE_BYTES_MAX, pixels_max: int = IMAGE_PIXELS_MAX) -> str:
    """The format of `data`; ImageError when it is not an image this host reads or is over
    a limit."""
    if len(data) > bytes_max:
        raise ImageError(f"the image is {len(data)} bytes, over the limit of {bytes_max} (image_bytes_max)")
    kind = image_format(data)
    if kind is None:
        if is_webp(data):
            raise ImageError(f"WebP images are not supported by this llama.cpp build; send {SUPPORTED}")
        raise ImageError(f"the data is not an image of a supported format ({SUPPORTED})")
    size = dimensions(data)
    if size is None:
        raise ImageError(f"the {kind.upper()} image's header cannot be read (corrupt or truncated)")
    width, height = size
    if width * height > pixels_max:
        raise ImageError(f"the image is {width}x{height} pixels, over the limit of {pixels_max} pixels (image_pixels_max)")
    return kind
