"""Pre-planned SDS groups (``zemosaic.sds.preplan``): lists of paths mapped to frame indices.

A pre-plan replaces the SDS closing policy only when it names every input frame exactly
once; otherwise it is refused with a reason the run logs and records.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = ["resolve_preplan_groups"]


def resolve_preplan_groups(
    paths: Sequence[str], preplan: Sequence[Sequence[str]]
) -> tuple[tuple[tuple[int, ...], ...] | None, str | None]:
    """Map pre-planned groups of paths to frame indices, if they cover every frame exactly once.

    Parameters
    ----------
    paths : sequence of str
        Paths of the input frames, in frame-index order.
    preplan : sequence of sequence of str
        The already-loaded JSON list of lists of paths.

    Returns
    -------
    groups : tuple of tuple of int or None
        The groups as frame indices (order preserved), or None when refused.
    reason : str or None
        Why the groups were refused; None when they are used.
    """
    index = {os.path.normpath(p): i for i, p in enumerate(paths)}
    if not isinstance(preplan, Sequence) or isinstance(preplan, str) or not preplan:
        return None, "pre-planned groups are empty or not a list of lists of paths"
    groups: list[tuple[int, ...]] = []
    seen: set[int] = set()
    for number, group in enumerate(preplan):
        if isinstance(group, str) or not isinstance(group, Sequence) or not all(isinstance(p, str) for p in group):
            return None, f"group {number} is not a list of paths"
        if not group:
            return None, f"group {number} is empty"
        members = []
        for path in group:
            key = os.path.normpath(path)
            if key not in index:
                return None, f"group {number} names {path}, which is not among the input frames"
            if index[key] in seen:
                return None, f"frame {path} appears more than once in the pre-planned groups"
            seen.add(index[key])
            members.append(index[key])
        groups.append(tuple(members))
    missing = [i for i in range(len(paths)) if i not in seen]
    if missing:
        return None, f"{len(missing)} input frame(s) are in no pre-planned group, e.g. {paths[missing[0]]}"
    return tuple(groups), None
