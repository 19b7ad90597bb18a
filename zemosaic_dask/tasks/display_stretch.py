"""Stretches of a linear image to 16-bit display values: black and white points from robust percentiles.

A :class:`DisplayStretch` maps, per channel, the black point to 0 and the white point to
65535, linearly or along an asinh curve in between; values below the black point and NaN
(no data) become 0, values above the white point 65535. The points come from percentiles
of a sample of the whole mosaic (:func:`fit_display_stretch`), so every band of a mosaic
is stretched alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DisplayStretch", "fit_display_stretch", "stretch_to_uint16", "stretch_to_unit"]

UINT16_MAX = 65535


@dataclass(frozen=True)
class DisplayStretch:
    """A per-channel stretch of linear values to ``[0, 1]``.

    Attributes
    ----------
    kind : str
        ``"asinh"`` (``asinh(s x) / asinh(s)``) or ``"linear"`` (``x``), where ``x`` is the value
        scaled so that the black point is 0 and the white point 1.
    black, white : tuple of float
        Black and white points of each channel (``white > black``).
    softening : float
        ``s`` of the asinh curve: larger brightens faint signal more.
    """

    kind: str
    black: tuple[float, ...]
    white: tuple[float, ...]
    softening: float = 15.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable parameters (for ``report.json``)."""
        return {"kind": self.kind, "black": list(self.black), "white": list(self.white), "softening": self.softening}


def fit_display_stretch(
    sample: np.ndarray,
    *,
    kind: str = "asinh",
    black_percentile: float = 0.5,
    white_percentile: float = 99.95,
    linked: bool = False,
    softening: float = 15.0,
) -> DisplayStretch:
    """Black and white points from percentiles of the finite values of a ``(C, ...)`` sample.

    Parameters
    ----------
    sample : ndarray
        ``(C, ...)`` values of the mosaic (NaN ignored), e.g. a regular lattice of its pixels.
    kind : str
        ``"asinh"`` or ``"linear"``.
    black_percentile, white_percentile : float
        Percentiles giving the black and white points.
    linked : bool
        One black and one white point for all channels (the percentiles of all channels
        together), which keeps the image's colour balance; otherwise each channel's own.
    softening : float
        Softening of the asinh curve.

    Returns
    -------
    DisplayStretch
        With ``white > black`` in every channel (a constant channel gets ``white = black + 1``).
    """
    if kind not in ("asinh", "linear"):
        raise ValueError(f"stretch kind must be 'asinh' or 'linear', got {kind!r}")
    channels = sample.shape[0]
    groups = [sample.reshape(-1)] * channels if linked else [sample[c].reshape(-1) for c in range(channels)]
    blacks, whites = [], []
    for values in groups:
        values = values[np.isfinite(values)]
        if values.size == 0:
            low, high = 0.0, 1.0
        else:
            low, high = (float(v) for v in np.percentile(values, [black_percentile, white_percentile]))
        blacks.append(low)
        whites.append(high if high > low else low + 1.0)
    return DisplayStretch(kind, tuple(blacks), tuple(whites), float(softening))


def stretch_to_unit(image: np.ndarray, stretch: DisplayStretch) -> np.ndarray:
    """Stretch a ``(C, h, w)`` linear image to float32 ``[0, 1]``; NaN becomes 0."""
    out = np.empty(image.shape, dtype=np.float32)
    for channel in range(image.shape[0]):
        black, white = stretch.black[channel], stretch.white[channel]
        np.subtract(image[channel], np.float32(black), out=out[channel], dtype=np.float32)
        out[channel] *= np.float32(1.0 / (white - black))
    np.clip(out, 0.0, 1.0, out=out)
    if stretch.kind == "asinh" and stretch.softening > 0:
        out *= np.float32(stretch.softening)
        np.arcsinh(out, out=out)
        out *= np.float32(1.0 / np.arcsinh(stretch.softening))
    return np.nan_to_num(out, nan=0.0, copy=False)


def stretch_to_uint16(image: np.ndarray, stretch: DisplayStretch) -> np.ndarray:
    """Stretch a ``(C, h, w)`` linear image to uint16: black point 0, white point 65535, NaN 0."""
    unit = stretch_to_unit(image, stretch)
    unit *= np.float32(UINT16_MAX)
    np.rint(unit, out=unit)
    return unit.astype(np.uint16)
