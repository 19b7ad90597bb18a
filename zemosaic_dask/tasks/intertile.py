"""Photometric relation between two overlapping layers: ``layer_j ~ gain * layer_i + offset``.

Two master tiles (or two SDS batch mosaics) of the same sky differ by a gain and an offset
(sky background, transparency, exposure). On their common pixels this module fits that affine
relation per channel, on the sky only, robustly; ZeMosaic users know it as the inter-tile
calibration of Phase 5. :mod:`zemosaic_dask.tasks.gain_solve` then turns all pair fits into
one correction per layer, and :func:`apply_affine_correction` applies it.

Written against the input's array namespace (numpy or cupy); every function returns plain
Python numbers or arrays of the input's namespace.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

from .namespace import array_namespace

__all__ = ["PairFit", "apply_affine_correction", "fit_pair_affine"]

log = logging.getLogger(__name__)

_MAD_TO_SIGMA = 1.4826
# Fit rounds: the first measures the noise ratio on the raw Laplacians, the next ones clear it
# of the sky's curvature with the last gain, until the gain moves by less than _GAIN_TOLERANCE.
_MAX_ROUNDS = 10
#: Smallest correlation of the two layers' sky samples from which a gain is fitted.
_MIN_CORRELATION = 0.25
_GAIN_TOLERANCE = 1e-5


@dataclass(frozen=True)
class PairFit:
    """The fitted relation ``values_j ~ gain * values_i + offset`` on the overlap of layers i and j.

    Attributes
    ----------
    i, j : int
        Layer indices (``i < j`` when produced from :func:`~zemosaic_dask.plans.overlaps.find_overlapping_pairs`).
    gain, offset : tuple of float
        Per channel. NaN when the pair was skipped.
    n_samples : int
        Sky samples kept by the fit (the fewest over channels); 0 when nothing usable was found.
    residual_rms : tuple of float
        Per channel, RMS of ``values_j - (gain * values_i + offset)`` on the kept samples.
    sky_level : tuple of float
        Per channel, the mean of ``values_i`` over the kept samples: the point (in layer i's
        units) through which the fitted line passes, so ``gain * sky_level + offset`` is layer j's
        sky level there. The solve matches offsets at this level.
    skipped : str or None
        Why the pair could not be fitted (too few samples); None when fitted. A skipped pair is
        not an error: the solve ignores it and counts it.
    gain_error : tuple of float
        Per channel, the standard error of ``gain`` (used to weight the pair in the solve);
        ``inf`` when the sky band is flat (no positive correlation between the layers): then
        ``gain`` is 1, ``offset`` matches the median levels and the pair only constrains
        offsets. Empty when skipped.
    """

    i: int
    j: int
    gain: tuple[float, ...]
    offset: tuple[float, ...]
    n_samples: int
    residual_rms: tuple[float, ...]
    sky_level: tuple[float, ...]
    skipped: str | None = None
    gain_error: tuple[float, ...] = ()

    @property
    def n_channels(self) -> int:
        """Number of channels fitted."""
        return len(self.gain)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (NaN becomes None)."""
        data = asdict(self)
        for key in ("gain", "offset", "residual_rms", "sky_level", "gain_error"):
            data[key] = [None if not math.isfinite(v) else v for v in data[key]]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PairFit:
        """Rebuild a fit written by :meth:`to_dict`."""

        def floats(values: Any) -> tuple[float, ...]:
            return tuple(math.nan if v is None else float(v) for v in values)

        return cls(
            i=int(data["i"]),
            j=int(data["j"]),
            gain=floats(data["gain"]),
            offset=floats(data["offset"]),
            n_samples=int(data["n_samples"]),
            residual_rms=floats(data["residual_rms"]),
            sky_level=floats(data["sky_level"]),
            skipped=data.get("skipped"),
            gain_error=floats(data.get("gain_error", ())),
        )


