"""Combine the layers (master tiles or SDS batch mosaics) on one region of the global grid.

Each layer's values are corrected by its photometric gain and offset (inter-layer
calibration) and by its two-pass gain, then the layers are stacked with their per-pixel
coverage as weights through the same stacking engine as frames. The final coverage is
the sum of the layers' coverages, so it still counts distinct frames.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ..io.store import MosaicStore
from ..plans.grid import OutputRegion
from ..plans.sds_mask import SdsMaskSummary
from ..tasks.namespace import to_numpy
from ..tasks.stacking import StackOptions, peak_memory_bytes, stack_samples
from .layer_reader import LayerReader
from .region_job import RegionSummary

__all__ = [
    "CombineJob",
    "Combined",
    "LayerInput",
    "build_combined_region",
    "combine_layers_in_region",
    "mask_low_coverage_region",
]


@dataclass(frozen=True)
class LayerInput:
    """One layer as the combination sees it: its store and its corrections."""

    id: int
    store: MosaicStore
    gain: tuple[float, ...] = (1.0,)
    offset: tuple[float, ...] = (0.0,)
    scale: float = 1.0


class Combined(NamedTuple):
    """A region's combination: image, coverage, layers used, each layer's largest coverage, layers per pixel."""

    image: np.ndarray
    coverage: np.ndarray
    used: int
    layer_max: dict[int, float]
    count: np.ndarray


@dataclass(frozen=True)
class CombineJob:
    """Combine ``layers`` on ``region`` and write the result into ``out``."""

    region: OutputRegion
    layers: tuple[LayerInput, ...]
    out: MosaicStore
    n_channels: int
    stack: StackOptions = field(default_factory=lambda: StackOptions(rejection="none"))
    rewrite: bool = False
    max_bytes: int = 256 * 1024 * 1024
    noise: tuple[float, ...] | None = None
    sky: tuple[float, ...] | None = None


def _layer_noise(job: CombineJob, weights: list[np.ndarray]) -> dict[str, Any]:
    """Per-pixel expected noise of each layer (frame noise / sqrt(coverage)) and its sky, for ``noise_clip``.

    Both are in the layers' own units; :func:`stack_samples` maps them through the layers'
    gains and offsets.
    """
    if job.noise is None:
        return {}
    frame_noise = np.resize(np.asarray(job.noise, dtype=np.float32), job.n_channels)
    cover = np.sqrt(np.maximum(np.stack(weights), np.float32(1e-3)))[:, None]
    noise = frame_noise[None, :, None, None] / cover
    sky = np.resize(np.asarray(job.sky if job.sky is not None else (0.0,), dtype=np.float32), job.n_channels)
    return {"noise": noise.astype(np.float32), "background": sky[None, :, None, None]}


def layer_count(job: CombineJob) -> np.ndarray:
    """Number of layers with data at each pixel of the job's region."""
    return _coverage_summary(job)[0]


def _coverage_summary(job: CombineJob) -> tuple[np.ndarray, dict[int, float]]:
    """Layers with data at each pixel of the job's region, and each layer's largest coverage there."""
    count, layer_max = np.zeros(job.region.shape, dtype=np.int32), {}
    reader = LayerReader([layer.store for layer in job.layers], coverage_only=True)
    for layer, (_, coverage) in zip(job.layers, reader.iter_read(job.region), strict=True):
        layer_max[layer.id] = float(coverage.max(initial=0.0))
        count += coverage > 0
    return count, layer_max


def _streamed_mean(job: CombineJob, xp: Any) -> Combined:
    """Coverage-weighted mean of the corrected layers, accumulated one layer at a time.

    Memory holds the two sums and the layers of one read
    (:meth:`~zemosaic_dask.units.layer_reader.LayerReader.iter_read`), whatever the number of
    layers.
    """
    height, width = job.region.shape
    num = xp.zeros((job.n_channels, height, width), dtype=xp.float64)
    den = xp.zeros((height, width), dtype=xp.float64)
    count = np.zeros((height, width), dtype=np.int32)
    used = 0
    layer_max: dict[int, float] = {}
    reader = LayerReader([layer.store for layer in job.layers])
    for layer, (image, coverage) in zip(job.layers, reader.iter_read(job.region), strict=True):
        layer_max[layer.id] = float(coverage.max(initial=0.0))
        if not (coverage > 0).any():
            continue
        used += 1
        count += coverage > 0
        gain = np.resize(np.asarray(layer.gain, np.float64), image.shape[0])[:, None, None] * layer.scale
        offset = np.resize(np.asarray(layer.offset, np.float64), image.shape[0])[:, None, None] * layer.scale
        valid = (coverage > 0) & np.all(np.isfinite(image), axis=0)
        weight = xp.asarray(np.where(valid, coverage, 0).astype(np.float64))
        corrected = xp.asarray(np.where(valid[None], image * gain + offset, 0.0))
        num += corrected * weight[None]
        den += weight
    safe = xp.where(den > 0, den, 1.0)
    image = xp.where(den[None] > 0, num / safe[None], xp.nan)
    return Combined(to_numpy(image).astype(np.float32), to_numpy(den).astype(np.float32), used, layer_max, count)


