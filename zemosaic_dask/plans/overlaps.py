"""Which layers overlap: a grid-bucket spatial index over boxes of the global output grid.

A *layer* (a master tile in classic mode, a batch mosaic in SDS mode) covers a box
``(y0, y1, x0, x1)`` of the output grid, half-open like Python slices (rows ``y0 .. y1 - 1``).
Inter-tile calibration fits one affine relation per overlapping pair, so the pairs must be
found for thousands of layers without comparing every box with every other one: each box is
registered in the square cells of a coarse grid that it touches, and only boxes sharing a cell
are compared. With boxes of similar size and a cell near their size, each box meets a handful
of others and the search costs O(n), not O(n^2).

Pure Python; no dask, no I/O.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from statistics import median

__all__ = ["Box", "box_slices", "find_overlapping_pairs", "overlap_box"]

#: ``(y0, y1, x0, x1)`` in output-grid pixels, half-open.
Box = tuple[int, int, int, int]


def overlap_box(box_i: Sequence[int], box_j: Sequence[int]) -> Box | None:
    """Return the intersection of two half-open boxes, or None when they do not overlap.

    Parameters
    ----------
    box_i, box_j : tuple of int
        ``(y0, y1, x0, x1)`` boxes of the output grid.

    Returns
    -------
    tuple of int or None
        ``(y0, y1, x0, x1)`` of the common pixels; None when the boxes only touch or are apart.

    Examples
    --------
    >>> overlap_box((0, 10, 0, 10), (5, 20, 8, 30))
    (5, 10, 8, 10)
    >>> overlap_box((0, 10, 0, 10), (10, 20, 0, 10)) is None
    True
    """
    y0, y1 = max(box_i[0], box_j[0]), min(box_i[1], box_j[1])
    x0, x1 = max(box_i[2], box_j[2]), min(box_i[3], box_j[3])
    if y1 <= y0 or x1 <= x0:
        return None
    return (int(y0), int(y1), int(x0), int(x1))


def box_slices(box: Sequence[int], inner: Sequence[int]) -> tuple[slice, slice]:
    """Return the ``(rows, cols)`` slices that cut ``inner`` out of an array covering ``box``.

    ``inner`` must lie inside ``box`` (an overlap box from :func:`overlap_box` does).

    Raises
    ------
    ValueError
        When ``inner`` is not inside ``box``.

    Examples
    --------
    >>> box_slices((100, 200, 50, 150), (120, 140, 50, 60))
    (slice(20, 40, None), slice(0, 10, None))
    """
    if not (box[0] <= inner[0] <= inner[1] <= box[1] and box[2] <= inner[2] <= inner[3] <= box[3]):
        raise ValueError(f"box {tuple(inner)} is not inside box {tuple(box)}; pass the overlap of the two layers")
    return slice(inner[0] - box[0], inner[1] - box[0]), slice(inner[2] - box[2], inner[3] - box[2])


def find_overlapping_pairs(
    boxes: Sequence[Sequence[int]], *, min_overlap_px: int = 1, cell: int | None = None
) -> list[tuple[int, int]]:
    """Find every pair of boxes that overlap, through a grid-bucket index.

    Parameters
    ----------
    boxes : sequence of tuple of int
        ``(y0, y1, x0, x1)`` half-open boxes of the output grid, one per layer; an empty box
        (``y1 <= y0`` or ``x1 <= x0``) overlaps nothing.
    min_overlap_px : int, optional
        Smallest overlap, in pixels along **each** axis, for a pair to count (default 1: any
        common pixel). A sliver a few pixels wide cannot hold enough sky to fit a pair.
    cell : int, optional
        Side of the index's square cells in pixels; defaults to the median of the boxes' longer
        sides, so that a box touches about four cells.

    Returns
    -------
    list of tuple of int
        ``(i, j)`` index pairs with ``i < j``, sorted; the same boxes always give the same list.

    Raises
    ------
    ValueError
        When ``min_overlap_px`` or ``cell`` is below 1.

    Examples
    --------
    >>> find_overlapping_pairs([(0, 10, 0, 10), (0, 10, 7, 17), (0, 10, 20, 30)])
    [(0, 1)]
    """
    if min_overlap_px < 1:
        raise ValueError(f"min_overlap_px must be >= 1, got {min_overlap_px}")
    valid = [k for k, box in enumerate(boxes) if box[1] > box[0] and box[3] > box[2]]
    if len(valid) < 2:
        return []
    if cell is None:
        cell = max(1, int(median(max(boxes[k][1] - boxes[k][0], boxes[k][3] - boxes[k][2]) for k in valid)))
    elif cell < 1:
        raise ValueError(f"cell must be >= 1 pixel, got {cell}")

    buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
    for k in valid:
        y0, y1, x0, x1 = boxes[k]
        for cy in range(y0 // cell, (y1 - 1) // cell + 1):
            for cx in range(x0 // cell, (x1 - 1) // cell + 1):
                buckets[(cy, cx)].append(k)

    pairs: set[tuple[int, int]] = set()
    for members in buckets.values():
        for a, i in enumerate(members):
            box_i = boxes[i]
            for j in members[a + 1 :]:
                box_j = boxes[j]
                dy = min(box_i[1], box_j[1]) - max(box_i[0], box_j[0])
                dx = min(box_i[3], box_j[3]) - max(box_i[2], box_j[2])
                if dy >= min_overlap_px and dx >= min_overlap_px:
                    pairs.add((i, j) if i < j else (j, i))
    return sorted(pairs)
