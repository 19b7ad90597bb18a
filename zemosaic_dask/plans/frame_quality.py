"""Per-frame image quality measured at ingest: the values the quality gate compares.

A :class:`FrameQuality` holds no pixels and round-trips through JSON inside
:class:`~zemosaic_dask.plans.frames.FrameInfo` (``plan.json``). Plans written before it
existed have no ``quality``; the gate then keeps their frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["FrameQuality"]


@dataclass(frozen=True)
class FrameQuality:
    """Star and background measures of one frame (see :func:`~zemosaic_dask.tasks.measure_frame_quality`).

    Attributes
    ----------
    n_stars : int
        Sources detected above the detection threshold (5 sigma of the background noise).
    fwhm_px : float
        Median FWHM of the clean, unsaturated stars, in pixels of the frame (NaN without stars).
    elongation : float
        Median ratio of the major to the minor axis of those stars (1 for round stars).
    noise : float
        Background noise (RMS) of the luminance image the stars were found on.
    stars : tuple of (float, float, float)
        ``(ra, dec, flux)`` of the brightest unsaturated stars (RA/Dec in degrees, aperture
        flux in ADU of the luminance image): the gate matches them with the same stars in
        other frames to measure the transparency.
    """

    n_stars: int
    fwhm_px: float
    elongation: float
    noise: float
    stars: tuple[tuple[float, float, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary (NaN written as None)."""
        return {
            "n_stars": self.n_stars,
            **{k: _finite_or_none(getattr(self, k)) for k in _FLOAT_FIELDS},
            "stars": [[ra, dec, flux] for ra, dec, flux in self.stars],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrameQuality:
        """Build the measures from :meth:`to_dict` output."""
        return cls(
            n_stars=int(data["n_stars"]),
            **{k: math.nan if data.get(k) is None else float(data[k]) for k in _FLOAT_FIELDS},
            stars=tuple((float(ra), float(dec), float(flux)) for ra, dec, flux in data.get("stars", ())),
        )


_FLOAT_FIELDS = ("fwhm_px", "elongation", "noise")


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
