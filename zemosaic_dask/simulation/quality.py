"""Quality of a mosaic's sky, extended emission, trail rejection and coverage (numpy/scipy only).

Every helper takes the mosaic as ``(C, H, W)`` or ``(H, W)`` with NaN where it is empty, on
its own grid, and arrays (coverage, star mask, extended emission) on that same grid; the
truth's extended emission comes from :func:`~.extended.render_extended`, the star mask
from :func:`~.measure.star_mask` of the truth rendered on the mosaic's grid.

Noise unit: the **pixel sigma** of :func:`pixel_sigma`, estimated from the mosaic itself as
``1.4826 * MAD(d) / sqrt(2)`` of the differences ``d`` of horizontally neighbouring pixels
that are both finite and star-free. Resampling correlates neighbouring pixels, so this is
the sigma of the mosaic's high-frequency noise, not of a stack's ideal ``sigma / sqrt(N)``.
Sky measurements are offset-insensitive: the mosaic's level may differ from the truth's by
a constant per channel.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from astropy.wcs import WCS
from scipy.ndimage import map_coordinates

from .extended import galaxy_radius
from .measure import _as_chw
from .sky import Pointing

__all__ = [
    "HoleCount",
    "TrailRidge",
    "background_flatness",
    "background_tilt",
    "extended_flux_recovery",
    "holes_in_union",
    "pixel_sigma",
    "seam_step",
    "sky_blocks",
    "trail_ridges",
]

MAD_TO_SIGMA = 1.4826


def _mad_sigma(values: np.ndarray) -> float:
    return float(MAD_TO_SIGMA * np.median(np.abs(values - np.median(values))))


def _channels_like(extra: np.ndarray | None, n_channels: int, shape: tuple[int, int]) -> np.ndarray:
    """``extra`` as ``(C, H, W)`` matching the mosaic; a 3-channel cube gives green to a mono mosaic."""
    if extra is None:
        return np.zeros((1, *shape))
    cube = _as_chw(np.asarray(extra, dtype=np.float64))
    if cube.shape[1:] != tuple(shape):
        raise ValueError(f"extended emission {cube.shape[1:]} and mosaic {tuple(shape)} must share the grid")
    if cube.shape[0] == n_channels or cube.shape[0] == 1:
        return cube
    if n_channels == 1 and cube.shape[0] == 3:
        return cube[1:2]
    raise ValueError(f"extended emission has {cube.shape[0]} channels, the mosaic {n_channels}")


def pixel_sigma(mosaic: np.ndarray, *, star_mask: np.ndarray | None = None) -> np.ndarray:
    """Robust per-pixel noise of a mosaic, per channel (see the module docstring).

    Parameters
    ----------
    mosaic : ndarray
        ``(C, H, W)`` or ``(H, W)``, NaN where empty.
    star_mask : ndarray of bool, optional
        ``(H, W)`` pixels to leave out.

    Returns
    -------
    ndarray, shape (C,)
    """
    image = _as_chw(mosaic).astype(np.float64, copy=False)
    usable = np.all(np.isfinite(image), axis=0)
    if star_mask is not None:
        usable &= ~np.asarray(star_mask, dtype=bool)
    pairs = usable[:, 1:] & usable[:, :-1]
    if pairs.sum() < 100:
        raise ValueError(f"only {int(pairs.sum())} pairs of usable neighbouring pixels; need 100 to estimate sigma")
    diffs = image[:, :, 1:] - image[:, :, :-1]
    return np.array([_mad_sigma(d[pairs]) / math.sqrt(2.0) for d in diffs])


def sky_blocks(
    mosaic: np.ndarray,
    coverage: np.ndarray,
    *,
    star_mask: np.ndarray | None = None,
    extended: np.ndarray | None = None,
    block: int = 32,
    min_coverage: float = 1.0,
) -> np.ndarray:
    """Sky level of ``block x block`` tiles: ``(C, H // block, W // block)``, NaN where not usable.

    A tile's value is the median over its star-free pixels of ``mosaic - extended``; a tile is
    usable when every pixel is finite with ``coverage >= min_coverage`` and at least half of
    its pixels are star-free. Tiles start at pixel (0, 0); a partial last row/column is dropped.
    """
    image = _as_chw(mosaic).astype(np.float64, copy=False)
    n_channels, height, width = image.shape
    image = image - _channels_like(extended, n_channels, (height, width))
    ny, nx = height // block, width // block
    if ny < 1 or nx < 1:
        raise ValueError(f"mosaic {height}x{width} is smaller than one {block}-px block; use a smaller block")

    def tiles(a: np.ndarray) -> np.ndarray:
        a = a[..., : ny * block, : nx * block]
        a = a.reshape(*a.shape[:-2], ny, block, nx, block)
        return np.moveaxis(a, -3, -2).reshape(*a.shape[:-4], ny, nx, block * block)

    full = np.all(tiles(np.asarray(coverage, dtype=np.float64) >= min_coverage), axis=-1)
    full &= np.all(tiles(np.all(np.isfinite(image), axis=0)), axis=-1)
    free = tiles(~np.asarray(star_mask, dtype=bool)) if star_mask is not None else np.ones((ny, nx, block**2), bool)
    full &= free.mean(axis=-1) >= 0.5
    values = np.where(free[None], tiles(image), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        levels = np.nanmedian(values, axis=-1)
    return np.where(full[None], levels, np.nan)


def _sigma(
    mosaic: np.ndarray,
    star_mask: np.ndarray | None,
    sigma: float | Sequence[float] | None,
    extended: np.ndarray | None = None,
) -> np.ndarray:
    image = _as_chw(mosaic).astype(np.float64, copy=False)
    n_channels = image.shape[0]
    if sigma is None:
        values = pixel_sigma(image - _channels_like(extended, n_channels, image.shape[1:]), star_mask=star_mask)
    else:
        values = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (n_channels,))
    if not np.all(values > 0):
        raise ValueError(f"pixel sigma must be > 0, got {values.tolist()}: a noiseless mosaic needs sigma=")
    return values


def seam_step(
    mosaic: np.ndarray,
    coverage: np.ndarray,
    *,
    star_mask: np.ndarray | None = None,
    extended: np.ndarray | None = None,
    block: int = 32,
    sigma: float | Sequence[float] | None = None,
) -> float:
    """99th percentile of ``|step|`` between neighbouring sky blocks, in pixel sigma.

    Blocks are :func:`sky_blocks` (fully covered, star-masked medians of ``mosaic -
    extended``); a step is the difference of two usable blocks that share a side
    (horizontal and vertical pairs pooled). The value is in units of the *pixel* sigma
    (:func:`pixel_sigma` of ``mosaic - extended``, or ``sigma`` when given), not of a block mean's: pure noise
    gives about ``2.6 * 1.25 * sqrt(2) / block`` (0.14 for 32-px blocks). The worst channel
    is returned.
    """
    levels = sky_blocks(mosaic, coverage, star_mask=star_mask, extended=extended, block=block)
    scale = _sigma(mosaic, star_mask, sigma, extended)
    worst = []
    for channel, grid in enumerate(levels):
        steps = np.concatenate([(grid[:, 1:] - grid[:, :-1]).ravel(), (grid[1:] - grid[:-1]).ravel()])
        steps = steps[np.isfinite(steps)]
        if steps.size == 0:
            raise ValueError("no two neighbouring sky blocks are fully covered; use a smaller block")
        worst.append(float(np.percentile(np.abs(steps), 99.0)) / scale[channel])
    return max(worst)


def background_flatness(
    mosaic: np.ndarray,
    coverage: np.ndarray,
    *,
    star_mask: np.ndarray | None = None,
    extended: np.ndarray | None = None,
    block: int = 32,
    sigma: float | Sequence[float] | None = None,
) -> float:
    """Robust rms (1.4826 MAD) of the sky blocks about their best-fit plane, in pixel sigma.

    The blocks are those of :func:`seam_step`; the plane ``a + b x + c y`` (block centres) is
    a least-squares fit per channel, so a tilted but flat sky scores ~0 (plus the blocks'
    own noise, ``1.25 / block`` sigma; the tilt is :func:`background_tilt`). The worst
    channel is returned.
    """
    fits = _block_planes(mosaic, coverage, star_mask, extended, block, sigma)
    return max(_mad_sigma(levels - plane) / scale for levels, plane, scale in fits)


def background_tilt(
    mosaic: np.ndarray,
    coverage: np.ndarray,
    *,
    star_mask: np.ndarray | None = None,
    extended: np.ndarray | None = None,
    block: int = 32,
    sigma: float | Sequence[float] | None = None,
) -> float:
    """Peak-to-peak of the sky blocks' best-fit plane over the blocks, in pixel sigma.

    The mosaic-wide gradient that :func:`background_flatness` leaves out by design: on a
    simulated session, whose truth is a flat sky plus ``extended`` emission, any tilt of
    ``mosaic - extended`` is an error (a gradient the background model left, or added).
    The plane is that of :func:`background_flatness` (least squares over the usable blocks
    of :func:`sky_blocks`); the worst channel is returned.
    """
    fits = _block_planes(mosaic, coverage, star_mask, extended, block, sigma)
    return max(float(np.ptp(plane)) / scale for _, plane, scale in fits)


def _block_planes(
    mosaic: np.ndarray,
    coverage: np.ndarray,
    star_mask: np.ndarray | None,
    extended: np.ndarray | None,
    block: int,
    sigma: float | Sequence[float] | None,
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Per channel, the usable :func:`sky_blocks` levels, their least-squares plane ``a + b x + c y``
    at the same blocks, and the channel's pixel sigma (:func:`_sigma`)."""
    levels = sky_blocks(mosaic, coverage, star_mask=star_mask, extended=extended, block=block)
    scale = _sigma(mosaic, star_mask, sigma, extended)
    yy, xx = np.mgrid[: levels.shape[1], : levels.shape[2]]
    out = []
    for channel, grid in enumerate(levels):
        use = np.isfinite(grid)
        if use.sum() < 4:
            raise ValueError(f"only {int(use.sum())} fully covered sky blocks; a plane needs 4 or more")
        design = np.stack([np.ones(use.sum()), xx[use], yy[use]], axis=1)
        coefficients, *_ = np.linalg.lstsq(design, grid[use], rcond=None)
        out.append((grid[use], design @ coefficients, float(scale[channel])))
    return out


def extended_flux_recovery(
    mosaic: np.ndarray,
    wcs: WCS,
    coverage: np.ndarray,
    parameters: Mapping[str, Any],
    extended: np.ndarray,
    *,
    star_mask: np.ndarray | None = None,
    annuli: Sequence[float] = (0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0),
    sky_radius: float = 1.3,
) -> dict[str, float]:
    """Fraction of the truth's extended flux found in elliptical annuli of the galaxy.

    With ``r`` the disk's elliptical radius in units of its edge radius
    (:func:`~.extended.galaxy_radius`), the sky of channel ``c`` is the median of
    ``mosaic - extended`` over usable pixels (finite, covered, star-free) with
    ``r > sky_radius``; annulus ``k`` holds the usable pixels with
    ``annuli[k] <= r < annuli[k + 1]`` and its ratio is
    ``sum_c sum (mosaic - sky_c) / sum_c sum extended``. A mosaic equal to the truth gives
    1 everywhere, one without the galaxy 0.

    Returns
    -------
    dict
        ``inner``, ``middle``, ``outer`` (or ``annulus_0`` ... for other than three annuli).
    """
    entry = parameters.get("extended") or {}
    galaxy = entry.get("galaxy")
    if galaxy is None:
        raise ValueError("the simulation has no galaxy (simulate with SimulationConfig.realistic(galaxy=True))")
    image = _as_chw(mosaic).astype(np.float64, copy=False)
    n_channels, height, width = image.shape
    emission = np.broadcast_to(_channels_like(extended, n_channels, (height, width)), image.shape)
    radius = galaxy_radius(galaxy, wcs, (height, width))
    usable = np.all(np.isfinite(image), axis=0) & (np.asarray(coverage) > 0)
    if star_mask is not None:
        usable &= ~np.asarray(star_mask, dtype=bool)
    far = usable & (radius > sky_radius)
    if far.sum() < 100:
        raise ValueError(f"only {int(far.sum())} usable pixels beyond {sky_radius} edge radii to measure the sky")
    sky = np.array([np.median((image[c] - emission[c])[far]) for c in range(n_channels)])
    names = ("inner", "middle", "outer") if len(annuli) == 4 else [f"annulus_{k}" for k in range(len(annuli) - 1)]
    out = {}
    for name, low, high in zip(names, annuli[:-1], annuli[1:], strict=True):
        ring = usable & (radius >= low) & (radius < high)
        expected = float(emission[:, ring].sum())
        if not ring.any() or expected <= 0:
            raise ValueError(f"annulus {name} ({low}-{high} edge radii) holds no usable pixel with emission")
        out[name] = float((image[:, ring] - sky[:, None]).sum()) / expected
    return out


@dataclass(frozen=True)
class TrailRidge:
    """A satellite trail followed on the mosaic: median excess over the local sky, per channel.

    ``segment_adu`` / ``segment_sigma``: the largest absolute median excess over any
    stretch of :data:`TRAIL_SEGMENT_POINTS` consecutive points (about 20 px): a trail left
    in over a short stretch only (across a galaxy core) that the median over the whole line
    does not see. ``wing_adu`` / ``wing_sigma``: the largest absolute median excess on the
    lines parallel to the trail 1 to :data:`TRAIL_WING_PX` px from it, on either side: a
    trail whose core was rejected but whose wings (fainter than the rejection threshold in
    their frame) were kept shows as two faint lines there, which the centre line misses.
    """

    frame: int
    n_points: int
    ridge_adu: tuple[float, ...]
    ridge_sigma: tuple[float, ...]
    segment_adu: tuple[float, ...] = ()
    segment_sigma: tuple[float, ...] = ()
    wing_adu: tuple[float, ...] = ()
    wing_sigma: tuple[float, ...] = ()

    @property
    def worst_sigma(self) -> float:
        """Largest absolute ridge over the channels, in pixel sigma."""
        return float(np.nanmax(np.abs(self.ridge_sigma))) if self.n_points else float("nan")

    @property
    def worst_segment_sigma(self) -> float:
        """Largest absolute segment ridge over the channels, in pixel sigma."""
        if not self.n_points or not self.segment_sigma:
            return float("nan")
        return float(np.nanmax(np.abs(self.segment_sigma)))

    @property
    def worst_wing_sigma(self) -> float:
        """Largest absolute wing excess over the channels, in pixel sigma."""
        if not self.n_points or not self.wing_sigma:
            return float("nan")
        return float(np.nanmax(np.abs(self.wing_sigma)))


#: Farthest line parallel to a trail (mosaic px) on which :class:`TrailRidge` measures its wings.
TRAIL_WING_PX = 6

#: Points (0.5 frame px apart) in a stretch of trail whose median :class:`TrailRidge` reports at worst.
TRAIL_SEGMENT_POINTS = 40


def _worst_segment(excess: np.ndarray, points: int = TRAIL_SEGMENT_POINTS) -> float:
    """The median of ``excess`` over the stretch of ``points`` consecutive points where it is largest in size."""
    if not np.isfinite(excess).any():
        return float("nan")
    if excess.size <= points:
        return float(np.nanmedian(excess))
    windows = np.lib.stride_tricks.sliding_window_view(excess, points)
    medians = np.nanmedian(windows, axis=1)
    return float(medians[np.nanargmax(np.abs(medians))])


def _trail_line(parameters: Mapping[str, Any], frame: int, trail: Mapping[str, float]) -> tuple[Any, WCS]:
    """The trail's centre line in frame pixels (0.5-px steps, 3 px inside the edges) and the frame's WCS."""
    height, width = parameters["frame_shape"]
    p = parameters["pointings"][frame]
    pointing = Pointing(p["index"], p["panel"], p["ra"], p["dec"], tuple(p["dither_px"]), p["rotation_deg"])
    theta = math.radians(trail["angle_deg"])
    t = np.arange(-(height + width), height + width, 0.5)
    x, y = trail["x0"] + t * math.cos(theta), trail["y0"] + t * math.sin(theta)
    inside = (x >= 3) & (x <= width - 4) & (y >= 3) & (y <= height - 4)
    return (x[inside], y[inside]), pointing.wcs((height, width), parameters["pixel_scale_arcsec"])


def trail_ridges(
    mosaic: np.ndarray,
    wcs: WCS,
    coverage: np.ndarray,
    parameters: Mapping[str, Any],
    *,
    star_mask: np.ndarray | None = None,
    min_coverage: float = 3.0,
    band: tuple[float, float] = (8.0, 20.0),
    sigma: float | Sequence[float] | None = None,
) -> list[TrailRidge]:
    """Median brightness of every simulated trail's ridge on the mosaic over its local sky.

    Each trail's centre line (``simulation.json``: frame, angle, x0, y0) is mapped from its
    frame's pixels through the frame's WCS to mosaic pixels. A point counts when the mosaic
    pixel holding it has ``coverage >= min_coverage``, is star-free and finite; its value is
    the mosaic bilinearly interpolated on the line, its local sky the median of the pixels at
    ``band[0]..band[1]`` px (1-px steps) on both sides, across the line. The ridge is the
    median over the points of ``value - sky``, in ADU and in pixel sigma; the segment ridge
    the same median over the worst stretch of :data:`TRAIL_SEGMENT_POINTS` points; the wing
    the largest such median on the parallel lines 1..:data:`TRAIL_WING_PX` px away.
    """
    image = _as_chw(mosaic).astype(np.float64, copy=False)
    n_channels, height, width = image.shape
    scale = _sigma(mosaic, star_mask, sigma)
    good = np.all(np.isfinite(image), axis=0) & (np.asarray(coverage) >= min_coverage)
    clean = np.all(np.isfinite(image), axis=0)
    if star_mask is not None:
        good &= ~np.asarray(star_mask, dtype=bool)
        clean &= ~np.asarray(star_mask, dtype=bool)
    offsets = np.concatenate([-np.arange(band[0], band[1] + 0.5), np.arange(band[0], band[1] + 0.5)])
    ridges = []
    for key in sorted(parameters["trails"], key=int):
        (fx, fy), frame_wcs = _trail_line(parameters, int(key), parameters["trails"][key])
        mx, my = wcs.celestial.all_world2pix(*frame_wcs.all_pix2world(fx, fy, 0), 0)
        direction = np.array([mx[-1] - mx[0], my[-1] - my[0]]) if mx.size > 1 else np.array([1.0, 0.0])
        nx, ny = -direction[1] / np.hypot(*direction), direction[0] / np.hypot(*direction)
        ix, iy = np.rint(mx).astype(np.int64), np.rint(my).astype(np.int64)
        inside = (ix >= 0) & (ix < width) & (iy >= 0) & (iy < height)
        keep = np.zeros(mx.size, dtype=bool)
        keep[inside] = good[iy[inside], ix[inside]]
        mx, my = mx[keep], my[keep]
        bx = np.rint(mx[:, None] + offsets[None] * nx).astype(np.int64)
        by = np.rint(my[:, None] + offsets[None] * ny).astype(np.int64)
        in_band = (bx >= 0) & (bx < width) & (by >= 0) & (by < height)
        bx, by = np.clip(bx, 0, width - 1), np.clip(by, 0, height - 1)
        in_band &= clean[by, bx]
        adu, in_sigma, segment, segment_sigma, wing, wing_sigma = [], [], [], [], [], []
        # Lines parallel to the trail, 1..TRAIL_WING_PX px on either side: a point counts where
        # the mosaic pixel under it is usable as the centre line's are.
        sides = [o for d in range(1, TRAIL_WING_PX + 1) for o in (-d, d)]
        wy = my[:, None] + np.asarray(sides)[None] * ny
        wx = mx[:, None] + np.asarray(sides)[None] * nx
        iwy, iwx = np.rint(wy).astype(np.int64), np.rint(wx).astype(np.int64)
        on_wing = (iwx >= 0) & (iwx < width) & (iwy >= 0) & (iwy < height)
        on_wing[on_wing] = good[iwy[on_wing], iwx[on_wing]]
        for c in range(n_channels):
            centre = map_coordinates(image[c], [my, mx], order=1, mode="nearest")
            beside = map_coordinates(image[c], [wy.ravel(), wx.ravel()], order=1, mode="nearest").reshape(wy.shape)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                sky = np.nanmedian(np.where(in_band, image[c][by, bx], np.nan), axis=1)
                excess = centre - sky
                value = float(np.nanmedian(excess)) if np.isfinite(excess).any() else float("nan")
                worst = _worst_segment(excess)
                lines = np.nanmedian(np.where(on_wing, beside - sky[:, None], np.nan), axis=0)
                widest = float(lines[np.nanargmax(np.abs(lines))]) if np.isfinite(lines).any() else float("nan")
            adu.append(value)
            in_sigma.append(value / scale[c])
            segment.append(worst)
            segment_sigma.append(worst / scale[c])
            wing.append(widest)
            wing_sigma.append(widest / scale[c])
        ridges.append(
            TrailRidge(
                int(key),
                int(mx.size),
                tuple(adu),
                tuple(in_sigma),
                tuple(segment),
                tuple(segment_sigma),
                tuple(wing),
                tuple(wing_sigma),
            )
        )
    return ridges


class HoleCount(NamedTuple):
    """Empty mosaic pixels inside the union of the frames' footprints."""

    fraction: float
    count: int
    union_pixels: int


def holes_in_union(mosaic: np.ndarray, union: np.ndarray, coverage: np.ndarray | None = None) -> HoleCount:
    """Count the union's pixels that the mosaic leaves empty.

    A pixel is empty when any channel is NaN or, with ``coverage``, when its coverage is
    <= 0. ``union`` is :func:`~.measure.union_footprint_mask` on the mosaic's grid.
    """
    image = _as_chw(mosaic)
    union = np.asarray(union, dtype=bool)
    if union.shape != image.shape[1:]:
        raise ValueError(f"union {union.shape} and mosaic {image.shape[1:]} must share the grid")
    empty = ~np.all(np.isfinite(image), axis=0)
    if coverage is not None:
        empty |= np.asarray(coverage) <= 0
    total = int(union.sum())
    count = int((empty & union).sum())
    return HoleCount(count / total if total else 0.0, count, total)
