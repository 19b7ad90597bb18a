"""Resample a stacked master tile (on its own grid) onto one region of the global grid."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..io.store import MosaicStore
from ..plans.grid import OutputGrid, OutputRegion
from ..tasks.accumulate import WindowMapping, sample_window
from ..tasks.mapping import coarse_pixel_map
from ..tasks.namespace import to_numpy
from .region_job import RegionSummary

__all__ = ["TileLayerJob", "build_tile_layer_region"]


@dataclass(frozen=True)
class TileLayerJob:
    """Put master tile ``tile`` (stored on ``tile_grid``) onto ``region`` of the global ``grid``."""

    region: OutputRegion
    grid: OutputGrid
    tile_grid: OutputGrid
    tile: MosaicStore
    layer: MosaicStore
    max_error_px: float = 0.01


def build_tile_layer_region(job: TileLayerJob, xp: Any = np) -> RegionSummary:
    """Sample the tile's image and coverage on one global region and write them to the layer."""
    start = time.perf_counter()
    region = job.region
    if job.layer.region_done(region):
        return RegionSummary(region.name, 1, 0, 0, 0.0, reused=True)
    coarse = coarse_pixel_map(
        job.grid.wcs, job.tile_grid.wcs, (region.y0, region.x0), region.shape, max_error_px=job.max_error_px
    )
    height, width = job.tile_grid.shape
    channels = job.tile.array("mosaic", mode="r").shape[0]
    image = np.full((channels,) + region.shape, np.nan, dtype=np.float32)
    coverage = np.zeros(region.shape, dtype=np.float32)
    finite = np.isfinite(coarse.x) & np.isfinite(coarse.y)
    used = 0
    if finite.any():
        y0 = max(0, math.floor(coarse.y[finite].min()) - 2)
        y1 = min(height, math.ceil(coarse.y[finite].max()) + 3)
        x0 = max(0, math.floor(coarse.x[finite].min()) - 2)
        x1 = min(width, math.ceil(coarse.x[finite].max()) + 3)
        if y1 - y0 >= 2 and x1 - x0 >= 2:
            tile_cov = np.asarray(job.tile.array("coverage", mode="r")[y0:y1, x0:x1], dtype=np.float32)
            tile_img = np.asarray(job.tile.array("mosaic", mode="r")[:, y0:y1, x0:x1], dtype=np.float32)
            has_data = (tile_cov > 0) & np.all(np.isfinite(tile_img), axis=0)
            weight = np.where(has_data, tile_cov, np.float32(0))
            # Normalised bilinear: resample coverage-weighted values and the coverage, then divide,
            # so data reach the tile's very edge with a coverage that fades to 0 across it.
            stacked = np.concatenate([np.where(has_data[None], tile_img, 0) * weight[None], weight[None]], axis=0)
            # The tile's pixel centres, out to its last ones, as the box of data (window coordinates).
            box = (-float(y0), height - 1.0 - y0, -float(x0), width - 1.0 - x0)
            mapping = WindowMapping.from_coarse(coarse, (y0, x0), box, "bilinear")
            values = xp.empty(stacked.shape[:1] + region.shape, dtype=xp.float32)
            footprint = xp.empty(region.shape, dtype=xp.float32)
            sample_window(xp.asarray(stacked, dtype=xp.float32), mapping, values, footprint)
            values, footprint = to_numpy(values), to_numpy(footprint)
            den = np.where(footprint > 0, values[-1], np.float32(0))
            valid = den > 1e-6
            safe = np.where(valid, den, np.float32(1))
            image = np.where(valid[None], values[:-1] / safe[None], np.float32(np.nan)).astype(np.float32)
            coverage = np.where(valid, den, 0).astype(np.float32)
            used = 1 if valid.any() else 0
    alpha = np.where(coverage > 0, 255, 0).astype(np.uint8)
    job.layer.write_region(region, image, coverage, alpha)
    return RegionSummary(
        region.name,
        1,
        used,
        0,
        time.perf_counter() - start,
        reused=False,
        backend="cpu" if xp is np else xp.__name__,
        max_map_error=coarse.max_error,
    )
