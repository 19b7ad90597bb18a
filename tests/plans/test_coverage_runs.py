"""Coverage counted on runs of cells equals counting cell by cell, and the SDS plans are unchanged.

The run-based planner (batched rasterisation, unions of runs, one difference array for the layer
counts) must give exactly the batches, fractions and layer counts of the former cell-by-cell
planner (``sds_reference``), on deep stacks of one field and on wide mosaics alike.
"""

from __future__ import annotations

import numpy as np
import pytest
import sds_reference as ref
from hypothesis import given, settings
from hypothesis import strategies as st
from plan_sky import make_frame, offset_position

from zemosaic_dask.plans import CoverageCells, SdsPolicy, plan_output_grid, plan_sds_batches
from zemosaic_dask.plans import footprints as footprints_module
from zemosaic_dask.plans.coverage_runs import RunUnion, cells_to_runs, runs_length, spans_to_runs, union_runs
from zemosaic_dask.plans.footprints import rasterize_polygon_spans, rasterize_polygons_spans
from zemosaic_dask.plans.sds import batch_by_coverage, merge_undercovered
from zemosaic_dask.plans.sds_mask import plan_layer_counts
from zemosaic_dask.plans.sds_spread import footprint_geometries, footprint_geometry

# --- unions of runs against sets of cells -----------------------------------------------------------------------

run_lists = st.lists(st.tuples(st.integers(0, 80), st.integers(-3, 25)), max_size=30).map(
    lambda pairs: np.array([(a, a + n) for a, n in pairs], dtype=np.int64).reshape(-1, 2)
)


def _cells(runs):
    return {i for a, b in runs.tolist() for i in range(a, b)}


@settings(max_examples=150, deadline=None)
@given(run_lists)
def test_union_of_runs_holds_exactly_their_cells_in_disjoint_sorted_runs(runs):
    union = union_runs(runs)
    assert _cells(union) == _cells(runs)
    assert runs_length(union) == len(_cells(runs))
    assert np.all(union[:, 1] > union[:, 0]) and np.all(union[1:, 0] > union[:-1, 1])  # disjoint, not touching


@settings(max_examples=100, deadline=None)
@given(st.lists(run_lists, max_size=12), st.lists(st.booleans(), max_size=12))
def test_growing_union_counts_the_cells_added_since_the_last_clear(steps, clears):
    union, seen = RunUnion(), set()
    for runs, clear in zip(steps, clears + [False] * len(steps), strict=False):
        if clear:
            union.clear()
            seen = set()
        seen |= _cells(runs)
        assert union.add(runs) == len(seen) == union.count
        assert _cells(union.runs) == seen


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 200), max_size=80))
def test_cell_indices_become_runs_of_the_same_cells(cells):
    runs = cells_to_runs(np.array(cells, dtype=np.int64))
    assert _cells(runs) == set(cells) and runs_length(runs) == len(set(cells))
    np.testing.assert_array_equal(union_runs(runs), runs)


def test_spans_become_flat_runs_row_by_row():
    spans = np.array([[0, 2, 5], [3, 0, 7]])
    np.testing.assert_array_equal(spans_to_runs(spans, 7), [[2, 5], [21, 28]])


@st.composite
def footprint_lists(draw):
    footprints = [np.array(sorted(draw(st.sets(st.integers(0, 99), min_size=1, max_size=60)))) for _ in range(30)]
    footprints = footprints[: draw(st.integers(1, 30))]
    minimum = draw(st.integers(1, 6))
    return footprints, SdsPolicy.from_values(draw(st.floats(0.05, 1.0)), minimum, minimum + draw(st.integers(0, 6)))


@settings(max_examples=120, deadline=None)
@given(footprint_lists())
def test_closing_and_merging_on_runs_equal_marking_every_cell(data):
    footprints, policy = data
    expected = ref.batch_by_coverage(footprints, policy, 100)
    as_runs = [cells_to_runs(f) for f in footprints]
    assert batch_by_coverage(footprints, policy) == expected == batch_by_coverage(as_runs, policy)
    merged = ref.merge_undercovered(expected, footprints, policy, 100)
    assert merge_undercovered(expected, footprints, policy) == merged == merge_undercovered(expected, as_runs, policy)


# --- rasterising all polygons at once -----------------------------------------------------------------------------

