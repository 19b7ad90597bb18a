"""A bounded set of overlapping pairs: each box's strongest overlaps, with every link kept.

:func:`~zemosaic_dask.plans.overlaps.find_overlapping_pairs` returns every overlapping pair.
For a deep session (thousands of frames of one field, each overlapping all the others) that is
``N (N - 1) / 2`` pairs: 319,600 for 4,000 frames, each one a fit and a row of the global solve.
The solve needs far fewer: each box with a handful of well-measured links, and the graph of
links as connected as the full overlap graph (a box the full graph reaches must stay reachable,
or its gain and offset could not be solved).

:func:`select_overlapping_pairs` keeps, for each box, ``k`` overlapping boxes, then adds the
largest-area overlaps that join what those links leave apart, so that the selected graph has
the connected components of the full one. Pairs per box are bounded, hence ``O(N k)`` pairs.
When no box has more than ``k`` overlapping neighbours the selection *is* the full pair set,
so small runs are unchanged.

The ``k`` are chosen in two passes. Largest areas alone would be wrong for a mosaic of deep
panels: with 16 dithered frames per panel, a frame's 15 largest overlaps are its own panel's
frames, and two panels end up joined by one or two pairs. What is measured across a panel
boundary (the panels' relative offsets and, through a strip a third of a frame wide, their
relative slopes) then rests on one pair's noise, and the mosaic bends panel by panel. So a
box first takes the largest overlap in each other *place* (box centres snapped to a lattice of
:data:`PLACE_STEP` box sizes), up to ``k // 2`` places and only overlaps of at least
:data:`MIN_PLACE_FRACTION` of its area (a sliver measures nothing); the rest of the ``k`` go to
the largest overlaps left.

Candidates come from the grid-bucket index of :mod:`~zemosaic_dask.plans.overlaps`; a box whose
cells hold more than ``max_candidates`` entries (a deep stack) is compared only with the
``max_candidates`` boxes whose centres are nearest to its own (a k-d tree), so no bucket's
pairs are ever all enumerated. Links that the limited candidates might miss are recovered by
checking, bucket by bucket, whether boxes of different components overlap (pruned by the
components' bounding boxes). Pure numpy/scipy; no dask, no I/O.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from statistics import median

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["DEFAULT_PAIR_NEIGHBOURS", "MIN_PLACE_FRACTION", "PLACE_STEP", "select_overlapping_pairs"]

#: Default number of overlaps kept per box (``zemosaic.calibration.pair-neighbours``).
DEFAULT_PAIR_NEIGHBOURS = 16
#: Lattice step, in box heights and widths, of the places box centres are snapped to.
PLACE_STEP = 0.1
#: Smallest overlap, as a fraction of the box's own area, that the first pass takes for a place.
MIN_PLACE_FRACTION = 0.05
#: Members of each nearby place a crowded box is also compared with.
_PER_PLACE = 4


class _Forest:
    """Union-find over box indices (path halving, union by index for determinism)."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, a: int) -> int:
        parent = self.parent
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        self.parent[max(ra, rb)] = min(ra, rb)
        return True

    def labels(self, members: np.ndarray) -> np.ndarray:
        return np.array([self.find(int(m)) for m in members], dtype=np.int64)


