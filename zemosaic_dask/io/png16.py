"""A streaming 16-bit PNG writer: rows are compressed as they come, so the image is never whole in memory.

Pillow writes 16-bit PNG for greyscale only; this writes 16-bit greyscale or RGB (PNG
colour types 0 and 2, no interlace, filter type 0 on every row) from bands of rows.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable

import numpy as np

__all__ = ["PNG_SIGNATURE", "png_chunk", "write_png16"]

#: The eight bytes every PNG file starts with.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IDAT_BYTES = 1 << 20


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and the CRC of type and data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png16(
    path: str | os.PathLike[str], bands: Iterable[np.ndarray], height: int, width: int, channels: int, *, level: int = 1
) -> None:
    """Write a 16-bit PNG from ``(C, h, width)`` uint16 bands of rows, top to bottom.

    Parameters
    ----------
    path : path-like
        The PNG file.
    bands : iterable of ndarray
        ``(channels, h, width)`` uint16 bands whose heights add up to ``height``.
    height, width : int
        Size of the image.
    channels : int
        1 (greyscale) or 3 (RGB).
    level : int
        zlib compression level.
    """
    if channels not in (1, 3):
        raise ValueError(f"a 16-bit PNG holds 1 or 3 channels, got {channels}")
    colour_type = 0 if channels == 1 else 2
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    compressor = zlib.compressobj(level)
    rows_written = 0
    with open(path, "wb") as handle:
        handle.write(PNG_SIGNATURE + png_chunk(b"IHDR", header))
        pending = bytearray()
        for band in bands:
            rows = np.moveaxis(np.asarray(band, dtype=">u2"), 0, -1).reshape(band.shape[1], width * channels)
            lines = np.zeros((rows.shape[0], 1 + rows.shape[1] * 2), dtype=np.uint8)  # filter byte 0: none
            lines[:, 1:] = rows.view(np.uint8).reshape(rows.shape[0], -1)
            rows_written += rows.shape[0]
            pending += compressor.compress(lines.tobytes())
            while len(pending) >= _IDAT_BYTES:
                handle.write(png_chunk(b"IDAT", bytes(pending[:_IDAT_BYTES])))
                del pending[:_IDAT_BYTES]
        if rows_written != height:
            raise ValueError(f"the bands hold {rows_written} rows, the PNG header says {height}")
        pending += compressor.flush()
        handle.write(png_chunk(b"IDAT", bytes(pending)))
        handle.write(png_chunk(b"IEND", b""))
