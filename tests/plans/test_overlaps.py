"""Overlapping pairs through the grid-bucket index, against an all-pairs reference."""

from __future__ import annotations

import time

import numpy as np
import pytest

from zemosaic_dask.plans.overlaps import box_slices, find_overlapping_pairs, overlap_box


def brute_force_pairs(boxes, min_overlap_px=1):
    pairs = []
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            a, b = boxes[i], boxes[j]
            dy = min(a[1], b[1]) - max(a[0], b[0])
            dx = min(a[3], b[3]) - max(a[2], b[2])
            if dy >= min_overlap_px and dx >= min_overlap_px:
                pairs.append((i, j))
    return pairs


def random_boxes(rng, n, extent, size_range):
    boxes = []
    for _ in range(n):
        h, w = rng.integers(*size_range, size=2)
        y0, x0 = rng.integers(0, extent, size=2)
        boxes.append((int(y0), int(y0 + h), int(x0), int(x0 + w)))
    return boxes


def test_overlap_box_and_slices():
    assert overlap_box((0, 10, 0, 10), (5, 20, 8, 30)) == (5, 10, 8, 10)
    assert overlap_box((5, 20, 8, 30), (0, 10, 0, 10)) == (5, 10, 8, 10)
    assert overlap_box((0, 10, 0, 10), (10, 20, 0, 10)) is None  # touching edges share no pixel
    assert overlap_box((0, 10, 0, 10), (3, 4, 20, 30)) is None
    inner = overlap_box((100, 200, 50, 150), (120, 300, 0, 60))
    rows, cols = box_slices((100, 200, 50, 150), inner)
    image = np.arange(100 * 100).reshape(100, 100)
    cut = image[rows, cols]
    assert cut.shape == (inner[1] - inner[0], inner[3] - inner[2])
    assert cut[0, 0] == image[20, 0]
    with pytest.raises(ValueError, match="not inside"):
        box_slices((0, 10, 0, 10), (5, 15, 0, 5))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_brute_force_on_random_boxes(seed):
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, 300, 2000, (20, 400))  # mixed sizes: some boxes span many cells
    boxes.append((50, 50, 0, 100))  # empty box: overlaps nothing
    assert find_overlapping_pairs(boxes) == brute_force_pairs(boxes)
    assert find_overlapping_pairs(boxes, min_overlap_px=25) == brute_force_pairs(boxes, 25)
    assert find_overlapping_pairs(boxes, cell=7) == brute_force_pairs(boxes)


def test_grid_of_tiles_gives_edge_and_corner_neighbours():
    step, size, n = 48, 64, 5
    boxes = [(r * step, r * step + size, c * step, c * step + size) for r in range(n) for c in range(n)]
    pairs = find_overlapping_pairs(boxes)
    expected = sorted(
        (r1 * n + c1, r2 * n + c2)
        for r1 in range(n)
        for c1 in range(n)
        for r2 in range(n)
        for c2 in range(n)
        if (r1 * n + c1) < (r2 * n + c2) and abs(r1 - r2) <= 1 and abs(c1 - c2) <= 1
    )
    assert pairs == expected
    # A 16 px overlap along one axis but not 17: min_overlap_px is per axis.
    assert find_overlapping_pairs(boxes, min_overlap_px=17) == []


def test_deterministic_and_order_independent():
    rng = np.random.default_rng(5)
    boxes = random_boxes(rng, 200, 1000, (30, 120))
    pairs = find_overlapping_pairs(boxes)
    assert pairs == find_overlapping_pairs(list(boxes))
    assert all(i < j for i, j in pairs) and pairs == sorted(pairs)
    order = rng.permutation(len(boxes))
    shuffled = [boxes[k] for k in order]
    back = sorted(tuple(sorted((int(order[i]), int(order[j])))) for i, j in find_overlapping_pairs(shuffled))
    assert back == pairs


def test_four_thousand_boxes_is_fast():
    rng = np.random.default_rng(11)
    boxes = random_boxes(rng, 4000, 40_000, (400, 1200))
    start = time.perf_counter()
    pairs = find_overlapping_pairs(boxes)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"4000 boxes took {elapsed:.2f} s"
    assert len(pairs) > 4000  # a realistic density, not an empty search
    # Spot-check against the definition on a sample of boxes.
    found = set(pairs)
    for i in rng.choice(len(boxes), 40, replace=False):
        for j in range(len(boxes)):
            if i != j:
                a, b = sorted((int(i), j))
                assert ((a, b) in found) == (overlap_box(boxes[a], boxes[b]) is not None)


def test_rejects_bad_parameters():
    with pytest.raises(ValueError, match="min_overlap_px"):
        find_overlapping_pairs([(0, 1, 0, 1)], min_overlap_px=0)
    with pytest.raises(ValueError, match="cell"):
        find_overlapping_pairs([(0, 5, 0, 5), (1, 6, 1, 6)], cell=0)
    assert find_overlapping_pairs([]) == []
