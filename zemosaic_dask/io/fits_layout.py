"""Byte layout of the FITS products, so that rows can be written at their place by many processes.

A FITS image is a header padded to whole 2880-byte blocks followed by its pixels, row after
row, one channel plane after the other, big-endian, the data padded to a whole block with
zeros. :func:`create_fits_file` writes the headers and sizes the file (sparse: the pixels
are holes until written, and holes read as zeros, which is also the padding);
:func:`write_plane_rows` then writes any band of rows at its byte offset, from any process
that sees the file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.io import fits

from ..plans.grid import OutputGrid

__all__ = ["FITS_BLOCK", "FitsPlane", "create_fits_file", "image_header", "write_plane_rows"]

FITS_BLOCK = 2880


def image_header(grid: OutputGrid, shape: tuple[int, ...], *, extension: bool, name: str | None = None) -> fits.Header:
    """Header of a float32 image (uint8 for ``ALPHA``) of ``shape`` on the grid's WCS.

    Parameters
    ----------
    grid : OutputGrid
        Gives the celestial WCS.
    shape : tuple of int
        ``(H, W)`` or ``(C, H, W)``, numpy order.
    extension : bool
        An ``IMAGE`` extension header instead of a primary one.
    name : str, optional
        ``EXTNAME``; ``"ALPHA"`` makes the image uint8 (``BITPIX = 8``).
    """
    header = fits.Header()
    if extension:
        header["XTENSION"] = "IMAGE"
    else:
        header["SIMPLE"] = True
    header["BITPIX"] = -32 if name != "ALPHA" else 8
    header["NAXIS"] = len(shape)
    for axis, length in enumerate(reversed(shape), start=1):
        header[f"NAXIS{axis}"] = length
    if extension:
        header["PCOUNT"] = 0
        header["GCOUNT"] = 1
    else:
        header["EXTEND"] = True
    if name:
        header["EXTNAME"] = name
    header.extend(grid.wcs.to_header(relax=True), update=True)
    return header


@dataclass(frozen=True)
class FitsPlane:
    """Where the pixels of one HDU lie in a FITS file.

    Attributes
    ----------
    path : str
        The file (a temporary name until the product is complete).
    offset : int
        Byte offset of the first pixel.
    channels, height, width : int
        The HDU's planes and their size.
    dtype : str
        On-disk type: ``">f4"`` (float32, big-endian) or ``"u1"`` (uint8).
    """

    path: str
    offset: int
    channels: int
    height: int
    width: int
    dtype: str

    @property
    def nbytes(self) -> int:
        """Bytes of pixels, padding excluded."""
        return self.channels * self.height * self.width * np.dtype(self.dtype).itemsize

    def row_offset(self, channel: int, y: int) -> int:
        """Byte offset of row ``y`` of plane ``channel``."""
        return self.offset + (channel * self.height + y) * self.width * np.dtype(self.dtype).itemsize


def _padded(size: int) -> int:
    return size + (-size % FITS_BLOCK)


def create_fits_file(
    path: str | os.PathLike[str], hdus: Sequence[tuple[fits.Header, dict[str, Any]]]
) -> list[FitsPlane]:
    """Write the headers of ``hdus`` and size the file; return where each HDU's pixels go.

    Parameters
    ----------
    path : path-like
        The file, created or truncated.
    hdus : sequence of (Header, dict)
        Each HDU's header and its pixel layout, ``{"channels", "height", "width", "dtype"}``.

    Returns
    -------
    list of FitsPlane
        One per HDU, in order. Pixels not written later read as zeros.
    """
    planes = []
    with open(path, "wb") as handle:
        position = 0
        for header, layout in hdus:
            text = header.tostring().encode("ascii")  # padded to whole blocks
            handle.seek(position)
            handle.write(text)
            plane = FitsPlane(os.path.abspath(path), position + len(text), **layout)
            planes.append(plane)
            position = plane.offset + _padded(plane.nbytes)
        handle.truncate(position)
    return planes


def write_plane_rows(plane: FitsPlane, y0: int, rows: np.ndarray) -> None:
    """Write ``rows`` (``(C, h, W)`` or ``(h, W)``) as rows ``y0:y0+h`` of every plane of ``plane``."""
    rows = rows.reshape(plane.channels, -1, plane.width)
    with open(plane.path, "r+b") as handle:
        for channel in range(plane.channels):
            handle.seek(plane.row_offset(channel, y0))
            handle.write(np.ascontiguousarray(rows[channel], dtype=plane.dtype).tobytes())
