"""Output products: FITS images written from the Zarr store in parallel bands, the PNG preview, JSON files.

The calling process writes the FITS headers and sizes the files; one job per band of chunk
rows (a task on the Dask workers through the runner the execution layer gives, or run here in
turn with :data:`~.band_tasks.run_in_turn`) reads its rows from the store
once, writes them at their byte offsets and returns its preview block sums. Every
product is written under a temporary name and renamed into place, so a crash never
leaves a ``mosaic.fits`` that looks complete but is not.
"""

from __future__ import annotations

import json
import logging
import math
import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from ..messages import msg
from ..plans.grid import OutputGrid
from .band_tasks import BandRunner, atomic_path, run_in_turn
from .finished_products import FinishingOptions, LatticeSample, write_finished_products
from .fits_layout import FitsPlane, create_fits_file, image_header
from .png_rgba import write_png_rgba
from .product_bands import BandBlocks, PreviewBlocks, ProductBand, write_product_band
from .store import MosaicStore, iter_row_bands

__all__ = [
    "preview_factor",
    "write_json",
    "write_mosaic_products",
    "write_preview_png",
]

log = logging.getLogger(__name__)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    target = Path(path)
    with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        # Streamed: a plan of many frames is never held as one string beside its dictionary.
        json.dump(data, handle, indent=2, sort_keys=False, default=str)
        handle.write("\n")


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
    np.clip(out, 0.0, 1.0, out=out)  # no infinity is left; NaN (no data) becomes 0
    np.copyto(out, np.float32(0.0), where=np.isnan(out))
    return out


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
    stretched *= np.float32(255.0)  # in place, a channel at a time below: a large preview is not copied whole
    for channel in range(3):
        rgba[..., channel] = np.round(stretched[channel])
    rgba[..., 3] = np.where(alpha, 255, 0).astype(np.uint8)
    target = Path(path)
    with atomic_path(target) as tmp:
        write_png_rgba(tmp, rgba)  # a quick look: speed over size, compressed on several threads
    return rgba.shape[0], rgba.shape[1]


def _create_fits_products(
    out: Path, stack: ExitStack, grid: OutputGrid, n_channels: int, extra_header: dict[str, Any] | None
) -> tuple[FitsPlane, FitsPlane, FitsPlane]:
    """Create ``mosaic.fits`` and ``mosaic_coverage.fits`` under temporary names: headers, sized files.

    The files are renamed into place when ``stack`` closes without an error, removed otherwise.
    """
    height, width = grid.shape
    shape = (height, width) if n_channels == 1 else (n_channels, height, width)
    primary = image_header(grid, shape, extension=False)
    primary["BUNIT"] = ("ADU", "linear, same units as the input frames")
    for key, value in (extra_header or {}).items():
        primary[key] = value
    alpha = image_header(grid, (height, width), extension=True, name="ALPHA")
    coverage = image_header(grid, (height, width), extension=False)
    coverage["BUNIT"] = ("weight", "sum of the frames' footprint weights")
    image = {"channels": n_channels, "height": height, "width": width, "dtype": ">f4"}
    plane = {"channels": 1, "height": height, "width": width}
    mosaic_tmp = stack.enter_context(atomic_path(out / "mosaic.fits"))
    mosaic_plane, alpha_plane = create_fits_file(mosaic_tmp, [(primary, image), (alpha, {**plane, "dtype": "u1"})])
    coverage_tmp = stack.enter_context(atomic_path(out / "mosaic_coverage.fits"))
    (coverage_plane,) = create_fits_file(coverage_tmp, [(coverage, {**plane, "dtype": ">f4"})])
    return mosaic_plane, alpha_plane, coverage_plane


def write_mosaic_products(
    output: str | os.PathLike[str],
    store: MosaicStore,
    grid: OutputGrid,
    *,
    run_bands: BandRunner = run_in_turn,
    extra_header: dict[str, Any] | None = None,
    preview_max_side: int = 3200,
    preview_stretch: str = "asinh",
    fits_max_pixels: int | None = None,
    finishing: FinishingOptions | None = None,
) -> dict[str, Any]:
    """Write ``mosaic.fits``, ``mosaic_coverage.fits`` and ``preview.png`` into ``output``.

    Parameters
    ----------
    output : path-like
        The output folder; the Dask workers must see it (as they see the store).
    store : MosaicStore
        The final store.
    grid : OutputGrid
        Its grid (shape, chunk rows, WCS).
    run_bands : BandRunner
        Runs the band jobs: :func:`zemosaic_dask.execute.product_tasks.band_runner` makes them
        tasks on the workers; the default writes the bands here, in turn.
    extra_header : dict, optional
        Keywords added to the primary header of ``mosaic.fits``.
    preview_max_side : int
        Longest side of ``preview.png``.
    preview_stretch : str
        ``"asinh"`` or ``"linear"``.
    fits_max_pixels : int, optional
        Above ``H * W`` pixels the FITS products are skipped with a warning (the store stays
        the product) and only the preview is written; None: no limit.

    Returns
    -------
    dict
        What was written, for ``report.json``: ``fits`` (``"written"`` or ``"skipped"``),
        ``fits_max_pixels``, ``pixels``, ``bands``, ``parallel``, and ``finished`` when finished
        products were asked for (the files written and their fitted parameters).
    """
    out = Path(output)
    height, width = grid.shape
    n_channels = int(store.array("mosaic", mode="r").shape[0])
    factor = preview_factor((height, width), preview_max_side)
    write_fits = fits_max_pixels is None or height * width <= fits_max_pixels
    summary: dict[str, Any] = {
        "fits": "written" if write_fits else "skipped",
        "fits_max_pixels": fits_max_pixels,
        "pixels": height * width,
        "parallel": run_bands.parallel,
    }
    if not write_fits:
        log.warning(
            msg(
                "fits_too_large",
                width=width,
                height=height,
                pixels=height * width,
                limit=fits_max_pixels,
                store=store.url,
            )
        )
    with ExitStack() as stack:
        planes = _create_fits_products(out, stack, grid, n_channels, extra_header) if write_fits else (None,) * 3
        finish = finishing is not None and finishing.enabled and write_fits
        stride = finishing.lattice_stride((height, width)) if finish and finishing is not None else 0
        sample = LatticeSample(n_channels, (height, width), stride) if stride else None
        jobs = [
            ProductBand(store, y0, y1, *planes, factor, sample_stride=stride)
            for y0, y1 in iter_row_bands(height, grid.chunk)
        ]
        summary["bands"] = len(jobs)
        preview = PreviewBlocks(n_channels, (height, width), factor)

        def collect(blocks: BandBlocks) -> None:
            preview.add(blocks)
            if sample is not None:
                sample.add(blocks)

        run_bands(write_product_band, jobs, collect, "products")
        write_preview_png(out / "preview.png", preview.take_image(), stretch=preview_stretch)
    if sample is not None and finishing is not None:
        summary["finished"] = write_finished_products(out, store, grid, sample, finishing, run_bands=run_bands)
    elif finishing is not None and finishing.enabled:
        summary["finished"] = {"written": [], "skipped": "fits_max_pixels"}
    return summary
