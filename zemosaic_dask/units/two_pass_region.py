"""The two-pass coverage renormalisation of one region (ZeMosaic's two-pass coverage renorm).

Pass 1 is the ordinary combination of the layers. Here, region by region: the pass-1
coverage is read with a halo, blurred and turned into a scale map; each layer's gain is
the median of the scale map over its well-covered pixels (gathered from every region);
then pass 2 recombines the layers with those gains, every channel on one backend, and
:func:`merge_passes` keeps the pass-2 pixels it trusts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..tasks.blur import halo_width
from ..tasks.namespace import array_namespace
from ..tasks.two_pass import coverage_scale_map, merge_passes, well_covered_scale_values
from .combine_region import CombineJob
from .layer_reader import LayerReader
from .two_pass_backend import run_channels_on_one_backend

__all__ = ["TwoPassJob", "apply_two_pass_region", "layer_scale_values", "weighted_channel"]

SAMPLE_STEP = 4


@dataclass(frozen=True)
class TwoPassJob:
    """Two-pass work on one region: its pass-1 combination job and the renormalisation settings.

    ``rows`` is the height of the bands the region is renormalised in (the assembly plan's
    ``rows_per_chunk``, or ``gpu_rows_per_chunk`` on the GPU): the pass-2 arrays of one band
    are all a unit holds at once.
    """

    combine: CombineJob
    grid_shape: tuple[int, int]
    sigma: float = 50.0
    scale_clip: tuple[float, float] = (0.5, 2.0)
    min_luminance_ratio: float = 0.4
    use_gpu: bool = False
    rows: int = 1 << 30


def layer_scale_values(job: TwoPassJob, layer_max: dict[int, float]) -> dict[int, np.ndarray]:
    """Scale-map values over each layer's well-covered pixels in this region (subsampled)."""
    region, store = job.combine.region, job.combine.out
    halo = halo_width(job.sigma)
    height, width = job.grid_shape
    y0, y1 = max(0, region.y0 - halo), min(height, region.y1 + halo)
    x0, x1 = max(0, region.x0 - halo), min(width, region.x1 + halo)
    coverage = np.asarray(store.array("coverage", mode="r")[y0:y1, x0:x1], dtype=np.float32)
    sides = (region.y0 - y0, y1 - region.y1, region.x0 - x0, x1 - region.x1)
    scale = coverage_scale_map(coverage, sides, job.sigma, job.scale_clip)
    out: dict[int, np.ndarray] = {}
    layers = job.combine.layers
    reader = LayerReader([layer.store for layer in layers], coverage_only=True)
    for layer, (_, layer_coverage) in zip(layers, reader.iter_read(region), strict=True):
        values = well_covered_scale_values(scale, layer_coverage, coverage_max=layer_max.get(layer.id))
        if values.size:
            out[layer.id] = np.asarray(values[::SAMPLE_STEP], dtype=np.float32)
    return out


def weighted_channel(stacked: Any) -> Any:
    """Weighted mean of one channel from ``[w*v for each layer] + [w for each layer]`` stacked on axis 0."""
    xp = array_namespace(stacked)
    count = stacked.shape[0] // 2
    num = xp.sum(stacked[:count], axis=0)
    den = xp.sum(stacked[count:], axis=0)
    return xp.where(den > 0, num / xp.where(den > 0, den, 1.0), xp.nan).astype(xp.float32)


def apply_two_pass_region(job: TwoPassJob, gains: dict[int, float]) -> dict[str, Any]:
    """Recombine the region with the layers' gains and merge with pass 1, band by band.

    Returns the region's name, whether every band ran on the GPU, the GPU fallback reason
    (None when there was none) and the number of bands.
    """
    region = job.combine.region
    step = max(1, int(job.rows))
    gpu_all, fallback, bands = job.use_gpu, None, 0
    reader = LayerReader([layer.store for layer in job.combine.layers])
    for y0 in range(region.y0, region.y1, step):
        band = dataclasses.replace(region, y0=y0, y1=min(region.y1, y0 + step))
        ran = _apply_band(job, band, gains, reader)
        bands += 1
        if ran is not None:
            gpu_all = gpu_all and ran.gpu_all
            fallback = fallback or ran.fallback_reason
    return {"region": region.name, "gpu_all": gpu_all and job.use_gpu, "fallback": fallback, "bands": bands}


def _apply_band(job: TwoPassJob, region: Any, gains: dict[int, float], reader: LayerReader) -> Any:
    """Renormalise one band of rows of the region; returns the backend run (None: no layer pixel)."""
    combine = job.combine
    store = combine.out
    window = (slice(region.y0, region.y1), slice(region.x0, region.x1))
    image_p1 = np.asarray(store.array("mosaic", mode="r")[(slice(None),) + window], dtype=np.float32)
    cov_p1 = np.asarray(store.array("coverage", mode="r")[window], dtype=np.float32)
    weighted, weights = [], []
    for layer, (image, coverage) in zip(combine.layers, reader.iter_read(region), strict=True):
        valid = (coverage > 0) & np.all(np.isfinite(image), axis=0)
        if not valid.any():
            continue
        scale = gains.get(layer.id, 1.0)
        gain = np.resize(np.asarray(layer.gain, np.float32), image.shape[0])[:, None, None] * scale
        offset = np.resize(np.asarray(layer.offset, np.float32), image.shape[0])[:, None, None] * scale
        weight = np.where(valid, coverage, 0).astype(np.float32)
        weighted.append(np.where(valid[None], image * gain + offset, 0) * weight[None])
        weights.append(weight)
    if not weights:
        return None
    channels = [
        np.concatenate([np.stack([w[c] for w in weighted]), np.stack(weights)]) for c in range(combine.n_channels)
    ]
    run = run_channels_on_one_backend(
        channels,
        weighted_channel,
        weighted_channel,
        use_gpu=job.use_gpu,
        unit=f"two-pass-{combine.region.name}",
        nonfinite_allowed=lambda stacked: ~(stacked[len(weights) :].sum(axis=0) > 0),
    )
    image_p2 = np.stack(run.results).astype(np.float32)
    cov_p2 = np.sum(weights, axis=0).astype(np.float32)
    image, coverage = merge_passes(image_p1, cov_p1, image_p2, cov_p2, min_luminance_ratio=job.min_luminance_ratio)
    image = np.asarray(image, dtype=np.float32)
    coverage = np.asarray(coverage, dtype=np.float32)
    alpha = np.where((coverage > 0) & np.all(np.isfinite(image), axis=0), 255, 0).astype(np.uint8)
    store.write_region(region, image, coverage, alpha)
    return run
