"""Finished products beside the linear mosaic: ``mosaic_display.fits``, ``mosaic_aesthetic.fits`` and ``.png``.

The products pass over the store (:mod:`.products`) returns, besides the preview blocks,
a regular lattice of the mosaic's pixels (every ``stride``-th row and column, a divisor of the sky block,
about 400,000 positions or more). On the client, that sample gives every whole-mosaic
statistic: the display stretch's percentiles, the sky model's block medians, the colour
gains and the aesthetic stretch. One task per band of chunk rows then writes both FITS
images on the workers; the client finally streams the aesthetic FITS into a 16-bit PNG.

- ``mosaic_display.fits``: uint16 (BITPIX 16, BZERO 32768), each channel stretched
  between its own black point (0.5th percentile, written 0) and white point (99.95th
  percentile, written 65535), asinh by default; NaN (no data) is 0. Per channel, so a
  coloured sky comes out grey; its pixels are otherwise those of ``mosaic.fits``.
- ``mosaic_aesthetic.fits``: float32, the sky model removed and set to one pedestal,
  colour gains applied to the signal above it, small holes filled; still linear (a star
  keeps its flux ratio to any other star), NaN outside the footprint.
- ``mosaic_aesthetic.png``: 16-bit RGB (or grey) of it, one asinh stretch for all
  channels (colour balance kept), black 0 outside the footprint.
"""

from __future__ import annotations

import logging
import math
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from ..plans.grid import OutputGrid
from ..tasks.display_stretch import DisplayStretch, fit_display_stretch, stretch_to_uint16
from ..tasks.sky_flattening import fit_colour_gains, fit_sky_background, flatten_sky
from .band_tasks import BandRunner, atomic_path, run_in_turn
from .finished_bands import AestheticModel, FinishedBand, write_finished_band
from .fits_layout import FitsPlane, create_fits_file, image_header
from .png16 import write_png16
from .product_bands import BandBlocks
from .store import MosaicStore, iter_row_bands

__all__ = ["FinishingOptions", "FinishingPlan", "LatticeSample", "fit_finishing", "write_finished_products"]

log = logging.getLogger(__name__)

SAMPLE_POSITIONS = 400_000


