"""Direct reads of row ranges of uncompressed 2-D FITS images.

A Seestar frame is a plain 2-D image (``BITPIX 16`` with ``BZERO 32768``: unsigned 16-bit
pixels) whose rows are contiguous on disk. Reading the rows of a window straight from the
file, once the data offset is known, avoids parsing the header again for every window a
worker reads. :func:`raw_layout` says whether a file's image qualifies and where its
pixels are; :func:`read_rows` reads rows ``[y0, y1)`` as float32, equal to the values
astropy returns for the same pixels (the test suite checks every supported ``BITPIX``).

The choice is made from the file's content, never its name: only a file that starts with
the plain FITS signature (``SIMPLE  =``, so no gzip, bzip2 or zip stream) and whose image is a
plain ``PrimaryHDU`` or ``ImageHDU`` (not a tile-compressed ``CompImageHDU``, which astropy
presents as an ``ImageHDU`` subclass) qualifies. Images with ``BLANK`` values, other
scalings, compression or more than two axes do not qualify and are read through astropy by
the caller.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning

__all__ = ["RawLayout", "is_plain_fits", "raw_layout", "read_rows"]

# BITPIX -> big-endian dtype of the stored values.
_DTYPES = {8: np.dtype("u1"), 16: np.dtype(">i2"), 32: np.dtype(">i4"), -32: np.dtype(">f4"), -64: np.dtype(">f8")}
_CACHE_SIZE = 4096
# Every uncompressed FITS file starts with this card; gzip (1f 8b), bzip2 and zip streams do not.
_FITS_SIGNATURE = b"SIMPLE  ="


@dataclass(frozen=True)
class RawLayout:
    """Where and how a 2-D image's pixels are stored.

    Attributes
    ----------
    offset : int
        Byte offset of the first pixel in the file.
    dtype : numpy.dtype
        Stored (big-endian) type of a pixel.
    shape : tuple of int
        ``(height, width)``.
    zero : float
        Value added after conversion to float32 (32768 for unsigned 16-bit data, else 0).
    """

    offset: int
    dtype: np.dtype
    shape: tuple[int, int]
    zero: float


_layouts: OrderedDict[tuple[str, int, int, int], RawLayout | None] = OrderedDict()
_lock = threading.Lock()


def is_plain_fits(path: str) -> bool:
    """Return True when ``path`` starts with the uncompressed FITS signature ``SIMPLE  =``.

    Parameters
    ----------
    path : str
        File to look at (its first 9 bytes are read).

    Returns
    -------
    bool
        False for gzip, bzip2 or zip streams (whatever the file is called) and for files
        that are not FITS at all.
    """
    with open(path, "rb") as handle:
        return handle.read(len(_FITS_SIGNATURE)) == _FITS_SIGNATURE


def _describe(path: str, hdu_index: int) -> RawLayout | None:
    if not is_plain_fits(path):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        with fits.open(path, mode="readonly", memmap=False, lazy_load_hdus=True) as hdul:
            hdu = hdul[hdu_index]
            if isinstance(hdu, fits.CompImageHDU) or not isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU)):
                return None
            header = hdu.header
            bitpix = header.get("BITPIX")
            if header.get("NAXIS") != 2 or bitpix not in _DTYPES or "BLANK" in header:
                return None
            bzero, bscale = header.get("BZERO", 0), header.get("BSCALE", 1)
            if bscale != 1 or bzero not in (0, 32768) or (bzero == 32768 and bitpix != 16):
                return None
            offset = int(hdul.fileinfo(hdu_index)["datLoc"])
            shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
    return RawLayout(offset, _DTYPES[bitpix], shape, float(bzero))


def raw_layout(path: str, hdu_index: int) -> RawLayout | None:
    """Return the layout of HDU ``hdu_index`` of ``path`` when its rows can be read directly.

    Cached per process, keyed by the file's modification time and size, so a file
    replaced on disk is described again.

    Parameters
    ----------
    path : str
        FITS file (opened read-only).
    hdu_index : int
        Index of the image HDU.

    Returns
    -------
    RawLayout or None
        None when the image does not qualify (see the module description).
    """
    status = os.stat(path)
    key = (path, hdu_index, status.st_mtime_ns, status.st_size)
    with _lock:
        if key in _layouts:
            _layouts.move_to_end(key)
            return _layouts[key]
    layout = _describe(path, hdu_index)
    with _lock:
        _layouts[key] = layout
        while len(_layouts) > _CACHE_SIZE:
            _layouts.popitem(last=False)
    return layout


def read_rows(path: str, layout: RawLayout, y0: int, y1: int, x0: int = 0, x1: int | None = None) -> np.ndarray:
    """Read pixels ``[y0:y1, x0:x1]`` of an image as a C-contiguous float32 array.

    Whole rows are read (they are contiguous on disk); only the window's columns are
    converted.

    Raises
    ------
    OSError
        When the file is shorter than its layout says.
    """
    height, width = layout.shape
    x1 = width if x1 is None else x1
    if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
        raise ValueError(f"window [{y0}:{y1}, {x0}:{x1}] outside an image of {height}x{width} pixels")
    itemsize = layout.dtype.itemsize
    count = (y1 - y0) * width
    with open(path, "rb") as handle:
        handle.seek(layout.offset + y0 * width * itemsize)
        data = handle.read(count * itemsize)
    if len(data) != count * itemsize:
        raise OSError(f"{path}: truncated image data (wanted {count * itemsize} bytes, read {len(data)})")
    rows = np.frombuffer(data, dtype=layout.dtype).reshape(y1 - y0, width)[:, x0:x1].astype(np.float32)
    if layout.zero:
        rows += np.float32(layout.zero)
    return rows
