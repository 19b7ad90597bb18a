"""Combine the layers (master tiles or SDS batch mosaics) on one region of the global grid.

Each layer's values are corrected by its photometric gain and offset (inter-layer
calibration) and by its two-pass gain, then the layers are stacked with their per-pixel
coverage as weights through the same stacking engine as frames. The final coverage is
the sum of the layers' coverages, so it still counts distinct frames.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..io.store import MosaicStore
from ..plans.grid import OutputRegion
from ..tasks.namespace import to_numpy
from ..tasks.stacking import StackOptions, stack_samples
from .mosaic_region import RegionSummary

__all__ = ["CombineJob", "LayerInput", "build_combined_region", "mask_low_coverage_region"]


@dataclass(frozen=True)
class LayerInput:
    """One layer as the combination sees it: its store and its corrections."""

    id: int
    store: MosaicStore
    gain: tuple[float, ...] = (1.0,)
    offset: tuple[float, ...] = (0.0,)
    scale: float = 1.0


@dataclass(frozen=True)
class CombineJob:
    """Combine ``layers`` on ``region`` and write the result into ``out``."""

    region: OutputRegion
    layers: tuple[LayerInput, ...]
    out: MosaicStore
    n_channels: int
    stack: StackOptions = field(default_factory=lambda: StackOptions(rejection="none"))
    rewrite: bool = False


def _read_layer(layer: LayerInput, region: OutputRegion) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(layer.store.array("mosaic", mode="r")[:, region.y0 : region.y1, region.x0 : region.x1])
    coverage = np.asarray(layer.store.array("coverage", mode="r")[region.y0 : region.y1, region.x0 : region.x1])
    return image.astype(np.float32), coverage.astype(np.float32)


def layer_count(job: CombineJob) -> np.ndarray:
    """Number of layers with data at each pixel of the job's region."""
    count = np.zeros(job.region.shape, dtype=np.int32)
    for layer in job.layers:
        window = (slice(job.region.y0, job.region.y1), slice(job.region.x0, job.region.x1))
        count += np.asarray(layer.store.array("coverage", mode="r")[window]) > 0
    return count


def build_combined_region(job: CombineJob, xp: Any = np) -> dict[str, Any]:
    """Combine the layers on one region; returns the region's summary and its largest layer count."""
    start = time.perf_counter()
    region = job.region
    if not job.rewrite and job.out.region_done(region):
        summary = RegionSummary(region.name, len(job.layers), 0, 0, 0.0, reused=True)
        return {"summary": summary, "max_layers": int(layer_count(job).max(initial=0))}
    samples, weights, gains, offsets = [], [], [], []
    for layer in job.layers:
        image, coverage = _read_layer(layer, region)
        if not (coverage > 0).any():
            continue
        samples.append(image)
        weights.append(coverage)
        channels = image.shape[0]
        gains.append(np.resize(np.asarray(layer.gain, np.float32) * np.float32(layer.scale), channels))
        offsets.append(np.resize(np.asarray(layer.offset, np.float32) * np.float32(layer.scale), channels))
    height, width = region.shape
    if samples:
        result = stack_samples(
            xp.asarray(np.stack(samples)),
            xp.asarray(np.stack(weights)),
            job.stack,
            gains=np.stack(gains),
            offsets=np.stack(offsets),
        )
        image = to_numpy(result.image).astype(np.float32)
        coverage = to_numpy(result.coverage).astype(np.float32)
    else:
        image = np.full((job.n_channels, height, width), np.nan, dtype=np.float32)
        coverage = np.zeros((height, width), dtype=np.float32)
    image = np.where(coverage[None] > 0, image, np.float32(np.nan))
    alpha = np.where((coverage > 0) & np.all(np.isfinite(image), axis=0), 255, 0).astype(np.uint8)
    job.out.write_region(region, image, coverage, alpha)
    summary = RegionSummary(
        region.name,
        len(job.layers),
        len(samples),
        0,
        time.perf_counter() - start,
        reused=False,
        backend="cpu" if xp is np else xp.__name__,
    )
    return {"summary": summary, "max_layers": int(layer_count(job).max(initial=0))}


def mask_low_coverage_region(job: CombineJob, min_layers: float) -> int:
    """Mask pixels reached by fewer than ``min_layers`` layers; returns how many were masked."""
    store, region = job.out, job.region
    window = (slice(region.y0, region.y1), slice(region.x0, region.x1))
    coverage = np.asarray(store.array("coverage", mode="r")[window])
    low = (coverage > 0) & (layer_count(job) < min_layers)
    count = int(low.sum())
    if count:
        image = np.asarray(store.array("mosaic", mode="r")[(slice(None),) + window])
        store.array("mosaic")[(slice(None),) + window] = np.where(low[None], np.float32(np.nan), image)
        store.array("coverage")[window] = np.where(low, np.float32(0), coverage)
        alpha = np.asarray(store.array("alpha", mode="r")[window])
        store.array("alpha")[window] = np.where(low, 0, alpha).astype(np.uint8)
    return count
