"""Small master-tile groups joined to their nearest group (classic mode).

:func:`merge_small_groups` takes the small groups smallest first and joins each to the group
whose mean direction is nearest, as long as the union fits the cap. The nearest group is
found through :class:`~zemosaic_dask.plans.proximity.NearestIndex` over the groups' mean
directions, and the next small group through a heap, so the cost grows as N log N in the
number of groups; the distances that decide are computed exactly as a comparison with every
group would compute them, so the result is the same.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Sequence

import numpy as np

from ..messages import msg as format_message
from .proximity import NearestIndex, unit_vectors

__all__ = ["merge_small_groups"]

logger = logging.getLogger(__name__)


def _centroid(xyz: np.ndarray, group: Sequence[int]) -> np.ndarray:
    vec = xyz[list(group)].sum(axis=0)
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm else vec


def merge_small_groups(
    groups: Sequence[Sequence[int]], centres: np.ndarray, min_size: int, cap: int | None
) -> tuple[list[tuple[int, ...]], int]:
    """Merge groups smaller than ``min_size`` into their nearest group when the result fits the cap.

    Small groups are taken smallest first (ties: smallest frame index); the nearest group
    is the one whose mean direction is closest (ties: the group with the smallest frame
    index). A small group whose nearest group would overflow the cap is kept as it is and
    not taken again, though other small groups may still join it.

    Parameters
    ----------
    groups : sequence of sequence of int
        Disjoint groups of frame indices.
    centres : numpy.ndarray
        ``(N, 2)`` RA/Dec centres (degrees) of every frame.
    min_size : int
        Groups below this size are merged.
    cap : int or None
        Largest group a merge may produce (None: no cap).

    Returns
    -------
    groups : list of tuple of int
        Groups ordered by their smallest index.
    n_merged : int
        Number of merges performed.
    """
    members = {key: tuple(sorted(int(i) for i in g)) for key, g in enumerate(g for g in groups if len(g))}
    xyz = unit_vectors(centres[:, 0], centres[:, 1]) if len(centres) else np.zeros((0, 3))
    centroids = {key: _centroid(xyz, group) for key, group in members.items()}
    index = NearestIndex(centroids.items())
    small = [(len(g), g[0], key) for key, g in members.items() if len(g) < min_size]
    heapq.heapify(small)
    next_key, merged = len(members), 0
    while len(members) > 1 and small:
        _, _, key = heapq.heappop(small)
        if key not in members:
            continue
        group, centre = members[key], centroids[key]
        distance = {k: float(np.linalg.norm(centroids[k] - centre)) for k in index.nearest(centre, exclude=key)}
        target = min(distance, key=lambda k: (distance[k], members[k][0]))
        if cap is not None and len(group) + len(members[target]) > cap:
            continue  # kept as it is: never taken again
        union = tuple(sorted(group + members[target]))
        logger.info(format_message("groups_merged", size=len(group), merged=len(union)))
        for old in (key, target):
            index.remove(old)
            del members[old], centroids[old]
        members[next_key], centroids[next_key] = union, _centroid(xyz, union)
        index.add(next_key, centroids[next_key])
        if len(union) < min_size:
            heapq.heappush(small, (len(union), union[0], next_key))
        next_key += 1
        merged += 1
    return sorted(members.values(), key=lambda g: g[0]), merged
