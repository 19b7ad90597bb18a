"""The SDS planning steps as they were before coverage was counted on runs (cell by cell).

Kept as the reference the run-based planner must reproduce exactly: the former per-polygon
rasteriser, the former closing policy and merge on a boolean raster, and the former layer
counts. Slow (every cell of every frame is marked), for small test cases only.
"""

from __future__ import annotations

import math

import numpy as np

from zemosaic_dask.plans import SdsBatch
from zemosaic_dask.plans.footprints import coverage_cells_for_grid, frame_footprints_pixels
from zemosaic_dask.plans.sds_spread import cluster_frames, footprint_geometry


def rasterize_spans(polygon_xy, cells):
    """The former ``rasterize_polygon_spans``: every raster row against every edge of one polygon."""
    poly = (np.asarray(polygon_xy, dtype=float) + 0.5) / cells.cell_size
    ny, nx = cells.shape
    j0, j1 = max(0, math.floor(poly[:, 1].min())), min(ny - 1, math.ceil(poly[:, 1].max()))
    spans = np.zeros((0, 3), dtype=np.int64)
    xa, ya = poly[:, 0], poly[:, 1]
    xb, yb = np.roll(xa, -1), np.roll(ya, -1)
    sloped = ya != yb
    xa, ya, xb, yb = xa[sloped], ya[sloped], xb[sloped], yb[sloped]
    if j0 <= j1 and xa.size >= 2:
        rows = np.arange(j0, j1 + 1)
        py = rows[:, None] + 0.5
        crosses = (ya > py) != (yb > py)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            along = (py - ya) / (yb - ya)
            x_cross = np.where(crosses, xa + along * (xb - xa), np.inf)
        x_cross.sort(axis=1)
        pairs = x_cross.shape[1] // 2
        starts = np.ceil(x_cross[:, 0 : 2 * pairs : 2] - 0.5)
        stops = np.ceil(x_cross[:, 1 : 2 * pairs : 2] - 0.5)
        valid = np.arange(pairs)[None, :] < (crosses.sum(axis=1) // 2)[:, None]
        starts, stops = np.clip(starts, 0, nx), np.clip(stops, 0, nx)
        valid &= stops > starts
        row_index = np.broadcast_to(rows[:, None], starts.shape)
        spans = np.column_stack([row_index[valid], starts[valid], stops[valid]]).astype(np.int64)
    if spans.size == 0:
        cx, cy = poly.mean(axis=0)
        ci, cj = math.floor(cx), math.floor(cy)
        if 0 <= ci < nx and 0 <= cj < ny:
            spans = np.array([[cj, ci, ci + 1]], dtype=np.int64)
    return spans


def span_cells(spans, n_columns):
    """Flat cell indices of ``(row, start, stop)`` runs, one by one."""
    parts = [np.arange(r * n_columns + a, r * n_columns + b) for r, a, b in np.asarray(spans).tolist()]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def _count(footprints, members, covered):
    covered[:] = False
    for k in members:
        covered[footprints[k]] = True
    return int(covered.sum())


def batch_by_coverage(footprints, policy, n_cells):
    """The former closing policy: every frame's cells marked on a boolean raster, recounted per frame."""
    covered = np.zeros(n_cells, dtype=bool)
    total = _count(footprints, range(len(footprints)), covered)
    covered[:] = False
    batches, current = [], []
    for k in range(len(footprints)):
        current.append(k)
        covered[footprints[k]] = True
        fraction = int(covered.sum()) / total
        reason = None
        if len(current) >= policy.min_batch_size and fraction >= policy.coverage_threshold:
            reason = "coverage"
        elif len(current) >= policy.target_batch_size:
            reason = "target"
        if reason:
            batches.append(SdsBatch(tuple(current), fraction, reason))
            current = []
            covered[:] = False
    if current:
        if len(current) < policy.min_batch_size and batches:
            merged = batches[-1].frames + tuple(current)
            batches[-1] = SdsBatch(merged, _count(footprints, merged, covered) / total, "merged-leftover")
        else:
            batches.append(SdsBatch(tuple(current), int(covered.sum()) / total, "end"))
    return batches


def merge_undercovered(batches, footprints, policy, n_cells):
    """The former merge of batches below the threshold, recounting the pending batch on the raster."""
    covered = np.zeros(n_cells, dtype=bool)
    total = _count(footprints, range(len(footprints)), covered)
    out, pending, merged = [], (), 0
    for batch in batches:
        if not pending and batch.coverage_fraction >= policy.coverage_threshold:
            out.append(batch)
            continue
        merged += 1 if pending else 0
        pending += batch.frames
        fraction = _count(footprints, pending, covered) / total
        if fraction >= policy.coverage_threshold:
            out.append(SdsBatch(pending, fraction, "merged-coverage" if merged else batch.closed_by))
            pending, merged = (), 0
    if pending:
        if out:
            frames = out[-1].frames + pending
            out[-1] = SdsBatch(frames, _count(footprints, frames, covered) / total, "merged-leftover")
        else:
            fraction = _count(footprints, pending, covered) / total
            out.append(SdsBatch(pending, fraction, "merged-coverage" if merged else batches[-1].closed_by))
    return out


def spread_order(spans):
    """The spread order with each footprint's geometry measured alone."""
    geometry = np.array([footprint_geometry(s) for s in spans], dtype=np.float64)
    radius = max(0.5, 0.25 * float(np.median(geometry[:, 2])))
    labels = cluster_frames(geometry[:, :2], radius)
    sizes = np.bincount(labels)
    rank, seen = np.zeros(len(labels), dtype=np.int64), np.zeros(len(sizes), dtype=np.int64)
    for k, label in enumerate(labels):
        rank[k] = seen[label]
        seen[label] += 1
    return [int(k) for k in np.lexsort((labels, (2 * rank + 1) / (2.0 * sizes[labels])))]


def plan_batches(frames, grid, policy):
    """The former policy plan (index order, every frame with a footprint): its batches."""
    cells = coverage_cells_for_grid(grid)
    spans = {i: rasterize_spans(p, cells) for i, p in enumerate(frame_footprints_pixels(frames, grid)) if p is not None}
    processing = [i for i in range(len(frames)) if i in spans and spans[i].size]
    sequence = [processing[k] for k in spread_order([spans[i] for i in processing])]
    cells_of = [span_cells(spans[i], cells.shape[1]) for i in sequence]
    raw = merge_undercovered(batch_by_coverage(cells_of, policy, cells.size), cells_of, policy, cells.size)
    return [SdsBatch(tuple(sequence[k] for k in b.frames), b.coverage_fraction, b.closed_by) for b in raw]


def layer_counts(batches, frames, grid):
    """The former layer counts: each batch's cells marked on its own raster, the rasters added."""
    cells = coverage_cells_for_grid(grid)
    polygons = frame_footprints_pixels(frames, grid)
    counts = np.zeros(cells.size, dtype=np.int32)
    for batch in batches:
        covered = np.zeros(cells.size, dtype=bool)
        for i in batch.frames:
            if polygons[i] is not None:
                covered[span_cells(rasterize_spans(polygons[i], cells), cells.shape[1])] = True
        counts += covered
    return counts.reshape(cells.shape)
