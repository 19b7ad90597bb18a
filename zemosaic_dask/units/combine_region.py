"""Combine the layers (master tiles or SDS batch mosaics) on one region of the global grid.

Each layer's values are corrected by its photometric gain and offset (inter-layer
calibration) and by its two-pass gain, then the layers are stacked with their per-pixel
coverage as weights through the same stacking engine as frames. The final coverage is
the sum of the layers' coverages, so it still counts distinct frames.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ..io.store import MosaicStore
from ..plans.grid import OutputRegion
from ..plans.sds_mask import SdsMaskSummary
from ..tasks.coverage_fringe import low_coverage_fringe
from ..tasks.namespace import to_numpy
from ..tasks.stacking import StackOptions, peak_memory_bytes, stack_samples
from .layer_reader import LayerReader
from .region_job import RegionSummary
from .region_write import region_pixels

__all__ = [
    "CombineJob",
    "Combined",
    "LayerInput",
    "build_combined_region",
    "build_group_region",
    "build_tree_region",
    "combine_layers_in_region",
    "mask_low_coverage_region",
    "write_combined",
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
    """A region's combination: image, coverage, layers used, each layer's largest coverage, layers per pixel.

    ``kept`` is the coverage of the samples the rejection kept (``coverage`` without
    rejection): the weight behind the image, which a group of a combination tree writes as
    its coverage so that the next level judges its noise from it.
    """

    image: np.ndarray
    coverage: np.ndarray
    used: int
    layer_max: dict[int, float]
    count: np.ndarray
    kept: np.ndarray


@dataclass(frozen=True)
class CombineJob:
    """Combine ``layers`` on ``region`` and write the result into ``out``.

    ``group``: the job is a group of a combination tree, which writes the coverage of the
    samples it kept (see :class:`Combined`).
    """

    region: OutputRegion
    layers: tuple[LayerInput, ...]
    out: MosaicStore
    n_channels: int
    stack: StackOptions = field(default_factory=lambda: StackOptions(rejection="none"))
    rewrite: bool = False
    max_bytes: int = 256 * 1024 * 1024
    noise: tuple[float, ...] | None = None
    sky: tuple[float, ...] | None = None
    shot: tuple[float, ...] | None = None
    group: bool = False


def _layer_noise(job: CombineJob, weights: np.ndarray, holds: np.ndarray | None = None) -> dict[str, Any]:
    """Per-pixel expected noise of each layer (frame noise / sqrt(coverage)), its sky and shot level (``noise_clip``).

    ``weights`` ``(K, H, W)`` float32, the layers' coverages. All are in the layers' own
    units; :func:`stack_samples` maps them through the layers' gains and offsets. A layer's
    shot term is its frames' (the variance of their mean scales by ``1 / coverage`` like
    the noise's), so the frames' shot level serves.

    ``holds`` ``(K, H, W)``, for the groups of a combination tree: how many original layers
    each input holds at each pixel. Where two inputs meet that hold more than two layers
    between them, their noise is unknown (NaN: never rejected), so the pair rule, which
    keeps the lower of two frames or layers that disagree, never judges two stacks of
    several layers the flat combination would have stacked with the noise clip (chained
    over the levels of a tree it biased clean pixels low by several sigma).
    """
    if job.noise is None:
        return {}
    from ..tasks.kernels_layers import layer_noise_cpu

    frame_noise = np.resize(np.asarray(job.noise, dtype=np.float32), job.n_channels)
    weights = np.ascontiguousarray(weights, dtype=np.float32)
    noise = np.empty((weights.shape[0], job.n_channels) + weights.shape[1:], dtype=np.float32)
    # frame_noise[c] / sqrt(maximum(weights, 1e-3)), in one pass without sample-sized temporaries
    layer_noise_cpu(frame_noise, weights, np.float32(1e-3), noise)
    if holds is not None:
        present = weights > 0
        stacks = (np.count_nonzero(present, axis=0) == 2) & (np.where(present, holds, 0).sum(axis=0) > 2)
        noise[:, :, stacks] = np.nan

    def per_channel(levels: tuple[float, ...] | None) -> np.ndarray:
        return np.resize(np.asarray(levels if levels is not None else (0.0,), dtype=np.float32), job.n_channels)

    return {
        "noise": noise,
        "background": per_channel(job.sky)[None, :, None, None],
        "shot_level": per_channel(job.shot)[None, :, None, None],
    }


def layer_count(job: CombineJob) -> np.ndarray:
    """Number of layers with data at each pixel of the job's region."""
    return _coverage_summary(job)[0]


