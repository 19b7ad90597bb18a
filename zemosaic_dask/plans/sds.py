"""SDS (ZeSupaDupStack) batches: groups of frames that together cover the field.

:func:`plan_sds_batches` builds batches that each spread over the whole field, whatever the
order of the files:

1. The frames' footprints are marked on a coarse coverage raster (at most 512 x 512 cells
   over the global grid).
2. The processing order (group order, then frame order) is *spread*
   (:func:`~zemosaic_dask.plans.sds_spread.spread_order`): frames are clustered by pointing
   and the clusters interleaved in proportion to their sizes, so any stretch of the sequence
   spans the field. Files in panel order (all of panel 0, then panel 1, ...) thus give the
   same batches as files that alternate between panels; a single pointing keeps its order.
3. The closing policy (:func:`batch_by_coverage`) runs over that sequence: a batch closes
   when it holds at least ``min_batch_size`` frames **and** covers ``coverage_threshold`` of
   the cells any frame covers; it is forced closed at ``target_batch_size`` frames. A
   leftover smaller than the minimum joins the last batch.
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
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, PlanError
from ..messages import msg as format_message
from .footprints import (
    CoverageCells,
    coverage_cells_for_grid,
    frame_footprints_pixels,
    rasterize_polygon_spans,
    spans_to_cells,
)
from .frames import FrameInfo, is_seestar
from .grid import OutputGrid
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
class SdsPolicy:
    """When an SDS batch closes.

    Attributes
    ----------
    coverage_threshold : float
        Fraction of the covered field, in ``(0, 1]``, a batch must reach (``sds_coverage_threshold``).
    min_batch_size : int
        Frames a batch needs before it may close on coverage (``sds_min_batch_size``).
    target_batch_size : int
        Frames at which a batch is closed regardless of coverage (``sds_target_batch_size``).
    """

    coverage_threshold: float = 0.92
    min_batch_size: int = 5
    target_batch_size: int = 10

    @classmethod
    def from_values(
        cls, coverage_threshold: Any = 0.92, min_batch_size: Any = 5, target_batch_size: Any = 10
    ) -> SdsPolicy:
        """Coerce raw configuration values (sizes with ``max(1, int(...))``) and validate them.

        Raises
        ------
        ConfigError
            Naming the key: a non-numeric value, a threshold outside ``(0, 1]`` or min > target.
        """
        try:
            threshold = float(coverage_threshold)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"sds_coverage_threshold must be a number in (0, 1], got {coverage_threshold!r}") from err
        if not (math.isfinite(threshold) and 0.0 < threshold <= 1.0):
            raise ConfigError(f"sds_coverage_threshold must be in (0, 1], got {threshold} (default 0.92)")
        sizes = {}
        for key, value in (("sds_min_batch_size", min_batch_size), ("sds_target_batch_size", target_batch_size)):
            try:
                sizes[key] = max(1, int(value))
            except (TypeError, ValueError) as err:
                raise ConfigError(f"{key} must be an integer >= 1, got {value!r}") from err
        minimum, target = sizes["sds_min_batch_size"], sizes["sds_target_batch_size"]
        if minimum > target:
            raise ConfigError(
                f"sds_min_batch_size ({minimum}) must be <= sds_target_batch_size ({target}); "
                "lower sds_min_batch_size or raise sds_target_batch_size"
            )
        return cls(threshold, minimum, target)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary."""
        return {
            "coverage_threshold": self.coverage_threshold,
            "min_batch_size": self.min_batch_size,
            "target_batch_size": self.target_batch_size,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SdsPolicy:
        """Build a policy from :meth:`to_dict` output."""
        return cls.from_values(data["coverage_threshold"], data["min_batch_size"], data["target_batch_size"])


@dataclass(frozen=True)
class SdsBatch:
    """One SDS batch: frame indices, the share of the field they cover, and why it closed.

    ``closed_by`` is ``"coverage"``, ``"target"``, ``"end"`` (the last frames, kept as a
    batch), ``"merged-leftover"`` (the last batch after a leftover joined it),
    ``"merged-coverage"`` (batches below the threshold merged until they reached it) or
    ``"preplan"``.
    """

    frames: tuple[int, ...]
    coverage_fraction: float
    closed_by: str

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary."""
        return {"frames": list(self.frames), "coverage_fraction": self.coverage_fraction, "closed_by": self.closed_by}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SdsBatch:
        """Build a batch from :meth:`to_dict` output."""
        return cls(tuple(int(i) for i in data["frames"]), float(data["coverage_fraction"]), str(data["closed_by"]))


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


def _fraction(covered: int, total: int) -> float:
    return covered / total if total else 0.0


class _SpanCells(Sequence):
    """Frames' cell runs, expanded to flat indices only when read (keeps memory per frame small)."""

    def __init__(self, spans: Sequence[np.ndarray], n_columns: int) -> None:
        self._spans, self._n_columns = list(spans), n_columns

    def __len__(self) -> int:
        return len(self._spans)

    def __getitem__(self, k: int | slice) -> Any:
        if isinstance(k, slice):
            return _SpanCells(self._spans[k], self._n_columns)
        return spans_to_cells(self._spans[k], self._n_columns)


def _covered_count(footprints: Sequence[np.ndarray], members: Sequence[int], covered: np.ndarray) -> int:
    covered[:] = False
    for k in members:
        covered[footprints[k]] = True
    return int(np.count_nonzero(covered))


def batch_by_coverage(
    footprints: Sequence[np.ndarray], policy: SdsPolicy, n_cells: int | None = None
) -> list[SdsBatch]:
    """Apply the SDS closing policy to frames given as sets of covered cells.

    Parameters
    ----------
    footprints : sequence of numpy.ndarray
        Flat indices of the cells each frame covers, in processing order.
    policy : SdsPolicy
        Threshold, minimum and target sizes.
    n_cells : int, optional
        Size of the raster the indices refer to (default: largest index + 1).

    Returns
    -------
    list of SdsBatch
        Batches of positions into ``footprints``; the denominator of every coverage
        fraction is the number of cells covered by any frame.
    """
    if not footprints:
        return []
    if n_cells is None:
        n_cells = 1 + max((int(np.max(f)) for f in footprints if len(f)), default=-1)
    covered = np.zeros(max(0, n_cells), dtype=bool)
    total = _covered_count(footprints, range(len(footprints)), covered)
    covered[:] = False
    batches: list[SdsBatch] = []
    current: list[int] = []
    for k in range(len(footprints)):
        current.append(k)
        covered[footprints[k]] = True
        fraction = _fraction(int(np.count_nonzero(covered)), total)
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
            fraction = _fraction(_covered_count(footprints, merged, covered), total)
            batches[-1] = SdsBatch(merged, fraction, "merged-leftover")
        else:
            batches.append(SdsBatch(tuple(current), _fraction(int(np.count_nonzero(covered)), total), "end"))
    return batches


def merge_undercovered(
    batches: Sequence[SdsBatch], footprints: Sequence[np.ndarray], policy: SdsPolicy, n_cells: int | None = None
) -> list[SdsBatch]:
    """Merge every batch below the coverage threshold with the batches after it until it reaches it.

    Parameters
    ----------
    batches : sequence of SdsBatch
        Batches of positions into ``footprints``, in order (from :func:`batch_by_coverage`).
    footprints : sequence of numpy.ndarray
        Flat indices of the cells each frame covers.
    policy : SdsPolicy
        Supplies the threshold.
    n_cells : int, optional
        Size of the raster (default: largest index + 1).

    Returns
    -------
    list of SdsBatch
        Batches that all reach the threshold: a batch below it absorbs the next ones
        (``closed_by="merged-coverage"``); a tail that never reaches it joins the last
        batch (``"merged-leftover"``), or stays alone when it is the only one.
    """
    if not batches:
        return []
    if n_cells is None:
        n_cells = 1 + max((int(np.max(f)) for f in footprints if len(f)), default=-1)
    covered = np.zeros(max(0, n_cells), dtype=bool)
    total = _covered_count(footprints, range(len(footprints)), covered)
    out: list[SdsBatch] = []
    pending: tuple[int, ...] = ()
    merged = 0
    # ``covered`` holds the cells of ``pending`` and grows with it (never recounted from scratch).
    covered[:] = False
    for batch in batches:
        if not pending and batch.coverage_fraction >= policy.coverage_threshold:
            out.append(batch)
            continue
        merged += 1 if pending else 0
        pending += batch.frames
        for k in batch.frames:
            covered[footprints[k]] = True
        fraction = _fraction(int(np.count_nonzero(covered)), total)
        if fraction >= policy.coverage_threshold:
            out.append(SdsBatch(pending, fraction, "merged-coverage" if merged else batch.closed_by))
            pending, merged = (), 0
            covered[:] = False
    if pending:
        if out:
            for k in out[-1].frames:
                covered[footprints[k]] = True
            frames = out[-1].frames + pending
            out[-1] = SdsBatch(frames, _fraction(int(np.count_nonzero(covered)), total), "merged-leftover")
        else:
            fraction = _fraction(int(np.count_nonzero(covered)), total)
            out.append(SdsBatch(pending, fraction, "merged-coverage" if merged else batches[-1].closed_by))
    if len(out) < len(batches):
        logger.info(
            "SDS: %d batch(es) below the coverage threshold %.2f were merged into others (%d left)",
            len(batches) - len(out),
            policy.coverage_threshold,
            len(out),
        )
    return out


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
    footprints: dict[int, np.ndarray] = {}
    excluded: list[tuple[int, str]] = []
    for i, (frame, polygon) in enumerate(zip(frames, frame_footprints_pixels(frames, grid), strict=True)):
        reason = "no usable WCS" if polygon is None else None
        if polygon is not None:
            marked = rasterize_polygon_spans(polygon, cells)
            if marked.size:
                footprints[i] = marked
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
    expanded = _SpanCells([footprints[i] for i in sequence], cells.shape[1])
    raw = merge_undercovered(batch_by_coverage(expanded, policy, cells.size), expanded, policy, cells.size)
    batches = [SdsBatch(tuple(sequence[k] for k in b.frames), b.coverage_fraction, b.closed_by) for b in raw]
    return _finish(SdsPlan(tuple(batches), policy, "policy", cells, tuple(excluded), refused))


def _preplan_batches(
    groups: Sequence[Sequence[int]], footprints: dict[int, np.ndarray], cells: CoverageCells
) -> list[SdsBatch]:
    indices = sorted(footprints)
    position = {i: k for k, i in enumerate(indices)}
    expanded = _SpanCells([footprints[i] for i in indices], cells.shape[1])
    covered = np.zeros(cells.size, dtype=bool)
    total = _covered_count(expanded, range(len(indices)), covered)
    batches = []
    for group in groups:
        usable = tuple(i for i in group if i in footprints)
        if usable:
            count = _covered_count(expanded, [position[i] for i in usable], covered)
            batches.append(SdsBatch(usable, _fraction(count, total), "preplan"))
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
