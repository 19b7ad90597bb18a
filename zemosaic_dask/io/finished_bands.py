"""One band of the finished products: the display and aesthetic images of rows ``[y0:y1]``, written in place.

:func:`write_finished_band` is what one finishing task does on a worker (or in the client
when there is none): it reads the band's rows of ``mosaic`` (with a halo of rows for the
hole filling), makes the 16-bit display image and the flattened, colour-balanced,
hole-filled aesthetic image, and writes them at their byte offsets in the prepared FITS
files. Every parameter (stretches, sky model, gains) was fitted on the whole mosaic
beforehand, so the bands agree with one another.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..tasks.display_stretch import DisplayStretch, stretch_to_uint16
from ..tasks.sky_flattening import SkyBackground, fill_small_holes, flatten_sky
from .fits_layout import FitsPlane, write_plane_rows
from .store import MosaicStore

__all__ = ["AestheticModel", "FinishedBand", "aesthetic_rows", "write_finished_band"]


@dataclass(frozen=True)
class AestheticModel:
    """What turns the linear mosaic into the aesthetic image, fitted on the whole mosaic.

    Attributes
    ----------
    background : SkyBackground
        The smooth sky removed, and the pedestal the sky is set to.
    gains : tuple of float
        Colour gain of each channel, applied to the signal above the sky.
    fill_radius : int
        Holes enclosed by data within this many pixels are filled (0: none).
    """

    background: SkyBackground
    gains: tuple[float, ...]
    fill_radius: int

    @property
    def halo(self) -> int:
        """Rows read beyond a band on each side so that hole filling sees what it needs."""
        return 2 * self.fill_radius + 2 if self.fill_radius > 0 else 0


def aesthetic_rows(store: MosaicStore, model: AestheticModel, y0: int, y1: int) -> np.ndarray:
    """``(C, y1 - y0, W)`` float32 aesthetic image of rows ``y0:y1`` (NaN outside the footprint)."""
    height = store.array("mosaic", mode="r").shape[1]
    top, bottom = max(0, y0 - model.halo), min(height, y1 + model.halo)
    image = np.asarray(store.read_rows("mosaic", top, bottom), dtype=np.float32)
    sky = model.background.evaluate(top, bottom, image.shape[2])
    flat = flatten_sky(image, sky, model.background.pedestal, model.gains)
    return fill_small_holes(flat, model.fill_radius)[:, y0 - top : y1 - top]


@dataclass(frozen=True)
class FinishedBand:
    """Rows ``[y0:y1]`` of the finished products; a product left as None is not written.

    Attributes
    ----------
    store : MosaicStore
        The final store.
    y0, y1 : int
        The band's rows.
    display : FitsPlane or None
        Where ``mosaic_display.fits`` (uint16) takes the band.
    display_stretch : DisplayStretch or None
        The display image's stretch.
    aesthetic : FitsPlane or None
        Where ``mosaic_aesthetic.fits`` (float32) takes the band.
    aesthetic_model : AestheticModel or None
        What makes the aesthetic image.
    """

    store: MosaicStore
    y0: int
    y1: int
    display: FitsPlane | None
    display_stretch: DisplayStretch | None
    aesthetic: FitsPlane | None
    aesthetic_model: AestheticModel | None


def write_finished_band(job: FinishedBand) -> int:
    """Make and write the band's display and aesthetic rows; return the number of rows written."""
    if job.display is not None and job.display_stretch is not None:
        image = np.asarray(job.store.read_rows("mosaic", job.y0, job.y1), dtype=np.float32)
        display = stretch_to_uint16(image, job.display_stretch)
        # BITPIX 16 with BZERO 32768: the file holds value - 32768 as int16 (the top bit flipped)
        write_plane_rows(job.display, job.y0, (display ^ np.uint16(0x8000)).view(np.int16))
    if job.aesthetic is not None and job.aesthetic_model is not None:
        write_plane_rows(job.aesthetic, job.y0, aesthetic_rows(job.store, job.aesthetic_model, job.y0, job.y1))
    return job.y1 - job.y0
