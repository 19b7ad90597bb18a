"""SDS batches close exactly as the policy says; pre-planned groups are honoured or refused with a reason."""

import dataclasses
import json
import logging
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from plan_sky import make_frame, offset_position

from zemosaic_dask.errors import ConfigError, PlanError
from zemosaic_dask.plans import (
    CoverageCells,
    OutputGrid,
    SdsPlan,
    SdsPolicy,
    batch_by_coverage,
    coverage_cells_for_grid,
    plan_output_grid,
    plan_sds_batches,
    rasterize_polygon,
    resolve_preplan_groups,
    sds_applies,
)


def _fraction(cells, members, total):
    return len(set().union(*(cells[k] for k in members))) / total


def _closing_reason(cells, members, total, policy):
    """Why the policy closes a batch holding ``members`` (None: it stays open)."""
    if len(members) >= policy.min_batch_size and _fraction(cells, members, total) >= policy.coverage_threshold:
        return "coverage"
    if len(members) >= policy.target_batch_size:
        return "target"
    return None


def _first_close(cells, members, total, policy):
    """Length of the first prefix at which the policy closes, or None."""
    return next((k for k in range(1, len(members) + 1) if _closing_reason(cells, members[:k], total, policy)), None)


@st.composite
def footprint_sets(draw):
    n = draw(st.integers(1, 30))
    return [draw(st.sets(st.integers(0, 99), min_size=1, max_size=60)) for _ in range(n)]


@settings(max_examples=120, deadline=None)
@given(footprint_sets(), st.floats(0.05, 1.0), st.integers(1, 6), st.integers(0, 6))
def test_batches_close_only_as_the_policy_says(cells, threshold, minimum, extra):
    policy = SdsPolicy.from_values(threshold, minimum, minimum + extra)
    batches = batch_by_coverage([np.array(sorted(c)) for c in cells], policy)
    total = len(set().union(*cells))
    assert [k for b in batches for k in b.frames] == list(range(len(cells)))  # in order, each once
    last = len(batches) - 1
    for index, batch in enumerate(batches):
        members = list(batch.frames)
        assert batch.coverage_fraction == pytest.approx(_fraction(cells, members, total))
        first = _first_close(cells, members, total, policy)
        if batch.closed_by in ("coverage", "target"):
            assert first == len(members)
            assert batch.closed_by == _closing_reason(cells, members, total, policy)
        elif batch.closed_by == "merged-leftover":
            assert index == last and first is not None
            assert 0 < len(members) - first < policy.min_batch_size
            assert _first_close(cells, members[first:], total, policy) is None
        else:
            assert batch.closed_by == "end" and index == last and first is None
            assert len(members) >= policy.min_batch_size or len(batches) == 1


def test_policy_coercion_and_validation():
    assert SdsPolicy.from_values("0.9", "0", 3.7) == SdsPolicy(0.9, 1, 3)
    with pytest.raises(ConfigError, match="sds_min_batch_size"):
        SdsPolicy.from_values(0.92, 12, 10)
    with pytest.raises(ConfigError, match="sds_coverage_threshold"):
        SdsPolicy.from_values(1.5, 5, 10)
    with pytest.raises(ConfigError, match="sds_target_batch_size"):
        SdsPolicy.from_values(0.9, 5, "many")


def _dithered(n, step=0.0015, name="d", **kw):
    rng = np.random.default_rng(n)
    return [
        make_frame(*offset_position(80.0, 40.0, *rng.uniform(-step, step, 2)), name=f"{name}{i}", **kw)
        for i in range(n)
    ]


def test_frames_covering_the_whole_field_give_batches_of_at_least_min_size(caplog):
    caplog.set_level(logging.INFO, logger="zemosaic_dask")
    frames = _dithered(23)
    grid = plan_output_grid(frames)
    plan = plan_sds_batches(frames, grid, SdsPolicy())
    assert plan.sizes == (5, 5, 5, 8)  # closes at min size on coverage; the leftover 3 joins the last
    assert [b.closed_by for b in plan.batches] == ["coverage", "coverage", "coverage", "merged-leftover"]
    assert "SDS: coverage=0.92, min_size=5, target_size=10." in caplog.messages
    assert any(m.startswith("SDS: built 4 batch(es) with sizes: [5, 5, 5, 8]") for m in caplog.messages)


def test_mosaic_field_needs_several_frames_per_batch():
    # Four pointings on a 2 x 2 mosaic repeated three times: a batch needs one frame of each pointing.
    offsets = [(-0.025, -0.04), (0.025, -0.04), (-0.025, 0.04), (0.025, 0.04)]
    frames = [
        make_frame(*offset_position(80.0, 40.0, e, n), name=f"m{r}{k}")
        for r in range(3)
        for k, (e, n) in enumerate(offsets)
    ]
    plan = plan_sds_batches(frames, plan_output_grid(frames), SdsPolicy.from_values(0.92, 2, 10))
    assert plan.sizes == (4, 4, 4)
    assert all(b.coverage_fraction == pytest.approx(1.0) for b in plan.batches)


