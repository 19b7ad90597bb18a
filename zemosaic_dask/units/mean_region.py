"""Region builders on the fused kernels: a streaming weighted mean, and a stack filled in place.

:func:`build_mean_region` builds a region stacked with no rejection and a weighted-mean
combine (``stack.rejection: none``, ``stack.combine: mean``) one frame at a time: each
frame window is mapped, sampled and added to the running sums ``sum(w v)``, ``sum(w)``
and the coverage by one fused kernel (:func:`~zemosaic_dask.tasks.accumulate.accumulate_window`),
so memory holds one window and three region-sized sums whatever the number of frames,
and no dense pixel map or ``(K, C, h, w)`` tensor exists. The result equals
:func:`~zemosaic_dask.tasks.stacking.stack_samples` with ``rejection="none"`` on the same
frames (to float32 rounding), duplicates, normalisation and frame weights included.

:func:`sample_region_frames` serves the stacking paths that need every sample: it fills a
preallocated ``(K, C, h, w)`` buffer in place with the same kernels.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..tasks.accumulate import FrameCoefficients, MeanSums, WindowMapping, accumulate_window, sample_window
from ..tasks.namespace import to_numpy
from ..tasks.stacking import config_key
from .frame_window import PreparedWindow, prepare_frame_window
from .region_job import RegionJob, RegionRows, RegionSummary
from .region_write import build_whole_region

__all__ = ["RegionSamples", "build_mean_region", "can_stream_mean", "mean_region_rows", "sample_region_frames"]

log = logging.getLogger(__name__)


def can_stream_mean(job: RegionJob) -> bool:
    """Return True when the job's stacking is a plain weighted mean (no rejection, ``mean`` combine)."""
    return job.stack.rejection == "none" and job.stack.combine == "mean"


def _coefficients(job: RegionJob, index: int) -> FrameCoefficients:
    def row(values: tuple[tuple[float, ...], ...] | None) -> tuple[float, ...] | None:
        return None if values is None else tuple(values[index])

    return FrameCoefficients(row(job.gains), row(job.offsets), row(job.weights))


def _plane(job: RegionJob, index: int) -> tuple[tuple[float, ...], ...] | None:
    return None if job.planes is None else job.planes[index]


def _check_job(job: RegionJob) -> None:
    job.stack.validate()
    if not can_stream_mean(job):
        raise ConfigError(
            f"build_mean_region computes a weighted mean without rejection, but the job asks for rejection "
            f"{job.stack.rejection!r} and combine {job.stack.combine!r}; route it to build_mosaic_region "
            "(or set zemosaic.stack.rejection: none and zemosaic.stack.combine: mean)"
        )
    for field, values, wanted in (
        ("normalisation", job.gains if job.gains is not None else job.offsets, job.stack.normalisation != "none"),
        ("weighting", job.weights, job.stack.weighting != "none"),
    ):
        if wanted and values is None:
            raise ConfigError(
                f"stacking {field} is requested but the region job carries no coefficients for it; compute them "
                f"from whole-frame statistics or set {config_key(field)}: none"
            )
    for name in ("gains", "offsets", "weights"):
        values = getattr(job, name)
        if values is not None and len(values) != len(job.frames):
            raise ValueError(f"job.{name} must hold one row per frame ({len(job.frames)}), got {len(values)}")


def _groups(frame_ids: tuple[int, ...]) -> list[list[int]]:
    groups: dict[int, list[int]] = {}
    for index, frame_id in enumerate(frame_ids):
        groups.setdefault(frame_id, []).append(index)
    return list(groups.values())


@dataclass
class _Tally:
    contributing: int = 0
    hot_pixels: int = 0
    max_error: float = 0.0

    def add(self, prepared: PreparedWindow, first_use: bool) -> None:
        self.contributing += 1
        if first_use:
            self.hot_pixels += prepared.hot_pixels
        self.max_error = max(self.max_error, prepared.coarse.max_error)


def _mapping(prepared: PreparedWindow, method: str) -> WindowMapping:
    return WindowMapping.from_coarse(prepared.coarse, prepared.origin, prepared.valid_box, method)


def build_mean_region(job: RegionJob, xp: Any = np) -> RegionSummary:
    """Build, write and summarise one region as the streaming weighted mean of its frames.

    Same inputs, outputs and store writes as
    :func:`~zemosaic_dask.units.mosaic_region.build_mosaic_region` for jobs whose stacking
    has ``rejection: none`` and ``combine: mean``.

    Parameters
    ----------
    job : RegionJob
        The region and its frames.
    xp : module
        Array namespace to compute in (numpy runs the numba kernel, cupy the CUDA kernel).

    Returns
    -------
    RegionSummary

    Raises
    ------
    ConfigError
        When the job asks for rejection, a median combine, or normalisation/weighting
        without coefficients.
    """
    return build_whole_region(job, lambda: mean_region_rows(job, xp))


