"""Accuracy measurements of a mosaic against the simulated truth (numpy only).

- :func:`measure_star_flux_ratio`: aperture photometry of isolated, bright, fully covered
  stars against their true fluxes (photometric linearity and calibration);
- :func:`background_residual`: star-free residual against the truth in units of the noise
  expected from the coverage (background matching and seams);
- :func:`star_mask`, :func:`footprint_count`, :func:`union_footprint_mask`: the pixel
  sets those measurements need.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales
from scipy.ndimage import binary_dilation
from scipy.spatial import cKDTree

__all__ = [
    "STAR_COLUMNS",
    "background_residual",
    "footprint_count",
    "load_stars",
    "measure_star_flux_ratio",
    "star_mask",
    "union_footprint_mask",
]

STAR_COLUMNS = ("ra", "dec", "flux_r", "flux_g", "flux_b")
_FLUX_COLUMNS = ("flux_r", "flux_g", "flux_b")


def load_stars(path: str | os.PathLike[str]) -> np.ndarray:
    """Read ``stars.csv`` into a structured array with fields ``ra, dec, flux_r, flux_g, flux_b``."""
    table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2, dtype=np.float64)
    if table.shape[1] != len(STAR_COLUMNS):
        raise ValueError(f"{path} has {table.shape[1]} columns; expected {', '.join(STAR_COLUMNS)}")
    out = np.zeros(table.shape[0], dtype=[(name, np.float64) for name in STAR_COLUMNS])
    for k, name in enumerate(STAR_COLUMNS):
        out[name] = table[:, k]
    return out


def _as_chw(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        return image[None]
    if image.ndim != 3:
        raise ValueError(f"expected a (C, H, W) or (H, W) image, got shape {image.shape}")
    return image


def _true_fluxes(stars: Mapping[str, Any] | np.ndarray, n_channels: int) -> np.ndarray:
    if n_channels == 3:
        return np.stack([np.asarray(stars[c], dtype=np.float64) for c in _FLUX_COLUMNS], axis=1)
    if n_channels == 1:
        return np.asarray(stars["flux_g"], dtype=np.float64)[:, None]
    raise ValueError(f"images have 1 (green) or 3 (R, G, B) channels, got {n_channels}")


def _pixel_scale(wcs: WCS) -> float:
    return float(np.sqrt(np.prod(proj_plane_pixel_scales(wcs.celestial)))) * 3600.0


def measure_star_flux_ratio(
    image_chw: np.ndarray,
    wcs: WCS,
    stars: Mapping[str, Any] | np.ndarray,
    *,
    aperture_px: float,
    annulus: tuple[float, float],
    min_snr: float = 30.0,
    coverage: np.ndarray | None = None,
    isolation: float = 0.02,
    flux_pixel_scale: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Aperture photometry of the true stars; ratio of measured to true flux per channel.

    A star is measured when its aperture and annulus lie inside the image, hold no NaN
    (and, with ``coverage``, only covered pixels), when no other star brighter than
    ``isolation`` times its flux lies within ``annulus[1] + aperture_px``, and when its true
    flux over the aperture noise (estimated from the annulus) is at least ``min_snr`` in
    every channel. The background is the annulus median.

    Parameters
    ----------
    image_chw : ndarray
        ``(3, H, W)`` R, G, B image, or ``(H, W)`` / ``(1, H, W)`` compared with ``flux_g``.
    wcs : astropy.wcs.WCS
        Celestial WCS of the image.
    stars : structured array or mapping
        Columns ``ra, dec, flux_r, flux_g, flux_b`` (see :func:`load_stars`).
    aperture_px : float
        Aperture radius in pixels; 2 FWHM or more captures the whole PSF.
    annulus : tuple of float
        Inner and outer radius of the background annulus, ``aperture_px < r_in < r_out``.
    min_snr : float
        Minimum signal-to-noise ratio of the true flux in the aperture.
    coverage : ndarray, optional
        ``(H, W)`` coverage; pixels with coverage <= 0 count as missing.
    isolation : float
        Flux fraction above which a neighbour disqualifies a star.
    flux_pixel_scale : float, optional
        Pixel scale (arcsec/px) the catalogue fluxes refer to, when the image's differs
        (true fluxes are then scaled by ``(flux_pixel_scale / image_scale) ** 2``).

    Returns
    -------
    median_ratio : ndarray, shape (C,)
        Median of measured / true flux over the selected stars, per channel.
    per_star_ratios : ndarray, shape (N, C)
        The ratio of every selected star.
    """
    image = _as_chw(image_chw).astype(np.float64, copy=False)
    n_channels, height, width = image.shape
    r_in, r_out = (float(annulus[0]), float(annulus[1]))
    if not 0 < aperture_px < r_in < r_out:
        raise ValueError(f"need 0 < aperture_px < r_in < r_out, got aperture_px={aperture_px}, annulus={annulus}")
    true = _true_fluxes(stars, n_channels)
    if flux_pixel_scale is not None:
        true = true * (float(flux_pixel_scale) / _pixel_scale(wcs)) ** 2
    x, y = wcs.celestial.all_world2pix(np.asarray(stars["ra"]), np.asarray(stars["dec"]), 0)
    half = int(math.ceil(r_out)) + 1
    finite_xy = np.isfinite(x) & np.isfinite(y)
    ix, iy = (np.rint(np.where(finite_xy, c, -1e9)).astype(np.int64) for c in (x, y))
    inside = finite_xy & (ix >= half) & (ix < width - half) & (iy >= half) & (iy < height - half)
    isolated = _isolated(x, y, true.sum(axis=1), r_out + aperture_px, isolation)
    candidates = np.flatnonzero(inside & isolated)
    radii = (float(aperture_px), r_in, r_out)
    ys, xs, in_aperture, in_annulus = _cutouts(x, y, candidates, half, radii)
    good = np.all(np.isfinite(image[:, ys[:, :, None], xs[:, None, :]]), axis=0)
    if coverage is not None:
        good &= np.asarray(coverage)[ys[:, :, None], xs[:, None, :]] > 0
    chosen = candidates[np.all(good | ~(in_aperture | in_annulus), axis=(1, 2))]
    ys, xs, in_aperture, in_annulus = _cutouts(x, y, chosen, half, radii)
    boxes = image[:, ys[:, :, None], xs[:, None, :]]  # (C, N, K, K)
    ring = np.where(in_annulus[None], boxes, np.nan).reshape(n_channels, len(chosen), (2 * half + 1) ** 2)
    background = np.nanmedian(ring, axis=2) if len(chosen) else np.zeros((n_channels, 0))
    spread = 1.4826 * np.nanmedian(np.abs(ring - background[:, :, None]), axis=2) if len(chosen) else background
    n_ap = in_aperture.sum(axis=(1, 2))
    n_ann = in_annulus.sum(axis=(1, 2))
    measured = np.where(in_aperture[None], boxes, 0.0).sum(axis=(2, 3)) - n_ap * background
    noise = spread * np.sqrt(n_ap + (math.pi / 2.0) * n_ap**2 / n_ann)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(noise > 0, true[chosen].T / noise, np.inf)
    keep = np.all(snr >= min_snr, axis=0) & np.all(true[chosen] > 0, axis=1)
    if not keep.any():
        raise ValueError(
            f"no star qualifies for photometry: {len(x)} stars, {int(inside.sum())} inside the image, "
            f"{len(candidates)} also isolated, {len(chosen)} fully covered, none with SNR >= {min_snr}; "
            "lower min_snr, shrink the annulus or use a larger field"
        )
    ratios = (measured[:, keep] / true[chosen][keep].T).T
    return np.median(ratios, axis=0), ratios