def select_overlapping_pairs(
    boxes: Sequence[Sequence[int]],
    *,
    k: int | None = DEFAULT_PAIR_NEIGHBOURS,
    min_overlap_px: int = 1,
    cell: int | None = None,
    max_candidates: int = 64,
) -> list[tuple[int, int]]:
    """Select at most about ``k`` overlapping partners per box, keeping the overlap graph connected.

    Parameters
    ----------
    boxes : sequence of tuple of int
        ``(y0, y1, x0, x1)`` half-open boxes of the output grid; an empty box overlaps nothing.
    k : int or None, optional
        Overlaps kept per box: the largest in each other place first (at most ``k // 2``),
        then the largest by area (ties to the lower index), so the ``k - k // 2`` largest are
        always kept. A pair is selected when either of its boxes keeps it, so a box may end up
        in more than ``k`` pairs, but the total is at most ``N k`` plus the ``N - 1`` links of
        the forest. None selects every overlapping pair.
    min_overlap_px : int, optional
        Smallest overlap, in pixels along each axis, for a pair to count (as in
        :func:`~zemosaic_dask.plans.overlaps.find_overlapping_pairs`).
    cell : int, optional
        Side of the bucket index's cells; defaults to the median of the boxes' longer sides.
    max_candidates : int, optional
        A box whose cells hold more entries than this is compared only with the boxes whose
        centres are the ``max_candidates`` nearest to its own and with a few members of every
        place near it, as long as at least ``k`` of those overlap it; otherwise (and always
        when ``k`` is None) with every member of its cells.

    Returns
    -------
    list of tuple of int
        ``(i, j)`` pairs with ``i < j``, sorted; a subset of the full overlapping pairs with
        the same connected components, the same for the same boxes. Equal to
        :func:`~zemosaic_dask.plans.overlaps.find_overlapping_pairs` when no box overlaps more
        than ``k`` others.

    Raises
    ------
    ValueError
        When ``k``, ``min_overlap_px``, ``cell`` or ``max_candidates`` is below 1.

    Examples
    --------
    >>> stack = [(0, 100, x, x + 100) for x in range(0, 10)]
    >>> len(select_overlapping_pairs(stack, k=2)) < 45
    True
    >>> select_overlapping_pairs([(0, 10, 0, 10), (0, 10, 7, 17), (0, 10, 20, 30)], k=2)
    [(0, 1)]
    """
    for name, value in (("k", k), ("min_overlap_px", min_overlap_px), ("max_candidates", max_candidates)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    array = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    valid = np.flatnonzero((array[:, 1] > array[:, 0]) & (array[:, 3] > array[:, 2]))
    if len(valid) < 2:
        return []
    if cell is None:
        cell = max(1, int(median(np.maximum(array[valid, 1] - array[valid, 0], array[valid, 3] - array[valid, 2]))))
    elif cell < 1:
        raise ValueError(f"cell must be >= 1 pixel, got {cell}")
    buckets = _buckets(array, valid, cell)
    places = _places(array, valid)
    index = _Candidates(array, valid, buckets, max_candidates, places)
    forest = _Forest(len(array))
    load = np.zeros(len(array), dtype=np.int64)  # times each box was taken for its place
    selected: set[tuple[int, int]] = set()
    spare: list[np.ndarray] = []  # overlaps seen but not kept: rows (i, j, area)
    for i in valid.tolist():
        partners, areas = index.overlaps(i, min_overlap_px, want=k)
        order = np.lexsort((partners, -areas))
        if k is not None and len(order) > k:
            order = _spread_order(i, partners, areas, order, places, load, array, k)
        for j in partners[order[:k] if k is not None else order].tolist():
            selected.add((i, j) if i < j else (j, i))
            forest.union(i, j)
        if k is not None and len(order) > k:
            rest = order[k:]
            spare.append(np.stack([np.full(len(rest), i), partners[rest], areas[rest]], axis=1))
    if spare:
        selected |= _join_components(np.concatenate(spare), forest)
    if index.crowded:
        selected |= _join_missed_overlaps(array, buckets, index.crowded, forest, min_overlap_px)
    return sorted(selected)


def _buckets(array: np.ndarray, valid: np.ndarray, cell: int) -> dict[tuple[int, int], list[int]]:
    buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
    for k in valid.tolist():
        y0, y1, x0, x1 = (int(v) for v in array[k])
        for cy in range(y0 // cell, (y1 - 1) // cell + 1):
            for cx in range(x0 // cell, (x1 - 1) // cell + 1):
                buckets[(cy, cx)].append(k)
    return buckets


class _Candidates:
    """Each box's overlapping candidates: its buckets' members, or its nearest centres when crowded."""

    def __init__(
        self,
        array: np.ndarray,
        valid: np.ndarray,
        buckets: dict[tuple[int, int], list[int]],
        limit: int,
        places: np.ndarray,
    ) -> None:
        self.array = array
        self.cells: dict[int, list[list[int]]] = defaultdict(list)
        for members in buckets.values():
            for k in members:
                self.cells[k].append(members)
        self.crowded = {k for k in valid.tolist() if sum(len(m) for m in self.cells[k]) > limit}
        self.nearest: dict[int, np.ndarray] = {}
        self.places: dict[int, np.ndarray] = {}
        if self.crowded:
            ordered = sorted(self.crowded)
            position = np.searchsorted(valid, ordered)
            centres = _scaled_centres(array[valid])
            _, nearest = cKDTree(centres).query(centres[position], k=min(limit + 1, len(valid)), p=1)
            rows = valid[np.asarray(nearest).reshape(len(ordered), -1)].astype(np.int32)  # held per query
            self.nearest = dict(zip(ordered, rows, strict=True))
            near_places = _place_members(centres, places[valid], valid, centres[position])
            self.places = dict(zip(ordered, near_places, strict=True))

    def overlaps(self, i: int, min_overlap_px: int, want: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Candidates of box ``i`` that overlap it by ``min_overlap_px``, and the overlap areas.

        A crowded box's nearest centres are enough when at least ``want`` of them overlap it (a
        deep stack); when fewer do, or ``want`` is None (every pair), its buckets' members are
        all compared, so a box with at most ``want`` overlaps always gets every one of them.
        """
        if i in self.nearest:
            partners, areas = self._overlapping(i, self.nearest[i], min_overlap_px)
            # Members of the places around (for the first pass), where they share enough to count.
            extra, extra_areas = self._overlapping(i, np.setdiff1d(self.places[i], partners), min_overlap_px)
            keep = extra_areas >= _least_place_area(self.array[i])
            if keep.any():
                partners = np.concatenate([partners, extra[keep]])
                areas = np.concatenate([areas, extra_areas[keep]])
            if want is not None and len(partners) >= want:
                return partners, areas
        members = np.unique(np.concatenate([np.asarray(m, dtype=np.int64) for m in self.cells[i]]))
        return self._overlapping(i, members, min_overlap_px)

    def _overlapping(self, i: int, partners: np.ndarray, min_overlap_px: int) -> tuple[np.ndarray, np.ndarray]:
        partners = partners[partners != i]
        box, others = self.array[i], self.array[partners]
        dy = np.minimum(box[1], others[:, 1]) - np.maximum(box[0], others[:, 0])
        dx = np.minimum(box[3], others[:, 3]) - np.maximum(box[2], others[:, 2])
        hit = (dy >= min_overlap_px) & (dx >= min_overlap_px)
        return partners[hit], (dy * dx)[hit]


def _places(array: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """A place id per box (-1 for an empty one): its scaled centre snapped to the :data:`PLACE_STEP` lattice."""
    places = np.full(len(array), -1, dtype=np.int64)
    keys = np.floor(_scaled_centres(array[valid]) / PLACE_STEP).astype(np.int64)
    places[valid] = np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1)
    return places


def _place_members(centres: np.ndarray, places: np.ndarray, boxes: np.ndarray, queries: np.ndarray) -> list[np.ndarray]:
    """For each query centre, up to :data:`_PER_PLACE` boxes of every place that could overlap it.

    Two boxes of the median size overlap only when their scaled centres are less than 1 apart
    on each axis; places within 2 are taken, so larger boxes are covered too. Each place is
    represented by its members nearest the query (ties to the lower index). The work is done
    place by place for all the queries near it at once (a deep field has 15,681 queries, each
    near about 150 places: one small sort per query and place took 22 s).
    """
    ids, rank = np.unique(places, return_inverse=True)
    counts = np.bincount(rank, minlength=len(ids))
    sums = np.zeros((len(ids), 2))
    np.add.at(sums, rank, centres)
    place_centres = sums / counts[:, None]
    # Indices as int32: the picked (query, row) lists reach millions of entries on a deep field.
    members = np.split(np.argsort(rank, kind="stable").astype(np.int32), np.cumsum(counts)[:-1])  # rows ascending
    near = cKDTree(place_centres).query_ball_point(queries, r=2.0, p=np.inf)
    query_of = np.repeat(np.arange(len(queries), dtype=np.int32), [len(n) for n in near])
    place_of = np.concatenate([np.asarray(n, dtype=np.int32) for n in near]) if len(near) else np.zeros(0, np.int32)
    by_place = np.argsort(place_of, kind="stable")
    starts = np.searchsorted(place_of[by_place], np.arange(len(ids) + 1))
    picked_query, picked_row = [], []
    for place in range(len(ids)):
        near_queries = query_of[by_place[starts[place] : starts[place + 1]]]
        rows = members[place]
        if not len(near_queries):
            continue
        if len(rows) <= _PER_PLACE:
            picked_query.append(np.repeat(near_queries, len(rows)))
            picked_row.append(np.tile(rows, len(near_queries)))
            continue
        block = max(1, (1 << 20) // len(rows))  # queries per distance matrix (at most 1 Mi entries, 8 MB)
        member_y, member_x = centres[rows, 0][None, :], centres[rows, 1][None, :]
        for start in range(0, len(near_queries), block):
            chunk = near_queries[start : start + block]
            distance = np.abs(member_y - queries[chunk, 0][:, None]) + np.abs(member_x - queries[chunk, 1][:, None])
            picked_query.append(np.repeat(chunk, _PER_PLACE))
            picked_row.append(rows[_smallest(distance, _PER_PLACE)].ravel())
    if not picked_query:
        return [np.zeros(0, dtype=np.int32) for _ in range(len(queries))]
    query_all, row_all = np.concatenate(picked_query), np.concatenate(picked_row)
    del picked_query, picked_row
    order = np.argsort(query_all, kind="stable")
    bounds = np.searchsorted(query_all[order], np.arange(len(queries) + 1))
    row_all = boxes.astype(np.int32)[row_all[order]]
    del order, query_all
    return [row_all[bounds[q] : bounds[q + 1]] for q in range(len(queries))]


def _smallest(distance: np.ndarray, count: int) -> np.ndarray:
    """Columns of the ``count`` smallest values of each row (more than ``count`` columns), ties to the lower column.

    The same columns as a stable sort's first ``count``, from a partition.
    """
    cut = np.partition(distance, count - 1, axis=1)[:, count - 1 : count]
    below = distance <= cut
    out = np.empty((len(distance), count), dtype=np.int64)
    exact = below.sum(axis=1) == count
    out[exact] = np.nonzero(below[exact])[1].reshape(-1, count)
    tied = np.flatnonzero(~exact)  # more than ``count`` values at the cut: order them as a stable sort does
    if len(tied):
        out[tied] = np.argsort(np.where(below[tied], distance[tied], np.inf), axis=1, kind="stable")[:, :count]
    return out


def _least_place_area(box: np.ndarray) -> float:
    """The smallest overlap with ``box`` that represents a place (:data:`MIN_PLACE_FRACTION` of its area)."""
    return MIN_PLACE_FRACTION * float(box[1] - box[0]) * float(box[3] - box[2])


def _spread_order(
    i: int,
    partners: np.ndarray,
    areas: np.ndarray,
    order: np.ndarray,
    places: np.ndarray,
    load: np.ndarray,
    array: np.ndarray,
    k: int,
) -> np.ndarray:
    """``order`` (largest area first) with one overlap of each other place moved to the front.

    At most ``k // 2`` places are taken, in order of their largest overlap, and only overlaps
    of at least :data:`MIN_PLACE_FRACTION` of box ``i``'s own area. Within a place the member
    taken least often so far wins (then the larger overlap, then the lower index), and a box
    already taken ``k // 2`` times is passed over, so that a panel boundary is crossed by many
    different boxes on both sides and a lone box does not become a hub; ``load`` counts the
    times each box was taken and is updated.
    """
    least = _least_place_area(array[i])
    usable = order[(places[partners[order]] != places[i]) & (areas[order] >= least) & (load[partners[order]] < k // 2)]
    first: list[int] = []
    seen: set[int] = set()
    for position in usable.tolist():  # places in order of their largest overlap
        place = int(places[partners[position]])
        if place in seen:
            continue
        seen.add(place)
        members = usable[places[partners[usable]] == place]
        choice = members[np.lexsort((partners[members], -areas[members], load[partners[members]]))[0]]
        load[partners[choice]] += 1
        first.append(int(choice))
        if len(first) >= k // 2:
            break
    if not first:
        return order
    taken = np.zeros(len(partners), dtype=bool)
    taken[first] = True
    return np.concatenate([np.asarray(first, dtype=order.dtype), order[~taken[order]]])


def _scaled_centres(boxes: np.ndarray) -> np.ndarray:
    """Box centres in units of the median box height and width.

    Two boxes of size ``h x w`` offset by ``(dy, dx)`` share ``(h - |dy|) (w - |dx|)`` pixels,
    about ``h w (1 - |dy| / h - |dx| / w)``: the nearest centres in this scale and the city-block
    metric are the largest overlaps.
    """
    height = max(float(np.median(boxes[:, 1] - boxes[:, 0])), 1.0)
    width = max(float(np.median(boxes[:, 3] - boxes[:, 2])), 1.0)
    return np.stack([(boxes[:, 0] + boxes[:, 1]) / (2 * height), (boxes[:, 2] + boxes[:, 3]) / (2 * width)], axis=1)


def _join_components(spare: np.ndarray, forest: _Forest) -> set[tuple[int, int]]:
    """The largest-area overlaps among ``spare`` that join components (Kruskal's maximum forest)."""
    roots = np.array([forest.find(v) for v in range(len(forest.parent))], dtype=np.int64)
    spare = spare[roots[spare[:, 0]] != roots[spare[:, 1]]]
    low, high = np.minimum(spare[:, 0], spare[:, 1]), np.maximum(spare[:, 0], spare[:, 1])
    added: set[tuple[int, int]] = set()
    for p in np.lexsort((high, low, -spare[:, 2])).tolist():
        if forest.union(int(low[p]), int(high[p])):
            added.add((int(low[p]), int(high[p])))
    return added


def _join_missed_overlaps(
    array: np.ndarray,
    buckets: dict[tuple[int, int], list[int]],
    crowded: set[int],
    forest: _Forest,
    min_overlap_px: int,
) -> set[tuple[int, int]]:
    """Links between components that overlap in a bucket holding a crowded box (its candidates were limited).

    Within such a bucket, the members of one component are tested against the others only
    where the component's bounding box reaches them, so two stacks apart cost one comparison
    per box; of the overlaps found, the largest joins the two components.
    """
    added: set[tuple[int, int]] = set()
    for key in sorted(buckets):
        members = np.asarray(buckets[key], dtype=np.int64)
        if len(members) < 2 or not crowded.intersection(members.tolist()):
            continue
        labels = forest.labels(members)
        apart: set[int] = set()  # components that overlap no other one in this bucket
        while len(np.unique(labels)) > 1:
            open_labels = [int(v) for v in np.unique(labels) if int(v) not in apart]
            if not open_labels:
                break
            inside = labels == open_labels[0]
            edge = _largest_cross_overlap(array, members[inside], members[~inside], min_overlap_px)
            if edge is None:
                apart.add(open_labels[0])
                continue
            forest.union(*edge)
            added.add(edge)
            labels = forest.labels(members)
    return added


def _largest_cross_overlap(
    array: np.ndarray, group: np.ndarray, others: np.ndarray, min_overlap_px: int
) -> tuple[int, int] | None:
    """The pair of largest overlap area between ``group`` and ``others`` (None when they share no pixel)."""
    if not len(others):
        return None
    g, o = array[group], array[others]
    reach = (
        (np.minimum(g[:, 1].max(), o[:, 1]) - np.maximum(g[:, 0].min(), o[:, 0]) >= min_overlap_px)
        & (np.minimum(g[:, 3].max(), o[:, 3]) - np.maximum(g[:, 2].min(), o[:, 2]) >= min_overlap_px)
    )  # fmt: skip
    others, o = others[reach], o[reach]
    best: tuple[int, int, int] | None = None  # (-area, i, j)
    chunk = max(1, 1_000_000 // len(group))  # about 40 MB of temporaries at a time
    for start in range(0, len(others), chunk):
        part = o[start : start + chunk]
        dy = np.minimum(g[:, None, 1], part[None, :, 1]) - np.maximum(g[:, None, 0], part[None, :, 0])
        dx = np.minimum(g[:, None, 3], part[None, :, 3]) - np.maximum(g[:, None, 2], part[None, :, 2])
        area = np.where((dy >= min_overlap_px) & (dx >= min_overlap_px), dy * dx, 0)
        if not area.any():
            continue
        a, b = np.unravel_index(int(np.argmax(area)), area.shape)
        i, j = int(group[a]), int(others[start + b])
        candidate = (-int(area[a, b]), min(i, j), max(i, j))
        best = candidate if best is None else min(best, candidate)
    return None if best is None else (best[1], best[2])