def _coverage_summary(job: CombineJob) -> tuple[np.ndarray, dict[int, float], np.ndarray]:
    """Layers with data at each pixel of the job's region, each layer's largest coverage there, their sum."""
    count, layer_max = np.zeros(job.region.shape, dtype=np.int32), {}
    total = np.zeros(job.region.shape, dtype=np.float32)
    reader = LayerReader([layer.store for layer in job.layers], coverage_only=True)
    for layer, (_, coverage) in zip(job.layers, reader.iter_read(job.region), strict=True):
        layer_max[layer.id] = float(coverage.max(initial=0.0))
        count += coverage > 0
        total += np.maximum(coverage, 0)
    return count, layer_max, total


def _streamed_mean(job: CombineJob, xp: Any, reader: Any = None) -> Combined:
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
    reader = reader or LayerReader([layer.store for layer in job.layers])
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
    den = to_numpy(den).astype(np.float32)
    return Combined(to_numpy(image).astype(np.float32), den, used, layer_max, count, den)


class _Band(NamedTuple):
    """The layers with data in one band, as :func:`stack_samples` takes them, and their positions in the job."""

    samples: np.ndarray
    weights: np.ndarray
    positions: list[int]


def _gathered_band(job: CombineJob, reader: Any, band: OutputRegion, layer_max: dict[int, float]) -> _Band:
    """Copy each layer with data in ``band`` into the next slot of the band's samples (no list stacked again)."""
    count = max(1, len(job.layers))
    samples = np.empty((count, job.n_channels, *band.shape), dtype=np.float32)
    weights = np.empty((count, *band.shape), dtype=np.float32)
    positions: list[int] = []
    reads = reader.iter_read(band, copy=False)
    for index, (layer, (values, cover)) in enumerate(zip(job.layers, reads, strict=True)):
        layer_max[layer.id] = max(layer_max.get(layer.id, 0.0), float(cover.max(initial=0.0)))
        if not (cover > 0).any():
            continue
        np.copyto(samples[len(positions)], values, casting="same_kind")
        np.copyto(weights[len(positions)], cover, casting="same_kind")
        positions.append(index)
    return _Band(samples[: len(positions)], weights[: len(positions)], positions)


def _held_band(job: CombineJob, reader: Any, band: OutputRegion, layer_max: dict[int, float]) -> _Band | None:
    """The layers in place when ``reader`` holds them for the whole band, each with data there; else None."""
    held = reader.held_samples(band)
    if held is None:
        return None
    positions, samples, weights = held
    maxima = weights.reshape(len(positions), -1).max(axis=1) if positions else np.zeros(0, np.float32)
    if not np.all(maxima > 0):  # a layer without data would be left out: gather them
        return None
    largest = dict(zip(positions, maxima.tolist(), strict=True))
    for index, layer in enumerate(job.layers):
        layer_max[layer.id] = max(layer_max.get(layer.id, 0.0), float(largest.get(index, 0.0)))
    return _Band(samples, weights, positions)