# Vertices on a quarter-pixel lattice: many fall exactly on cell centres and row lines (the tie cases).
vertex = st.tuples(st.integers(-40, 400), st.integers(-40, 300)).map(lambda p: (p[0] / 4.0, p[1] / 4.0))
polygon_lists = st.lists(st.lists(vertex, min_size=1, max_size=9).map(np.array), min_size=1, max_size=8)


@settings(max_examples=150, deadline=None)
@given(polygon_lists, st.integers(1, 5), st.sampled_from([8, 64, 1 << 19]))
def test_batched_rasterisation_equals_the_former_per_polygon_one(polygons, cell, chunk):
    cells = CoverageCells((-(-70 // cell), -(-95 // cell)), cell)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(footprints_module, "RASTER_CHUNK_CANDIDATES", chunk)  # chunks of whole polygons
        got = rasterize_polygons_spans(polygons, cells)
    assert len(got) == len(polygons)
    for polygon, spans in zip(polygons, got, strict=True):
        expected = ref.rasterize_spans(polygon, cells)
        np.testing.assert_array_equal(spans, expected)
        assert spans.dtype == np.int64 and spans.shape == expected.shape
        np.testing.assert_array_equal(rasterize_polygon_spans(polygon, cells), expected)


def test_concave_outline_gives_two_runs_on_the_rows_of_its_notch():
    cells = CoverageCells((10, 10), 1)
    u_shape = np.array([[0, 0], [9, 0], [9, 9], [6, 9], [6, 3], [3, 3], [3, 9], [0, 9]], dtype=float)
    spans = rasterize_polygons_spans([u_shape], cells)[0]
    np.testing.assert_array_equal(spans, ref.rasterize_spans(u_shape, cells))
    assert [s.tolist() for s in spans if s[0] == 5] == [[5, 0, 3], [5, 6, 9]]  # pixel centres 0-2 and 6-8


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 20), st.integers(-2, 15)), max_size=8), max_size=6)
)
def test_geometry_of_many_footprints_equals_each_alone(lists):
    spans = [np.array([(r, a, a + n) for r, a, n in rows], dtype=np.int64).reshape(-1, 3) for rows in lists]
    got = footprint_geometries(spans)
    assert got.shape == (len(spans), 3)
    for row, s in zip(got.tolist(), spans, strict=True):
        assert tuple(row) == footprint_geometry(s)


# --- whole plans: deep stacks and wide mosaics plan the batches they planned before ----------------------------


def _deep(n, seed):
    """``n`` frames of one field: dithers of a third of the frame, rotations up to 30 degrees."""
    rng = np.random.default_rng(seed)
    return [
        make_frame(
            *offset_position(120.0, 35.0, *rng.uniform(-0.12, 0.12, 2)),
            name=f"d{k}",
            shape=(540, 960),
            rot=float(rng.uniform(0, 30)),
        )
        for k in range(n)
    ]


def _wide(n_rows, n_cols, seed):
    """Panels 0.8 frame apart, 1 to 4 frames each, in panel order."""
    rng = np.random.default_rng(seed)
    width, height = 200 * 2.4 / 3600, 120 * 2.4 / 3600
    frames = []
    for p in range(n_rows * n_cols):
        east, north = (p % n_cols) * 0.8 * width, (p // n_cols) * 0.8 * height
        for k in range(int(rng.integers(1, 5))):
            e, n = rng.normal(0, 0.002, 2)
            frames.append(
                make_frame(*offset_position(200.0, 10.0, east + e, north + n), name=f"w{p}-{k}", shape=(120, 200))
            )
    return frames


POLICIES = [
    SdsPolicy(),
    SdsPolicy.from_values(0.6, 3, 7),
    SdsPolicy.from_values(0.99, 2, 40),
    SdsPolicy.from_values(0.92, 5, 20),
]


@pytest.mark.parametrize("layout", ["deep", "wide"])
@pytest.mark.parametrize("policy", POLICIES, ids=["defaults", "loose", "strict", "wide-target"])
def test_deep_and_wide_layouts_plan_the_former_batches_and_layer_counts(layout, policy):
    frames = _deep(60, 1) if layout == "deep" else _wide(3, 4, 2)
    grid = plan_output_grid(frames)
    plan = plan_sds_batches(frames, grid, policy)
    if layout == "deep":
        assert plan.cells.cell_size >= 2 and plan.cells.shape[0] > 100  # frames of ~10^4 cells, not a toy raster
    expected = ref.plan_batches(frames, grid, policy)
    assert list(plan.batches) == expected
    np.testing.assert_array_equal(plan_layer_counts(plan, frames, grid), ref.layer_counts(expected, frames, grid))
