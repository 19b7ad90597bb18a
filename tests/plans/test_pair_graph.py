"""The bounded pair selection: a subset of the overlapping pairs, as connected, bounded per box."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from zemosaic_dask.plans.overlaps import find_overlapping_pairs
from zemosaic_dask.plans.pair_graph import select_overlapping_pairs


def components(n, pairs):
    """A canonical labelling: each box labelled by the lowest index of its component."""
    edges = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    graph = csr_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    first = {}
    return [first.setdefault(label, k) for k, label in enumerate(labels.tolist())]


def degrees(n, pairs):
    return np.bincount(np.array(pairs, dtype=np.int64).reshape(-1), minlength=n)


def random_boxes(rng, n, extent, size_range):
    boxes = []
    for _ in range(n):
        h, w = rng.integers(*size_range, size=2)
        y0, x0 = rng.integers(0, extent, size=2)
        boxes.append((int(y0), int(y0 + h), int(x0), int(x0 + w)))
    return boxes


def deep_stack(rng, n, jitter=40.0, shape=(1080, 1920), centre=(5000, 5000)):
    """``n`` frames of one field, pointing jittered around one centre (a deep session)."""
    offsets = np.round(rng.normal(0.0, jitter, (n, 2))).astype(int) + np.array(centre)
    return [(int(y), int(y) + shape[0], int(x), int(x) + shape[1]) for y, x in offsets]


def largest_overlaps(boxes, i, k):
    """Brute force: the k boxes sharing the most pixels with box i (ties to the lower index)."""
    found = []
    for j, other in enumerate(boxes):
        dy = min(boxes[i][1], other[1]) - max(boxes[i][0], other[0])
        dx = min(boxes[i][3], other[3]) - max(boxes[i][2], other[2])
        if j != i and dy > 0 and dx > 0:
            found.append((-dy * dx, j))
    return [j for _, j in sorted(found)[:k]]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 3, 8])
def test_random_boxes_keep_components_and_a_bounded_count(seed, k):
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, 300, 1500, (20, 300))
    boxes.append((40, 40, 0, 100))  # an empty box pairs with nothing
    full = find_overlapping_pairs(boxes, min_overlap_px=4)
    # A small candidate limit sends the busiest boxes through the nearest-centre path too.
    selected = select_overlapping_pairs(boxes, k=k, min_overlap_px=4, max_candidates=16)
    assert selected == sorted(set(selected)) and set(selected) <= set(full)
    assert components(len(boxes), selected) == components(len(boxes), full)
    assert len(selected) <= k * len(boxes) + len(boxes) - 1
    assert len(selected) < len(full)
    assert select_overlapping_pairs(tuple(boxes), k=k, min_overlap_px=4, max_candidates=16) == selected


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 400), st.integers(1, 120), st.integers(0, 400), st.integers(1, 120)),
        min_size=0,
        max_size=60,
    ),
    st.integers(1, 6),
    st.integers(2, 40),
)
def test_property_subset_same_components_and_full_when_k_covers_every_neighbour(raw, k, limit):
    boxes = [(y, y + h, x, x + w) for y, h, x, w in raw]
    full = find_overlapping_pairs(boxes)
    selected = select_overlapping_pairs(boxes, k=k, max_candidates=limit)
    assert set(selected) <= set(full)
    assert components(len(boxes), selected) == components(len(boxes), full)
    most = int(degrees(len(boxes), full).max(initial=0))
    assert select_overlapping_pairs(boxes, k=max(most, 1)) == full  # nobody has more neighbours than k
    assert select_overlapping_pairs(boxes, k=None, max_candidates=limit) == full


def test_crowded_cells_still_give_every_pair_when_k_covers_it():
    """Boxes whose nearest centres miss an overlap (a long box among short ones) are compared in full."""
    boxes = [(152, 272, 32, 152), (152, 272, 32, 152), (59, 127, 202, 220), (271, 391, 151, 271)]
    full = find_overlapping_pairs(boxes)
    assert full == [(0, 1), (0, 3), (1, 3)]
    assert select_overlapping_pairs(boxes, k=None, max_candidates=2) == full
    assert select_overlapping_pairs(boxes, k=2, max_candidates=1) == full


def test_grid_of_tiles_with_eight_neighbours_is_unchanged():
    """A classic tile grid: interior tiles overlap 8 others, so k = 8 keeps every pair (small runs unchanged)."""
    step, size, n = 48, 64, 9
    boxes = [(r * step, r * step + size, c * step, c * step + size) for r in range(n) for c in range(n)]
    full = find_overlapping_pairs(boxes, min_overlap_px=8)
    assert degrees(len(boxes), full).max() == 8
    assert select_overlapping_pairs(boxes, k=8, min_overlap_px=8) == full
    fewer = select_overlapping_pairs(boxes, k=4, min_overlap_px=8)
    corners = {(i, j) for i, j in full if boxes[i][0] != boxes[j][0] and boxes[i][2] != boxes[j][2]}
    # Edge neighbours share 3x more pixels than corner ones: every tile keeps its edge neighbours,
    # and only border tiles (fewer than 4 edge neighbours) fill up with corner ones.
    assert set(full) - corners <= set(fewer)
    border = {k for k, box in enumerate(boxes) if 0 in box[::2] or (n - 1) * step in box[::2]}
    assert {(i, j) for i, j in set(fewer) & corners if i not in border and j not in border} == set()
    assert set(fewer) & corners


def test_deep_stack_is_bounded_connected_and_keeps_the_largest_overlaps():
    rng = np.random.default_rng(7)
    n, k = 1500, 6
    boxes = deep_stack(rng, n)
    selected = select_overlapping_pairs(boxes, k=k)
    assert len(selected) <= k * n + n - 1  # the full graph has n (n - 1) / 2 = 1,124,250 pairs
    assert degrees(n, selected).max() <= 3 * k
    assert set(components(n, selected)) == {0}
    chosen = set(selected)
    for i in rng.choice(n, 25, replace=False).tolist():
        for j in largest_overlaps(boxes, i, k - k // 2):  # the other k // 2 may go to other places
            assert (min(i, j), max(i, j)) in chosen, (i, j)


def panel_mosaic(rng, per_panel, columns=5, rows=2, shape=(1920, 1080), overlap=0.3, dither=6.0):
    """A Seestar-like mosaic: ``per_panel`` dithered frames on each panel of a ``rows x columns`` layout."""
    step_y, step_x = (1.0 - overlap) * shape[0], (1.0 - overlap) * shape[1]
    boxes, panels = [], []
    for _frame in range(per_panel):
        for panel in range(rows * columns):
            row, column = divmod(panel, columns)
            y, x = np.round(np.array([row * step_y, column * step_x]) + rng.normal(0.0, dither, 2)).astype(int)
            boxes.append((int(y), int(y) + shape[0], int(x), int(x) + shape[1]))
            panels.append(panel)
    return boxes, np.array(panels)


@pytest.mark.parametrize(("per_panel", "limit"), [(16, 64), (100, 64)])
def test_deep_panels_are_joined_by_many_frames_on_both_sides(per_panel, limit):
    """Every panel boundary is crossed by many pairs of different frames, not one or two pairs.

    With the k largest overlaps only, a frame of 16 dithered frames per panel keeps its own
    panel's 15 frames and one other: the two rows of a 5 x 2 mosaic were joined by one pair,
    and their relative tilts and bends rested on that pair's noise.
    """
    rng = np.random.default_rng(per_panel)
    boxes, panels = panel_mosaic(rng, per_panel)
    selected = select_overlapping_pairs(boxes, k=16, min_overlap_px=32, max_candidates=limit)
    full = find_overlapping_pairs(boxes, min_overlap_px=32)
    n = len(boxes)
    assert len(selected) <= 16 * n + n - 1
    assert degrees(n, selected).max() <= 3 * 16
    links = {}
    for i, j in selected:
        if panels[i] != panels[j]:
            links.setdefault(tuple(sorted((int(panels[i]), int(panels[j])))), []).append((i, j))
    # Panels that share a side (a third of a frame) are joined; corner overlaps (9 %) may be too.
    sides = {tuple(sorted((int(panels[i]), int(panels[j])))) for i, j in full if panels[i] != panels[j]}
    sides = {(a, b) for a, b in sides if b - a == 1 and a // 5 == b // 5 or b - a == 5}
    assert len(sides) == 13
    for side in sides:
        pairs = links.get(side, [])
        left = {i if panels[i] == side[0] else j for i, j in pairs}
        right = {j if panels[j] == side[1] else i for i, j in pairs}
        assert len(pairs) >= per_panel and len(left) >= 8 and len(right) >= 8, (side, len(pairs), len(left), len(right))


def test_two_crowded_stacks_touching_by_a_sliver_stay_linked_and_apart_stay_apart():
    rng = np.random.default_rng(3)
    left = [(0, 100, int(x), int(x) + 100) for x in rng.integers(0, 6, 300)]
    touching = [(0, 100, int(x), int(x) + 100) for x in rng.integers(103, 110, 300)]  # 1-2 px in common
    selected = select_overlapping_pairs(left + touching, k=4, max_candidates=32)
    full = find_overlapping_pairs(left + touching)
    assert set(components(600, selected)) == {0} and set(components(600, full)) == {0}
    bridges = [(i, j) for i, j in selected if i < 300 <= j]
    assert len(bridges) == 1  # one link joins the stacks: the largest of the few overlapping pairs
    i, j = bridges[0]
    assert left[i][3] == max(box[3] for box in left) and touching[j - 300][2] == min(box[2] for box in touching)
    apart = [(0, 100, int(x), int(x) + 100) for x in rng.integers(112, 118, 300)]
    separate = select_overlapping_pairs(left + apart, k=4, max_candidates=32)
    assert sorted(set(components(600, separate))) == [0, 300]


def test_rejects_bad_parameters():
    with pytest.raises(ValueError, match="k must be >= 1"):
        select_overlapping_pairs([(0, 5, 0, 5), (1, 6, 1, 6)], k=0)
    with pytest.raises(ValueError, match="max_candidates"):
        select_overlapping_pairs([(0, 5, 0, 5), (1, 6, 1, 6)], max_candidates=0)
    with pytest.raises(ValueError, match="cell"):
        select_overlapping_pairs([(0, 5, 0, 5), (1, 6, 1, 6)], cell=0)
    assert select_overlapping_pairs([]) == [] and select_overlapping_pairs([(0, 5, 0, 5)]) == []