def _stacked(job: CombineJob, xp: Any) -> Combined:
    """Layers stacked with a rejection across layers, in bands of rows within ``job.max_bytes``.

    Every layer's arrays are opened once for the region, and each band is read from many
    layers per round trip (:class:`~zemosaic_dask.units.layer_reader.LayerReader`).
    """
    region = job.region
    height, width = region.shape
    image = np.full((job.n_channels, height, width), np.nan, dtype=np.float32)
    coverage = np.zeros((height, width), dtype=np.float32)
    layers_here = np.zeros((height, width), dtype=np.int32)
    count = max(1, len(job.layers))
    per_row = peak_memory_bytes((count, job.n_channels, 1, width), job.stack) + count * (job.n_channels + 1) * width * 4
    rows = int(max(8, min(height, job.max_bytes // max(per_row, 1))))
    layer_max: dict[int, float] = {}
    used: set[int] = set()
    reader = LayerReader([layer.store for layer in job.layers])
    for y0 in range(region.y0, region.y1, rows):
        band = dataclasses.replace(region, y0=y0, y1=min(region.y1, y0 + rows))
        samples, weights, gains, offsets = [], [], [], []
        for layer, (values, cover) in zip(job.layers, reader.iter_read(band), strict=True):
            layer_max[layer.id] = max(layer_max.get(layer.id, 0.0), float(cover.max(initial=0.0)))
            if not (cover > 0).any():
                continue
            used.add(layer.id)
            layers_here[y0 - region.y0 : band.y1 - region.y0] += cover > 0
            samples.append(values)
            weights.append(cover)
            gains.append(np.resize(np.asarray(layer.gain, np.float32) * np.float32(layer.scale), values.shape[0]))
            offsets.append(np.resize(np.asarray(layer.offset, np.float32) * np.float32(layer.scale), values.shape[0]))
        if not samples:
            continue
        result = stack_samples(
            xp.asarray(np.stack(samples)),
            xp.asarray(np.stack(weights)),
            job.stack,
            gains=np.stack(gains),
            offsets=np.stack(offsets),
            **_layer_noise(job, weights),
        )
        image[:, y0 - region.y0 : band.y1 - region.y0] = to_numpy(result.image)
        coverage[y0 - region.y0 : band.y1 - region.y0] = to_numpy(result.coverage)
    return Combined(image, coverage, len(used), layer_max, layers_here)


def combine_layers_in_region(job: CombineJob, xp: Any = np) -> Combined:
    """The region's combined image and coverage, without writing them.

    A plain weighted mean streams over the layers; a rejection across layers stacks them.
    """
    if job.stack.rejection == "none" and job.stack.combine == "mean":
        return _streamed_mean(job, xp)
    return _stacked(job, xp)


def build_combined_region(job: CombineJob, xp: Any = np) -> dict[str, Any]:
    """Combine the layers on one region and write it.

    Returns the region's summary, its largest layer count and each layer's largest
    coverage in the region (for the two-pass renormalisation).
    """
    start = time.perf_counter()
    region = job.region
    if not job.rewrite and job.out.region_done(region):
        summary = RegionSummary(region.name, len(job.layers), 0, 0, 0.0, reused=True)
        count, layer_max = _coverage_summary(job)
        return {"summary": summary, "max_layers": int(np.max(count, initial=0)), "layer_max": layer_max}
    image, coverage, used, layer_max, count = combine_layers_in_region(job, xp)
    image = np.where(coverage[None] > 0, image, np.float32(np.nan))
    alpha = np.where((coverage > 0) & np.all(np.isfinite(image), axis=0), 255, 0).astype(np.uint8)
    job.out.write_region(region, image, coverage, alpha)
    summary = RegionSummary(
        region.name,
        len(job.layers),
        used,
        0,
        time.perf_counter() - start,
        reused=False,
        backend="cpu" if xp is np else xp.__name__,
    )
    return {"summary": summary, "max_layers": int(count.max(initial=0)), "layer_max": layer_max}


def mask_low_coverage_region(job: CombineJob, min_layers: float) -> SdsMaskSummary:
    """Mask pixels reached by fewer than ``min_layers`` layers.

    Returns the region's covered pixels before the mask (the frames' union there) and
    how many were masked.
    """
    store, region = job.out, job.region
    window = (slice(region.y0, region.y1), slice(region.x0, region.x1))
    coverage = np.asarray(store.array("coverage", mode="r")[window])
    counts = np.where(coverage > 0, layer_count(job), 0)
    summary = SdsMaskSummary.from_counts(counts, min_layers)
    low = (coverage > 0) & (counts < min_layers)
    if summary.masked_pixels:
        image = np.asarray(store.array("mosaic", mode="r")[(slice(None),) + window])
        store.array("mosaic")[(slice(None),) + window] = np.where(low[None], np.float32(np.nan), image)
        store.array("coverage")[window] = np.where(low, np.float32(0), coverage)
        alpha = np.asarray(store.array("alpha", mode="r")[window])
        store.array("alpha")[window] = np.where(low, 0, alpha).astype(np.uint8)
    return summary
