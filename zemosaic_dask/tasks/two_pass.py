"""Two-pass coverage renormalisation (ZeMosaic's "two-pass coverage renorm"), as pure array functions.

The mosaic is assembled twice from its layers (master tiles or SDS batch mosaics):

1. Pass 1 assembles every layer with gain 1 and gives the coverage ``coverage_p1`` (sum of
   weights). :func:`coverage_scale_map` blurs that coverage with a normalised Gaussian
   (``blur(cov) / blur(cov > 0)``, so the blur does not darken the mosaic's edges) and
   returns ``clip(blurred / coverage, 0.5, 2)`` where the coverage is positive. It works on
   one chunk extended by a halo of :func:`~zemosaic_dask.tasks.blur.halo_width` pixels.
2. Each layer gets one gain, :func:`layer_gain`: the median of the scale map over the
   layer's well-covered footprint, clipped to ``[0.85, 1.18]``. "Well covered" means the
   layer's own coverage is at least ``well_covered_fraction`` (0.5) of its maximum: the
   median then ignores the layer's feathered or sparsely stacked rim, where its coverage
   says little about the layer. A layer may be split over chunks:
   :func:`well_covered_scale_values` picks the values chunk by chunk and :func:`gain_from_values`
   takes the median of all of them.
3. Pass 2 assembles with every layer's values multiplied by its gain (the same gain for
   every channel, so colours keep their ratios). :func:`merge_passes` keeps a pass-2 pixel
   where both coverages are positive and its luminance (mean over channels) is at least
   ``min_luminance_ratio`` (0.4) times the pass-1 luminance; elsewhere the pass-1 pixel stays.

Nothing here holds the whole canvas: every function takes a chunk (or a layer's box).
"""

from __future__ import annotations

from typing import Any

from .blur import HaloSpec, halo_sides, normalised_blur
from .namespace import array_namespace

__all__ = [
    "coverage_scale_map",
    "gain_from_values",
    "layer_gain",
    "merge_passes",
    "well_covered_scale_values",
]

#: Scale map clip (ZeMosaic's two-pass defaults).
SCALE_CLIP = (0.5, 2.0)
#: Per-layer gain clip.
GAIN_CLIP = (0.85, 1.18)
#: A layer pixel is "well covered" when its coverage is at least this fraction of the layer's maximum.
WELL_COVERED_FRACTION = 0.5
#: Pass-2 pixels darker than this fraction of pass 1 are not trusted.
MIN_LUMINANCE_RATIO = 0.4


def coverage_scale_map(
    coverage_chunk_with_halo: Any,
    halo: HaloSpec,
    sigma: float,
    clip: tuple[float, float] = SCALE_CLIP,
    *,
    truncate: float = 4.0,
) -> Any:
    """Return the coverage scale map of one chunk: ``clip(normalised_blur(cov) / cov)``.

    Parameters
    ----------
    coverage_chunk_with_halo : array
        ``(h + top + bottom, w + left + right)`` pass-1 coverage: the chunk extended by its
        halo (``halo_width(sigma, truncate)`` pixels read from the neighbours, zeros or nothing
        at the canvas border). NaN and values <= 0 count as "no coverage".
    halo : int or tuple of int
        The halo around the chunk: one width or ``(top, bottom, left, right)``.
    sigma : float
        Gaussian sigma in pixels (ZeMosaic uses 50).
    clip : tuple of float
        ``(low, high)`` bounds of the scale.
    truncate : float
        Kernel radius in sigmas.

    Returns
    -------
    array
        ``(h, w)`` float32 scale in the input's namespace, NaN where the coverage is 0.
        Above 1 where the neighbourhood is better covered than the pixel, below 1 where
        it is less covered.
    """
    low, high = _bounds(clip, "clip")
    xp = array_namespace(coverage_chunk_with_halo)
    coverage = xp.asarray(coverage_chunk_with_halo, dtype=xp.float32)
    zero = xp.asarray(0, dtype=xp.float32)
    coverage = xp.where(xp.isfinite(coverage) & (coverage > 0), coverage, zero)
    covered = coverage > 0
    blurred = normalised_blur(coverage, covered, sigma, truncate=truncate, halo=halo)
    top, bottom, left, right = halo_sides(halo, coverage.shape)
    inner = coverage[top : coverage.shape[0] - bottom, left : coverage.shape[1] - right]
    inside = inner > 0
    ratio = blurred / xp.where(inside, inner, xp.asarray(1, dtype=xp.float32))
    scale = xp.clip(ratio, low, high).astype(xp.float32)
    return xp.where(inside, scale, xp.asarray(xp.nan, dtype=xp.float32))


