"""One band of whole chunk rows of the products: read once from the store, written into the FITS files.

:func:`write_product_band` is what one products task does on a worker (or in the client
when there is none): it reads the band's rows of ``mosaic``, ``alpha`` and ``coverage``,
writes them at their byte offsets in the prepared FITS files, and returns the band's
preview block sums, so the preview needs no second read of the store.
:class:`PreviewBlocks` adds those sums up into the block-mean image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .fits_layout import FitsPlane, write_plane_rows
from .store import MosaicStore

__all__ = ["BandBlocks", "PreviewBlocks", "ProductBand", "band_block_sums", "write_product_band"]


@dataclass(frozen=True)
class ProductBand:
    """Rows ``[y0:y1]`` of the products; a plane left as None is not written.

    Attributes
    ----------
    store : MosaicStore
        The final store (``mosaic``, ``alpha``, ``coverage``).
    y0, y1 : int
        The band's rows, whole chunk rows of the store.
    mosaic, alpha, coverage : FitsPlane or None
        Where the arrays' pixels go in the FITS files (None: FITS products not written).
    preview_factor : int
        Side of the preview's blocks, in mosaic pixels.
    sample_stride : int
        Step of the lattice of pixels returned for the finished products' statistics
        (rows and columns that are multiples of it); 0: none.
    """

    store: MosaicStore
    y0: int
    y1: int
    mosaic: FitsPlane | None
    alpha: FitsPlane | None
    coverage: FitsPlane | None
    preview_factor: int
    sample_stride: int = 0


@dataclass(frozen=True)
class BandBlocks:
    """Sums and counts of the finite pixels of one band over the preview's blocks.

    ``sums`` and ``counts`` are ``(C, n, w)`` float32 for block rows ``first:first+n``, or
    None when the band holds no finite pixel. A block cut by a band boundary gets partial
    sums from both bands. ``sample`` holds the band's pixels on the lattice of
    :attr:`ProductBand.sample_stride` (``(C, n, ceil(W / stride))``, first lattice row
    ``sample_first``), or None.
    """

    first: int
    sums: np.ndarray | None
    counts: np.ndarray | None
    sample: np.ndarray | None = None
    sample_first: int = 0


def band_block_sums(band: np.ndarray, factor: int, y0: int) -> BandBlocks:
    """Sums and counts of the finite values of a ``(C, h, W)`` band starting at mosaic row ``y0``.

    Blocks are ``factor`` x ``factor`` pixels on the whole mosaic's lattice (block row
    ``y // factor``); partial blocks at the right edge and the band's ends are summed over
    the pixels present.
    """
    first = y0 // factor
    finite = np.isfinite(band)
    if not finite.any():
        return BandBlocks(first, None, None)
    if factor == 1:
        return BandBlocks(first, np.where(finite, band, np.float32(0.0)), finite.astype(np.float32))
    channels, height, width = band.shape
    top = y0 - first * factor  # rows of the first block above the band
    n_rows, n_columns = math.ceil((top + height) / factor), math.ceil(width / factor)
    # Zero rows around the band (and zeros in place of NaN) add nothing, so every block row is whole.
    values = np.zeros((channels, n_rows * factor, width), dtype=np.float32)
    counts = np.zeros(values.shape, dtype=bool)
    np.copyto(values[:, top : top + height], band, where=finite)
    counts[:, top : top + height] = finite

    def blocks(padded: np.ndarray, dtype: type) -> np.ndarray:
        rows = padded[:, 0::factor].astype(dtype)  # whole rows first: long contiguous additions
        for k in range(1, factor):
            rows += padded[:, k::factor]
        columns = np.zeros((channels, n_rows, n_columns * factor), dtype=dtype)
        columns[:, :, :width] = rows
        out = columns[:, :, 0::factor].copy()
        for k in range(1, factor):
            out += columns[:, :, k::factor]
        return out

    return BandBlocks(first, blocks(values, np.float32), blocks(counts, np.int32).astype(np.float32))


def _has_bytes(values: np.ndarray) -> bool:
    """True when any byte differs from zero (``-0.0`` included): zeros are holes of the file already."""
    return bool(np.ascontiguousarray(values).view(np.uint8).any())


def write_product_band(job: ProductBand) -> BandBlocks:
    """Read the band from the store once, write it into the FITS files, return its preview blocks.

    An empty band (never written: NaN, zero coverage and alpha) costs a NaN write into
    ``mosaic.fits`` only; zero rows of ``alpha`` and ``coverage`` stay holes of the files.
    """
    store, y0, y1 = job.store, job.y0, job.y1
    image = np.asarray(store.read_rows("mosaic", y0, y1), dtype=np.float32)
    if job.mosaic is not None:
        write_plane_rows(job.mosaic, y0, image)
    for name, plane in (("alpha", job.alpha), ("coverage", job.coverage)):
        if plane is not None:
            rows = store.read_rows(name, y0, y1)
            if _has_bytes(rows):
                write_plane_rows(plane, y0, rows)
    blocks = band_block_sums(image, job.preview_factor, y0)
    if job.sample_stride <= 0:
        return blocks
    stride = job.sample_stride
    first = -(-y0 // stride)
    sample = np.ascontiguousarray(image[:, first * stride - y0 :: stride, ::stride])
    return BandBlocks(blocks.first, blocks.sums, blocks.counts, sample, first)


class PreviewBlocks:
    """The preview's block means, accumulated from :class:`BandBlocks` in any order.

    Parameters
    ----------
    channels : int
        Channels of the mosaic.
    shape : tuple of int
        ``(H, W)`` of the mosaic.
    factor : int
        Block side in mosaic pixels.
    """

    def __init__(self, channels: int, shape: tuple[int, int], factor: int) -> None:
        size = (channels, math.ceil(shape[0] / factor), math.ceil(shape[1] / factor))
        self._sums: np.ndarray | None = np.zeros(size, dtype=np.float32)
        self._counts: np.ndarray | None = np.zeros(size, dtype=np.float32)

    def add(self, blocks: BandBlocks) -> None:
        """Add one band's sums and counts."""
        if blocks.sums is None or blocks.counts is None:
            return
        if self._sums is None or self._counts is None:
            raise RuntimeError("the preview's block means were already taken")
        rows = slice(blocks.first, blocks.first + blocks.sums.shape[1])
        self._sums[:, rows] += blocks.sums
        self._counts[:, rows] += blocks.counts

    def take_image(self) -> np.ndarray:
        """``(C, h, w)`` float32 means of the finite pixels of each block (NaN where none).

        The means are computed in place of the sums, and the accumulators are released: a
        large preview is not held twice while it is stretched. Call it once, after the
        last :meth:`add`.
        """
        if self._sums is None or self._counts is None:
            raise RuntimeError("the preview's block means were already taken")
        means, counts = self._sums, self._counts
        self._sums = self._counts = None
        np.divide(means, np.maximum(counts, np.float32(1)), out=means)
        means[counts == 0] = np.float32(np.nan)
        return means
