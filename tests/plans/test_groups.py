"""Master-tile groups: sky clustering (RA-wrap safe), relaxation, cap splits, small-group merges."""

import json
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from plan_sky import angular_separation, brute_force_components, make_frame, offset_position

from zemosaic_dask.errors import ConfigError, PlanError
from zemosaic_dask.plans import (
    GroupingPolicy,
    GroupPlan,
    cluster_centres,
    group_centres,
    max_frames_for_memory,
    merge_small_groups,
    plan_master_groups,
    principal_axis_order,
)

PROPS = settings(max_examples=40, deadline=None)


@st.composite
def sky_layouts(draw):
    """Clusters of frame centres around random pointings, some across RA = 0 and near the pole."""
    n_clusters = draw(st.integers(1, 5))
    ra, dec = [], []
    for _ in range(n_clusters):
        ra0 = draw(st.sampled_from([0.0, 359.98, 10.0, 180.0, 250.0]))
        dec0 = draw(st.sampled_from([-30.0, 0.0, 45.0, 80.0]))
        size = draw(st.integers(1, 12))
        spread = draw(st.sampled_from([0.005, 0.02, 0.06, 0.3]))
        for _ in range(size):
            e = draw(st.floats(-spread, spread, allow_nan=False))
            n = draw(st.floats(-spread, spread, allow_nan=False))
            r, d = offset_position(ra0, dec0, e, n)
            ra.append(r)
            dec.append(d)
    return np.array(ra), np.array(dec)


@PROPS
@given(sky_layouts(), st.sampled_from([0.01, 0.03, 0.1]))
def test_clusters_match_brute_force_components(layout, threshold):
    ra, dec = layout
    # A pair at the threshold itself (to rounding) is linked or not depending on how the distance
    # is computed (chord or haversine): neither answer is wrong, so such layouts are not compared.
    n = len(ra)
    separations = [angular_separation(ra[i], dec[i], ra[j], dec[j]) for i in range(n) for j in range(i + 1, n)]
    assume(all(abs(s - threshold) > 1e-9 * threshold for s in separations))
    groups = cluster_centres(ra, dec, threshold)
    assert {frozenset(g) for g in groups} == brute_force_components(ra, dec, threshold)
    assert [g[0] for g in groups] == sorted(g[0] for g in groups)
    assert all(list(g) == sorted(g) for g in groups)


@PROPS
@given(sky_layouts(), st.integers(0, 15), st.integers(1, 4), st.booleans())
def test_groups_partition_frames_and_respect_cap(layout, cap, minimum, split):
    ra, dec = layout
    n = len(ra)
    minimum = min(minimum, cap) if cap else minimum
    dates = [f"2024-01-01T00:{i % 60:02d}:{i // 60:02d}" for i in range(n)]
    policy = GroupingPolicy.from_values(0.03, cap, minimum)
    plan = group_centres(np.column_stack([ra, dec]), dates, policy, split_oversized=split)
    flat = sorted(i for g in plan.groups for i in g)
    assert flat == list(range(n))
    if cap and split:
        assert max(plan.sizes) <= cap
    again = group_centres(np.column_stack([ra, dec]), dates, policy, split_oversized=split)
    assert json.dumps(again.to_dict(), sort_keys=True) == json.dumps(plan.to_dict(), sort_keys=True)
    assert GroupPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


def test_group_across_ra_zero_is_one_group():
    frames = [make_frame(359.99, 10.0, name="a"), make_frame(0.005, 10.0, name="b"), make_frame(90.0, 10.0, name="c")]
    plan = plan_master_groups(frames, GroupingPolicy())
    assert plan.groups == ((0, 1), (2,))
    assert not plan.relaxed


def test_threshold_relaxes_when_almost_every_frame_is_alone():
    # A 5 x 5 raster with 0.1 deg spacing: every frame alone at 0.03 deg.
    centres = [offset_position(30.0, 20.0, 0.1 * i, 0.1 * j) for i in range(5) for j in range(5)]
    ra, dec = np.array(centres).T
    nearest = [
        min(angular_separation(ra[i], dec[i], ra[j], dec[j]) for j in range(len(ra)) if j != i) for i in range(len(ra))
    ]
    expected = 1.2 * float(np.percentile(nearest, 90))
    plan = group_centres(np.column_stack([ra, dec]), [""] * len(ra), GroupingPolicy())
    assert plan.relaxed
    assert plan.threshold_deg == pytest.approx(expected, rel=1e-6)
    assert {frozenset(g) for g in plan.groups} == brute_force_components(ra, dec, expected)
    assert len(plan.groups) < len(ra)


