"""An 8-bit RGBA PNG writer whose compression runs on several threads.

The preview is written after the last band of the products: the workers are idle while it
is compressed. Its rows are filtered with PNG's "Up" filter (each byte minus the byte above
it, modulo 256: smooth skies become runs of small numbers) and the filtered bytes are cut
into pieces that are deflated at once on threads (zlib releases the GIL). Each piece but
the last ends on a sync flush, which ends its deflate blocks on a byte boundary, so the
pieces joined are one valid deflate stream; the zlib header and the Adler-32 of the whole
filtered image frame it, as a single compression would.
"""

from __future__ import annotations

import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .png16 import PNG_SIGNATURE, png_chunk

__all__ = ["write_png_rgba"]

#: Bytes per IDAT chunk.
_IDAT_BYTES = 1 << 20
#: Fewest filtered bytes per compressed piece: below this, threads cost more than they save.
_MIN_PIECE_BYTES = 1 << 20
#: zlib header for deflate with a 32 KiB window at the fastest level (FLEVEL 0), FCHECK set.
_ZLIB_HEADER = b"\x78\x01"


def _usable_cpus() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _up_filtered(rgba: np.ndarray) -> np.ndarray:
    """The rows of ``(H, W, 4)`` uint8 pixels as PNG scanlines: filter byte 2 ("Up"), then the differences."""
    height = rgba.shape[0]
    rows = rgba.reshape(height, -1)
    lines = np.empty((height, rows.shape[1] + 1), dtype=np.uint8)
    lines[:, 0] = 2
    lines[0, 1:] = rows[0]  # the row above the first is zero
    np.subtract(rows[1:], rows[:-1], out=lines[1:, 1:])  # uint8: modulo 256, as the filter is defined
    return lines


def _deflate_piece(data: memoryview, level: int, last: bool) -> bytes:
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15)  # raw deflate: the pieces share one header
    return compressor.compress(data) + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def _zlib_stream(data: bytes, level: int, pieces: int) -> bytes:
    """``data`` compressed as one zlib stream, its deflate run on ``pieces`` threads."""
    view = memoryview(data)
    edges = [len(data) * i // pieces for i in range(pieces + 1)]
    parts = [(view[a:b], level, i == pieces - 1) for i, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True))]
    if pieces == 1:
        body = [_deflate_piece(*parts[0])]
    else:
        with ThreadPoolExecutor(max_workers=pieces) as pool:
            body = list(pool.map(lambda part: _deflate_piece(*part), parts))
    return _ZLIB_HEADER + b"".join(body) + struct.pack(">I", zlib.adler32(data) & 0xFFFFFFFF)


def write_png_rgba(
    path: str | os.PathLike[str], rgba: np.ndarray, *, level: int = 1, threads: int | None = None
) -> None:
    """Write ``(H, W, 4)`` uint8 pixels as an 8-bit RGBA PNG (colour type 6, no interlace).

    Parameters
    ----------
    path : path-like
        The PNG file.
    rgba : ndarray
        ``(H, W, 4)`` uint8: red, green, blue, alpha.
    level : int
        zlib compression level.
    threads : int, optional
        Most threads compressing at once (default: the CPUs this process may use, at most 8);
        an image gets one per megabyte of filtered rows.
    """
    rgba = np.ascontiguousarray(rgba)
    if rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.dtype != np.uint8:
        raise ValueError(f"an RGBA PNG is written from (H, W, 4) uint8 pixels, got {rgba.shape} {rgba.dtype}")
    height, width = rgba.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"a PNG needs at least one pixel, got {height}x{width}")
    data = _up_filtered(rgba).tobytes()
    available = threads or min(8, _usable_cpus())
    pieces = max(1, min(available, len(data) // _MIN_PIECE_BYTES))
    stream = _zlib_stream(data, level, pieces)
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    with open(path, "wb") as handle:
        handle.write(PNG_SIGNATURE + png_chunk(b"IHDR", header))
        for start in range(0, len(stream), _IDAT_BYTES):
            handle.write(png_chunk(b"IDAT", stream[start : start + _IDAT_BYTES]))
        handle.write(png_chunk(b"IEND", b""))