def fit_pair_affine(
    i: int,
    j: int,
    values_i: Any,
    values_j: Any,
    coverage_i: Any,
    coverage_j: Any,
    *,
    sky_percentiles: tuple[float, float] = (30.0, 70.0),
    clip_sigma: float = 3.0,
    max_iterations: int = 5,
    min_samples: int = 500,
    max_samples: int = 200_000,
) -> PairFit:
    """Fit ``values_j ~ gain * values_i + offset`` per channel on the sky of an overlap.

    Parameters
    ----------
    i, j : int
        Indices of the two layers (recorded in the result).
    values_i, values_j : array
        ``(C, h, w)`` (or ``(h, w)`` for one channel) pixel values of both layers cut to the same
        overlap box.
    coverage_i, coverage_j : array
        ``(h, w)`` sum of weights of each layer on that box; 0 means no data.
    sky_percentiles : tuple of float, optional
        Band of the pair mean ``(values_i + values_j) / 2`` kept as sky, per channel: stars lie
        above it, dead or edge pixels below it. A wider band holds more sky structure, which is
        what fixes the gain (a flat sky only fixes the levels).
    clip_sigma : float, optional
        Residuals farther than this many robust sigmas from their median are dropped, and the fit
        repeated.
    max_iterations : int, optional
        Most fit-and-clip rounds.
    min_samples : int, optional
        Fewer sky samples than this (in any channel) and the pair is skipped.
    max_samples : int, optional
        Sky samples beyond this are thinned by a regular stride (deterministic).

    Returns
    -------
    PairFit
        The fit, or a skipped fit with its reason.

    Notes
    -----
    Both layers are noisy, so an ordinary least-squares slope of ``values_j`` on ``values_i`` is
    shrunk towards 0 by ``var(signal) / (var(signal) + var(noise_i))`` (regression dilution). Sky
    pixels in a narrow percentile band carry little signal variance, so that factor is far from 1
    (easily 0.8). The slope is therefore the Deming (errors-in-variables) estimate

    ``gain = (s_jj - d s_ii + sqrt((s_jj - d s_ii)^2 + 4 d s_ij^2)) / (2 s_ij)``,
    ``offset = mean_j - gain * mean_i``,

    with ``d = var(noise_j) / var(noise_i)`` measured from the data, on the sky band: from the
    4-neighbour Laplacians of both layers, which keep white pixel noise, less their covariance,
    which is the sky's own curvature seen by both (this needs the gain, so gain and ``d`` are
    refined in turn until the gain settles). The Deming slope is consistent whatever ``d`` is;
    the ratio of spreads (``std_j / std_i``) is consistent only when ``d == gain^2`` (equal depth
    in sky units) and the orthogonal fit only when ``d == 1``.

    The sky band is chosen on the pair mean of each pixel's 8 neighbours, not of the pixel
    itself: keeping pixels according to a value that contains their own noise would truncate
    that noise and tilt the fit. ``gain_error`` is the slope's standard error from the residual
    variance and the band's signal variance; the solve weights pairs by it.
    """
    xp = array_namespace(values_i, values_j, coverage_i, coverage_j)
    if values_i.ndim == 2:
        values_i, values_j = values_i[None], values_j[None]
    if values_i.shape != values_j.shape or not (values_i.shape[1:] == coverage_i.shape == coverage_j.shape):
        raise ValueError(
            f"pair ({i}, {j}): values {values_i.shape} / {values_j.shape} and coverage {coverage_i.shape} / "
            f"{coverage_j.shape} must cover the same overlap box; cut both layers with box_slices"
        )
    n_channels = values_i.shape[0]
    valid = (
        (coverage_i > 0)
        & (coverage_j > 0)
        & xp.all(xp.isfinite(values_i), axis=0)
        & xp.all(xp.isfinite(values_j), axis=0)
    )
    n_valid = int(xp.count_nonzero(valid))
    needed = min_samples / max(1e-9, (sky_percentiles[1] - sky_percentiles[0]) / 100.0)
    if n_valid < needed:
        return _skipped(i, j, n_channels, n_valid, f"too few common pixels: {n_valid} < {math.ceil(needed)}")

    results = []
    for c in range(n_channels):
        result = _fit_channel(
            xp, values_i[c].astype(xp.float64), values_j[c].astype(xp.float64), valid,
            sky_percentiles, clip_sigma, max_iterations, max_samples,
        )  # fmt: skip
        if result[4] < max(min_samples, 3):
            return _skipped(
                i, j, n_channels, result[4], f"channel {c}: too few sky samples: {result[4]} < {min_samples}"
            )
        results.append(result)
    gain, offset, rms, sky, n_kept, gain_error = (tuple(values) for values in zip(*results, strict=True))
    return PairFit(i, j, gain, offset, int(min(n_kept)), rms, sky, None, gain_error)