def test_threshold_kept_when_most_frames_have_neighbours():
    ra = np.array([10.0, 10.01, 10.02, 10.03, 50.0])
    dec = np.zeros(5)
    plan = group_centres(np.column_stack([ra, dec]), [""] * 5, GroupingPolicy())
    assert not plan.relaxed and plan.threshold_deg == 0.03
    assert plan.groups == ((0, 1, 2, 3), (4,))


def test_compact_oversized_group_splits_chronologically_and_balanced():
    rng = np.random.default_rng(3)
    n = 25
    e, nn = rng.uniform(-0.002, 0.002, (2, n))
    centres = np.array([offset_position(100.0, 5.0, a, b) for a, b in zip(e, nn, strict=True)])
    times = rng.permutation(n)
    dates = [f"2024-03-01T21:{int(t):02d}:00" for t in times]
    plan = group_centres(centres, dates, GroupingPolicy.from_values(0.03, 10, 1))
    assert sorted(plan.sizes) == [8, 8, 9]
    runs = sorted((sorted(dates[i] for i in g) for g in plan.groups), key=lambda d: d[0])
    for earlier, later in zip(runs, runs[1:], strict=False):
        assert earlier[-1] < later[0]  # each piece is a consecutive run in time
    assert plan.n_split == 1


def test_extended_oversized_group_splits_along_the_sky():
    # 40 frames on a 0.4 deg line (linked at 0.03 deg): pieces are contiguous stretches of the line.
    t = np.random.default_rng(5).permutation(40) * 0.01
    centres = np.array([offset_position(200.0, -20.0, 0.8 * x, 0.6 * x) for x in t])
    plan = group_centres(centres, [""] * 40, GroupingPolicy.from_values(0.03, 10, 1))
    assert len(plan.groups) == 4 and max(plan.sizes) <= 10
    spans = sorted((min(t[list(g)]), max(t[list(g)])) for g in plan.groups)
    for (_, hi), (lo, _) in zip(spans, spans[1:], strict=False):
        assert hi < lo


def test_small_group_merges_into_nearest_group_within_cap():
    centres = np.array([[10.0, 0.0], [10.01, 0.0], [10.02, 0.0], [10.1, 0.0], [10.3, 0.0], [10.31, 0.0]])
    groups = [(0, 1, 2), (3,), (4, 5)]
    merged, count = merge_small_groups(groups, centres, min_size=2, cap=10)
    assert count == 1 and merged == [(0, 1, 2, 3), (4, 5)]
    kept, count = merge_small_groups(groups, centres, min_size=2, cap=3)
    assert count == 0 and kept == [(0, 1, 2), (3,), (4, 5)]


def test_principal_axis_order_follows_a_line_across_ra_zero():
    t = np.random.default_rng(1).permutation(12) * 0.02 - 0.1
    ra, dec = np.array([offset_position(0.0, 30.0, 0.9 * x, -0.4 * x) for x in t]).T
    ordered = t[principal_axis_order(ra, dec)]
    assert np.all(np.diff(ordered) > 0) or np.all(np.diff(ordered) < 0)


def test_policy_validation_names_the_key():
    with pytest.raises(ConfigError, match="cluster_panel_threshold"):
        GroupingPolicy.from_values(cluster_panel_threshold=-1)
    with pytest.raises(ConfigError, match="min_raw_per_master_tile"):
        GroupingPolicy.from_values(0.03, 4, 5)
    assert GroupingPolicy.from_dict(GroupingPolicy().to_dict()) == GroupingPolicy()


def test_memory_cap():
    frame_bytes = 1080 * 1920 * 3 * 4
    assert max_frames_for_memory(8 * 2**30, frame_bytes, fraction=0.5) == math.floor(4 * 2**30 / frame_bytes)
    assert max_frames_for_memory(10, frame_bytes) == 2
    frames = [make_frame(40.0 + 0.001 * i, 0.0, name=str(i)) for i in range(9)]
    plan = plan_master_groups(frames, GroupingPolicy.from_values(0.03, 8, 1), memory_cap=4)
    assert plan.cap == 4 and max(plan.sizes) <= 4 and sum(plan.sizes) == 9


def test_no_frames_is_a_plan_error():
    with pytest.raises(PlanError):
        plan_master_groups([], GroupingPolicy())
