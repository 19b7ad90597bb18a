"""SDS (ZeSupaDupStack) batches: groups of frames that together cover the field.

:func:`plan_sds_batches` builds batches that each spread over the whole field, whatever the
order of the files:

1. The frames' footprints are rasterised on a coarse coverage raster (at most 512 x 512
   cells over the global grid), all frames at once, as runs of cells per raster row;
   coverage is counted on those runs (:mod:`~zemosaic_dask.plans.sds_batching`).
2. The processing order (group order, then frame order) is *spread*
   (:func:`~zemosaic_dask.plans.sds_spread.spread_order`): frames are clustered by pointing
   and the clusters interleaved in proportion to their sizes, so any stretch of the sequence
   spans the field. Files in panel order (all of panel 0, then panel 1, ...) thus give the
   same batches as files that alternate between panels; a single pointing keeps its order.
3. The closing policy (:func:`~zemosaic_dask.plans.sds_batching.batch_by_coverage`) runs
   over that sequence: a batch closes when it holds at least ``min_batch_size`` frames
   **and** covers ``coverage_threshold`` of the cells any frame covers; it is forced closed
   at ``target_batch_size`` frames. A leftover smaller than the minimum joins the last batch.
4. A batch still below the threshold (the field needs more frames per batch than the
   target, or the last frames) is merged with the batches that follow it until it reaches
   the threshold (``closed_by="merged-coverage"``); a tail that never reaches it joins the
   last batch (``"merged-leftover"``). Every batch of a policy plan therefore reaches the
   threshold, so the SDS coverage mask (:mod:`~zemosaic_dask.plans.sds_mask`) keeps the field.

Pre-planned groups replace the policy when they cover every frame exactly (their coverage is
reported as it is). SDS is for Seestar data only (see :func:`sds_applies`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import PlanError
from ..messages import msg as format_message
from .coverage_runs import spans_to_runs, union_size
from .footprints import CoverageCells, coverage_cells_for_grid, frame_footprints_pixels, rasterize_polygons_spans
from .frames import FrameInfo, is_seestar
from .grid import OutputGrid
from .sds_batching import SdsBatch, SdsPolicy, batch_by_coverage, merge_undercovered
from .sds_preplan import resolve_preplan_groups
from .sds_spread import spread_order

__all__ = [
    "SdsBatch",
    "SdsPlan",
    "SdsPolicy",
    "batch_by_coverage",
    "merge_undercovered",
    "plan_sds_batches",
    "resolve_preplan_groups",
    "sds_applies",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SdsPlan:
    """The SDS batches of a run and how they were obtained.

    Attributes
    ----------
    batches : tuple of SdsBatch
        Batches in order; frame indices refer to the frame list given to the planner.
    policy : SdsPolicy
        The closing policy.
    source : str
        ``"policy"`` or ``"preplan"``.
    cells : CoverageCells
        The coverage raster used to measure coverage.
    excluded : tuple of (int, str)
        Frames left out (index, reason), e.g. no usable WCS.
    preplan_refused : str or None
        Why pre-planned groups were not used, when some were given.
    """

    batches: tuple[SdsBatch, ...]
    policy: SdsPolicy
    source: str
    cells: CoverageCells
    excluded: tuple[tuple[int, str], ...] = ()
    preplan_refused: str | None = None

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of frames per batch."""
        return tuple(len(b.frames) for b in self.batches)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary."""
        return {
            "batches": [b.to_dict() for b in self.batches],
            "policy": self.policy.to_dict(),
            "source": self.source,
            "cells": self.cells.to_dict(),
            "excluded": [[i, r] for i, r in self.excluded],
            "preplan_refused": self.preplan_refused,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SdsPlan:
        """Build an SDS plan from :meth:`to_dict` output."""
        return cls(
            tuple(SdsBatch.from_dict(b) for b in data["batches"]),
            SdsPolicy.from_dict(data["policy"]),
            str(data["source"]),
            CoverageCells.from_dict(data["cells"]),
            tuple((int(i), str(r)) for i, r in data.get("excluded", ())),
            data.get("preplan_refused"),
        )


def sds_applies(frames: Sequence[FrameInfo], *, enabled: bool, force_seestar_mode: bool = False) -> bool:
    """Return True when SDS should run: enabled, and Seestar frames (or forced).

    Every frame must come from a Seestar (INSTRUME/CREATOR naming seestar, s50 or s30)
    unless ``force_seestar_mode`` is set.
    """
    if not enabled or not frames:
        return False
    return bool(force_seestar_mode) or all(is_seestar(f) for f in frames)


def _processing_order(n_frames: int, order: Sequence[Sequence[int]] | None) -> list[int]:
    if order is None:
        return list(range(n_frames))
    flat = list(dict.fromkeys(int(i) for group in order for i in group if 0 <= int(i) < n_frames))
    listed = set(flat)
    return flat + [i for i in range(n_frames) if i not in listed]


def plan_sds_batches(
    frames: Sequence[FrameInfo],
    grid: OutputGrid,
    policy: SdsPolicy,
    *,
    order: Sequence[Sequence[int]] | None = None,
    preplan: Sequence[Sequence[str]] | None = None,
) -> SdsPlan:
    """Plan SDS batches over the global grid.

    Parameters
    ----------
    frames : sequence of FrameInfo
        The (Seestar) frames; batch members are indices into this sequence.
    grid : OutputGrid
        The global output grid the coverage raster is laid over.
    policy : SdsPolicy
        Closing policy.
    order : sequence of sequence of int, optional
        Groups giving the processing order (group order, then frame order); frames in no
        group follow in index order. Default: index order.
    preplan : sequence of sequence of str, optional
        Pre-planned groups of paths; used as the batches when they cover every frame exactly.

    Returns
    -------
    SdsPlan

    Raises
    ------
    PlanError
        ``coverage grid invalid`` or ``no entries with valid WCS`` (``reason`` holds the
        phrase); the runtime logs ``sds_error_no_valid_batches`` and falls back to Mosaic-First.
    """
    logger.info(
        format_message(
            "sds_policy",
            coverage=policy.coverage_threshold,
            min_size=policy.min_batch_size,
            target_size=policy.target_batch_size,
        )
    )
    cells = coverage_cells_for_grid(grid)
    polygons = frame_footprints_pixels(frames, grid)
    projected = [i for i, polygon in enumerate(polygons) if polygon is not None]
    spans = dict(zip(projected, rasterize_polygons_spans([polygons[i] for i in projected], cells), strict=True))
    footprints: dict[int, np.ndarray] = {}
    excluded: list[tuple[int, str]] = []
    for i, frame in enumerate(frames):
        reason = "no usable WCS" if polygons[i] is None else None
        if polygons[i] is not None:
            if spans[i].size:
                footprints[i] = spans[i]
            else:
                reason = "footprint outside the output grid"
        if reason:
            excluded.append((i, reason))
            logger.warning(format_message("sds_frame_excluded", path=frame.path, reason=reason))
    if not footprints:
        raise PlanError(
            f"SDS: no entries with valid WCS among {len(frames)} frame(s); every frame lacks a usable "
            "celestial WCS or falls outside the output grid",
            reason="no entries with valid WCS",
        )
    refused = None
    if preplan is not None:
        groups, refused = resolve_preplan_groups([f.path for f in frames], preplan)
        if groups is not None:
            batches = _preplan_batches(groups, footprints, cells)
            logger.info(format_message("sds_preplan_used", n_batches=len(batches)))
            return _finish(SdsPlan(tuple(batches), policy, "preplan", cells, tuple(excluded), None))
        logger.info(format_message("sds_preplan_refused", reason=refused))
    processing = [i for i in _processing_order(len(frames), order) if i in footprints]
    sequence = [processing[k] for k in spread_order([footprints[i] for i in processing])]
    runs = [spans_to_runs(footprints[i], cells.shape[1]) for i in sequence]
    raw = merge_undercovered(batch_by_coverage(runs, policy), runs, policy)
    batches = [SdsBatch(tuple(sequence[k] for k in b.frames), b.coverage_fraction, b.closed_by) for b in raw]
    return _finish(SdsPlan(tuple(batches), policy, "policy", cells, tuple(excluded), refused))


def _preplan_batches(
    groups: Sequence[Sequence[int]], footprints: dict[int, np.ndarray], cells: CoverageCells
) -> list[SdsBatch]:
    runs = {i: spans_to_runs(spans, cells.shape[1]) for i, spans in footprints.items()}
    total = union_size(list(runs.values()))
    batches = []
    for group in groups:
        usable = tuple(i for i in group if i in footprints)
        if usable:
            count = union_size([runs[i] for i in usable])
            batches.append(SdsBatch(usable, count / total if total else 0.0, "preplan"))
    return batches


def _finish(plan: SdsPlan) -> SdsPlan:
    logger.info(
        format_message(
            "sds_built",
            count=len(plan.batches),
            sizes=list(plan.sizes),
            coverage=[round(b.coverage_fraction, 3) for b in plan.batches],
        )
    )
    return plan