def _cutouts(
    x: np.ndarray, y: np.ndarray, chosen: np.ndarray, half: int, radii: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns, aperture and annulus masks of the ``(2 half + 1)^2`` box of each chosen star."""
    aperture_px, r_in, r_out = radii
    offsets = np.arange(-half, half + 1)
    ys = np.rint(y[chosen]).astype(np.int64)[:, None] + offsets
    xs = np.rint(x[chosen]).astype(np.int64)[:, None] + offsets
    radius = np.hypot((xs - x[chosen, None])[:, None, :], (ys - y[chosen, None])[:, :, None])
    return ys, xs, radius <= aperture_px, (radius >= r_in) & (radius <= r_out)


def _isolated(x: np.ndarray, y: np.ndarray, flux: np.ndarray, radius: float, fraction: float) -> np.ndarray:
    finite = np.isfinite(x) & np.isfinite(y)
    points = np.stack([np.where(finite, x, 1e12), np.where(finite, y, 1e12)], axis=1)
    tree = cKDTree(points)
    pairs = tree.query_pairs(radius, output_type="ndarray")
    first, second = pairs[:, 0], pairs[:, 1]
    isolated = finite.copy()
    isolated[first[flux[second] >= fraction * flux[first]]] = False
    isolated[second[flux[first] >= fraction * flux[second]]] = False
    return isolated


def background_residual(
    image_chw: np.ndarray,
    truth_chw: np.ndarray,
    coverage: np.ndarray,
    noise_sigma: float | Sequence[float],
    *,
    star_mask: np.ndarray,
) -> float:
    """RMS of ``(image - truth) * sqrt(coverage) / noise_sigma`` over star-free covered pixels.

    The residual is expressed in units of the noise expected for a mean of ``coverage``
    frames of per-pixel noise ``noise_sigma``, so a pipeline without background errors
    stays near (or below, interpolation smooths noise) 1; 2 is the acceptance bar.

    Parameters
    ----------
    image_chw, truth_chw : ndarray
        ``(C, H, W)`` or ``(H, W)`` mosaic and truth on the same grid.
    coverage : ndarray
        ``(H, W)`` number of frames (sum of weights) per pixel.
    noise_sigma : float or sequence of float
        Per-frame per-pixel noise, one value or one per channel.
    star_mask : ndarray of bool
        ``(H, W)`` pixels to leave out (see :func:`star_mask`).
    """
    image = _as_chw(image_chw).astype(np.float64, copy=False)
    truth = _as_chw(truth_chw).astype(np.float64, copy=False)
    if image.shape != truth.shape:
        raise ValueError(f"image {image.shape} and truth {truth.shape} must have the same shape")
    coverage = np.asarray(coverage, dtype=np.float64)
    sigma = np.broadcast_to(np.asarray(noise_sigma, dtype=np.float64), (image.shape[0],))
    valid = (coverage > 0) & ~np.asarray(star_mask, dtype=bool)
    valid &= np.all(np.isfinite(image), axis=0) & np.all(np.isfinite(truth), axis=0)
    if not valid.any():
        raise ValueError("no covered, star-free pixel with finite values: check coverage, star_mask and the image")
    scaled = (image[:, valid] - truth[:, valid]) * np.sqrt(coverage[valid])[None] / sigma[:, None]
    return float(np.sqrt(np.mean(scaled**2)))


def star_mask(
    truth_chw: np.ndarray, background: float | Sequence[float], *, threshold: float = 0.1, grow_px: int = 2
) -> np.ndarray:
    """Pixels where the truth's star light exceeds ``threshold`` ADU in any channel, grown by ``grow_px``.

    Parameters
    ----------
    truth_chw : ndarray
        ``(C, H, W)`` or ``(H, W)`` truth (stars + constant background).
    background : float or sequence of float
        Constant background of the truth, one value or one per channel.
    threshold : float
        Star light in ADU above which a pixel is masked.
    grow_px : int
        Dilation of the mask in pixels (covers PSF broadening by resampling).
    """
    truth = _as_chw(truth_chw).astype(np.float64, copy=False)
    levels = np.broadcast_to(np.asarray(background, dtype=np.float64), (truth.shape[0],))
    mask = np.any(truth - levels[:, None, None] > threshold, axis=0)
    if grow_px > 0:
        mask = binary_dilation(mask, iterations=int(grow_px))
    return mask


def _frame_geometry(frame: Any, shape: tuple[int, int] | None) -> tuple[WCS, tuple[int, int]]:
    if isinstance(frame, WCS):
        if shape is None:
            if frame.pixel_shape is None:
                raise ValueError("a WCS without pixel_shape needs its (height, width) in shapes")
            shape = (frame.pixel_shape[1], frame.pixel_shape[0])
        return frame.celestial, (int(shape[0]), int(shape[1]))
    with fits.open(frame, memmap=False, lazy_load_hdus=True) as hdul:
        header = hdul[0].header
    wcs = WCS(header, naxis=2)
    return wcs, shape if shape is not None else (int(header["NAXIS2"]), int(header["NAXIS1"]))


def _interpolated_map(out_wcs: WCS, frame_wcs: WCS, box: tuple[int, int, int, int], step: int) -> tuple[Any, Any]:
    """Frame pixel coordinates of output pixels in ``box``, exact on a node grid, bilinear between."""
    y0, y1, x0, x1 = box
    ny, nx = (y1 - y0 + step - 1) // step + 1, (x1 - x0 + step - 1) // step + 1
    node_y, node_x = np.meshgrid(y0 + step * np.arange(ny), x0 + step * np.arange(nx), indexing="ij")
    ra, dec = out_wcs.all_pix2world(node_x.ravel(), node_y.ravel(), 0)
    fx, fy = (c.reshape(ny, nx) for c in frame_wcs.all_world2pix(ra, dec, 0))
    tx = (np.arange(x0, x1) - x0) / step
    ty = (np.arange(y0, y1) - y0) / step
    kx, ky = np.minimum(tx.astype(np.int64), nx - 2), np.minimum(ty.astype(np.int64), ny - 2)
    wx, wy = tx - kx, ty - ky
    out = []
    for nodes in (fx, fy):
        rows = nodes[:, kx] * (1.0 - wx) + nodes[:, kx + 1] * wx
        out.append(rows[ky] * (1.0 - wy)[:, None] + rows[ky + 1] * wy[:, None])
    return out[0], out[1]


def footprint_count(
    frames: Sequence[str | os.PathLike[str] | WCS],
    shapes: Sequence[tuple[int, int]] | None,
    out_wcs: WCS,
    out_shape: tuple[int, int],
    *,
    shrink_px: float = 1.5,
) -> np.ndarray:
    """Number of frames whose footprint, shrunk by ``shrink_px``, holds each output pixel.

    Parameters
    ----------
    frames : sequence of path or WCS
        FITS files (WCS and shape read from the primary header) or celestial WCS objects.
    shapes : sequence of (height, width), optional
        Frame shapes; None reads them from the files or the WCS ``pixel_shape``.
    out_wcs : astropy.wcs.WCS
        Celestial WCS of the output grid.
    out_shape : tuple of int
        ``(height, width)`` of the output grid.
    shrink_px : float
        Distance in frame pixels kept away from each frame's outer edge.

    Returns
    -------
    ndarray of int32, shape (H, W)
    """
    height, width = (int(out_shape[0]), int(out_shape[1]))
    out_wcs = out_wcs.celestial
    count = np.zeros((height, width), dtype=np.int32)
    for k, frame in enumerate(frames):
        fwcs, (fh, fw) = _frame_geometry(frame, None if shapes is None else shapes[k])
        edge_x = np.concatenate(
            [np.linspace(-0.5, fw - 0.5, 33), np.full(33, fw - 0.5), np.linspace(fw - 0.5, -0.5, 33), np.full(33, -0.5)]
        )
        edge_y = np.concatenate(
            [np.full(33, -0.5), np.linspace(-0.5, fh - 0.5, 33), np.full(33, fh - 0.5), np.linspace(fh - 0.5, -0.5, 33)]
        )
        u, v = out_wcs.all_world2pix(*fwcs.all_pix2world(edge_x, edge_y, 0), 0)
        x0, x1 = max(0, int(np.floor(u.min()))), min(width, int(np.ceil(u.max())) + 1)
        y0, y1 = max(0, int(np.floor(v.min()))), min(height, int(np.ceil(v.max())) + 1)
        if x1 <= x0 or y1 <= y0:
            continue
        fx, fy = _interpolated_map(out_wcs, fwcs, (y0, y1, x0, x1), step=8)
        low, high_x, high_y = -0.5 + shrink_px, fw - 0.5 - shrink_px, fh - 0.5 - shrink_px
        count[y0:y1, x0:x1] += ((fx >= low) & (fx <= high_x) & (fy >= low) & (fy <= high_y)).astype(np.int32)
    return count


def union_footprint_mask(
    frames: Sequence[str | os.PathLike[str] | WCS],
    shapes: Sequence[tuple[int, int]] | None,
    out_wcs: WCS,
    out_shape: tuple[int, int],
    *,
    shrink_px: float = 1.5,
) -> np.ndarray:
    """Boolean ``(H, W)`` mask of output pixels inside at least one shrunk frame footprint.

    See :func:`footprint_count` for the parameters.
    """
    return footprint_count(frames, shapes, out_wcs, out_shape, shrink_px=shrink_px) > 0
