"""Classic batches: overlapping windows lose no frame, duplication up to the target, per-tile salvage."""

import json
import logging
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from plan_sky import make_frame, offset_position

from zemosaic_dask.errors import ConfigError
from zemosaic_dask.plans import (
    BatchPlan,
    BatchPolicy,
    GroupingPolicy,
    duplicate_to_target,
    make_tile_batch,
    overlap_frac_from_pct,
    plan_classic_batches,
    plan_overlapping_batches,
    plan_tile_batches,
)

PROPS = settings(max_examples=150, deadline=None)


def classic_windows(indices, cap, overlap_frac):
    """The classic sliding-window recipe: windows every step, windows under 2 frames discarded."""
    step = max(1, int(cap * (1 - overlap_frac)))
    windows = [indices[s : s + cap] for s in range(0, len(indices), step)]
    return [w for w in windows if len(w) >= 2]


@PROPS
@given(st.integers(0, 120), st.integers(1, 25), st.integers(0, 70))
def test_windows_cover_every_frame_with_the_requested_overlap(n, cap, pct):
    frac = overlap_frac_from_pct(pct)
    indices = list(range(1000, 1000 + n))
    windows = plan_overlapping_batches(indices, cap, frac)
    assert sorted(set(i for w in windows for i in w)) == indices  # no frame dropped
    if n <= cap:
        assert windows == ([indices] if n else [])
        return
    for w in windows:  # each window is a run of the spatially ordered input
        start = indices.index(w[0])
        assert w == indices[start : start + len(w)]
    assert all(len(w) <= cap for w in windows[:-1])
    assert len(windows[-1]) <= cap + 1
    if len(windows) > 1:
        assert all(len(w) >= min(2, cap) for w in windows)
    step = max(1, int(cap * (1 - frac)))
    for a, b in zip(windows[:-2], windows[1:-1], strict=True):  # full, unmerged neighbours
        shared = len(set(a) & set(b))
        assert shared == cap - step
        assert abs(shared / cap - frac) < 1 / cap + 1e-9
    assert plan_overlapping_batches(indices, cap, frac) == windows


@pytest.mark.parametrize("cap,k", [(5, 3), (10, 1), (7, 4), (2, 5)])
def test_c_times_k_plus_one_with_no_overlap_loses_no_frame(cap, k):
    indices = list(range(cap * k + 1))
    classic = {i for w in classic_windows(indices, cap, 0.0) for i in w}
    assert classic == set(indices) - {cap * k}  # the recipe this replaces drops the last frame
    windows = plan_overlapping_batches(indices, cap, 0.0)
    assert sorted(i for w in windows for i in w) == indices  # disjoint and complete
    assert len(windows) == k and len(windows[-1]) == cap + 1


def test_one_and_two_frames():
    assert plan_overlapping_batches([7], 5, 0.4) == [[7]]
    assert plan_overlapping_batches([7, 8], 5, 0.4) == [[7, 8]]
    assert plan_overlapping_batches([7, 8], 1, 0.0) == [[7], [8]]


@given(st.lists(st.integers(0, 50), min_size=1, max_size=12, unique=True), st.integers(1, 15))
@settings(max_examples=60, deadline=None)
def test_duplication_matches_the_cyclic_formula(frames, target):
    expected = (frames * math.ceil(target / len(frames)))[:target] if len(frames) < target else frames
    assert list(duplicate_to_target(frames, target)) == expected
    batch = make_tile_batch(0, 0, frames, BatchPolicy(target_stack=target))
    assert list(batch.stack_frames) == expected
    assert batch.weight == len(frames) == batch.original_count  # distinct frames, never the duplicates
    assert batch.final_count == max(target, len(frames))


def test_duplication_and_salvage_are_logged_for_the_tile(caplog):
    caplog.set_level(logging.INFO, logger="zemosaic_dask")
    batch = make_tile_batch(12, 3, [4, 9], BatchPolicy())
    assert batch.stack_frames == (4, 9, 4, 9, 4)
    assert batch.salvage
    assert "[Batch] Duplicating frames: original=2 -> final=5 for tile 12" in caplog.messages
    assert "Tile 12: salvage mode (n=2). Relaxing QC and crop." in caplog.messages


def test_duplication_off_keeps_the_frames_and_still_flags_salvage():
    batch = make_tile_batch(1, 0, [3, 5], BatchPolicy(allow_batch_duplication=False))
    assert batch.stack_frames == (3, 5) and batch.salvage


def test_salvage_relaxes_quality_for_that_tile_only():
    policy = BatchPolicy(min_safe_stack=3)
    small, large = make_tile_batch(0, 0, [1, 2], policy), make_tile_batch(1, 0, [3, 4, 5, 6], policy)
    assert small.salvage and not large.salvage
    assert small.quality_settings(True, True) == (False, False)
    assert large.quality_settings(True, True) == (True, True)
    assert large.quality_settings(False, True) == (False, True)


