"""The local smooth level of a stack: what is left of each row once its small-scale structure is removed.

The noise clip widens each sample's window by a fraction of the pixel's contrast, since
star cores differ between frames by seeing and resampling. Contrast is what seeing
changes: a star stands out from its surroundings over a few pixels, a galaxy core or a
nebula is smooth over many. :func:`smooth_level` gives the level a pixel's contrast is
measured from: the morphological opening (a running minimum, then a running maximum, over
``2 * radius + 1`` pixels along the row) of the mean of the valid samples. Anything
narrower than the window (a star, a satellite trail crossing the row) is removed from the
opening; anything wider (sky, a galaxy's disk, a nebula) is kept, so its contrast is close
to 0 and a trail across it is judged against the noise. A trail in one sample raises the
mean by its share (``1/n``), and widens its own window by ``noise_scale`` of that share
at most (a trail along the row is kept in the opening: no widening at all).

Along rows only: a row's level then depends on nothing outside the row, so a region
stacked in bands of rows (memory bands, row parts) gives the pixels of one stack, and a
band needs no halo. Written against the array namespace of the samples (numpy, cupy),
with running extrema of shifted slices: ``4 * radius`` element-wise extrema of one
``(C, H, W)`` image. On numpy the noise clip's compiled kernel computes the same numbers
row by row as it clips (``structure_radius`` of
:func:`~zemosaic_dask.tasks.noise_rejection.reject_noise_clip`), from the samples it has
just read. Pixels outside the row, or without a valid sample, take no part.
"""

from __future__ import annotations

from typing import Any

from .namespace import array_namespace

__all__ = ["STRUCTURE_RADIUS_PX", "smooth_level"]

#: Half-width of the opening's window, in output pixels: a star of FWHM up to ~4 px
#: (Seestar frames resampled at their own scale) is narrower than the 9-pixel window.
STRUCTURE_RADIUS_PX = 4


def smooth_level(values: Any, valid: Any, radius: int = STRUCTURE_RADIUS_PX) -> Any:
    """The opening along rows of the mean of the valid samples, ``(1, C, H, W)`` float32.

    Parameters
    ----------
    values : array
        ``(K, C, H, W)`` float32 samples (any value where not valid).
    valid : array
        ``(K, C, H, W)`` bool, the samples that count.
    radius : int
        Half-width of the window, in pixels (>= 0; 0 returns the mean itself).

    Returns
    -------
    array
        The local smooth level, in the namespace of ``values``; NaN where no sample
        in the window around the pixel is valid.
    """
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    xp = array_namespace(values, valid)
    total = xp.zeros(tuple(values.shape[1:]), dtype=xp.float32)
    count = xp.zeros(tuple(values.shape[1:]), dtype=xp.float32)
    one = xp.ones(tuple(values.shape[1:]), dtype=xp.float32)
    for k in range(values.shape[0]):  # one sample at a time: no sample-sized temporary
        usable = valid[k, ...] & xp.isfinite(values[k, ...])
        total = total + xp.where(usable, values[k, ...], 0.0)
        count = count + xp.where(usable, one, 0.0)
    mean = xp.where(count > 0, total / xp.maximum(count, 1.0), xp.inf)  # no data: never the minimum
    del total, count
    eroded = _running(xp, mean, radius, xp.minimum, xp.inf)
    eroded = xp.where(xp.isinf(eroded), -xp.inf, eroded)  # no data in the window: never the maximum
    opened = _running(xp, eroded, radius, xp.maximum, -xp.inf)
    return xp.where(xp.isinf(opened), xp.nan, opened)[None, ...]


def _running(xp: Any, image: Any, radius: int, extremum: Any, neutral: float) -> Any:
    """Running ``extremum`` over ``2 radius + 1`` pixels along the rows of a ``(C, H, W)`` image.

    Outside the row counts as ``neutral`` (the extremum's identity).
    """
    if radius == 0:
        return image
    channels, height, width = (int(n) for n in image.shape)
    padded = xp.full((channels, height, width + 2 * radius), neutral, dtype=xp.float32)
    padded[:, :, radius : radius + width] = image
    out = image
    for shift in range(1, radius + 1):
        out = extremum(out, padded[:, :, radius + shift : radius + shift + width])
        out = extremum(out, padded[:, :, radius - shift : radius - shift + width])
    return out
