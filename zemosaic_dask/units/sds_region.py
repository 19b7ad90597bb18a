"""One SDS region fused: each batch's frames stacked there, the batch stacks combined at once.

The stored SDS execution writes every batch mosaic (``layers/<id>``) and a second stage
reads them back to combine them. A fused region task computes, for each batch reaching the
region, the stack that batch's mosaic would hold there (the same frames, coefficients and
stacking as the batch's region build), keeps them in memory and combines them with the same
combination as the stored path (:func:`~zemosaic_dask.units.combine_region.combine_layers_in_region`):
the same pixels, with no batch mosaic written or read. The stacks are held in one block and
combined in place; the stored path copies them from its stores and so may cut a large region
into bands of rows where the fused task takes it whole. The pixels then differ only along
such a band edge, where the growth of a strong rejection (a trail's wings) stops at the edge
in the stored path and carries on across it here (207 of 40 million values at 160 frames,
up to 2.7 ADU). The number of batches with data at each pixel is written to a small store
(``sds/layer-count``) for the coverage mask, which needs the largest count over the whole
field before it can run.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..io.store import MosaicStore
from ..plans.grid import OutputRegion
from .combine_region import CombineJob, combine_layers_in_region, write_combined
from .gpu import run_with_gpu_fallback
from .mean_region import can_stream_mean, mean_region_rows
from .mosaic_region import stacked_region_rows
from .region_job import RegionJob, RegionSummary
from .region_write import held_pixels

__all__ = ["COUNT_STORE", "BatchStacks", "SdsRegionJob", "run_sds_region"]

#: Sub-group of ``mosaic.zarr`` holding the number of batches with data per pixel (as its coverage).
COUNT_STORE = "sds/layer-count"


@dataclass(frozen=True)
class SdsRegionJob:
    """Everything a fused SDS region task needs.

    Attributes
    ----------
    combine : CombineJob
        The combination of the region's batches (its ``layers`` name them, in order; their
        stores are not read) and the final store.
    batches : tuple of RegionJob or None
        For each of ``combine.layers``, the batch's region build (its frames reaching the
        region, their coefficients); None where none of them does.
    counts : MosaicStore
        Where the number of batches with data at each pixel is written (as coverage).
    use_gpu : bool
        Stack the batches on the GPU (falling back to the CPU on a GPU error).
    key : str
        The task's name, for the log and the report.
    """

    combine: CombineJob
    batches: tuple[RegionJob | None, ...]
    counts: MosaicStore
    use_gpu: bool = False
    key: str = ""


class BatchStacks:
    """A region's batch stacks held in memory, read as a :class:`~.layer_reader.LayerReader` reads stores.

    The stacks with data sit in one block, in the batches' order, so that the combination
    can take them in place (:meth:`held_samples`) instead of copying them into its samples.

    Parameters
    ----------
    region : OutputRegion
        The region the stacks cover.
    images : ndarray
        ``(N, C, H, W)`` float32: the stacks with data as a store holds them (NaN where uncovered).
    coverages : ndarray
        ``(N, H, W)`` float32: their coverages.
    slots : sequence of int or None
        Per batch, the index of its stack in ``images``, or None for a batch without data there.
    """

    def __init__(
        self, region: OutputRegion, images: np.ndarray, coverages: np.ndarray, slots: Sequence[int | None]
    ) -> None:
        self._region = region
        self._images, self._coverages = images, coverages
        self._slots = list(slots)
        self._empty = (
            np.full((images.shape[1], *region.shape), np.nan, dtype=np.float32),
            np.zeros(region.shape, dtype=np.float32),
        )

    def __len__(self) -> int:
        return len(self._slots)

    def iter_read(self, window: OutputRegion, *, copy: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Each batch's ``(image, coverage)`` on ``window`` (rows and columns inside the region).

        The arrays are views of the held stacks: with ``copy`` (the default) copies, which a
        caller may keep or change.
        """
        rows = slice(window.y0 - self._region.y0, window.y1 - self._region.y0)
        cols = slice(window.x0 - self._region.x0, window.x1 - self._region.x0)
        for slot in self._slots:
            image, coverage = self._empty if slot is None else (self._images[slot], self._coverages[slot])
            image, coverage = image[:, rows, cols], coverage[rows, cols]
            yield (image.copy(), coverage.copy()) if copy else (image, coverage)

    def held_samples(self, window: OutputRegion) -> tuple[list[int], np.ndarray, np.ndarray] | None:
        """The stacks on ``window`` in place, when it is the whole region: batches held, images, coverages.

        ``images`` ``(N, C, H, W)`` and ``coverages`` ``(N, H, W)`` are the held block itself
        (not to be changed); the first list gives, for each of its N entries, the batch's
        position among the region's batches. None for a window smaller than the region.
        """
        if window != self._region:
            return None
        return [k for k, slot in enumerate(self._slots) if slot is not None], self._images, self._coverages