def mean_region_rows(job: RegionJob, xp: Any = np) -> RegionRows:
    """The streaming weighted mean of a region's frames over ``job.region`` (a region or rows of one), not written.

    Parameters
    ----------
    job : RegionJob
        The rectangle and its frames.
    xp : module
        Array namespace to compute in.

    Returns
    -------
    RegionRows
        Image (NaN where nothing landed is left to :func:`write_region_rows`) and coverage.

    Raises
    ------
    ConfigError
        As :func:`build_mean_region`.
    """
    start = time.perf_counter()
    region = job.region
    _check_job(job)
    out_wcs = job.grid.wcs
    channels = job.window.n_channels
    sums = MeanSums.zeros(channels, region.shape, xp)
    tally = _Tally()
    for members in _groups(tuple(job.frame_ids)):
        prepared = prepare_frame_window(
            job.frames[members[0]], out_wcs, region, job.window, xp, plane=_plane(job, members[0])
        )
        if prepared is None:
            continue
        mapping = _mapping(prepared, job.window.interpolation)
        duplicated = len(members) > 1
        target = MeanSums(sums.sum_wv, sums.sum_w, xp.zeros_like(sums.coverage)) if duplicated else sums
        for position, index in enumerate(members):
            reached = accumulate_window(
                prepared.image, mapping, target, _coefficients(job, index), coverage_max=duplicated
            )
            if reached:
                tally.add(prepared, first_use=position == 0)
        if duplicated:
            sums.coverage[...] = sums.coverage + target.coverage
        del prepared
    image, coverage = (to_numpy(a) for a in sums.mean())
    seconds = time.perf_counter() - start
    log.debug("%s: streaming mean of %d/%d frames in %.2f s", region.name, tally.contributing, len(job.frames), seconds)
    return RegionRows(
        region.y0,
        region.y1,
        image.astype(np.float32, copy=False),
        coverage.astype(np.float32, copy=False),
        tally.contributing,
        tally.hot_pixels,
        seconds,
        backend="cpu" if xp is np else xp.__name__,
        max_map_error=tally.max_error,
    )


@dataclass(frozen=True)
class RegionSamples:
    """The samples the frames of a region give it, ready for :func:`~zemosaic_dask.tasks.stacking.stack_samples`.

    Attributes
    ----------
    samples : array
        ``(K', C, h, w)`` float32 (a view of the preallocated ``(K, C, h, w)`` buffer).
    footprints : array
        ``(K', h, w)`` float32.
    keep : list of int
        Index in ``job.frames`` of each of the K' contributing entries.
    hot_pixels : int
        Hot pixels fixed in the windows read.
    max_map_error : float
        Largest mapping error of the contributing frames (input pixels).
    """

    samples: Any
    footprints: Any
    keep: list[int]
    hot_pixels: int
    max_map_error: float


def sample_region_frames(job: RegionJob, xp: Any = np) -> RegionSamples:
    """Sample every frame of a region into one preallocated ``(K, C, h, w)`` buffer, in place.

    The per-frame results equal
    :func:`~zemosaic_dask.units.frame_window.resample_frame_to_region` (frames reaching no
    pixel are dropped), without the dense pixel map or per-frame temporaries; a frame
    listed several times is read and prepared once.

    Parameters
    ----------
    job : RegionJob
        The region and its frames.
    xp : module
        Array namespace to compute in.

    Returns
    -------
    RegionSamples
    """
    region = job.region
    out_wcs = job.grid.wcs
    channels = job.window.n_channels
    height, width = region.shape
    count = len(job.frames)
    samples = xp.empty((count, channels, height, width), dtype=xp.float32)
    footprints = xp.empty((count, height, width), dtype=xp.float32)
    tally = _Tally()
    keep: list[int] = []
    prepared_by_id: dict[int, PreparedWindow | None] = {}
    last_use = {frame_id: index for index, frame_id in enumerate(job.frame_ids)}
    for index, frame in enumerate(job.frames):
        frame_id = job.frame_ids[index]
        first_use = frame_id not in prepared_by_id
        if first_use:
            prepared_by_id[frame_id] = prepare_frame_window(
                frame, out_wcs, region, job.window, xp, plane=_plane(job, index)
            )
        prepared = prepared_by_id[frame_id]
        if last_use[frame_id] == index:
            prepared_by_id[frame_id] = None
        if prepared is None:
            continue
        slot = len(keep)
        mapping = _mapping(prepared, job.window.interpolation)
        if sample_window(prepared.image, mapping, samples[slot], footprints[slot]):
            keep.append(index)
            tally.add(prepared, first_use)
    return RegionSamples(samples[: len(keep)], footprints[: len(keep)], keep, tally.hot_pixels, tally.max_error)