def _band_rows(job: CombineJob, in_place: bool) -> int:
    """Rows per band within ``job.max_bytes``: the stack's working memory, and copies of the layers unless in place."""
    height, width = job.region.shape
    count = max(1, len(job.layers))
    per_row = peak_memory_bytes((count, job.n_channels, 1, width), job.stack)
    if not in_place:
        per_row += count * (job.n_channels + 1) * width * 4
    return int(max(8, min(height, job.max_bytes // max(per_row, 1))))


def _stacked(job: CombineJob, xp: Any, holds: Sequence[Any] | None = None, reader: Any = None) -> Combined:
    """Layers stacked with a rejection across layers, in bands of rows within ``job.max_bytes``.

    Every layer's arrays are opened once for the region, and each band is read from many
    layers per round trip (:class:`~zemosaic_dask.units.layer_reader.LayerReader`).
    ``holds``: per input, the original layers it holds per pixel (``(H, W)`` or a number;
    the groups of a combination tree), see :func:`_layer_noise`. ``reader``: where the
    layers are read (default: their stores), anything with ``iter_read`` as
    :class:`~zemosaic_dask.units.layer_reader.LayerReader`. A reader that holds the layers
    in memory (``held_samples``, an SDS region's batch stacks) is read in place, in one band
    when the stack's working memory allows it: no room is needed for copies of the layers.
    """
    region = job.region
    height, width = region.shape
    image = np.full((job.n_channels, height, width), np.nan, dtype=np.float32)
    coverage = np.zeros((height, width), dtype=np.float32)
    kept = np.zeros((height, width), dtype=np.float32)
    layers_here = np.zeros((height, width), dtype=np.int32)
    reader = reader or LayerReader([layer.store for layer in job.layers])
    in_place = holds is None and callable(getattr(reader, "held_samples", None))
    in_place = in_place and _band_rows(job, in_place=True) == height  # else bands with room for copies
    rows = _band_rows(job, in_place)
    layer_max: dict[int, float] = {}
    used: set[int] = set()
    for y0 in range(region.y0, region.y1, rows):
        band = dataclasses.replace(region, y0=y0, y1=min(region.y1, y0 + rows))
        rows_here = slice(y0 - region.y0, band.y1 - region.y0)
        taken = _held_band(job, reader, band, layer_max) if in_place else None
        if taken is None:
            taken = _gathered_band(job, reader, band, layer_max)
        if not taken.positions:
            continue
        samples, weights = taken.samples, taken.weights
        layers = [job.layers[index] for index in taken.positions]
        used.update(layer.id for layer in layers)
        layers_here[rows_here] += np.count_nonzero(weights > 0, axis=0).astype(np.int32)
        gain = np.stack(
            [np.resize(np.asarray(x.gain, np.float32) * np.float32(x.scale), job.n_channels) for x in layers]
        )
        offset = np.stack(
            [np.resize(np.asarray(x.offset, np.float32) * np.float32(x.scale), job.n_channels) for x in layers]
        )
        held = None
        if holds is not None:
            held = np.stack(
                [np.broadcast_to(np.asarray(holds[k]), (height, width))[rows_here] for k in taken.positions]
            )
        # Layers that need no correction (every SDS run without intertile calibration) are
        # passed as they are: x * 1 + 0 is x, and no sample-sized noise array is rescaled by 1.
        identity = bool(np.all(gain == 1) and np.all(offset == 0))
        result = stack_samples(
            xp.asarray(samples),
            xp.asarray(weights),
            job.stack,
            gains=None if identity else gain,
            offsets=None if identity else offset,
            kept_weight=job.group,
            **_layer_noise(job, weights, held),
        )
        image[:, rows_here] = to_numpy(result.image)
        coverage[rows_here] = to_numpy(result.coverage)
        if job.group:
            kept[rows_here] = to_numpy(result.kept_weight)
    return Combined(image, coverage, len(used), layer_max, layers_here, kept if job.group else coverage)


def combine_layers_in_region(
    job: CombineJob, xp: Any = np, holds: Sequence[Any] | None = None, reader: Any = None
) -> Combined:
    """The region's combined image and coverage, without writing them.

    A plain weighted mean streams over the layers; a rejection across layers stacks them
    (``holds``: the original layers each input holds, for the groups of a tree). The
    layers are read from their stores, or from ``reader`` (layers held in memory: an SDS
    region's batch stacks, :mod:`~zemosaic_dask.units.sds_region`).
    """
    if job.stack.rejection == "none" and job.stack.combine == "mean":
        return _streamed_mean(job, xp, reader)
    return _stacked(job, xp, holds, reader)


def _combine_and_write(
    job: CombineJob,
    xp: Any,
    *,
    summarise: bool = True,
    coverage: np.ndarray | None = None,
    holds: Sequence[Any] | None = None,
    reader: Any = None,
) -> tuple[RegionSummary, Combined]:
    """Combine the job's layers on its region and write them, or reuse a region already written.

    Returns the region's summary and its combination. A group job writes the coverage its
    image kept; ``coverage`` (the root of a tree: the frames' coverage summed over its
    groups) replaces the written coverage. A reused region is not recombined: its image is
    left empty, and only with ``summarise`` are its layers' coverages read for the counts.
    """
    start = time.perf_counter()
    region = job.region
    if not job.rewrite and job.out.region_done(region):
        summary = RegionSummary(region.name, len(job.layers), 0, 0, 0.0, reused=True)
        empty = np.zeros(0, np.float32)
        count, layer_max, total = _coverage_summary(job) if summarise else (np.zeros(0, np.int32), {}, empty)
        return summary, Combined(empty, total, 0, layer_max, count, empty)
    combined = combine_layers_in_region(job, xp, holds, reader)
    write_combined(job, combined, coverage)
    backend = "cpu" if xp is np else xp.__name__
    seconds = time.perf_counter() - start
    summary = RegionSummary(region.name, len(job.layers), combined.used, 0, seconds, reused=False, backend=backend)
    return summary, combined


def write_combined(job: CombineJob, combined: Combined, coverage: np.ndarray | None = None) -> None:
    """Write a region's combination into ``job.out`` and mark it complete.

    A group job writes the coverage its image kept; ``coverage`` (the root of a tree: the
    frames' coverage summed over its groups) replaces the written coverage. Pixels without
    it are NaN; ``alpha`` is 255 where a pixel has it and every channel is finite.
    """
    written = combined.kept if job.group else combined.coverage if coverage is None else coverage
    job.out.write_region(job.region, *region_pixels(combined.image, written))


def build_combined_region(job: CombineJob, xp: Any = np) -> dict[str, Any]:
    """Combine the layers on one region and write it.

    Returns the region's summary, its largest layer count and each layer's largest
    coverage in the region (for the two-pass renormalisation).
    """
    summary, combined = _combine_and_write(job, xp)
    return {"summary": summary, "max_layers": int(combined.count.max(initial=0)), "layer_max": combined.layer_max}


def _below(nodes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What a level's nodes hold of the original layers, summed: counts, coverage, largest coverages, layers."""
    out: dict[str, Any] = {"count": 0, "coverage": 0, "layer_max": {}, "layers": 0, "used": 0}
    for node in nodes:
        for key in ("count", "coverage", "layers", "used"):
            out[key] = out[key] + node[key]
        out["layer_max"].update(node["layer_max"])
    return out


def build_group_region(job: CombineJob, *below: dict[str, Any], xp: Any = np) -> dict[str, Any]:
    """One group of a region's combination tree (:func:`~zemosaic_dask.plans.layer_tree.layer_tree`).

    ``job`` combines a group of layers, or with ``below`` the results of the groups of the
    level below (their stores are ``job.layers``), into a group store. Returns what the
    next level needs of the original layers: their count per pixel, their coverage summed,
    each one's largest coverage, how many there were and how many held data.
    """
    holds = [node["count"] for node in below] if below else None
    summary, combined = _combine_and_write(job, xp, summarise=not below, holds=holds)
    if below:
        return _below(below)
    # A reused group was not recombined: the layers with data in the region are the ones it used.
    used = sum(v > 0 for v in combined.layer_max.values()) if summary.reused else summary.contributing
    return {
        "count": combined.count,
        "coverage": combined.coverage,
        "layer_max": combined.layer_max,
        "layers": len(job.layers),
        "used": used,
    }


def build_tree_region(job: CombineJob, *below: dict[str, Any], xp: Any = np) -> dict[str, Any]:
    """The root of a region's combination tree: combine the groups below and write the region.

    The region's coverage is the original layers' (as one combination of them writes it).
    Returns what :func:`build_combined_region` returns, counted over the original layers.
    """
    layers = _below(below)
    coverage = np.asarray(layers["coverage"], dtype=np.float32)
    holds = [node["count"] for node in below]
    summary, _ = _combine_and_write(job, xp, summarise=False, coverage=coverage, holds=holds)
    summary = dataclasses.replace(
        summary, frames=layers["layers"], contributing=0 if summary.reused else layers["used"]
    )
    return {
        "summary": summary,
        "max_layers": int(np.max(layers["count"], initial=0)),
        "layer_max": layers["layer_max"],
    }


def mask_low_coverage_region(job: CombineJob, min_layers: float, counts: MosaicStore | None = None) -> SdsMaskSummary:
    """Mask the fringe of pixels reached by fewer than ``min_layers`` layers (:func:`low_coverage_fringe`).

    The layers per pixel are counted from the layers' stores, or read from ``counts``
    (whose coverage holds them: fused SDS regions, :mod:`~zemosaic_dask.units.sds_region`).
    Returns the region's covered pixels before the mask (the frames' union there) and
    how many were masked.
    """
    store, region = job.out, job.region
    window = (slice(region.y0, region.y1), slice(region.x0, region.x1))
    coverage = np.asarray(store.array("coverage", mode="r")[window])
    layers = layer_count(job) if counts is None else np.asarray(counts.array("coverage", mode="r")[window])
    counts_here = np.where(coverage > 0, layers, 0)
    low = low_coverage_fringe((coverage > 0) & (counts_here < min_layers), coverage > 0)
    summary = SdsMaskSummary(int(np.count_nonzero(counts_here > 0)), int(np.count_nonzero(low)))
    if summary.masked_pixels:
        image = np.asarray(store.array("mosaic", mode="r")[(slice(None),) + window])
        store.array("mosaic")[(slice(None),) + window] = np.where(low[None], np.float32(np.nan), image)
        store.array("coverage")[window] = np.where(low, np.float32(0), coverage)
        alpha = np.asarray(store.array("alpha", mode="r")[window])
        store.array("alpha")[window] = np.where(low, 0, alpha).astype(np.uint8)
    return summary
