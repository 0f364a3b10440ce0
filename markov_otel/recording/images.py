"""`Image`: an image value of add_record, checked at the call, PNG-encoded off the caller's thread.

`add_record({"samples": Image(array_or_pil, caption=...)})` keeps the picture at that step: the
call checks its shape and copies its pixels (a later change to the caller's array does not
leak in); the artifact thread encodes it as PNG (a minimal encoder over zlib: no Pillow
needed) and stores it by digest like any file, named by a log record (`markov.key`,
`markov.step`, digest, `image/png`, size) and uploaded with the artifacts.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

from markov_otel.errors import ConfigError

MAX_PIXELS = 4096 * 4096
"""Largest image kept (pixels): a bound on the PNG and on the copy the caller pays."""
_COLOUR_TYPES = {
    1: 0,
    2: 4,
    3: 2,
    4: 6,
}  # channels -> PNG colour type (grey, grey+alpha, RGB, RGBA)


class Image:
    """An image for add_record: a numpy array (HxW, HxWxC or CxHxW with C in 1-4; uint8, or
    floats in [0, 1]), anything with `__array__` (a PIL image, a CPU torch tensor), with an
    optional caption."""

    __slots__ = ("caption", "source")

    def __init__(self, data: Any, *, caption: str | None = None) -> None:
        self.source, self.caption = data, caption

    def __repr__(self) -> str:
        return f"Image(caption={self.caption!r})"


def pixels(key: str, image: Image) -> Any:
    """The image as a fresh HxWxC uint8 array; a ConfigError naming `key` if it is not one."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is what an image array is made of
        raise ConfigError(f"record key {key!r}: Image needs numpy (pip install numpy)") from None
    try:
        array = np.asarray(image.source)
    except Exception as exc:  # any foreign object: its own error, named for the key
        raise ConfigError(f"record key {key!r}: Image of {type(image.source).__name__} is not "
                          f"an array ({exc})") from None  # fmt: skip
    shape = array.shape
    if array.ndim == 3 and shape[0] in _COLOUR_TYPES and shape[2] not in _COLOUR_TYPES:
        array = array.transpose(1, 2, 0)  # CxHxW (torch) to HxWxC
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in _COLOUR_TYPES or 0 in array.shape:
        raise ConfigError(
            f"record key {key!r}: an Image of shape {shape} is not an image; pass HxW, HxWxC "
            "or CxHxW with C = 1, 2, 3 or 4"
        )
    if array.shape[0] * array.shape[1] > MAX_PIXELS:
        raise ConfigError(
            f"record key {key!r}: an Image of {array.shape[0]}x{array.shape[1]} pixels is over "
            f"the limit of {MAX_PIXELS}; downscale it first"
        )
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise ConfigError(f"record key {key!r}: an Image has NaN or infinite pixels")
        array = np.clip(array, 0.0, 1.0) * 255.0 + 0.5
    elif array.dtype.kind not in "uib":
        raise ConfigError(f"record key {key!r}: an Image of dtype {array.dtype} is not pixels")
    return np.ascontiguousarray(np.clip(array, 0, 255).astype(np.uint8))


def png(array: Any) -> bytes:
    """PNG bytes of an HxWxC uint8 array (filter 0 on every row; zlib level 6)."""
    height, width, channels = array.shape
    rows = array.reshape(height, width * channels)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPES[channels], 0, 0, 0)
    return b"".join(
        (b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", header), _chunk(b"IDAT", zlib.compress(raw, 6)),
         _chunk(b"IEND", b""))
    )  # fmt: skip


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