def well_covered_scale_values(
    scale_values: Any,
    layer_coverage: Any,
    *,
    coverage_max: float | None = None,
    well_covered_fraction: float = WELL_COVERED_FRACTION,
) -> Any:
    """Return the finite scale values (1-D) where a layer is well covered.

    Parameters
    ----------
    scale_values : array
        Scale map over the layer's box (or a chunk of it).
    layer_coverage : array
        The layer's own coverage, same shape.
    coverage_max : float, optional
        The layer's maximum coverage; required to split a layer over chunks (each chunk
        then uses the same threshold). Defaults to the maximum of ``layer_coverage``.
    well_covered_fraction : float
        Pixels with ``layer_coverage >= well_covered_fraction * coverage_max`` (and > 0) count.
    """
    if not 0.0 <= well_covered_fraction <= 1.0:
        raise ValueError(f"well_covered_fraction must be in [0, 1], got {well_covered_fraction!r}")
    xp = array_namespace(scale_values, layer_coverage)
    if scale_values.shape != layer_coverage.shape:
        raise ValueError(
            f"scale values {tuple(scale_values.shape)} and layer coverage {tuple(layer_coverage.shape)} "
            "must cover the same pixels"
        )
    coverage = xp.where(xp.isfinite(layer_coverage), layer_coverage, xp.asarray(0, dtype=layer_coverage.dtype))
    if coverage_max is None:
        coverage_max = float(xp.max(coverage)) if coverage.size else 0.0
    well = (coverage > 0) & (coverage >= well_covered_fraction * coverage_max) & xp.isfinite(scale_values)
    return scale_values[well]


def gain_from_values(values: Any, *, clip: tuple[float, float] = GAIN_CLIP) -> float:
    """Return ``clip(median(values))``, or 1.0 for no value (a layer keeps its level)."""
    low, high = _bounds(clip, "clip")
    xp = array_namespace(values)
    if values.size == 0:
        return 1.0
    return float(min(max(float(xp.median(values)), low), high))


def layer_gain(
    scale_values: Any,
    layer_coverage: Any,
    *,
    well_covered_fraction: float = WELL_COVERED_FRACTION,
    clip: tuple[float, float] = GAIN_CLIP,
) -> float:
    """Return a layer's pass-2 gain: the median scale over its well-covered footprint, clipped.

    Parameters
    ----------
    scale_values : array
        :func:`coverage_scale_map` over the layer's box (NaN where the mosaic has no coverage).
    layer_coverage : array
        The layer's own coverage (sum of weights) over the same box.
    well_covered_fraction : float
        Only pixels where the layer's coverage is at least this fraction of its maximum count.
    clip : tuple of float
        ``(low, high)`` bounds of the gain.

    Returns
    -------
    float
        The gain; 1.0 when the layer has no well-covered pixel with a finite scale.
    """
    values = well_covered_scale_values(scale_values, layer_coverage, well_covered_fraction=well_covered_fraction)
    return gain_from_values(values, clip=clip)


def merge_passes(
    image_p1: Any,
    cov_p1: Any,
    image_p2: Any,
    cov_p2: Any,
    *,
    min_luminance_ratio: float = MIN_LUMINANCE_RATIO,
) -> tuple[Any, Any]:
    """Keep the pass-2 pixels that are trusted, the pass-1 pixels elsewhere.

    Parameters
    ----------
    image_p1, image_p2 : array
        ``(C, h, w)`` assembled images of pass 1 and pass 2.
    cov_p1, cov_p2 : array
        ``(h, w)`` their coverages.
    min_luminance_ratio : float
        A pass-2 pixel is kept where both coverages are positive and
        ``lum2 / lum1 >= min_luminance_ratio``, luminance being the mean over channels.
        Where ``lum1 <= 0`` or either luminance is not finite the ratio is undefined and
        the pass-1 pixel stays.

    Returns
    -------
    image : array
        ``(C, h, w)`` float32 merged image.
    coverage : array
        ``(h, w)`` float32 coverage of the pass each pixel came from.
    """
    xp = array_namespace(image_p1, cov_p1, image_p2, cov_p2)
    if image_p1.shape != image_p2.shape or image_p1.ndim != 3:
        raise ValueError(
            f"pass images must both be (C, h, w) of one shape, got {tuple(image_p1.shape)} and {tuple(image_p2.shape)}"
        )
    if cov_p1.shape != image_p1.shape[1:] or cov_p2.shape != image_p1.shape[1:]:
        raise ValueError(
            f"coverages {tuple(cov_p1.shape)} and {tuple(cov_p2.shape)} must match the image plane "
            f"{tuple(image_p1.shape[1:])}"
        )
    lum1 = xp.mean(image_p1, axis=0)
    lum2 = xp.mean(image_p2, axis=0)
    defined = xp.isfinite(lum1) & xp.isfinite(lum2) & (lum1 > 0)
    ratio = lum2 / xp.where(defined, lum1, xp.asarray(1, dtype=lum1.dtype))
    keep = defined & (cov_p1 > 0) & (cov_p2 > 0) & (ratio >= min_luminance_ratio)
    image = xp.where(keep[None], image_p2, image_p1).astype(xp.float32)
    coverage = xp.where(keep, cov_p2, cov_p1).astype(xp.float32)
    return image, coverage


def _bounds(pair: tuple[float, float], name: str) -> tuple[float, float]:
    low, high = (float(v) for v in pair)
    if not low <= high:
        raise ValueError(f"{name} must be (low, high) with low <= high, got {pair!r}")
    return low, high
