"""Master-tile groups for the classic mode: frames clustered by sky position.

Frames whose centres lie closer than ``cluster_panel_threshold`` are linked, and the
connected components of that graph are the groups (distances are measured on the sphere,
so RA = 0/360 and the poles need no special case). When nearly every frame ends up alone
the threshold is relaxed from the data. Groups above the cap are split spatially, then
chronologically; groups below the minimum join their nearest group when the result stays
within the cap. Every function here is pure and deterministic: the same frames in the
same order and the same policy give the same groups.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from ..errors import ConfigError, PlanError
from ..messages import msg as format_message
from .frames import FrameInfo
from .grid import mean_direction
from .group_merging import merge_small_groups
from .proximity import linked_components
from .proximity import unit_vectors as _unit_vectors

__all__ = [
    "GroupPlan",
    "GroupingPolicy",
    "cluster_centres",
    "frame_centres",
    "group_centres",
    "max_frames_for_memory",
    "merge_small_groups",
    "plan_master_groups",
    "principal_axis_order",
    "split_group",
]

logger = logging.getLogger(__name__)

#: Fraction of singleton frames above which the clustering threshold is relaxed.
RELAX_SINGLETON_FRACTION = 0.9
#: The relaxed threshold is this factor times the percentile below.
RELAX_FACTOR = 1.2
RELAX_PERCENTILE = 90.0
#: Projections are rounded to this many degrees before sorting, so float noise never reorders frames.
_ORDER_RESOLUTION_DEG = 1e-9


@dataclass(frozen=True)
class GroupingPolicy:
    """How frames are clustered into master-tile groups.

    Attributes
    ----------
    cluster_panel_threshold : float
        Link distance between frame centres in degrees.
    max_raw_per_master_tile : int
        Largest group; 0 means no cap from the configuration.
    min_raw_per_master_tile : int
        Groups smaller than this join their nearest group when the cap allows (1 disables merging).
    """

    cluster_panel_threshold: float = 0.03
    max_raw_per_master_tile: int = 0
    min_raw_per_master_tile: int = 1

    @classmethod
    def from_values(
        cls,
        cluster_panel_threshold: Any = 0.03,
        max_raw_per_master_tile: Any = 0,
        min_raw_per_master_tile: Any = 1,
    ) -> GroupingPolicy:
        """Coerce and validate raw configuration values.

        Raises
        ------
        ConfigError
            When a value is out of range; the message names the key.
        """
        try:
            threshold = float(cluster_panel_threshold)
        except (TypeError, ValueError) as err:
            raise ConfigError(
                f"cluster_panel_threshold must be a number of degrees, got {cluster_panel_threshold!r}"
            ) from err
        if not (math.isfinite(threshold) and threshold > 0):
            raise ConfigError(f"cluster_panel_threshold must be > 0 degrees, got {threshold} (default 0.03)")
        cap = max(0, int(max_raw_per_master_tile))
        minimum = max(1, int(min_raw_per_master_tile))
        if cap and minimum > cap:
            raise ConfigError(
                f"min_raw_per_master_tile ({minimum}) must be <= max_raw_per_master_tile ({cap}); "
                "lower min_raw_per_master_tile or raise max_raw_per_master_tile"
            )
        return cls(threshold, cap, minimum)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary."""
        return {
            "cluster_panel_threshold": self.cluster_panel_threshold,
            "max_raw_per_master_tile": self.max_raw_per_master_tile,
            "min_raw_per_master_tile": self.min_raw_per_master_tile,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GroupingPolicy:
        """Build a policy from :meth:`to_dict` output."""
        return cls.from_values(**data)


@dataclass(frozen=True)
class GroupPlan:
    """Master-tile groups as indices into the frame list, plus how they were obtained.

    Attributes
    ----------
    groups : tuple of tuple of int
        Frame indices per group, ascending; groups ordered by their smallest index.
    threshold_deg : float
        Link distance actually used.
    relaxed : bool
        True when the configured threshold was relaxed.
    cap : int or None
        Largest group allowed (None: no cap).
    min_size : int
        Minimum group size used for merging.
    n_split : int
        Number of groups that were split because they exceeded the cap.
    n_merged : int
        Number of small groups merged into a neighbour.
    """

    groups: tuple[tuple[int, ...], ...]
    threshold_deg: float
    relaxed: bool
    cap: int | None
    min_size: int
    n_split: int = 0
    n_merged: int = 0

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of frames per group."""
        return tuple(len(g) for g in self.groups)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary."""
        return {
            "groups": [list(g) for g in self.groups],
            "threshold_deg": self.threshold_deg,
            "relaxed": self.relaxed,
            "cap": self.cap,
            "min_size": self.min_size,
            "n_split": self.n_split,
            "n_merged": self.n_merged,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GroupPlan:
        """Build a group plan from :meth:`to_dict` output."""
        return cls(
            groups=tuple(tuple(int(i) for i in g) for g in data["groups"]),
            threshold_deg=float(data["threshold_deg"]),
            relaxed=bool(data["relaxed"]),
            cap=None if data["cap"] is None else int(data["cap"]),
            min_size=int(data["min_size"]),
            n_split=int(data.get("n_split", 0)),
            n_merged=int(data.get("n_merged", 0)),
        )


def _chord(angle_deg: float) -> float:
    return 2.0 * math.sin(math.radians(min(angle_deg, 180.0)) / 2.0)


def frame_centres(frames: Sequence[FrameInfo]) -> np.ndarray:
    """Return the ``(N, 2)`` RA/Dec centres (degrees) of the frames.

    Raises
    ------
    PlanError
        When a frame's WCS gives no finite centre.
    """
    centres = np.array([f.center_world() for f in frames], dtype=float).reshape(-1, 2)
    bad = np.flatnonzero(~np.all(np.isfinite(centres), axis=1))
    if bad.size:
        path = frames[int(bad[0])].path
        raise PlanError(f"frame {path} has no finite sky centre; check its WCS", reason="frame without valid WCS")
    return centres


def cluster_centres(ra_deg: Sequence[float], dec_deg: Sequence[float], threshold_deg: float) -> list[tuple[int, ...]]:
    """Connected components of centres closer than ``threshold_deg`` on the sphere.

    Returns
    -------
    list of tuple of int
        Indices per component, ascending, components ordered by their smallest index.
    """
    xyz = _unit_vectors(np.asarray(ra_deg), np.asarray(dec_deg))
    if len(xyz) == 0:
        return []
    labels = linked_components(xyz, _chord(threshold_deg))
    order = np.lexsort((np.arange(len(labels)), labels))
    cuts = np.flatnonzero(np.diff(labels[order])) + 1
    return sorted((tuple(part.tolist()) for part in np.split(order, cuts)), key=lambda g: g[0])


def _nearest_neighbour_separations(xyz: np.ndarray) -> np.ndarray:
    distances, _ = cKDTree(xyz).query(xyz, k=2)
    return np.degrees(2.0 * np.arcsin(np.clip(distances[:, 1] / 2.0, 0.0, 1.0)))


def _tangent_offsets(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """East/north offsets (degrees) around the points' mean direction, orthographic."""
    ra_c, dec_c = mean_direction(np.asarray(ra_deg, float), np.asarray(dec_deg, float))
    ra0, dec0 = math.radians(ra_c), math.radians(dec_c)
    east = np.array([-math.sin(ra0), math.cos(ra0), 0.0])
    north = np.array([-math.sin(dec0) * math.cos(ra0), -math.sin(dec0) * math.sin(ra0), math.cos(dec0)])
    xyz = _unit_vectors(ra_deg, dec_deg)
    return np.degrees(np.column_stack([xyz @ east, xyz @ north]))


def _principal_projection(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    offsets = _tangent_offsets(ra_deg, dec_deg)
    centred = offsets - offsets.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    axis = vectors[:, -1]
    if axis[int(np.argmax(np.abs(axis)))] < 0:
        axis = -axis
    return np.round((centred @ axis) / _ORDER_RESOLUTION_DEG) * _ORDER_RESOLUTION_DEG


def principal_axis_order(ra_deg: Sequence[float], dec_deg: Sequence[float]) -> list[int]:
    """Order points along their principal spatial axis (neighbours stay neighbours).

    Parameters
    ----------
    ra_deg, dec_deg : sequence of float
        Centres of the frames of one group, in degrees.

    Returns
    -------
    list of int
        Positions into the inputs, sorted by projection on the major axis of the
        centres' scatter in the tangent plane; ties keep input order.
    """
    ra, dec = np.asarray(ra_deg, float), np.asarray(dec_deg, float)
    if len(ra) <= 1:
        return list(range(len(ra)))
    projection = _principal_projection(ra, dec)
    return np.lexsort((np.arange(len(ra)), projection)).tolist()


def split_group(
    indices: Sequence[int],
    centres: np.ndarray,
    dates: Sequence[str],
    cap: int,
    spread_deg: float,
) -> list[tuple[int, ...]]:
    """Split one group into pieces of at most ``cap`` frames.

    A group wider than ``spread_deg`` along its principal axis is cut there into two
    balanced parts (recursively, ``ceil(n / cap)`` pieces in all); a compact group is cut
    into ``ceil(n / cap)`` consecutive runs in time (``date_obs``, then index).

    Parameters
    ----------
    indices : sequence of int
        Frame indices of the group.
    centres : numpy.ndarray
        ``(N, 2)`` RA/Dec of every frame (indexed by ``indices``).
    dates : sequence of str
        ``date_obs`` of every frame (ISO strings sort chronologically).
    cap : int
        Largest piece.
    spread_deg : float
        Extent above which the split is spatial.

    Returns
    -------
    list of tuple of int
        Pieces with ascending indices.
    """
    members = list(indices)
    n = len(members)
    if n <= cap:
        return [tuple(sorted(members))]
    pieces = math.ceil(n / cap)
    sub = centres[members]
    projection = _principal_projection(sub[:, 0], sub[:, 1])
    if float(projection.max() - projection.min()) > spread_deg:
        order = [members[i] for i in np.lexsort((np.asarray(members), projection)).tolist()]
        first = n * (pieces // 2) // pieces
        return split_group(order[:first], centres, dates, cap, spread_deg) + split_group(
            order[first:], centres, dates, cap, spread_deg
        )
    chronological = sorted(members, key=lambda i: (dates[i], i))
    return [tuple(sorted(int(i) for i in run)) for run in np.array_split(np.asarray(chronological), pieces)]


def max_frames_for_memory(memory_bytes: int, frame_bytes: int, fraction: float = 0.5, minimum: int = 2) -> int:
    """Largest group whose stack of frames fits ``fraction`` of ``memory_bytes``.

    Parameters
    ----------
    memory_bytes : int
        Memory of one worker.
    frame_bytes : int
        Bytes of one frame as the stacker holds it (e.g. ``H * W * channels * 4``).
    fraction : float
        Share of the memory the stack may use.
    minimum : int
        Never return less than this.
    """
    if frame_bytes <= 0:
        raise ConfigError(f"frame_bytes must be > 0, got {frame_bytes}")
    return max(int(minimum), int(memory_bytes * fraction // frame_bytes))


def group_centres(
    centres: np.ndarray,
    dates: Sequence[str],
    policy: GroupingPolicy,
    *,
    memory_cap: int | None = None,
    split_oversized: bool = True,
) -> GroupPlan:
    """Group frame centres into master-tile groups (array-level core of :func:`plan_master_groups`).

    Parameters
    ----------
    centres : numpy.ndarray
        ``(N, 2)`` RA/Dec centres in degrees.
    dates : sequence of str
        ``date_obs`` per frame, used for chronological splits.
    policy : GroupingPolicy
        Threshold, cap and minimum.
    memory_cap : int, optional
        Cap derived from memory; the smaller of it and the policy's cap applies.
    split_oversized : bool
        Split groups above the cap (False leaves that to overlapping batches).

    Returns
    -------
    GroupPlan
    """
    centres = np.asarray(centres, dtype=float).reshape(-1, 2)
    n = len(centres)
    caps = [c for c in (policy.max_raw_per_master_tile, memory_cap) if c]
    cap = max(1, min(caps)) if caps else None
    threshold = policy.cluster_panel_threshold
    groups = cluster_centres(centres[:, 0], centres[:, 1], threshold)
    relaxed = False
    singletons = sum(1 for g in groups if len(g) == 1)
    if n >= 2 and singletons >= RELAX_SINGLETON_FRACTION * n:
        separations = _nearest_neighbour_separations(_unit_vectors(centres[:, 0], centres[:, 1]))
        candidate = RELAX_FACTOR * float(np.percentile(separations, RELAX_PERCENTILE))
        if candidate > threshold:
            text = format_message(
                "groups_threshold_relaxed", singletons=singletons, n_frames=n, threshold=threshold, relaxed=candidate
            )
            logger.info(text)
            threshold, relaxed = candidate, True
            groups = cluster_centres(centres[:, 0], centres[:, 1], threshold)
    n_split = 0
    if cap is not None and split_oversized:
        pieces: list[tuple[int, ...]] = []
        for group in groups:
            parts = split_group(group, centres, dates, cap, threshold)
            if len(parts) > 1:
                n_split += 1
                logger.info(format_message("groups_split", size=len(group), cap=cap, parts=len(parts), how="sky/time"))
            pieces.extend(parts)
        groups = sorted(pieces, key=lambda g: g[0])
    groups, n_merged = merge_small_groups(groups, centres, policy.min_raw_per_master_tile, cap)
    logger.info(
        format_message("groups_summary", n_groups=len(groups), sizes=[len(g) for g in groups], threshold=threshold)
    )
    return GroupPlan(tuple(groups), float(threshold), relaxed, cap, policy.min_raw_per_master_tile, n_split, n_merged)


def plan_master_groups(
    frames: Sequence[FrameInfo],
    policy: GroupingPolicy,
    *,
    memory_cap: int | None = None,
    split_oversized: bool = True,
) -> GroupPlan:
    """Cluster frames into master-tile groups by sky position.

    Parameters
    ----------
    frames : sequence of FrameInfo
        The usable frames; group members are indices into this sequence.
    policy : GroupingPolicy
        Threshold, cap and minimum group size.
    memory_cap : int, optional
        Cap derived from worker memory (see :func:`max_frames_for_memory`).
    split_oversized : bool
        Split groups above the cap spatially then chronologically.

    Returns
    -------
    GroupPlan

    Raises
    ------
    PlanError
        When there is no frame or a frame has no finite sky centre.
    """
    if not frames:
        raise PlanError("no usable frames to group", reason="no usable frames")
    return group_centres(
        frame_centres(frames),
        [f.date_obs for f in frames],
        policy,
        memory_cap=memory_cap,
        split_oversized=split_oversized,
    )
