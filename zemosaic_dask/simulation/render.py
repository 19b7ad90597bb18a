"""Exact rendering of point sources: circular Gaussians integrated over every pixel.

A star of flux ``F`` centred at pixel coordinates ``(x0, y0)`` (0-based, pixel centres on
integers) deposits into pixel ``(y, x)`` the integral of the Gaussian over the square
``[x - 0.5, x + 0.5] x [y - 0.5, y + 0.5]``. The profile is separable, so each star needs
two 1-D differences of ``erf`` on a small cut-out, and every star of a field is scattered
onto the grid at once with :func:`numpy.bincount`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales
from scipy.special import erf

__all__ = ["FWHM_TO_SIGMA", "cutout_radius", "render_stars", "sample_star_cutouts"]

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def cutout_radius(fwhm_px: float) -> int:
    """Half-size in pixels of a cut-out that holds all but ~1e-8 of a star's flux."""
    return int(math.ceil(6.0 * fwhm_px * FWHM_TO_SIGMA)) + 1


def _pixel_integrals(centres: np.ndarray, first: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """Return ``(N, size)`` integrals of unit 1-D Gaussians over pixels ``first + k``."""
    edges = first[:, None] + np.arange(size + 1)[None, :] - 0.5 - centres[:, None]
    cdf = 0.5 * erf(edges / (sigma * math.sqrt(2.0)))
    return np.diff(cdf, axis=1)


def sample_star_cutouts(
    x: np.ndarray, y: np.ndarray, shape: tuple[int, int], fwhm_px: float
) -> tuple[np.ndarray, np.ndarray]:
    """Return flat pixel indices and PSF weights of every star's cut-out inside ``shape``.

    Parameters
    ----------
    x, y : ndarray
        0-based pixel coordinates of the star centres.
    shape : tuple of int
        ``(height, width)`` of the grid.
    fwhm_px : float
        FWHM of the circular Gaussian PSF in pixels.

    Returns
    -------
    index : ndarray of int64, shape (N, K*K)
        Flat index ``y * width + x`` of every cut-out pixel; -1 where it falls outside.
    weight : ndarray of float64, shape (N, K*K)
        Fraction of the star's flux that lands in that pixel (0 outside the grid).
    """
    height, width = shape
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    radius = cutout_radius(fwhm_px)
    size = 2 * radius + 1
    sigma = fwhm_px * FWHM_TO_SIGMA
    # Round in a way that does not depend on the platform's handling of .5 ties.
    x_first = np.floor(x + 0.5).astype(np.int64) - radius
    y_first = np.floor(y + 0.5).astype(np.int64) - radius
    px = _pixel_integrals(x, x_first, size, sigma)
    py = _pixel_integrals(y, y_first, size, sigma)
    xs = x_first[:, None] + np.arange(size)[None, :]
    ys = y_first[:, None] + np.arange(size)[None, :]
    weight = (py[:, :, None] * px[:, None, :]).reshape(len(x), size * size)
    inside = ((ys >= 0) & (ys < height))[:, :, None] & ((xs >= 0) & (xs < width))[:, None, :]
    inside = inside.reshape(len(x), size * size)
    index = (ys[:, :, None] * width + xs[:, None, :]).reshape(len(x), size * size)
    index = np.where(inside, index, -1)
    weight = np.where(inside, weight, 0.0)
    return index, weight


def scatter(index: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Sum ``values`` into a float64 ``shape`` image at flat ``index`` (-1 is dropped)."""
    keep = index >= 0
    flat = np.bincount(index[keep], weights=values[keep], minlength=shape[0] * shape[1])
    return flat.reshape(shape)


def _pixel_scale_arcsec(wcs: WCS) -> float:
    return float(np.sqrt(np.prod(proj_plane_pixel_scales(wcs.celestial)))) * 3600.0


def render_stars(
    ra: np.ndarray,
    dec: np.ndarray,
    fluxes: np.ndarray,
    wcs: WCS,
    shape: tuple[int, int],
    fwhm_px: float,
    background: float | Sequence[float] | None = None,
    *,
    flux_pixel_scale: float | None = None,
) -> np.ndarray:
    """Render stars onto any celestial grid as a ``(C, H, W)`` float32 image.

    Parameters
    ----------
    ra, dec : array_like
        Star positions in degrees, shape ``(N,)``.
    fluxes : array_like
        ``(N, C)`` fluxes per channel (``(N,)`` gives one channel): the sum of the star's
        light over the pixels of the grid (but see ``flux_pixel_scale``).
    wcs : astropy.wcs.WCS
        Celestial WCS of the grid (SIP distortions are honoured).
    shape : tuple of int
        ``(height, width)`` of the grid.
    fwhm_px : float
        PSF FWHM in pixels of this grid.
    background : float or sequence of float, optional
        Constant added to every pixel, one value per channel or one for all.
    flux_pixel_scale : float, optional
        Pixel scale (arcsec/px) in which ``fluxes`` are expressed. When it differs from the
        grid's scale the surface brightness is kept, as interpolating resamplers do: the
        rendered sum becomes ``flux * (flux_pixel_scale / grid_scale) ** 2``.

    Returns
    -------
    ndarray of float32, shape (C, H, W)
    """
    if fwhm_px <= 0:
        raise ValueError(f"fwhm_px must be > 0, got {fwhm_px}")
    height, width = (int(shape[0]), int(shape[1]))
    fluxes = np.asarray(fluxes, dtype=np.float64)
    if fluxes.ndim == 1:
        fluxes = fluxes[:, None]
    ra = np.asarray(ra, dtype=np.float64).ravel()
    dec = np.asarray(dec, dtype=np.float64).ravel()
    if fluxes.shape[0] != ra.size or dec.size != ra.size:
        raise ValueError(
            f"ra ({ra.size}), dec ({dec.size}) and fluxes ({fluxes.shape[0]} rows) must describe the same stars"
        )
    n_channels = fluxes.shape[1]
    if flux_pixel_scale is not None:
        fluxes = fluxes * (float(flux_pixel_scale) / _pixel_scale_arcsec(wcs)) ** 2
    image = np.zeros((n_channels, height, width), dtype=np.float64)
    if ra.size:
        x, y = wcs.celestial.all_world2pix(ra, dec, 0)
        reach = cutout_radius(fwhm_px)
        near = np.isfinite(x) & np.isfinite(y)
        near &= (x > -reach) & (x < width - 1 + reach) & (y > -reach) & (y < height - 1 + reach)
        index, weight = sample_star_cutouts(x[near], y[near], (height, width), fwhm_px)
        for channel in range(n_channels):
            image[channel] = scatter(index, weight * fluxes[near, channel][:, None], (height, width))
    if background is not None:
        levels = np.broadcast_to(np.asarray(background, dtype=np.float64), (n_channels,))
        image += levels[:, None, None]
    return image.astype(np.float32)
