"""Spread SDS frames over the field before batching: spatial clusters, then stride order.

The SDS closing policy (:func:`~zemosaic_dask.plans.sds.batch_by_coverage`) takes frames in
sequence, so the sequence decides where each batch lies: with files in panel order (every
frame of panel 0, then of panel 1, ...) consecutive frames share one panel and a batch closes
at the target size covering a fraction of the field. :func:`spread_order` reorders the
frames so that any stretch of the sequence spreads over the whole field:

1. frames are grouped into spatial clusters (one per pointing or panel): a frame joins the
   nearest cluster leader within a quarter of the median frame size (measured on the
   coverage raster, through a hash grid of buckets that size, so the cost is linear in the
   number of frames), or becomes a new leader;
2. the clusters are interleaved in proportion to their sizes (stride scheduling): frame
   ``j`` of a cluster of ``n`` frames is placed at ``(j + 0.5) / n``, ties in order of the
   clusters' first frames. Equal clusters thus alternate one frame each; a cluster twice
   as large comes twice as often.

Frames keep their processing order within a cluster, and a sequence that already alternates
between pointings, or holds one pointing only, comes out unchanged. Pure numpy; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["cluster_frames", "footprint_geometries", "footprint_geometry", "spread_order"]

#: Cluster radius, as a fraction of the median of the frames' smaller footprint side.
CLUSTER_RADIUS_FRACTION = 0.25


def footprint_geometry(spans: np.ndarray) -> tuple[float, float, float]:
    """Centroid ``(x, y)`` and smaller bounding-box side of a footprint given as cell runs.

    Parameters
    ----------
    spans : numpy.ndarray
        ``(K, 3)`` rows of ``(row, start, stop)`` as made by
        :func:`~zemosaic_dask.plans.footprints.rasterize_polygon_spans`.

    Returns
    -------
    tuple of float
        ``(cx, cy, side)`` in cells; ``side`` is at least 1.
    """
    spans = np.asarray(spans, dtype=np.int64).reshape(-1, 3)
    lengths = (spans[:, 2] - spans[:, 1]).astype(np.float64)
    total = float(lengths.sum())
    if total <= 0:
        return 0.0, 0.0, 1.0
    cx = float(((spans[:, 1] + spans[:, 2] - 1) * 0.5 * lengths).sum() / total)
    cy = float((spans[:, 0] * lengths).sum() / total)
    height = float(spans[:, 0].max() - spans[:, 0].min() + 1)
    width = float(spans[:, 2].max() - spans[:, 1].min())
    return cx, cy, max(1.0, min(height, width))


def footprint_geometries(spans: Sequence[np.ndarray]) -> np.ndarray:
    """:func:`footprint_geometry` of many footprints at once.

    The sums are of integers and half-integers, exact in float64, so the values equal
    :func:`footprint_geometry`'s whatever the order of summation.

    Parameters
    ----------
    spans : sequence of numpy.ndarray
        Each footprint as ``(K, 3)`` cell runs ``(row, start, stop)``.

    Returns
    -------
    numpy.ndarray
        ``(N, 3)`` float rows ``(cx, cy, side)``; an empty footprint gives ``(0, 0, 1)``.
    """
    n = len(spans)
    arrays = [np.asarray(s, dtype=np.int64).reshape(-1, 3) for s in spans]
    counts = np.array([len(a) for a in arrays], dtype=np.int64)
    out = np.tile(np.array([0.0, 0.0, 1.0]), (n, 1))
    if n == 0 or counts.sum() == 0:
        return out
    runs = np.concatenate(arrays)
    owner = np.repeat(np.arange(n), counts)
    lengths = (runs[:, 2] - runs[:, 1]).astype(np.float64)
    total = np.bincount(owner, weights=lengths, minlength=n)
    sum_x = np.bincount(owner, weights=(runs[:, 1] + runs[:, 2] - 1) * 0.5 * lengths, minlength=n)
    sum_y = np.bincount(owner, weights=runs[:, 0] * lengths, minlength=n)
    present = counts > 0
    heads = (np.cumsum(counts) - counts)[present]
    height = np.maximum.reduceat(runs[:, 0], heads) - np.minimum.reduceat(runs[:, 0], heads) + 1
    width = np.maximum.reduceat(runs[:, 2], heads) - np.minimum.reduceat(runs[:, 1], heads)
    side = np.zeros(n)
    side[present] = np.maximum(1.0, np.minimum(height, width).astype(np.float64))
    filled = total > 0
    out[filled, 0] = sum_x[filled] / total[filled]
    out[filled, 1] = sum_y[filled] / total[filled]
    out[filled, 2] = side[filled]
    return out


def cluster_frames(centres: np.ndarray, radius: float) -> np.ndarray:
    """Group points into clusters of radius ``radius`` around leaders, in input order.

    A point joins the nearest leader within ``radius`` (the earlier leader on a tie); a point
    with none becomes a leader. Leaders sit in a hash grid of buckets of side ``radius``, so
    only the 3 x 3 buckets around a point are searched.

    Parameters
    ----------
    centres : numpy.ndarray
        ``(N, 2)`` float ``(x, y)`` positions.
    radius : float
        Cluster radius (> 0), in the units of ``centres``.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` int cluster label of every point, numbered in order of first appearance.
    """
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    buckets: dict[tuple[int, int], list[int]] = {}
    leaders: list[tuple[float, float]] = []
    labels = np.empty(len(centres), dtype=np.int64)
    for k, (x, y) in enumerate(centres):
        bx, by = math.floor(x / radius), math.floor(y / radius)
        best, best_d = -1, math.inf
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                for leader in buckets.get((bx + dx, by + dy), ()):
                    lx, ly = leaders[leader]
                    d = math.hypot(x - lx, y - ly)
                    if d <= radius and (d < best_d or (d == best_d and leader < best)):
                        best, best_d = leader, d
        if best < 0:
            best = len(leaders)
            leaders.append((float(x), float(y)))
            buckets.setdefault((bx, by), []).append(best)
        labels[k] = best
    return labels


def spread_order(spans: Sequence[np.ndarray]) -> list[int]:
    """Positions of the frames in a sequence that spreads every stretch over the whole field.

    Parameters
    ----------
    spans : sequence of numpy.ndarray
        Each frame's footprint as cell runs, in processing order.

    Returns
    -------
    list of int
        A permutation of ``range(len(spans))``: clusters interleaved by stride, processing
        order kept within each cluster (see the module docstring).
    """
    if not spans:
        return []
    geometry = footprint_geometries(spans)
    radius = max(0.5, CLUSTER_RADIUS_FRACTION * float(np.median(geometry[:, 2])))
    labels = cluster_frames(geometry[:, :2], radius)
    sizes = np.bincount(labels)
    rank = np.zeros(len(labels), dtype=np.int64)
    seen = np.zeros(len(sizes), dtype=np.int64)
    for k, label in enumerate(labels):
        rank[k] = seen[label]
        seen[label] += 1
    # (2 j + 1) / (2 n): a correctly rounded division, so equal ratios give equal keys and the
    # tie goes to the earlier cluster.
    keys = (2 * rank + 1) / (2.0 * sizes[labels])
    return [int(k) for k in np.lexsort((labels, keys))]