def apply_affine_correction(values: Any, gains: Any, offsets: Any) -> Any:
    """Return ``gain_c * values[c] + offset_c`` per channel; NaN stays NaN.

    Parameters
    ----------
    values : array
        ``(C, h, w)`` or ``(h, w)`` layer values.
    gains, offsets : sequence of float
        One per channel (a correction from :class:`~zemosaic_dask.tasks.gain_solve.TileCorrections`).
    """
    xp = array_namespace(values)
    squeeze = values.ndim == 2
    cube = values[None] if squeeze else values
    gain = xp.asarray([float(g) for g in gains], dtype=cube.dtype).reshape(-1, 1, 1)
    offset = xp.asarray([float(o) for o in offsets], dtype=cube.dtype).reshape(-1, 1, 1)
    if gain.shape[0] != cube.shape[0] or offset.shape[0] != cube.shape[0]:
        raise ValueError(f"{gain.shape[0]} gains / {offset.shape[0]} offsets for {cube.shape[0]} channel(s)")
    out = cube * gain + offset
    return out[0] if squeeze else out


#: Values a robust centre and scale are estimated from (a strided subsample of larger sets).
_ROBUST_SAMPLES = 100_000


def _skipped(i: int, j: int, n_channels: int, n_samples: int, reason: str) -> PairFit:
    nan = (math.nan,) * n_channels
    log.debug("pair (%d, %d) skipped: %s", i, j, reason)
    return PairFit(i, j, nan, nan, int(n_samples), nan, nan, reason, ())


def _laplacians(xp: Any, vi: Any, vj: Any, valid: Any) -> tuple[Any, Any, Any]:
    """4-neighbour Laplacians ``x - mean(neighbours)`` of both layers on the interior, and where defined."""

    def laplacian(image: Any) -> Any:
        neighbours = image[:-2, 1:-1] + image[2:, 1:-1] + image[1:-1, :-2] + image[1:-1, 2:]
        return image[1:-1, 1:-1] - neighbours / 4.0

    ok = valid[1:-1, 1:-1] & valid[:-2, 1:-1] & valid[2:, 1:-1] & valid[1:-1, :-2] & valid[1:-1, 2:]
    return laplacian(vi), laplacian(vj), ok


def _noise_moments(xp: Any, lap_i: Any, lap_j: Any, mask: Any) -> tuple[float, float, float] | None:
    """``(var(L_i), var(L_j), cov(L_i, L_j))`` of the Laplacians on ``mask``, star residues clipped.

    None when fewer than 16 values remain or a variance is not positive. The clipping does
    not depend on the gain, so these moments are computed once per channel.
    """
    li, lj = lap_i[mask], lap_j[mask]
    if int(li.shape[0]) < 16:
        return None
    keep = _within(xp, li, 5.0) & _within(xp, lj, 5.0)
    li, lj = li[keep], lj[keep]
    if int(li.shape[0]) < 16:
        return None
    li, lj = li - xp.mean(li), lj - xp.mean(lj)
    var_i, var_j = float(xp.mean(li * li)), float(xp.mean(lj * lj))
    if not (var_i > 0 and var_j > 0):
        return None
    return var_i, var_j, float(xp.mean(li * lj))


def _noise_ratio(moments: tuple[float, float, float] | None, gain: float | None) -> float:
    """``var(noise_j) / var(noise_i)`` from the Laplacians' moments; NaN when not measurable.

    The Laplacian keeps white noise and most of the sky's curvature. The curvature is common to
    both layers (scaled by the gain), so once a gain is known it is removed through the
    covariance: ``var(noise_i) = var(L_i) - cov(L_i, L_j) / gain`` and
    ``var(noise_j) = var(L_j) - gain * cov(L_i, L_j)``.
    """
    if moments is None:
        return math.nan
    var_i, var_j, common = moments
    if gain is None:
        return var_j / var_i
    noise_i, noise_j = var_i - common / gain, var_j - gain * common
    if noise_i <= 0.02 * var_i or noise_j <= 0.02 * var_j:  # curvature dominates: noise not measurable
        return math.nan
    return noise_j / noise_i


