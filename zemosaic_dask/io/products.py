"""Output products: FITS images streamed from the Zarr store, the PNG preview, JSON files.

Every product is written under a temporary name and renamed into place, so a crash
never leaves a ``mosaic.fits`` that looks complete but is not.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from PIL import Image

from ..plans.grid import OutputGrid
from .store import MosaicStore, iter_row_bands

__all__ = [
    "preview_factor",
    "write_coverage_fits",
    "write_json",
    "write_mosaic_fits",
    "write_mosaic_products",
    "write_preview_png",
]

_FITS_BLOCK = 2880


@contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    tmp = path.with_name(f".{path.name}.partial")
    if tmp.exists():
        tmp.unlink()
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    target = Path(path)
    with _atomic_path(target) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")


def _image_header(grid: OutputGrid, shape: tuple[int, ...], *, extension: bool, name: str | None = None) -> fits.Header:
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


def _stream(path: Path, header: fits.Header, bands: Iterator[np.ndarray]) -> None:
    hdu = fits.StreamingHDU(str(path), header)
    try:
        for band in bands:
            hdu.write(band)
    finally:
        hdu.close()


def write_mosaic_fits(
    path: str | os.PathLike[str],
    store: MosaicStore,
    grid: OutputGrid,
    *,
    rows: int = 512,
    extra_header: dict[str, Any] | None = None,
    band_hook: Callable[[np.ndarray], None] | None = None,
) -> None:
    """Write ``mosaic.fits``: float32 (C,H,W) or (H,W) science image plus an ``ALPHA`` extension.

    The store is read once, ``rows`` rows of every channel at a time, so the writer never
    holds the whole mosaic in memory; each channel's rows are written at their place in
    the file. ``band_hook`` receives every ``(C, rows, W)`` float32 band in order (the
    preview is built from them, without reading the store again).
    """
    target = Path(path)
    mosaic = store.array("mosaic", mode="r")
    n_channels, height, width = mosaic.shape
    shape = (height, width) if n_channels == 1 else (n_channels, height, width)
    header = _image_header(grid, shape, extension=False)
    header["BUNIT"] = ("ADU", "linear, same units as the input frames")
    for key, value in (extra_header or {}).items():
        header[key] = value

    def alpha() -> Iterator[np.ndarray]:
        for y0, y1 in iter_row_bands(height, rows):
            yield np.asarray(store.read_rows("alpha", y0, y1), dtype=np.uint8)

    with _atomic_path(target) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(header.tostring().encode("ascii"))  # padded to whole 2880-byte blocks
            start = handle.tell()
            for y0, y1 in iter_row_bands(height, rows):
                band = np.asarray(mosaic[:, y0:y1, :], dtype=np.float32)
                for channel in range(n_channels):
                    handle.seek(start + (channel * height + y0) * width * 4)
                    handle.write(band[channel].astype(">f4").tobytes())
                if band_hook is not None:
                    band_hook(band)
            size = n_channels * height * width * 4
            handle.seek(start + size)
            handle.write(b"\0" * (-size % _FITS_BLOCK))
        _stream(tmp, _image_header(grid, (height, width), extension=True, name="ALPHA"), alpha())


def write_coverage_fits(path: str | os.PathLike[str], store: MosaicStore, grid: OutputGrid, *, rows: int = 512) -> None:
    """Write ``mosaic_coverage.fits``: float32 (H,W) sum of weights on the mosaic's WCS."""
    target = Path(path)
    height, width = grid.shape
    header = _image_header(grid, (height, width), extension=False)
    header["BUNIT"] = ("weight", "sum of the frames' footprint weights")

    def bands() -> Iterator[np.ndarray]:
        for y0, y1 in iter_row_bands(height, rows):
            yield np.asarray(store.read_rows("coverage", y0, y1), dtype=">f4")

    with _atomic_path(target) as tmp:
        _stream(tmp, header, bands())


def _block_mean(band: np.ndarray, factor: int) -> np.ndarray:
    """NaN-aware mean over ``factor`` x ``factor`` blocks of a (C, h, W) band (partial blocks at the edges)."""
    channels, height, width = band.shape
    out_h, out_w = math.ceil(height / factor), math.ceil(width / factor)
    finite = np.isfinite(band)
    values = np.where(finite, band, np.float32(0.0))
    weights = finite.astype(np.float32)
    sums = np.zeros((channels, height, out_w), dtype=np.float32)
    counts = np.zeros((channels, height, out_w), dtype=np.float32)
    for k in range(min(factor, width)):  # columns k, k + factor, ... of every block
        part = slice(k, None, factor)
        n = values[:, :, part].shape[2]
        sums[:, :, :n] += values[:, :, part]
        counts[:, :, :n] += weights[:, :, part]
    block_sums = np.zeros((channels, out_h, out_w), dtype=np.float32)
    block_counts = np.zeros((channels, out_h, out_w), dtype=np.float32)
    for k in range(min(factor, height)):
        part = slice(k, None, factor)
        n = sums[:, part].shape[1]
        block_sums[:, :n] += sums[:, part]
        block_counts[:, :n] += counts[:, part]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(block_counts > 0, block_sums / np.maximum(block_counts, 1), np.float32(np.nan)).astype(
            np.float32
        )