def test_single_frame_gives_one_batch_of_one():
    frames = _dithered(1)
    plan = plan_sds_batches(frames, plan_output_grid(frames), SdsPolicy())
    assert plan.sizes == (1,) and plan.batches[0].coverage_fraction == 1.0


def test_frames_without_valid_wcs():
    good = _dithered(6)
    grid = plan_output_grid(good)
    broken = [dataclasses.replace(good[0], path=f"/data/x{i}.fits", wcs_header="") for i in range(2)]
    plan = plan_sds_batches(good[:3] + broken + good[3:], grid, SdsPolicy.from_values(0.9, 2, 4))
    assert plan.excluded == ((3, "no usable WCS"), (4, "no usable WCS"))
    assert sorted(i for b in plan.batches for i in b.frames) == [0, 1, 2, 5, 6, 7]
    with pytest.raises(PlanError) as err:
        plan_sds_batches(broken, grid, SdsPolicy())
    assert err.value.reason == "no entries with valid WCS"


def test_invalid_grid():
    frames = _dithered(3)
    bad = OutputGrid(crval=(80.0, 40.0), pixel_scale=2.4, crpix=(1.0, 1.0), shape=(0, 50))
    with pytest.raises(PlanError) as err:
        plan_sds_batches(frames, bad, SdsPolicy())
    assert err.value.reason == "coverage grid invalid"


def test_preplan_groups_are_honoured_when_they_cover_every_frame():
    frames = _dithered(7)
    paths = [f.path for f in frames]
    preplan = [[paths[6], paths[0]], paths[1:6]]
    plan = plan_sds_batches(frames, plan_output_grid(frames), SdsPolicy(), preplan=preplan)
    assert plan.source == "preplan" and plan.preplan_refused is None
    assert [b.frames for b in plan.batches] == [(6, 0), (1, 2, 3, 4, 5)]


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda p: [p[:3], p[4:]], "in no pre-planned group"),
        (lambda p: [p[:4], p[3:]], "more than once"),
        (lambda p: [p, ["/elsewhere/z.fits"]], "not among the input frames"),
        (lambda p: [p, []], "is empty"),
        (lambda p: [], "empty"),
    ],
)
def test_preplan_groups_refused_with_a_reason(make, needle, caplog):
    caplog.set_level(logging.INFO, logger="zemosaic_dask")
    frames = _dithered(6)
    paths = [f.path for f in frames]
    groups, reason = resolve_preplan_groups(paths, make(paths))
    assert groups is None and needle in reason
    plan = plan_sds_batches(frames, plan_output_grid(frames), SdsPolicy.from_values(0.9, 2, 3), preplan=make(paths))
    assert plan.source == "policy" and plan.preplan_refused == reason
    assert f"SDS: pre-planned groups not used: {reason}." in caplog.messages


def test_processing_order_is_group_order_then_frame_order():
    frames = _dithered(8)
    order = [[5, 1], [7, 0, 2], [3]]
    plan = plan_sds_batches(frames, plan_output_grid(frames), SdsPolicy.from_values(0.9, 3, 4), order=order)
    assert [i for b in plan.batches for i in b.frames] == [5, 1, 7, 0, 2, 3, 4, 6]


def test_plan_is_deterministic_and_round_trips():
    frames = _dithered(17, step=0.02)
    grid = plan_output_grid(frames)
    first = plan_sds_batches(frames, grid, SdsPolicy.from_values(0.8, 3, 6))
    second = plan_sds_batches(frames, grid, SdsPolicy.from_values(0.8, 3, 6))
    text = json.dumps(first.to_dict(), sort_keys=True)
    assert json.dumps(second.to_dict(), sort_keys=True) == text
    assert SdsPlan.from_dict(json.loads(text)) == first


def test_sds_applies_only_to_seestar_or_forced(caplog):
    caplog.set_level(logging.DEBUG)
    seestar = _dithered(2)
    other = _dithered(2, instrument="ZWO ASI2600MC")
    assert sds_applies(seestar, enabled=True)
    assert not sds_applies(seestar, enabled=False)
    assert not sds_applies(other, enabled=True)
    assert sds_applies(other, enabled=True, force_seestar_mode=True)
    assert not sds_applies(seestar + other, enabled=True)
    assert caplog.messages == []