def _within(xp: Any, values: Any, n_sigma: float) -> Any:
    """Values within ``n_sigma`` robust sigmas (MAD) of the median, both estimated on <= 100,000 of them."""
    sample = values[:: max(1, int(values.shape[0]) // _ROBUST_SAMPLES)]
    centre = xp.median(sample)
    scale = _MAD_TO_SIGMA * xp.median(xp.abs(sample - centre))
    return xp.abs(values - centre) <= n_sigma * scale


def _deming(xp: Any, x: Any, y: Any, ratio: float) -> tuple[float, float] | None:
    """Deming slope and intercept of y on x for a noise-variance ratio var(noise_y)/var(noise_x)."""
    mx, my = float(xp.mean(x)), float(xp.mean(y))
    dx, dy = x - mx, y - my
    sxx, syy, sxy = float(xp.mean(dx * dx)), float(xp.mean(dy * dy)), float(xp.mean(dx * dy))
    if not sxy > 0.0:
        return None
    spread = syy - ratio * sxx
    slope = (spread + math.sqrt(spread * spread + 4.0 * ratio * sxy * sxy)) / (2.0 * sxy)
    return slope, my - slope * mx


def _fit_channel(
    xp: Any,
    vi: Any,
    vj: Any,
    valid: Any,
    percentiles: tuple[float, float],
    clip_sigma: float,
    max_iterations: int,
    max_samples: int,
) -> tuple[float, float, float, float, int, float]:
    """Fit one channel; return (gain, offset, rms, sky, n_kept, gain_error)."""
    band = _sky_band(xp, vi, vj, valid, percentiles)
    lap_i, lap_j, lap_ok = _laplacians(xp, vi, vj, valid)
    lap_mask = lap_ok & band[1:-1, 1:-1]
    index = xp.nonzero(band.ravel())[0]
    if index.shape[0] > max_samples:
        index = index[:: math.ceil(index.shape[0] / max_samples)]
    xs, ys = vi.ravel()[index], vj.ravel()[index]
    if int(index.shape[0]) < 3:
        return math.nan, math.nan, math.nan, math.nan, int(index.shape[0]), math.nan
    gain, fit = None, None
    moments = _noise_moments(xp, lap_i, lap_j, lap_mask)
    for _ in range(_MAX_ROUNDS):
        ratio = _noise_ratio(moments, gain)
        if not math.isfinite(ratio):  # noise not measurable: assume equal depth in sky units
            ratio = 1.0 if gain is None else gain * gain
        fit = _clipped_deming(xp, xs, ys, ratio, clip_sigma, max_iterations)
        if fit is None:
            return _level_only(xp, xs, ys)
        converged = gain is not None and abs(fit[0] - gain) <= _GAIN_TOLERANCE * abs(gain)
        gain = fit[0]
        if converged:
            break
    assert fit is not None
    return fit


def _sky_band(xp: Any, vi: Any, vj: Any, valid: Any, percentiles: tuple[float, float]) -> Any:
    """Pixels whose neighbours' pair mean lies in the percentile band.

    The pair mean is averaged over the valid ones among the 8 neighbours of each pixel (at
    least 3), not over the pixel itself, so the pixel's own noise does not decide whether it is
    kept: selecting pixels on a value that contains their noise would tilt the fit.
    """
    height, width = valid.shape
    pair = xp.zeros((height + 2, width + 2), dtype=vi.dtype)
    pair[1:-1, 1:-1] = xp.where(valid, (vi + vj) / 2.0, 0.0)
    weight = xp.zeros((height + 2, width + 2), dtype=vi.dtype)
    weight[1:-1, 1:-1] = valid.astype(vi.dtype)
    total = xp.zeros((height, width), dtype=vi.dtype)
    count = xp.zeros((height, width), dtype=vi.dtype)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy != 1 or dx != 1:
                total += pair[dy : dy + height, dx : dx + width]
                count += weight[dy : dy + height, dx : dx + width]
    ok = valid & (count >= 3)
    coordinate = total / xp.maximum(count, 1.0)
    inside = coordinate[ok]
    if int(inside.shape[0]) == 0:
        return ok
    low, high = (float(v) for v in xp.percentile(inside, xp.asarray([percentiles[0], percentiles[1]])))
    return ok & (coordinate >= low) & (coordinate <= high)


def _shares_signal(xp: Any, x: Any, y: Any) -> bool:
    """Whether the two layers share sky structure a gain can be read from.

    Two overlaps of flat sky differ by noise only: their correlation is ``N(0, 1/sqrt(n))``
    and a slope fitted through them is arbitrary (gains of 0.01 or 250 were seen) while the
    slope's nominal error stays small. A correlation below ``_MIN_CORRELATION`` (the
    structure's variance then under ~7 % of the noise's) or not 5 sigma significant leaves
    the pair to match levels only.
    """
    n = int(x.shape[0])
    dx, dy = x - xp.mean(x), y - xp.mean(y)
    sxx, syy, sxy = float(xp.mean(dx * dx)), float(xp.mean(dy * dy)), float(xp.mean(dx * dy))
    if not (sxx > 0 and syy > 0 and n > 0):
        return False
    correlation = sxy / math.sqrt(sxx * syy)
    return correlation >= max(_MIN_CORRELATION, 5.0 / math.sqrt(n))


def _level_only(xp: Any, xs: Any, ys: Any) -> tuple[float, float, float, float, int, float]:
    """A flat sky band fixes the levels but not the gain: gain 1 with an infinite error."""
    sky = float(xp.median(xs))
    offset = float(xp.median(ys)) - sky
    residual = ys - xs - offset
    rms = math.sqrt(float(xp.mean(residual * residual)))
    log.debug("flat sky band (no positive correlation): levels matched, gain left undetermined")
    return 1.0, offset, rms, sky, int(xs.shape[0]), math.inf


def _clipped_deming(
    xp: Any, xs: Any, ys: Any, ratio: float, clip_sigma: float, max_iterations: int
) -> tuple[float, float, float, float, int, float] | None:
    keep = xp.ones(xs.shape, dtype=bool)
    n_keep = int(xs.shape[0])
    line = None
    for _ in range(max(1, max_iterations)):
        line = _deming(xp, xs[keep], ys[keep], ratio)
        if line is None:
            return None
        residual = ys - (line[0] * xs + line[1])
        kept = residual[keep]
        centre = float(xp.median(kept))
        scale = _MAD_TO_SIGMA * float(xp.median(xp.abs(kept - centre)))
        if not scale > 0.0:
            break
        new_keep = xp.abs(residual - centre) <= clip_sigma * scale
        n_new = int(xp.count_nonzero(new_keep))
        if n_new == n_keep and bool(xp.all(new_keep == keep)):
            break
        keep, n_keep = new_keep, n_new
        if n_keep < 3:
            return None
    line = _deming(xp, xs[keep], ys[keep], ratio)
    if line is None:
        return None
    slope, intercept = line
    x_kept, y_kept = xs[keep], ys[keep]
    if not _shares_signal(xp, x_kept, y_kept):
        return None
    residual = y_kept - (slope * x_kept + intercept)
    rms = math.sqrt(float(xp.mean(residual * residual)))
    sky = float(xp.mean(x_kept))
    # Standard error of the slope: residual variance over the signal variance of x
    # (x's variance less its noise share, var(noise_x) = var(residual) / (ratio + slope^2)).
    dx = x_kept - sky
    sxx = float(xp.mean(dx * dx))
    noise_x = rms * rms / (ratio + slope * slope)
    signal = max(sxx - noise_x, sxx * 1e-3, 1e-30)
    gain_error = math.sqrt(rms * rms / (n_keep * signal))
    return slope, intercept, rms, sky, n_keep, gain_error
