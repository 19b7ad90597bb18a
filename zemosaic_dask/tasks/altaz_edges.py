"""The alt-az edge mask decided from a mosaic's coverage (pure numpy; ZeMosaic's "Alt-Az cleanup").

Field rotation between the frames of an alt-az mount leaves ragged, thinly covered wedges
along the edges of a mosaic. The mask keeps a pixel when

1. its coverage is at least ``max(min_coverage, min_coverage_fraction * typical)``, the
   typical coverage being the median over every covered pixel of the field
   (:func:`coverage_histogram` per region, summed, then :func:`median_coverage`);
2. it survives a morphological opening of that kept area by a square of radius
   ``opening_px`` (slivers and spikes narrower than the square go with the wedges);
3. it lies more than ``margin_px`` inside the opened area (an erosion by a square).

Kept pixels get an alpha rising from the edge of the kept area to 255 over ``decay_px``
pixels (Euclidean distance); removed pixels get alpha 0.

Every step looks at most :attr:`EdgeCleanupOptions.halo` pixels away, and outside the grid
counts as uncovered, so a region computed from its coverage read with that halo (zeros
beyond the grid) gets exactly the pixels the whole grid at once would give: regions agree
at their borders. The mask never looks at the image: the linear values are not changed here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = [
    "BINS_PER_FRAME",
    "EdgeCleanupOptions",
    "coverage_histogram",
    "coverage_threshold",
    "edge_alpha",
    "median_coverage",
    "merge_histograms",
]

#: Resolution of the coverage histogram: 1/16 of a frame (coverage sums frame weights of 1).
BINS_PER_FRAME = 16


@dataclass(frozen=True)
class EdgeCleanupOptions:
    """Thresholds and widths of the alt-az edge mask (``zemosaic.altaz``).

    Attributes
    ----------
    min_coverage : float
        Coverage (sum of frame weights) below which a pixel is removed.
    min_coverage_fraction : float
        Fraction of the field's median coverage below which a pixel is removed.
    opening_px : int
        Radius of the square opening of the kept area.
    margin_px : int
        Pixels removed inside the edge of the opened area.
    decay_px : int
        Width of the alpha ramp inside the edge (0: alpha 255 on every kept pixel).
    """

    min_coverage: float = 2.0
    min_coverage_fraction: float = 0.3
    opening_px: int = 8
    margin_px: int = 4
    decay_px: int = 16

    @property
    def halo(self) -> int:
        """How far a pixel's mask looks: the opening (twice its radius), the margin and the decay."""
        return 2 * self.opening_px + self.margin_px + self.decay_px


def coverage_histogram(coverage: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of the covered pixels' coverage in bins of ``1 / BINS_PER_FRAME`` frame.

    Returns
    -------
    bins : ndarray of int64
        The occupied bins (``floor(coverage * BINS_PER_FRAME)``), sorted.
    counts : ndarray of int64
        The number of pixels in each.
    """
    values = np.asarray(coverage, dtype=np.float64)
    covered = values[np.isfinite(values) & (values > 0)]
    bins, counts = np.unique(np.floor(covered * BINS_PER_FRAME).astype(np.int64), return_counts=True)
    return bins, counts.astype(np.int64)


def merge_histograms(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Sum histograms of :func:`coverage_histogram` (of separate regions) into one."""
    if not parts:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    bins = np.concatenate([np.asarray(b, np.int64) for b, _ in parts])
    counts = np.concatenate([np.asarray(c, np.int64) for _, c in parts])
    merged, inverse = np.unique(bins, return_inverse=True)
    return merged, np.bincount(inverse, weights=counts, minlength=merged.size).astype(np.int64)


def median_coverage(histogram: tuple[np.ndarray, np.ndarray]) -> float:
    """The median coverage of the covered pixels (the lower edge of the median bin; 0 when none)."""
    bins, counts = histogram
    total = int(np.sum(counts))
    if total == 0:
        return 0.0
    index = int(np.searchsorted(np.cumsum(counts), (total + 1) // 2))
    return float(bins[index]) / BINS_PER_FRAME


def coverage_threshold(options: EdgeCleanupOptions, typical: float) -> float:
    """Coverage a pixel needs to be kept: the absolute and the fractional threshold, whichever is higher."""
    return max(float(options.min_coverage), float(options.min_coverage_fraction) * float(typical))


def edge_alpha(window: np.ndarray, threshold: float, options: EdgeCleanupOptions) -> np.ndarray:
    """The edge mask of the centre of a coverage window, as an alpha (uint8, 0 = removed).

    Parameters
    ----------
    window : ndarray
        ``(H + 2h, W + 2h)`` coverage with a halo ``h = options.halo`` on every side
        (zeros beyond the grid).
    threshold : float
        Coverage a pixel needs (:func:`coverage_threshold`).
    options : EdgeCleanupOptions
        Opening, margin and decay widths.

    Returns
    -------
    ndarray of uint8
        ``(H, W)``: 0 where removed, rising to 255 over ``decay_px`` pixels inside the edge.
    """
    halo = options.halo
    coverage = np.asarray(window, dtype=np.float32)
    keep = (coverage > 0) & (coverage >= np.float32(threshold))
    keep = keep.astype(np.uint8)
    if options.opening_px:
        size = 2 * options.opening_px + 1
        keep = ndimage.minimum_filter(keep, size=size, mode="constant", cval=0)
        keep = ndimage.maximum_filter(keep, size=size, mode="constant", cval=0)
    if options.margin_px:
        keep = ndimage.minimum_filter(keep, size=2 * options.margin_px + 1, mode="constant", cval=0)
    kept = keep.astype(bool)
    if options.decay_px and not kept.all():
        distance = ndimage.distance_transform_edt(kept)
        ramp = np.minimum(distance / float(options.decay_px), 1.0)
        alpha = np.where(kept, np.maximum(np.rint(255.0 * ramp), 1.0), 0.0).astype(np.uint8)
    else:
        alpha = np.where(kept, 255, 0).astype(np.uint8)
    height, width = alpha.shape
    return alpha[halo : height - halo, halo : width - halo]
