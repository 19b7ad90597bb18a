"""Classic-mode tile batches: overlapping sliding windows, duplication, salvage.

Each master-tile group is ordered along its principal spatial axis and cut into windows of
at most ``cap`` frames that overlap by ``overlap_frac`` (neighbouring windows are
neighbours on the sky). No frame is ever dropped: a trailing window too small to stack
joins the previous batch. A batch smaller than ``target_stack`` is padded by repeating its
frames cyclically before stacking, while its weight stays the number of distinct frames.
A tile with fewer than ``min_safe_stack`` usable frames is flagged ``salvage``: its
quality gate and quality crop are relaxed, for that tile only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..messages import msg as format_message
from .frames import FrameInfo
from .groups import GroupingPolicy, GroupPlan, frame_centres, plan_master_groups, principal_axis_order

__all__ = [
    "BatchPlan",
    "BatchPolicy",
    "TileBatch",
    "duplicate_to_target",
    "is_salvage",
    "make_tile_batch",
    "overlap_frac_from_pct",
    "plan_classic_batches",
    "plan_overlapping_batches",
    "plan_tile_batches",
]

logger = logging.getLogger(__name__)

#: A window needs at least this many frames to be stacked on its own.
MIN_STACKABLE_FRAMES = 2
MAX_OVERLAP_PCT = 70


def overlap_frac_from_pct(batch_overlap_pct: Any) -> float:
    """Validate ``batch_overlap_pct`` (0-70) and return it as a fraction.

    Raises
    ------
    ConfigError
        When the value is not a number in ``[0, 70]``.
    """
    try:
        pct = float(batch_overlap_pct)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"batch_overlap_pct must be a number in [0, 70], got {batch_overlap_pct!r}") from err
    if not (0.0 <= pct <= MAX_OVERLAP_PCT):
        raise ConfigError(f"batch_overlap_pct must be in [0, {MAX_OVERLAP_PCT}], got {pct} (default 40)")
    return pct / 100.0


def plan_overlapping_batches(indices: Sequence[int], cap: int, overlap_frac: float) -> list[list[int]]:
    """Cut an ordered group into overlapping windows of at most ``cap`` frames.

    Windows start every ``step = max(1, int(cap * (1 - overlap_frac)))`` frames and stop
    at the first window that reaches the end of the group. A trailing window with fewer
    than two frames (when ``cap >= 2``) is merged into the previous one, so every frame is
    in at least one window and a batch holds at most ``cap + 1`` frames.

    Parameters
    ----------
    indices : sequence of int
        Frame indices, already in spatial order.
    cap : int
        Frames per window (>= 1).
    overlap_frac : float
        Fraction of a window shared with the next, in ``[0, 1)``.

    Returns
    -------
    list of list of int
    """
    if int(cap) < 1:
        raise ConfigError(f"batch cap must be >= 1, got {cap} (set max_raw_per_master_tile)")
    if not (0.0 <= overlap_frac < 1.0):
        raise ConfigError(f"overlap_frac must be in [0, 1), got {overlap_frac} (set batch_overlap_pct in [0, 70])")
    cap = int(cap)
    items = list(indices)
    n = len(items)
    if n <= cap:
        return [items] if items else []
    step = max(1, int(cap * (1.0 - overlap_frac)))
    windows: list[list[int]] = []
    start = 0
    while True:
        windows.append(items[start : start + cap])
        if start + cap >= n:
            break
        start += step
    last = windows[-1]
    if len(windows) > 1 and len(last) < min(MIN_STACKABLE_FRAMES, cap):
        previous_start = start - step
        windows[-2:] = [items[previous_start:n]]
        logger.info(format_message("batch_trailing_merged", size=len(last), merged=len(windows[-1])))
    return windows


def duplicate_to_target(frames: Sequence[int], target: int) -> tuple[int, ...]:
    """Repeat ``frames`` cyclically up to ``target`` entries (unchanged when already that long).

    ``(frames * ceil(target / len(frames)))[:target]``.
    """
    items = tuple(frames)
    if not items or len(items) >= target:
        return items
    return (items * math.ceil(target / len(items)))[:target]


def is_salvage(n_usable: int, min_safe_stack: int) -> bool:
    """Return True when a tile with ``n_usable`` distinct frames must be salvaged."""
    return n_usable < min_safe_stack


@dataclass(frozen=True)
class BatchPolicy:
    """Overlap, duplication and salvage settings of the classic batches.

    Attributes
    ----------
    overlap_frac : float
        ``batch_overlap_pct / 100``.
    allow_batch_duplication : bool
        Pad small batches up to ``target_stack`` by repeating frames.
    target_stack : int
        Stack depth small batches are padded to.
    min_safe_stack : int
        Tiles with fewer distinct frames are flagged ``salvage``.
    """

    overlap_frac: float = 0.4
    allow_batch_duplication: bool = True
    target_stack: int = 5
    min_safe_stack: int = 3

    @classmethod
    def from_values(
        cls,
        batch_overlap_pct: Any = 40,
        allow_batch_duplication: Any = True,
        target_stack: Any = 5,
        min_safe_stack: Any = 3,
    ) -> BatchPolicy:
        """Coerce ZeMosaic-style configuration values (sizes with ``max(1, int(...))``).

        Raises
        ------
        ConfigError
            When ``batch_overlap_pct`` is outside ``[0, 70]`` or a size is not an integer.
        """
        sizes = {}
        for key, value in (("target_stack", target_stack), ("min_safe_stack", min_safe_stack)):
            try:
                sizes[key] = max(1, int(value))
            except (TypeError, ValueError) as err:
                raise ConfigError(f"{key} must be an integer >= 1, got {value!r}") from err
        return cls(
            overlap_frac_from_pct(batch_overlap_pct),
            bool(allow_batch_duplication),
            sizes["target_stack"],
            sizes["min_safe_stack"],
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary."""
        return {
            "overlap_frac": self.overlap_frac,
            "allow_batch_duplication": self.allow_batch_duplication,
            "target_stack": self.target_stack,
            "min_safe_stack": self.min_safe_stack,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchPolicy:
        """Build a policy from :meth:`to_dict` output."""
        return cls(
            float(data["overlap_frac"]),
            bool(data["allow_batch_duplication"]),
            int(data["target_stack"]),
            int(data["min_safe_stack"]),
        )


@dataclass(frozen=True)
class TileBatch:
    """One master tile: its distinct frames, what the stacker receives, and its salvage flag.

    Attributes
    ----------
    tile_id : int
        Sequential id (task keys and logs).
    group_id : int
        Index of the master-tile group the batch comes from.
    frames : tuple of int
        Distinct frame indices, in spatial order.
    stack_frames : tuple of int
        Frames handed to the stacker, ``frames`` repeated up to ``target_stack`` when duplication is on.
    salvage : bool
        True when fewer than ``min_safe_stack`` distinct frames: quality gate and crop are off for this tile.
    """

    tile_id: int
    group_id: int
    frames: tuple[int, ...]
    stack_frames: tuple[int, ...]
    salvage: bool

    @property
    def original_count(self) -> int:
        """Number of distinct frames before duplication."""
        return len(self.frames)

    @property
    def final_count(self) -> int:
        """Number of frames the stacker receives."""
        return len(self.stack_frames)

    @property
    def weight(self) -> int:
        """Tile weight: the number of distinct frames (true coverage), never the duplicated count."""
        return len(set(self.stack_frames))

    def quality_settings(self, quality_gate: bool, quality_crop: bool) -> tuple[bool, bool]:
        """Return ``(quality_gate, quality_crop)`` for this tile: both off when salvaged, else the globals."""
        if self.salvage:
            return False, False
        return bool(quality_gate), bool(quality_crop)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary."""
        return {
            "tile_id": self.tile_id,
            "group_id": self.group_id,
            "frames": list(self.frames),
            "stack_frames": list(self.stack_frames),
            "salvage": self.salvage,
            "original_count": self.original_count,
            "final_count": self.final_count,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TileBatch:
        """Build a batch from :meth:`to_dict` output."""
        return cls(
            int(data["tile_id"]),
            int(data["group_id"]),
            tuple(int(i) for i in data["frames"]),
            tuple(int(i) for i in data["stack_frames"]),
            bool(data["salvage"]),
        )


def make_tile_batch(tile_id: int, group_id: int, frames: Sequence[int], policy: BatchPolicy) -> TileBatch:
    """Build one tile batch from its usable frames: duplicate up to the target, flag salvage, log both.

    The runtime calls this again with the frames that actually loaded, so the salvage
    decision always reflects the usable count.
    """
    distinct = tuple(dict.fromkeys(int(i) for i in frames))
    stack = duplicate_to_target(distinct, policy.target_stack) if policy.allow_batch_duplication else distinct
    if len(stack) != len(distinct):
        logger.info(format_message("batch_duplicating", original=len(distinct), final=len(stack), tile=tile_id))
    salvage = is_salvage(len(distinct), policy.min_safe_stack)
    if salvage:
        logger.info(format_message("tile_salvage", tile=tile_id, n=len(distinct)))
    return TileBatch(int(tile_id), int(group_id), distinct, stack, salvage)


@dataclass(frozen=True)
class BatchPlan:
    """Every tile batch of a classic run, with the policy and cap that produced them."""

    batches: tuple[TileBatch, ...]
    policy: BatchPolicy
    cap: int | None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary."""
        return {"batches": [b.to_dict() for b in self.batches], "policy": self.policy.to_dict(), "cap": self.cap}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchPlan:
        """Build a batch plan from :meth:`to_dict` output."""
        return cls(
            tuple(TileBatch.from_dict(b) for b in data["batches"]),
            BatchPolicy.from_dict(data["policy"]),
            None if data["cap"] is None else int(data["cap"]),
        )


def plan_tile_batches(
    frames: Sequence[FrameInfo],
    groups: GroupPlan | Sequence[Sequence[int]],
    policy: BatchPolicy,
    cap: int | None,
) -> BatchPlan:
    """Cut every group into overlapping windows along its principal axis and finalise each tile.

    Parameters
    ----------
    frames : sequence of FrameInfo
        The frames the group indices refer to.
    groups : GroupPlan or sequence of sequence of int
        Master-tile groups.
    policy : BatchPolicy
        Overlap, duplication and salvage settings.
    cap : int or None
        Frames per window; None keeps each group whole.

    Returns
    -------
    BatchPlan
    """
    members = groups.groups if isinstance(groups, GroupPlan) else tuple(tuple(g) for g in groups)
    centres = frame_centres(frames) if members else None
    batches: list[TileBatch] = []
    for group_id, group in enumerate(members):
        group = [int(i) for i in group]
        if not group:
            continue
        sub = centres[group]
        ordered = [group[k] for k in principal_axis_order(sub[:, 0], sub[:, 1])]
        windows = plan_overlapping_batches(ordered, cap, policy.overlap_frac) if cap else [ordered]
        for window in windows:
            batches.append(make_tile_batch(len(batches), group_id, window, policy))
    logger.info(
        format_message("batches_summary", n_tiles=len(batches), n_groups=len(members), overlap=policy.overlap_frac)
    )
    return BatchPlan(tuple(batches), policy, cap)


def plan_classic_batches(
    frames: Sequence[FrameInfo],
    grouping: GroupingPolicy,
    batching: BatchPolicy,
    *,
    memory_cap: int | None = None,
) -> tuple[GroupPlan, BatchPlan]:
    """Plan master-tile groups and their batches in one call.

    With ``overlap_frac == 0`` oversized groups are split spatially then chronologically
    into balanced pieces; with an overlap they are kept whole and cut into overlapping
    windows of ``cap`` frames instead.

    Returns
    -------
    groups : GroupPlan
    batches : BatchPlan
    """
    overlapping = batching.overlap_frac > 0
    group_plan = plan_master_groups(frames, grouping, memory_cap=memory_cap, split_oversized=not overlapping)
    return group_plan, plan_tile_batches(frames, group_plan, batching, group_plan.cap)
