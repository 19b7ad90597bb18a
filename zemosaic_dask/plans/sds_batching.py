"""The SDS closing policy: when a batch of frames closes, measured on the coverage raster.

:func:`batch_by_coverage` takes frames in sequence and closes a batch when it holds at least
``min_batch_size`` frames **and** covers ``coverage_threshold`` of the cells any frame covers,
or when it reaches ``target_batch_size`` frames; :func:`merge_undercovered` then merges every
batch below the threshold with the batches after it.

Coverage is counted on runs of cells (:mod:`~zemosaic_dask.plans.coverage_runs`): a batch's
covered cells are a growing union of runs, so adding a frame costs about the raster rows the
frame and the batch span, not the ~10^5 cells a full-size frame holds, and nothing is done
per cell of the whole raster. The counts are those of marking every cell.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from .coverage_runs import RunUnion, as_runs, union_size

__all__ = ["SdsBatch", "SdsPolicy", "batch_by_coverage", "merge_undercovered"]

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


def _fraction(covered: int, total: int) -> float:
    return covered / total if total else 0.0


def batch_by_coverage(footprints: Sequence[np.ndarray], policy: SdsPolicy) -> list[SdsBatch]:
    """Apply the SDS closing policy to frames given as sets of covered cells.

    Parameters
    ----------
    footprints : sequence of numpy.ndarray
        The cells each frame covers, in processing order: 1-D flat cell indices, or ``(K, 2)``
        runs ``(start, stop)`` of flat indices (:func:`~zemosaic_dask.plans.coverage_runs.spans_to_runs`).
    policy : SdsPolicy
        Threshold, minimum and target sizes.

    Returns
    -------
    list of SdsBatch
        Batches of positions into ``footprints``; the denominator of every coverage
        fraction is the number of cells covered by any frame.
    """
    if not footprints:
        return []
    runs = [as_runs(f) for f in footprints]
    total = union_size(runs)
    covered = RunUnion()
    batches: list[SdsBatch] = []
    current: list[int] = []
    for k in range(len(runs)):
        current.append(k)
        fraction = _fraction(covered.add(runs[k]), total)
        reason = None
        if len(current) >= policy.min_batch_size and fraction >= policy.coverage_threshold:
            reason = "coverage"
        elif len(current) >= policy.target_batch_size:
            reason = "target"
        if reason:
            batches.append(SdsBatch(tuple(current), fraction, reason))
            current = []
            covered.clear()
    if current:
        if len(current) < policy.min_batch_size and batches:
            merged = batches[-1].frames + tuple(current)
            fraction = _fraction(union_size([runs[k] for k in merged]), total)
            batches[-1] = SdsBatch(merged, fraction, "merged-leftover")
        else:
            batches.append(SdsBatch(tuple(current), _fraction(covered.count, total), "end"))
    return batches


def merge_undercovered(
    batches: Sequence[SdsBatch], footprints: Sequence[np.ndarray], policy: SdsPolicy
) -> list[SdsBatch]:
    """Merge every batch below the coverage threshold with the batches after it until it reaches it.

    Parameters
    ----------
    batches : sequence of SdsBatch
        Batches of positions into ``footprints``, in order (from :func:`batch_by_coverage`).
    footprints : sequence of numpy.ndarray
        The cells each frame covers, as :func:`batch_by_coverage` takes them.
    policy : SdsPolicy
        Supplies the threshold.

    Returns
    -------
    list of SdsBatch
        Batches that all reach the threshold: a batch below it absorbs the next ones
        (``closed_by="merged-coverage"``); a tail that never reaches it joins the last
        batch (``"merged-leftover"``), or stays alone when it is the only one.
    """
    if not batches:
        return []
    runs = [as_runs(f) for f in footprints]
    total = union_size(runs)
    out: list[SdsBatch] = []
    pending: tuple[int, ...] = ()
    merged = 0
    # ``covered`` holds the cells of ``pending`` and grows with it (never recounted from scratch).
    covered = RunUnion()
    for batch in batches:
        if not pending and batch.coverage_fraction >= policy.coverage_threshold:
            out.append(batch)
            continue
        merged += 1 if pending else 0
        pending += batch.frames
        covered.add(np.concatenate([runs[k] for k in batch.frames]))
        fraction = _fraction(covered.count, total)
        if fraction >= policy.coverage_threshold:
            out.append(SdsBatch(pending, fraction, "merged-coverage" if merged else batch.closed_by))
            pending, merged = (), 0
            covered.clear()
    if pending:
        if out:
            covered.add(np.concatenate([runs[k] for k in out[-1].frames]))
            frames = out[-1].frames + pending
            out[-1] = SdsBatch(frames, _fraction(covered.count, total), "merged-leftover")
        else:
            fraction = _fraction(covered.count, total)
            out.append(SdsBatch(pending, fraction, "merged-coverage" if merged else batches[-1].closed_by))
    if len(out) < len(batches):
        logger.info(
            "SDS: %d batch(es) below the coverage threshold %.2f were merged into others (%d left)",
            len(batches) - len(out),
            policy.coverage_threshold,
            len(out),
        )
    return out
