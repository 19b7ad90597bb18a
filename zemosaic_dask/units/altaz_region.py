"""The alt-az edge cleanup of one region of the final store (see :mod:`zemosaic_dask.tasks.altaz_edges`).

A region's mask is decided from the coverage read with the mask's halo (zeros beyond the
grid), so neighbouring regions agree at their borders. The cleanup writes the region's
``mosaic`` (NaN where removed) and ``alpha`` (0 where removed, the soft edge inside) and
never the ``coverage`` that its neighbours read: the regions can run in any order, and
running the cleanup again leaves the store as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..io.store import MosaicStore
from ..plans.grid import OutputRegion
from ..tasks.altaz_edges import EdgeCleanupOptions, coverage_histogram, edge_alpha

__all__ = ["AltazJob", "clean_altaz_region", "coverage_window", "region_coverage_histogram"]


@dataclass(frozen=True)
class AltazJob:
    """The cleanup of one region: the store, the region, the grid's shape and the mask's options."""

    store: MosaicStore
    region: OutputRegion
    grid_shape: tuple[int, int]
    options: EdgeCleanupOptions


def coverage_window(store: MosaicStore, region: OutputRegion, grid_shape: tuple[int, int], halo: int) -> np.ndarray:
    """The region's coverage with ``halo`` pixels on every side, zeros beyond the grid."""
    height, width = grid_shape
    y0, y1 = max(0, region.y0 - halo), min(height, region.y1 + halo)
    x0, x1 = max(0, region.x0 - halo), min(width, region.x1 + halo)
    inner = np.asarray(store.array("coverage", mode="r")[y0:y1, x0:x1], dtype=np.float32)
    pads = ((y0 - (region.y0 - halo), region.y1 + halo - y1), (x0 - (region.x0 - halo), region.x1 + halo - x1))
    return np.pad(inner, pads, mode="constant", constant_values=0)


def region_coverage_histogram(job: AltazJob) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of the region's covered pixels (:func:`~zemosaic_dask.tasks.altaz_edges.coverage_histogram`)."""
    r = job.region
    return coverage_histogram(np.asarray(job.store.array("coverage", mode="r")[r.y0 : r.y1, r.x0 : r.x1]))


def clean_altaz_region(job: AltazJob, threshold: float) -> dict[str, Any]:
    """Mask the region's low-coverage edge pixels; returns its pixel counts.

    Returns
    -------
    dict
        ``region``; ``covered`` (pixels with coverage > 0), ``masked`` (of those, removed)
        and ``faded`` (of those kept, alpha below 255).
    """
    store, region = job.store, job.region
    window = coverage_window(store, region, job.grid_shape, job.options.halo)
    edge = edge_alpha(window, threshold, job.options)
    halo = job.options.halo
    coverage = window[halo : window.shape[0] - halo, halo : window.shape[1] - halo]
    covered = coverage > 0
    removed = edge == 0
    summary = {
        "region": region.name,
        "covered": int(covered.sum()),
        "masked": int((covered & removed).sum()),
        "faded": int((covered & ~removed & (edge < 255)).sum()),
    }
    if not covered.any():
        return summary
    rows, cols = slice(region.y0, region.y1), slice(region.x0, region.x1)
    alpha = np.asarray(store.array("alpha", mode="r")[rows, cols])
    cleaned = np.minimum(alpha, edge)
    if np.array_equal(cleaned, alpha):
        return summary
    image = np.asarray(store.array("mosaic", mode="r")[:, rows, cols])
    store.array("mosaic")[:, rows, cols] = np.where(removed[None], np.float32(np.nan), image)
    store.array("alpha")[rows, cols] = cleaned
    return summary