def test_coverage_raster_is_at_most_512_cells_and_covers_the_grid():
    grid = OutputGrid(crval=(0.0, 0.0), pixel_scale=2.0, crpix=(1.0, 1.0), shape=(3001, 10000))
    cells = coverage_cells_for_grid(grid)
    assert max(cells.shape) <= 512
    assert cells.shape[0] * cells.cell_size >= 3001 and cells.shape[1] * cells.cell_size >= 10000


def test_rasterised_polygon_matches_cell_centres_inside():
    cells = CoverageCells((20, 30), 4)
    # A rotated square in grid pixels.
    c, h, a = np.array([50.0, 40.0]), 22.0, np.radians(25)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    poly = c + np.array([[-h, -h], [h, -h], [h, h], [-h, h]]) @ rot.T
    got = set(rasterize_polygon(poly, cells).tolist())
    expected = set()
    for j in range(20):
        for i in range(30):
            centre = np.array([(i + 0.5) * 4 - 0.5, (j + 0.5) * 4 - 0.5])
            local = rot.T @ (centre - c)
            if abs(local[0]) < h and abs(local[1]) < h:
                expected.add(j * 30 + i)
    assert got == expected and expected
    tiny = np.array([[10.0, 10.0], [10.5, 10.0], [10.5, 10.5]])
    assert rasterize_polygon(tiny, cells).tolist() == [2 * 30 + 2]


@st.composite
def sds_configs(draw):
    n_pointings = draw(st.integers(1, 4))
    frames = []
    for k in range(draw(st.integers(1, 24))):
        p = draw(st.integers(0, n_pointings - 1))
        e, n = draw(st.floats(-0.004, 0.004)), draw(st.floats(-0.004, 0.004))
        frames.append(make_frame(*offset_position(300.0, -10.0, 0.02 * p + e, n), name=f"s{k}", shape=(60, 40)))
    minimum = draw(st.integers(1, 6))
    policy = SdsPolicy.from_values(draw(st.floats(0.3, 1.0)), minimum, minimum + draw(st.integers(0, 6)))
    return frames, policy


@settings(max_examples=25, deadline=None)
@given(sds_configs())
def test_sds_plan_properties_over_random_layouts(config):
    frames, policy = config
    grid = plan_output_grid(frames)
    plan = plan_sds_batches(frames, grid, policy)
    assert sorted(i for b in plan.batches for i in b.frames) == list(range(len(frames)))  # each frame once
    for batch in plan.batches:
        if len(plan.batches) > 1:
            assert len(batch.frames) >= policy.min_batch_size
        if batch.closed_by in ("coverage", "target"):
            assert len(batch.frames) <= policy.target_batch_size
        # Every batch of a policy plan spreads over the field: none is left below the threshold.
        assert policy.coverage_threshold <= batch.coverage_fraction <= 1.0
    text = json.dumps(plan.to_dict(), sort_keys=True)
    assert json.dumps(plan_sds_batches(frames, grid, policy).to_dict(), sort_keys=True) == text
    assert SdsPlan.from_dict(json.loads(text)) == plan


def _reference_cells(vertices, cells, tol=1e-6):
    """Cells whose centre is inside (crossing number per point) and cells within ``tol`` of an edge."""
    ny, nx = cells.shape
    jj, ii = np.mgrid[0:ny, 0:nx]
    x, y = ((ii + 0.5) * cells.cell_size - 0.5).ravel(), ((jj + 0.5) * cells.cell_size - 0.5).ravel()
    inside = np.zeros(x.shape, dtype=bool)
    near = np.zeros(x.shape, dtype=bool)
    for k in range(len(vertices)):
        (xa, ya), (xb, yb) = vertices[k], vertices[(k + 1) % len(vertices)]
        if ya != yb:
            with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
                inside ^= ((ya > y) != (yb > y)) & (x < xa + (y - ya) * (xb - xa) / (yb - ya))
        dx, dy = xb - xa, yb - ya
        length2 = dx * dx + dy * dy
        t = np.clip(((x - xa) * dx + (y - ya) * dy) / length2, 0, 1) if length2 else np.zeros_like(x)
        near |= np.hypot(xa + t * dx - x, ya + t * dy - y) < tol
    return set(np.flatnonzero(inside & ~near).tolist()), set(np.flatnonzero(near).tolist())


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-20, 140), st.floats(-20, 100)), min_size=3, max_size=9),
    st.integers(1, 7),
)
def test_rasterised_random_polygons_match_a_point_in_polygon_reference(vertices, cell):
    cells = CoverageCells((math.ceil(80 / cell), math.ceil(120 / cell)), cell)
    got = set(rasterize_polygon(np.array(vertices), cells).tolist())
    expected, ambiguous = _reference_cells(vertices, cells)
    if expected:
        assert got - ambiguous == expected
    else:  # nothing clearly inside: at most the one cell under the vertex mean
        assert len(got - ambiguous) <= 1