_STRETCH_SAMPLES = 500_000


def asinh_stretch(
    image: np.ndarray, *, black_percentile: float = 5.0, white_percentile: float = 99.8, softening: float = 15.0
) -> np.ndarray:
    """Stretch a (C, h, w) linear image to [0, 1] with an asinh curve (colours linked).

    The black and white points are percentiles of up to 500,000 evenly spaced finite
    pixels per channel.
    """
    finite = np.isfinite(image)
    if not finite.any():
        return np.zeros_like(image, dtype=np.float32)
    out = np.empty_like(image, dtype=np.float32)
    whites = []
    for channel in range(image.shape[0]):
        values = image[channel][finite[channel]]
        values = values[:: max(1, values.size // _STRETCH_SAMPLES)]
        black = float(np.percentile(values, black_percentile)) if values.size else 0.0
        np.subtract(image[channel], np.float32(black), out=out[channel])
        whites.append(float(np.percentile(values, white_percentile)) - black if values.size else 1.0)
    white = np.float32(max(max(whites), 1e-12))
    out /= white
    np.clip(out, 0.0, None, out=out)
    if softening > 0:
        out *= np.float32(softening)
        np.arcsinh(out, out=out)
        out /= np.float32(np.arcsinh(softening))
    return np.nan_to_num(np.clip(out, 0.0, 1.0, out=out), nan=0.0, copy=False)


def preview_factor(shape: tuple[int, int], max_side: int) -> int:
    """Block size that brings a ``(height, width)`` mosaic to a long side of at most ``max_side``."""
    return max(1, math.ceil(max(shape) / max(1, max_side)))


def write_preview_png(path: str | os.PathLike[str], small: np.ndarray, *, stretch: str = "asinh") -> tuple[int, int]:
    """Write the stretched 8-bit RGBA preview of a ``(C, h, w)`` block-mean image (NaN: transparent).

    Returns the preview's ``(height, width)``.
    """
    alpha = np.any(np.isfinite(small), axis=0)
    stretched = asinh_stretch(small, softening=15.0 if stretch == "asinh" else 0.0)
    if small.shape[0] == 1:
        stretched = np.repeat(stretched, 3, axis=0)
    rgba = np.empty(small.shape[1:] + (4,), dtype=np.uint8)
    rgba[..., :3] = np.moveaxis(np.round(stretched * 255.0), 0, -1).astype(np.uint8)
    rgba[..., 3] = np.where(alpha, 255, 0).astype(np.uint8)
    target = Path(path)
    with _atomic_path(target) as tmp:
        Image.fromarray(rgba).save(tmp, format="PNG", compress_level=1)  # a quick look: speed over size
    return rgba.shape[0], rgba.shape[1]


class _PreviewBlocks:
    """Block means of the mosaic's row bands, computed on a thread of their own as bands arrive.

    Bands need not hold whole blocks: rows left over from one band are carried into the
    next. At most two bands wait at any time, so memory stays bounded.
    """

    def __init__(self, factor: int) -> None:
        self.factor = factor
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="zemosaic-preview")
        self._pending: list[Future[np.ndarray]] = []
        self._carry: np.ndarray | None = None

    def add(self, band: np.ndarray) -> None:
        rows = band if self._carry is None else np.concatenate([self._carry, band], axis=1)
        whole = rows.shape[1] - rows.shape[1] % self.factor
        self._carry = rows[:, whole:] if whole < rows.shape[1] else None
        if whole:
            if len(self._pending) >= 2:
                self._pending[-2].result()
            self._pending.append(self._pool.submit(_block_mean, rows[:, :whole], self.factor))

    def image(self) -> np.ndarray:
        if self._carry is not None:
            self._pending.append(self._pool.submit(_block_mean, self._carry, self.factor))
        try:
            return np.concatenate([part.result() for part in self._pending], axis=1)
        finally:
            self._pool.shutdown()


def write_mosaic_products(
    output: str | os.PathLike[str],
    store: MosaicStore,
    grid: OutputGrid,
    *,
    extra_header: dict[str, Any] | None = None,
    preview_max_side: int = 3200,
    preview_stretch: str = "asinh",
) -> None:
    """Write ``mosaic.fits``, ``mosaic_coverage.fits`` and ``preview.png`` into ``output``.

    The mosaic is read from the store once, in bands of whole chunk rows: each band is
    written into the FITS file and handed to the preview's block means (long side at most
    ``preview_max_side``), computed on another thread; the coverage file is written
    meanwhile on a third.
    """
    out = Path(output)
    height, width = grid.shape
    blocks = _PreviewBlocks(preview_factor((height, width), preview_max_side))
    with ThreadPoolExecutor(1, thread_name_prefix="zemosaic-coverage") as pool:
        coverage = pool.submit(write_coverage_fits, out / "mosaic_coverage.fits", store, grid, rows=grid.chunk)
        write_mosaic_fits(
            out / "mosaic.fits", store, grid, rows=grid.chunk, extra_header=extra_header, band_hook=blocks.add
        )
        write_preview_png(out / "preview.png", blocks.image(), stretch=preview_stretch)
        coverage.result()