def test_policy_from_values():
    policy = BatchPolicy.from_values(batch_overlap_pct="25", target_stack="0", min_safe_stack=2.9)
    assert policy == BatchPolicy(0.25, True, 1, 2)
    for bad in (-1, 71, "x"):
        with pytest.raises(ConfigError, match="batch_overlap_pct"):
            BatchPolicy.from_values(batch_overlap_pct=bad)
    assert BatchPolicy.from_dict(policy.to_dict()) == policy


def _line_frames(n, seed=0):
    """Frames spaced 0.01 deg along a tilted line, listed in random order; returns frames and positions."""
    t = np.random.default_rng(seed).permutation(n) * 0.01
    frames = []
    for i, x in enumerate(t):
        ra, dec = offset_position(150.0, 10.0, 0.6 * x, 0.8 * x)
        frames.append(make_frame(ra, dec, name=f"l{i}", date_obs=f"2024-01-01T00:00:{i:02d}"))
    return frames, t


def test_windows_are_sky_neighbours_and_plan_round_trips():
    frames, t = _line_frames(23)
    group = list(range(23))
    plan = plan_tile_batches(frames, [group], BatchPolicy(overlap_frac=0.4, target_stack=5), cap=10)
    rank = {int(i): r for r, i in enumerate(np.argsort(t))}
    for batch in plan.batches:
        ranks = sorted(rank[i] for i in batch.frames)
        assert ranks == list(range(ranks[0], ranks[0] + len(ranks)))  # a contiguous stretch of the line
    assert {i for b in plan.batches for i in b.frames} == set(group)
    assert [b.tile_id for b in plan.batches] == list(range(len(plan.batches)))
    text = json.dumps(plan.to_dict(), sort_keys=True)
    assert BatchPlan.from_dict(json.loads(text)) == plan
    again = plan_tile_batches(frames, [group], BatchPolicy(overlap_frac=0.4, target_stack=5), cap=10)
    assert json.dumps(again.to_dict(), sort_keys=True) == text


@pytest.mark.parametrize("pct", [0, 40])
def test_classic_batches_respect_the_cap_and_keep_every_frame(pct):
    frames, _ = _line_frames(31, seed=2)
    groups, batches = plan_classic_batches(
        frames, GroupingPolicy.from_values(0.03, 8, 1), BatchPolicy.from_values(batch_overlap_pct=pct)
    )
    assert {i for b in batches.batches for i in b.frames} == set(range(31))
    assert max(len(b.frames) for b in batches.batches) <= 8 + 1
    counts = [len(b.frames) for b in batches.batches]
    if pct == 0:
        assert sorted(i for b in batches.batches for i in b.frames) == list(range(31))  # disjoint
        assert max(counts) <= 8
    else:
        assert len(groups.groups) == 1  # kept whole, cut into overlapping windows instead
        assert sum(counts) > 31


@st.composite
def classic_configs(draw):
    """A random sky layout (a few pointings, dithered frames) and a random classic configuration."""
    pointings = draw(
        st.lists(st.tuples(st.sampled_from([0.0, 359.9, 45.0]), st.floats(-60, 60)), min_size=1, max_size=3)
    )
    frames = []
    for p, (ra0, dec0) in enumerate(pointings):
        for k in range(draw(st.integers(1, 9))):
            e, n = draw(st.floats(-0.02, 0.02)), draw(st.floats(-0.02, 0.02))
            frames.append(make_frame(*offset_position(ra0, dec0, e, n), name=f"p{p}-{k}", shape=(40, 30)))
    cap = draw(st.integers(1, 8))
    grouping = GroupingPolicy.from_values(0.03, cap, draw(st.integers(1, cap)))
    batching = BatchPolicy.from_values(
        draw(st.integers(0, 70)), draw(st.booleans()), draw(st.integers(1, 7)), draw(st.integers(1, 5))
    )
    return frames, grouping, batching


@settings(max_examples=25, deadline=None)
@given(classic_configs())
def test_classic_plan_properties_over_random_layouts(config):
    frames, grouping, batching = config
    groups, plan = plan_classic_batches(frames, grouping, batching)
    cap = grouping.max_raw_per_master_tile
    assert {i for b in plan.batches for i in b.frames} == set(range(len(frames)))  # every frame somewhere
    for batch in plan.batches:
        assert len(batch.frames) <= cap + (1 if cap >= 2 else 0)
        assert len(set(batch.frames)) == len(batch.frames)
        if batching.allow_batch_duplication:
            assert batch.final_count == max(batching.target_stack, batch.original_count)
            assert set(batch.stack_frames) == set(batch.frames)
        else:
            assert batch.stack_frames == batch.frames
        assert batch.salvage == (len(batch.frames) < batching.min_safe_stack)
        assert set(batch.frames) <= set(groups.groups[batch.group_id])
    again = plan_classic_batches(frames, grouping, batching)
    assert json.dumps([g.to_dict() for g in again], sort_keys=True) == json.dumps(
        [groups.to_dict(), plan.to_dict()], sort_keys=True
    )
    assert BatchPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
