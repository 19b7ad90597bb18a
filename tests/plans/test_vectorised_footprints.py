"""Footprints projected for all frames at once equal those projected frame by frame."""

import numpy as np
import pytest
from plan_sky import make_frame

from zemosaic_dask.plans import SdsPolicy, frame_footprint_pixels, plan_output_grid, plan_sds_batches
from zemosaic_dask.plans.footprints import frame_footprints_pixels, rasterize_polygon
from zemosaic_dask.plans.grid import frame_bboxes
from zemosaic_dask.plans.layers import region_box
from zemosaic_dask.plans.regions import assign_frames_to_regions
from zemosaic_dask.plans.sds import batch_by_coverage, merge_undercovered
from zemosaic_dask.plans.sds_mask import plan_layer_counts


def _frames(seed: int, n: int = 60):
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        ra, dec = 359.8 + rng.uniform(0, 0.4), 30 + rng.uniform(-0.3, 0.3)
        frame = make_frame(ra, dec, name=f"f{k}", rot=float(rng.uniform(0, 90)), shape=(120, 200))
        frames.append(frame.with_sky_geometry() if k % 3 else frame)  # some without a stored border
    return frames


@pytest.mark.parametrize("seed", range(3))
def test_frame_boxes_and_polygons_equal_the_per_frame_projection(seed):
    frames = _frames(seed)
    grid = plan_output_grid(frames, chunk=64)
    boxes = frame_bboxes(grid, frames)
    for frame, box, polygon in zip(frames, boxes, frame_footprints_pixels(frames, grid), strict=True):
        assert tuple(box) == grid.frame_bbox(frame)
        np.testing.assert_array_equal(polygon, frame_footprint_pixels(frame, grid))
    assert region_box(grid, frames[:7]) == _reference_region_box(grid, frames[:7])


def _reference_region_box(grid, frames):
    arr = np.array([grid.frame_bbox(f) for f in frames])
    c = grid.chunk
    return (
        max(0, int(np.floor(arr[:, 0].min() / c)) * c),
        min(grid.shape[0], (int(np.floor(arr[:, 1].max() / c)) + 1) * c),
        max(0, int(np.floor(arr[:, 2].min() / c)) * c),
        min(grid.shape[1], (int(np.floor(arr[:, 3].max() / c)) + 1) * c),
    )


def test_a_frame_off_the_projection_has_no_box():
    frames = _frames(0, 6)
    grid = plan_output_grid(frames)
    far = make_frame(180.0, -30.0, name="antipode").with_sky_geometry()
    boxes = frame_bboxes(grid, [*frames, far])
    assert grid.frame_bbox(far) is None and np.isnan(boxes[-1]).all() and np.isfinite(boxes[:-1]).all()
    assert frame_footprints_pixels([far], grid) == [None]
    assert all(6 not in members for members in assign_frames_to_regions(grid, [*frames, far]).values())


def test_regions_list_each_frame_where_its_box_reaches():
    frames = _frames(1, 30)
    grid = plan_output_grid(frames, chunk=64)
    table = assign_frames_to_regions(grid, frames)
    for index, frame in enumerate(frames):
        ymin, ymax, xmin, xmax = grid.frame_bbox(frame)
        for iy, ix in ((int((ymin + ymax) / 2) // 64, int((xmin + xmax) / 2) // 64),):
            assert index in table[(iy, ix)]
    assert all(members == sorted(members) for members in table.values())


def _reference_merge_undercovered(batches, footprints, policy, n_cells):
    """The former merge: the pending batch's coverage recounted from scratch at each step."""
    covered = np.zeros(n_cells, dtype=bool)

    def count(members):
        covered[:] = False
        for k in members:
            covered[footprints[k]] = True
        return int(covered.sum())

    total = count(range(len(footprints)))
    out, pending, merged = [], (), 0
    for batch in batches:
        if not pending and batch.coverage_fraction >= policy.coverage_threshold:
            out.append(batch)
            continue
        merged += 1 if pending else 0
        pending += batch.frames
        fraction = count(pending) / total
        if fraction >= policy.coverage_threshold:
            out.append((pending, fraction, "merged-coverage" if merged else batch.closed_by))
            pending, merged = (), 0
    out = [b if isinstance(b, tuple) else (b.frames, b.coverage_fraction, b.closed_by) for b in out]
    if pending:
        if out:
            frames = out[-1][0] + pending
            out[-1] = (frames, count(frames) / total, "merged-leftover")
        else:
            out.append((pending, count(pending) / total, "merged-coverage" if merged else batches[-1].closed_by))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_merge_undercovered_equals_recounting_from_scratch(seed):
    rng = np.random.default_rng(seed)
    footprints = [np.unique(rng.integers(0, 400, int(rng.integers(5, 120)))) for _ in range(int(rng.integers(5, 80)))]
    policy = SdsPolicy.from_values(float(rng.uniform(0.3, 0.99)), 2, int(rng.integers(2, 8)))
    raw = batch_by_coverage(footprints, policy)
    got = [(b.frames, b.coverage_fraction, b.closed_by) for b in merge_undercovered(raw, footprints, policy)]
    assert got == _reference_merge_undercovered(raw, footprints, policy, 400)


def test_layer_counts_equal_the_union_of_rasterised_frames():
    frames = [f.with_sky_geometry() for f in _frames(4, 40)]
    grid = plan_output_grid(frames, chunk=64)
    plan = plan_sds_batches(frames, grid, SdsPolicy.from_values(0.5, 2, 4))
    expected = np.zeros(plan.cells.size, dtype=np.int32)
    for batch in plan.batches:
        covered = np.zeros(plan.cells.size, dtype=bool)
        for index in batch.frames:
            covered[rasterize_polygon(frame_footprint_pixels(frames[index], grid), plan.cells)] = True
        expected += covered
    counts = plan_layer_counts(plan, frames, grid)
    np.testing.assert_array_equal(counts, expected.reshape(plan.cells.shape))
    assert counts.max() >= 2
