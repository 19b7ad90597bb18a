"""SDS batches spread over the whole field whatever the file order; the coverage mask keeps the field."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from plan_sky import make_frame, offset_position

from zemosaic_dask.plans import SdsPlan, SdsPolicy, batch_by_coverage, plan_output_grid, plan_sds_batches
from zemosaic_dask.plans.footprints import coverage_cells_for_grid, frame_footprint_pixels, rasterize_polygon
from zemosaic_dask.plans.sds import SdsBatch, merge_undercovered
from zemosaic_dask.plans.sds_mask import SdsMaskSummary, plan_layer_counts, sds_mask_min_layers, sds_masked_fraction
from zemosaic_dask.plans.sds_spread import cluster_frames, footprint_geometry, spread_order

POLICY = SdsPolicy()  # 0.92, min 5, target 10: the defaults


def _panels(n_rows, n_cols, per_panel, *, seed=0, counts=None):
    """Frames of an ``n_rows`` x ``n_cols`` mosaic (20 % overlap, small dithers), in panel order."""
    rng = np.random.default_rng(seed)
    width, height = 80 * 2.4 / 3600, 120 * 2.4 / 3600
    frames = []
    for p in range(n_rows * n_cols):
        east = (p % n_cols - (n_cols - 1) / 2) * 0.8 * width
        north = (p // n_cols - (n_rows - 1) / 2) * 0.8 * height
        for k in range(per_panel if counts is None else counts[p]):
            e, n = rng.uniform(-0.0015, 0.0015, 2)
            frames.append(make_frame(*offset_position(80.0, 40.0, east + e, north + n), name=f"p{p}-{k}"))
    return frames


def _orders(frames, per_panel, n_panels, seed=1):
    panel_order = list(range(len(frames)))
    interleaved = [p * per_panel + k for k in range(per_panel) for p in range(n_panels)]
    shuffled = list(np.random.default_rng(seed).permutation(len(frames)))
    return {"panel": panel_order, "interleaved": interleaved, "shuffled": shuffled}


def _old_plan(frames, grid, policy):
    """Batches as the planner made them before spreading: the policy over the file order."""
    cells = coverage_cells_for_grid(grid)
    footprints = [rasterize_polygon(frame_footprint_pixels(f, grid), cells) for f in frames]
    return SdsPlan(tuple(batch_by_coverage(footprints, policy)), policy, "policy", cells)


@pytest.mark.parametrize("order_name", ["panel", "interleaved", "shuffled"])
def test_every_batch_covers_the_field_whatever_the_file_order(order_name):
    base = _panels(3, 3, 12)
    frames = [base[i] for i in _orders(base, 12, 9)[order_name]]
    grid = plan_output_grid(frames)
    plan = plan_sds_batches(frames, grid, POLICY)
    assert sorted(i for b in plan.batches for i in b.frames) == list(range(len(frames)))
    assert all(b.coverage_fraction >= POLICY.coverage_threshold for b in plan.batches)
    assert len(plan.batches) >= 10  # about one frame of each of the 9 panels per batch: 12 batches, not 1
    counts = plan_layer_counts(plan, frames, grid)
    assert sds_masked_fraction(counts, 0.4) < 0.03  # only the ragged dithered border


def test_panel_order_used_to_leave_most_batches_on_a_few_panels():
    """The failure the spreading fixes: in file order batches close at the target on 2-3 panels."""
    frames = _panels(3, 3, 12)
    grid = plan_output_grid(frames)
    old = _old_plan(frames, grid, POLICY)
    assert max(b.coverage_fraction for b in old.batches) < 0.6
    assert sds_masked_fraction(plan_layer_counts(old, frames, grid), 0.4) > 0.3


def test_panel_order_gives_the_batches_of_interleaved_order():
    base = _panels(2, 2, 6)
    orders = _orders(base, 6, 4)
    plans = {}
    for name in ("panel", "interleaved"):
        frames = [base[i] for i in orders[name]]
        plan = plan_sds_batches(frames, plan_output_grid(frames), SdsPolicy.from_values(0.92, 2, 10))
        plans[name] = [sorted(orders[name][i] for i in b.frames) for b in plan.batches]
    assert plans["panel"] == plans["interleaved"]
    assert [len(b) for b in plans["panel"]] == [4] * 6
    assert all(sorted(i // 6 for i in batch) == [0, 1, 2, 3] for batch in plans["panel"])  # one per panel


def test_unequal_panels_spread_the_small_panel_over_every_batch():
    frames = _panels(1, 2, 0, counts=[30, 6])
    plan = plan_sds_batches(frames, plan_output_grid(frames), POLICY)
    assert all(b.coverage_fraction >= POLICY.coverage_threshold for b in plan.batches)
    assert all(any(i >= 30 for i in b.frames) for b in plan.batches)  # each holds a frame of the small panel
    assert len(plan.batches) == 6


def test_a_field_wider_than_the_target_merges_batches_until_they_cover_it():
    frames = _panels(4, 4, 4)  # 16 panels: a batch of 10 cannot cover the field
    grid = plan_output_grid(frames)
    plan = plan_sds_batches(frames, grid, POLICY)
    assert all(b.coverage_fraction >= POLICY.coverage_threshold for b in plan.batches)
    assert "merged-coverage" in {b.closed_by for b in plan.batches}
    assert len(plan.batches) >= 2
    assert sds_masked_fraction(plan_layer_counts(plan, frames, grid), 0.4) < 0.03


def test_plan_is_deterministic_and_round_trips_for_shuffled_panels():
    base = _panels(3, 3, 8, seed=4)
    frames = [base[i] for i in _orders(base, 8, 9, seed=5)["shuffled"]]
    grid = plan_output_grid(frames)
    text = json.dumps(plan_sds_batches(frames, grid, POLICY).to_dict(), sort_keys=True)
    assert json.dumps(plan_sds_batches(frames, grid, POLICY).to_dict(), sort_keys=True) == text
    assert SdsPlan.from_dict(json.loads(text)).to_dict() == json.loads(text)


# --- spread order and clusters ---------------------------------------------------------------------------------


def _square(x0, y0, side):
    return np.array([[y, x0, x0 + side] for y in range(y0, y0 + side)], dtype=np.int64)


def test_footprint_geometry_of_a_square():
    assert footprint_geometry(_square(10, 20, 6)) == (12.5, 22.5, 6.0)


def test_spread_order_interleaves_panels_and_keeps_one_pointing_as_it_is():
    panel_order = [_square(0, 0, 40)] * 3 + [_square(40, 0, 40)] * 3 + [_square(0, 40, 40)] * 3
    assert spread_order(panel_order) == [0, 3, 6, 1, 4, 7, 2, 5, 8]
    assert spread_order([_square(k % 3, 0, 40) for k in range(7)]) == list(range(7))
    assert spread_order([]) == []
    # A panel with twice the frames comes twice as often.
    assert spread_order([_square(0, 0, 40)] * 4 + [_square(40, 0, 40)] * 2) == [0, 4, 1, 2, 5, 3]


def _brute_clusters(points, radius):
    leaders, labels = [], []
    for x, y in points:
        best = None
        for index, (lx, ly) in enumerate(leaders):
            d = math.hypot(x - lx, y - ly)
            if d <= radius and (best is None or d < best[0]):
                best = (d, index)
        if best is None:
            leaders.append((x, y))
            labels.append(len(leaders) - 1)
        else:
            labels.append(best[1])
    return labels


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-200, 200), st.integers(-200, 200)), min_size=1, max_size=60),
    st.sampled_from([3.0, 10.0, 37.5]),
)
def test_hash_grid_clusters_equal_a_brute_force_leader_search(points, radius):
    points = [(x / 4.0, y / 4.0) for x, y in points]
    assert cluster_frames(np.array(points), radius).tolist() == _brute_clusters(points, radius)


def test_cluster_radius_must_be_positive():
    with pytest.raises(ValueError, match="radius must be > 0"):
        cluster_frames(np.zeros((2, 2)), 0.0)


# --- merging batches below the threshold ------------------------------------------------------------------------


@st.composite
def batched_footprints(draw):
    n = draw(st.integers(1, 25))
    cells = [np.array(sorted(draw(st.sets(st.integers(0, 59), min_size=1, max_size=40)))) for _ in range(n)]
    minimum = draw(st.integers(1, 5))
    policy = SdsPolicy.from_values(draw(st.floats(0.2, 1.0)), minimum, minimum + draw(st.integers(0, 5)))
    return cells, policy


@settings(max_examples=120, deadline=None)
@given(batched_footprints())
def test_merged_batches_all_reach_the_threshold_and_keep_the_order(data):
    cells, policy = data
    batches = batch_by_coverage(cells, policy)
    merged = merge_undercovered(batches, cells, policy)
    assert [k for b in merged for k in b.frames] == [k for b in batches for k in b.frames]
    total = len(set().union(*(set(c.tolist()) for c in cells)))
    for batch in merged:
        covered = len(set().union(*(set(cells[k].tolist()) for k in batch.frames)))
        assert batch.coverage_fraction == pytest.approx(covered / total)
        assert batch.coverage_fraction >= policy.coverage_threshold
    kept = [b for b in batches if b.coverage_fraction >= policy.coverage_threshold]
    assert len(merged) <= len(batches) and (len(merged) == len(batches)) == (len(kept) == len(batches))


def test_merge_of_batches_below_the_threshold():
    cells = [np.array([0, 1]), np.array([2, 3]), np.array([0, 1, 2, 3]), np.array([0])]
    batches = [SdsBatch((0,), 0.5, "target"), SdsBatch((1,), 0.5, "target"), SdsBatch((2, 3), 1.0, "coverage")]
    merged = merge_undercovered(batches, cells, SdsPolicy.from_values(0.9, 1, 1))
    assert merged == [SdsBatch((0, 1), 1.0, "merged-coverage"), SdsBatch((2, 3), 1.0, "coverage")]
    tail = merge_undercovered([batches[2], SdsBatch((3,), 0.25, "end")], cells, SdsPolicy.from_values(0.9, 1, 1))
    assert tail == [SdsBatch((2, 3, 3), 1.0, "merged-leftover")]
    assert merge_undercovered([], cells, SdsPolicy()) == []


# --- the coverage mask's share of the union ---------------------------------------------------------------------


def test_masked_fraction_of_the_union():
    counts = np.array([[0, 1, 1, 4], [5, 5, 2, 0]])
    # max 5 layers, keep 0.4: pixels with fewer than 2 layers (the two 1s) of the 6 covered are masked.
    assert sds_mask_min_layers(5, 0.4) == pytest.approx(2.0)
    assert sds_masked_fraction(counts, 0.4) == pytest.approx(2 / 6)
    assert sds_masked_fraction(counts, 0.4, max_layers=10) == pytest.approx(3 / 6)  # mosaic-wide max 10: below 4
    assert sds_masked_fraction(counts, 0.0) == 0.0
    assert sds_masked_fraction(np.zeros((3, 3)), 0.4) == 0.0
    left, right = SdsMaskSummary.from_counts(counts[:, :2], 2.0), SdsMaskSummary.from_counts(counts[:, 2:], 2.0)
    assert left + right == SdsMaskSummary(6, 2)
    assert (left + right).to_dict() == {"union_pixels": 6, "masked_pixels": 2, "fraction": pytest.approx(1 / 3)}
    with pytest.raises(ValueError, match="min-coverage-keep"):
        sds_mask_min_layers(5, 1.5)
