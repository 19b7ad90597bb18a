"""Deep regions stacked in row parts by separate tasks give the pixels of one task, and the plan decides it."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from e2e import THREADS, run

from zemosaic_dask.api import plan_mosaic
from zemosaic_dask.config import load_config
from zemosaic_dask.graph.mosaic_first import FrameCoefficientTable, part_jobs, region_jobs
from zemosaic_dask.io.frames import inspect_frame
from zemosaic_dask.io.store import open_mosaic_store
from zemosaic_dask.plans.grid import plan_output_grid
from zemosaic_dask.plans.region_parts import MIN_PART_ROWS, RegionParts, part_regions, plan_region_parts
from zemosaic_dask.tasks.stacking import StackOptions
from zemosaic_dask.testing import simulate_seestar
from zemosaic_dask.units.frame_window import FrameWindowOptions
from zemosaic_dask.units.mosaic_region import run_mosaic_region, run_region_part, write_region_parts
from zemosaic_dask.units.region_job import RegionRows
from zemosaic_dask.units.region_write import write_region_rows


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    folder = tmp_path_factory.mktemp("region-parts")
    result = simulate_seestar(folder / "frames", 8, 5, scale=0.15, panels=(1, 2), trails=1)
    frames = [inspect_frame(str(path)) for path in result.frames]
    grid = plan_output_grid(frames, chunk=1024)
    assert grid.n_regions == (1, 1), grid.shape  # one region: every thread but one would idle
    return folder, frames, grid


def _coefficients(count: int) -> FrameCoefficientTable:
    rng = np.random.default_rng(3)
    gains = tuple(tuple(float(g) for g in rng.uniform(0.8, 1.2, 3)) for _ in range(count))
    offsets = tuple(tuple(float(o) for o in rng.uniform(-20, 20, 3)) for _ in range(count))
    weights = tuple(tuple(float(w) for w in rng.uniform(0.5, 1.5, 3)) for _ in range(count))
    planes = tuple(
        tuple(
            (float(rng.uniform(-5, 5)), float(rng.uniform(-0.01, 0.01)), float(rng.uniform(-0.01, 0.01)), 1.0)
            for _ in range(3)
        )
        for _ in range(count)
    )
    noise = tuple(tuple(float(n) for n in rng.uniform(8, 12, 3)) for _ in range(count))
    sky = tuple(tuple(float(v) for v in rng.uniform(90, 110, 3)) for _ in range(count))
    return FrameCoefficientTable(gains, offsets, weights, planes, noise, sky)


def _job(session, name, stack, duplicate=False):
    folder, frames, grid = session
    ids = list(range(len(frames)))
    if duplicate:  # a frame listed twice counts once in the coverage: its parts must keep both entries
        frames, ids = [*frames, frames[2]], [*ids, 2]
    store, _ = open_mosaic_store(str(folder / f"{name}.zarr"), grid, 3, fingerprint=name, restart=True)
    table = _coefficients(len(session[1]))
    # A small memory bound: the whole region and each part are stacked in bands that do not line up.
    window = FrameWindowOptions(n_channels=3)
    (job,) = region_jobs(grid, frames, store, stack, window, frame_ids=ids, max_bytes=3 * 2**20, coefficients=table)
    return store, job


def _assert_same_pixels(a, b):
    """The same pixels up to the coarse map's interpolation.

    A frame's coarse map has its nodes on the band a task maps, and a part's bands are not
    the single task's: values agree to 1e-5 almost everywhere, and where a sample sits at a
    rejection threshold it may flip, as it may between two runs with different memory bounds.
    A part with another frame's coefficients, a row lost or shifted, fails.
    """
    assert a.shape == b.shape
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    close = np.isclose(a, b, rtol=1e-5, atol=1e-3, equal_nan=True)
    assert close.mean() > 0.999, (close.mean(), np.nanmax(np.abs(a - b)))


def _arrays(store):
    return [np.asarray(store.array(name, mode="r")[...]) for name in ("mosaic", "coverage", "alpha")]


@pytest.mark.parametrize(
    ("stack", "duplicate"),
    [
        (StackOptions(rejection="noise_clip", normalisation="linear_fit", weighting="noise_variance"), False),
        (StackOptions(rejection="kappa_sigma", combine="median"), True),
        (StackOptions(rejection="none", combine="mean", weighting="noise_variance", normalisation="sky_mean"), True),
    ],
    ids=["noise-clip", "kappa-median-duplicate", "streaming-mean-duplicate"],
)
def test_parts_give_the_pixels_of_one_task(session, stack, duplicate):
    whole_store, whole = _job(session, "whole", stack, duplicate)
    split_store, job = _job(session, "split", stack, duplicate)
    summary = run_mosaic_region(whole)
    assert summary.bands > 1 or stack.rejection == "none"  # the single task is banded (the mean streams)
    pieces = part_jobs(job, 3)
    assert sum(p.region.shape[0] for p in pieces) == job.region.shape[0]
    # Each part keeps only the frames reaching its rows, with their own coefficient rows.
    assert all(len(p.frames) == len(p.frame_ids) == len(p.gains) == len(p.planes) for p in pieces)
    assert any(len(p.frames) < len(job.frames) for p in pieces)
    parts = [run_region_part(p) for p in pieces]
    written = write_region_parts(job, *reversed(parts))
    assert written.frames == summary.frames and written.contributing == summary.contributing
    (image_a, cover_a, alpha_a), (image_b, cover_b, alpha_b) = _arrays(whole_store), _arrays(split_store)
    _assert_same_pixels(image_a, image_b)
    np.testing.assert_array_equal(cover_a, cover_b)
    np.testing.assert_array_equal(alpha_a, alpha_b)
    assert np.isfinite(_arrays(split_store)[0]).mean() > 0.5


def test_a_resumed_region_skips_its_parts(session):
    store, job = _job(session, "resume", StackOptions(rejection="noise_clip"))
    pieces = part_jobs(job, 2)
    write_region_parts(job, *[run_region_part(p) for p in pieces])
    before = _arrays(store)
    assert [run_region_part(p) for p in pieces] == [None, None]
    assert write_region_parts(job, None, None).reused
    for a, b in zip(before, _arrays(store), strict=True):
        np.testing.assert_array_equal(a, b)


def test_parts_must_tile_the_region(session):
    store, job = _job(session, "tiling", StackOptions())
    height, width = job.region.shape

    def rows(y0, y1):
        return RegionRows(
            y0, y1, np.zeros((3, y1 - y0, width), np.float32), np.ones((y1 - y0, width), np.float32), 1, 0, 0.0
        )

    for bad in ([rows(0, 10), rows(11, height)], [rows(0, 12), rows(10, height)], [rows(0, height - 1)], []):
        with pytest.raises(ValueError, match="do not tile"):
            write_region_rows(job, bad)
    assert not store.region_done(job.region)


def test_part_regions_cut_whole_rows_evenly(session):
    region = session[2].region(0, 0)
    for parts in (1, 2, 3, 7):
        cut = part_regions(region, parts)
        assert len(cut) == parts and cut[0].y0 == region.y0 and cut[-1].y1 == region.y1
        assert all(a.y1 == b.y0 for a, b in zip(cut, cut[1:], strict=False))
        heights = [c.shape[0] for c in cut]
        assert max(heights) - min(heights) <= 1
        assert all((c.iy, c.ix, c.x0, c.x1) == (region.iy, region.ix, region.x0, region.x1) for c in cut)


def test_plan_splits_only_while_regions_are_fewer_than_the_threads(session):
    _, frames, grid = session
    height = grid.region(0, 0).shape[0]
    many = plan_region_parts(grid, frames, threads=64, min_part_samples=1)
    assert many.split == ((0, 0, height // MIN_PART_ROWS),)  # the row floor caps the parts
    assert many.units == height // MIN_PART_ROWS
    two = plan_region_parts(grid, frames, threads=1, min_part_samples=1)
    assert two.split == ((0, 0, 2),) and two.units == 2  # two tasks per thread, no more
    assert plan_region_parts(grid, frames, threads=64, min_part_samples=10**12).split == ()  # too little work
    off = plan_region_parts(grid, frames, threads=64, min_part_samples=0)
    assert off.split == () and "0" in off.reason
    fine = plan_output_grid(frames, chunk=64)  # many regions already: nothing to split
    busy = plan_region_parts(fine, frames, threads=2, min_part_samples=1)
    assert busy.split == () and busy.units >= 4
    assert RegionParts.from_dict(json.loads(json.dumps(many.to_dict()))) == many
    assert RegionParts.from_dict(None).parts_of(0, 0) == 1


def test_a_run_records_its_parts_and_writes_the_same_mosaic(session, tmp_path):
    folder = session[0] / "frames"
    frames = sorted(str(p) for p in folder.glob("frame_*.fits"))
    overrides = {"mode": "mosaic-first", "grid.chunk": 1024}
    split = run(frames, tmp_path / "split", THREADS, **overrides, **{"assembly.min-part-msamples": 0.05})
    whole = run(frames, tmp_path / "whole", THREADS, **overrides, **{"assembly.min-part-msamples": 0})
    plan = json.loads((tmp_path / "split" / "plan.json").read_text())
    assert plan["sections"]["region_parts"]["split"] == [[0, 0, 4]]  # 2 threads -> 4 tasks
    assert plan["sections"]["assembly_plan"]["cpu_workers"] == 2  # no longer capped by the one region
    assert split.report["region_parts"] == [{"region": "0-0", "parts": 4}]
    assert json.loads((tmp_path / "whole" / "plan.json").read_text())["sections"]["region_parts"]["split"] == []
    _assert_same_pixels(split.image, whole.image)
    np.testing.assert_array_equal(split.coverage, whole.coverage)


@pytest.mark.parametrize(
    ("workers", "overrides", "expected"),
    [
        ([{"name": "a", "nthreads": 2}], {}, 4),  # two stacking tasks per thread
        ([{"name": "a", "nthreads": 2}, {"name": "b", "nthreads": 2}], {}, 8),
        ([{"name": "a", "nthreads": 8, "resources": {"GPU": 1}}], {}, 2),  # GPU units run one per GPU
        ([{"name": "a", "nthreads": 2}], {"assembly.cpu-load": 0.5}, 1),  # the window bounds regions, not parts
        ([{"name": "a", "nthreads": 2}], {"assembly.min-part-msamples": 0}, 1),
    ],
)
def test_the_plan_sizes_parts_by_what_can_run_at_once(session, workers, overrides, expected):
    _, frames, _ = session
    config = load_config(
        overrides={"mode": "mosaic-first", "grid.chunk": 1024, "assembly.min-part-msamples": 0.05, **overrides}
    )
    plan = plan_mosaic(frames, [], config, resources=workers)
    parts = RegionParts.from_dict(plan.sections["region_parts"])
    assert parts.parts_of(0, 0) == expected, parts.reason
    assert parts.units == expected
    if expected == 1:
        assert "every region is one task" in parts.reason


def test_a_part_that_cannot_use_its_gpu_runs_on_the_cpu_and_says_so(session, monkeypatch):
    from zemosaic_dask.errors import GpuUnavailableError
    from zemosaic_dask.units import gpu

    def no_device():
        raise GpuUnavailableError("no CUDA device here")

    monkeypatch.setattr(gpu, "gpu_namespace", no_device)
    whole_store, whole = _job(session, "gpu-whole", StackOptions(rejection="noise_clip"))
    store, job = _job(session, "gpu-split", StackOptions(rejection="noise_clip"))
    run_mosaic_region(whole)
    pieces = [dataclasses.replace(p, use_gpu=True, key=f"stack-part-0-0-{k}") for k, p in enumerate(part_jobs(job, 2))]
    parts = [run_region_part(p) for p in pieces]
    assert all(p.backend == "cpu" and "no CUDA device here" in p.gpu_fallback for p in parts)
    summary = write_region_parts(dataclasses.replace(job, key="stack-region-0-0"), *parts)
    assert summary.region == "stack-region-0-0" and "no CUDA device here" in summary.gpu_fallback
    _assert_same_pixels(_arrays(whole_store)[0], _arrays(store)[0])