def _batch_stacks(job: SdsRegionJob, xp: Any) -> tuple[BatchStacks, int, float]:
    """Each batch stacked over the region as its batch mosaic holds it; hot pixels fixed; largest map error.

    The stacks are written into one block as they come (NaN where uncovered, as a store holds them).
    """
    region, n_channels = job.combine.region, job.combine.n_channels
    planned = sum(batch is not None for batch in job.batches)
    images = np.empty((planned, n_channels, *region.shape), dtype=np.float32)
    coverages = np.empty((planned, *region.shape), dtype=np.float32)
    slots: list[int | None] = []
    used, hot, error = 0, 0, 0.0
    for batch in job.batches:
        if batch is None:
            slots.append(None)
            continue
        build = mean_region_rows if can_stream_mean(batch) else stacked_region_rows
        rows = build(batch, xp)
        hot, error = hot + rows.hot_pixels, max(error, rows.max_map_error)
        if not rows.contributing:
            slots.append(None)
            continue
        held_pixels(rows.image, rows.coverage, images[used], coverages[used])
        slots.append(used)
        used += 1
    return BatchStacks(region, images[:used], coverages[:used], slots), hot, error


def run_sds_region(job: SdsRegionJob) -> dict[str, Any]:
    """Stack the region's batches and combine them; write the region and its batch counts.

    A region whose final pixels and batch counts are both complete (a resumed run) is not
    recomputed. Returns what the stored path's combination returns (the region's summary,
    its largest batch count, each batch's largest coverage) with the hot pixels fixed, and
    ``covered``: the pixels with data and batches there, and the fewest batches at a pixel
    with data (None for a region not recomputed), so that the coverage mask can pass over a
    region none of whose pixels falls under its threshold.
    """
    start = time.perf_counter()
    combine, region = job.combine, job.combine.region
    if job.counts.region_done(region) and combine.out.region_done(region):
        window = (slice(region.y0, region.y1), slice(region.x0, region.x1))
        count = np.asarray(job.counts.array("coverage", mode="r")[window])
        summary = RegionSummary(region.name, len(combine.layers), 0, 0, 0.0, reused=True)
        return {
            "summary": summary,
            "max_layers": int(count.max(initial=0)),
            "layer_max": {},
            "hot_pixels": 0,
            "covered": None,
        }
    (held, hot, error), fallback = run_with_gpu_fallback(
        job.key or f"sds-region-{region.name}", lambda xp: _batch_stacks(job, xp), use_gpu=job.use_gpu
    )
    combined = combine_layers_in_region(combine, np, reader=held)
    count = combined.count  # batches with data at each pixel, as the combination counted them
    counted = count.astype(np.float32)
    job.counts.write_region(region, counted[None], counted, np.where(count > 0, 255, 0).astype(np.uint8))
    write_combined(combine, combined)
    summary = RegionSummary(
        region.name,
        len(combine.layers),
        combined.used,
        hot,
        time.perf_counter() - start,
        reused=False,
        backend="cupy" if job.use_gpu and fallback is None else "cpu",
        max_map_error=error,
        gpu_fallback=fallback,
    )
    if fallback is not None:
        summary = dataclasses.replace(summary, region=job.key or summary.region)
    covered = combined.coverage > 0
    fewest = int(count[covered].min(initial=np.iinfo(count.dtype).max))
    return {
        "summary": summary,
        "max_layers": int(count.max(initial=0)),
        "layer_max": combined.layer_max,
        "hot_pixels": hot,
        "covered": (int(np.count_nonzero(covered & (count > 0))), fewest),
    }