@dataclass(frozen=True)
class FinishingOptions:
    """Which finished products to write, and how (``zemosaic.output``).

    Attributes
    ----------
    write_display : bool
        Write ``mosaic_display.fits``.
    display_stretch : str
        ``"asinh"`` or ``"linear"``.
    write_aesthetic : bool
        Write ``mosaic_aesthetic.fits`` and ``mosaic_aesthetic.png``.
    background_block_px : int
        Side of the sky model's blocks, in mosaic pixels.
    fill_radius_px : int
        Holes enclosed by data within this many pixels are filled in the aesthetic image.
    """

    write_display: bool = False
    display_stretch: str = "asinh"
    write_aesthetic: bool = False
    background_block_px: int = 128
    fill_radius_px: int = 3

    @property
    def enabled(self) -> bool:
        """True when any finished product is asked for."""
        return self.write_display or self.write_aesthetic

    def lattice_stride(self, shape: tuple[int, int]) -> int:
        """Step of the pixel lattice sampled for the statistics: a divisor of the block size."""
        wanted = max(1, math.isqrt(max(1, shape[0] * shape[1] // SAMPLE_POSITIONS)))
        block = self.background_block_px
        return max(d for d in range(1, block + 1) if block % d == 0 and d <= wanted)


class LatticeSample:
    """The mosaic's pixels on a lattice of step ``stride``, gathered from the bands in any order."""

    def __init__(self, channels: int, shape: tuple[int, int], stride: int) -> None:
        self.stride = stride
        self.values = np.full((channels, -(-shape[0] // stride), -(-shape[1] // stride)), np.nan, dtype=np.float32)

    def add(self, blocks: BandBlocks) -> None:
        """Place one band's lattice rows."""
        if blocks.sample is not None:
            self.values[:, blocks.sample_first : blocks.sample_first + blocks.sample.shape[1]] = blocks.sample


@dataclass(frozen=True)
class FinishingPlan:
    """Everything fitted on the whole mosaic that the finishing bands apply."""

    display_stretch: DisplayStretch | None
    aesthetic: AestheticModel | None
    aesthetic_stretch: DisplayStretch | None
    stride: int

    def to_dict(self) -> dict[str, Any]:
        """Parameters for ``report.json``."""
        out: dict[str, Any] = {"sample_stride": self.stride}
        if self.display_stretch is not None:
            out["display"] = {"stretch": self.display_stretch.to_dict()}
        if self.aesthetic is not None and self.aesthetic_stretch is not None:
            out["aesthetic"] = {
                "background": self.aesthetic.background.to_dict(),
                "colour_gains": list(self.aesthetic.gains),
                "fill_radius_px": self.aesthetic.fill_radius,
                "stretch": self.aesthetic_stretch.to_dict(),
            }
        return out


def fit_finishing(sample: np.ndarray, stride: int, options: FinishingOptions) -> FinishingPlan:
    """Fit the stretches, the sky model and the colour gains on a ``(C, sy, sx)`` lattice sample."""
    display = fit_display_stretch(sample, kind=options.display_stretch) if options.write_display else None
    if not options.write_aesthetic:
        return FinishingPlan(display, None, None, stride)
    background = fit_sky_background(sample, stride, options.background_block_px)
    sky = background.evaluate_lattice(np.arange(sample.shape[1]) * stride, np.arange(sample.shape[2]) * stride)
    channels = sample.shape[0]
    gains = fit_colour_gains(flatten_sky(sample, sky, background.pedestal, (1.0,) * channels), background.pedestal)
    flat = flatten_sky(sample, sky, background.pedestal, gains)
    stretch = fit_display_stretch(flat, kind="asinh", linked=True)
    model = AestheticModel(background, gains, options.fill_radius_px)
    return FinishingPlan(display, model, stretch, stride)


def _headers(grid: OutputGrid, shape: tuple[int, ...], plan: FinishingPlan) -> tuple[fits.Header, fits.Header]:
    display = image_header(grid, shape, extension=False)
    display["BITPIX"] = 16
    display["BZERO"] = (32768, "unsigned 16-bit")
    display["BSCALE"] = 1
    if plan.display_stretch is not None:
        display["STRETCH"] = (plan.display_stretch.kind, "black point -> 0, white point -> 65535")
        for c, (black, white) in enumerate(zip(plan.display_stretch.black, plan.display_stretch.white, strict=True)):
            display[f"BLACK{c + 1}"] = (black, "black point (-> 0), linear ADU")
            display[f"WHITE{c + 1}"] = (white, "white point (-> 65535), linear ADU")
    aesthetic = image_header(grid, shape, extension=False)
    aesthetic["BUNIT"] = ("ADU", "sky flattened to PEDESTAL, linear")
    if plan.aesthetic is not None:
        aesthetic["PEDESTAL"] = (plan.aesthetic.background.pedestal, "sky level after flattening")
        aesthetic["SKYBLOCK"] = (plan.aesthetic.background.block_px, "sky model block side, pixels")
        for c, gain in enumerate(plan.aesthetic.gains):
            aesthetic[f"CGAIN{c + 1}"] = (gain, "colour gain above the pedestal")
    return display, aesthetic


def write_finished_products(
    output: str | Path,
    store: MosaicStore,
    grid: OutputGrid,
    sample: LatticeSample,
    options: FinishingOptions,
    *,
    run_bands: BandRunner = run_in_turn,
) -> dict[str, Any]:
    """Fit the finishing on ``sample`` and write the products ``options`` asks for into ``output``.

    Parameters
    ----------
    output : path-like
        The output folder (seen by the workers).
    store : MosaicStore
        The final store.
    grid : OutputGrid
        Its grid.
    sample : LatticeSample
        The mosaic's lattice sample, from the products pass.
    options : FinishingOptions
        What to write.
    run_bands : BandRunner
        Runs the band jobs (on the workers, or here in turn by default).

    Returns
    -------
    dict
        For ``report.json``: ``written`` (file names) and the fitted parameters.
    """
    out = Path(output)
    plan = fit_finishing(sample.values, sample.stride, options)
    height, width = grid.shape
    channels = sample.values.shape[0]
    shape = (height, width) if channels == 1 else (channels, height, width)
    layout = {"channels": channels, "height": height, "width": width}
    display_header, aesthetic_header = _headers(grid, shape, plan)
    written: list[str] = []
    with ExitStack() as stack:
        display_plane: FitsPlane | None = None
        aesthetic_plane: FitsPlane | None = None
        if options.write_display:
            tmp = stack.enter_context(atomic_path(out / "mosaic_display.fits"))
            (display_plane,) = create_fits_file(tmp, [(display_header, {**layout, "dtype": ">i2"})])
            written.append("mosaic_display.fits")
        if options.write_aesthetic:
            tmp = stack.enter_context(atomic_path(out / "mosaic_aesthetic.fits"))
            (aesthetic_plane,) = create_fits_file(tmp, [(aesthetic_header, {**layout, "dtype": ">f4"})])
            written.append("mosaic_aesthetic.fits")
        jobs = [
            FinishedBand(store, y0, y1, display_plane, plan.display_stretch, aesthetic_plane, plan.aesthetic)
            for y0, y1 in iter_row_bands(height, grid.chunk)
        ]
        run_bands(write_finished_band, jobs, lambda _: None, "finishing")
    if plan.aesthetic_stretch is not None:
        _write_aesthetic_png(out, grid, channels, plan.aesthetic_stretch)
        written.append("mosaic_aesthetic.png")
    log.info("finished products: %s", ", ".join(written))
    return {"written": written, **plan.to_dict()}


def _write_aesthetic_png(out: Path, grid: OutputGrid, channels: int, stretch: DisplayStretch) -> None:
    """Stream ``mosaic_aesthetic.fits`` into a 16-bit PNG, band by band."""
    height, width = grid.shape
    with fits.open(out / "mosaic_aesthetic.fits", memmap=True) as hdul:
        data = hdul[0].data

        def bands() -> Any:
            for y0, y1 in iter_row_bands(height, grid.chunk):
                rows = np.asarray(data[..., y0:y1, :], dtype=np.float32).reshape(channels, y1 - y0, width)
                yield stretch_to_uint16(rows, stretch)

        with atomic_path(out / "mosaic_aesthetic.png") as tmp:
            write_png16(tmp, bands(), height, width, channels)
