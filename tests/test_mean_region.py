"""The streaming weighted mean and the in-place sample stack against the stacking path."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from zemosaic_dask.errors import ConfigError
from zemosaic_dask.graph.mosaic_first import region_jobs
from zemosaic_dask.io.frames import inspect_frame
from zemosaic_dask.io.store import open_mosaic_store
from zemosaic_dask.plans.grid import plan_output_grid
from zemosaic_dask.tasks.stacking import StackOptions
from zemosaic_dask.testing import simulate_seestar
from zemosaic_dask.units.frame_window import FrameWindowOptions, resample_frame_to_region
from zemosaic_dask.units.mean_region import build_mean_region, can_stream_mean, sample_region_frames
from zemosaic_dask.units.mosaic_region import build_mosaic_region

MEAN = StackOptions(rejection="none", combine="mean")


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mean-region")
    result = simulate_seestar(folder / "frames", 6, 11, scale=0.15, panels=(2, 1))
    frames = [inspect_frame(str(path)) for path in result.frames]
    # Frame 0 listed twice: a duplicate counts twice in the mean, once in the coverage.
    frames = [*frames, frames[0]]
    frame_ids = [0, 1, 2, 3, 4, 5, 0]
    grid = plan_output_grid(frames, chunk=64)
    return folder, frames, frame_ids, grid


def _jobs(session, name, stack=MEAN, window=None, **coefficients):
    folder, frames, frame_ids, grid = session
    store, _ = open_mosaic_store(str(folder / f"{name}.zarr"), grid, 3, fingerprint=name, restart=True)
    window = window or FrameWindowOptions(n_channels=3)
    jobs = region_jobs(grid, frames, store, stack, window, frame_ids=frame_ids)
    if coefficients:
        jobs = [
            dataclasses.replace(job, **{k: tuple(v[i] for i in _members(job, frames)) for k, v in coefficients.items()})
            for job in jobs
        ]
    return store, jobs


def _members(job, frames):
    """Index in the session's frame list of each job entry (duplicates keep their position)."""
    used: dict[str, list[int]] = {}
    for index, frame in enumerate(frames):
        used.setdefault(frame.path, []).append(index)
    seen: dict[str, int] = {}
    out = []
    for frame in job.frames:
        k = seen.get(frame.path, 0)
        out.append(used[frame.path][k])
        seen[frame.path] = k + 1
    return out


def _read(store):
    return (np.asarray(store.array(name, mode="r")[...]) for name in ("mosaic", "coverage", "alpha"))


def _compare(session, name, stack=MEAN, window=None, **coefficients):
    reference, ref_jobs = _jobs(session, f"{name}-stack", stack, window, **coefficients)
    streaming, mean_jobs = _jobs(session, f"{name}-mean", stack, window, **coefficients)
    for job in ref_jobs:
        build_mosaic_region(job)
    summaries = [build_mean_region(job) for job in mean_jobs]
    image_ref, coverage_ref, alpha_ref = _read(reference)
    image, coverage, alpha = _read(streaming)
    np.testing.assert_array_equal(coverage, coverage_ref)
    np.testing.assert_array_equal(alpha, alpha_ref)
    np.testing.assert_array_equal(np.isnan(image), np.isnan(image_ref))
    np.testing.assert_allclose(image, image_ref, rtol=2e-6, atol=1e-4, equal_nan=True)
    return image, coverage, summaries


def test_streaming_mean_equals_stack_without_rejection(session):
    image, coverage, summaries = _compare(session, "plain")
    assert np.isfinite(image).any() and coverage.max() >= 2
    # The duplicate of frame 0 counts once: coverage never exceeds the number of distinct frames.
    assert coverage.max() <= 6
    assert all(s.backend == "cpu" and not s.reused for s in summaries)
    assert sum(s.contributing for s in summaries) > len(summaries)


def test_streaming_mean_with_normalisation_and_per_channel_weights(session):
    rng = np.random.default_rng(5)
    count = len(session[1])
    gains = rng.uniform(0.8, 1.2, (count, 3))
    offsets = rng.uniform(-20, 20, (count, 3))
    weights = rng.uniform(0.2, 1.0, (count, 3))
    weights[2, 1] = 0.0  # a frame excluded from one channel still counts in the coverage
    stack = StackOptions(rejection="none", combine="mean", normalisation="linear_fit", weighting="noise_variance")
    _compare(session, "coefficients", stack, gains=gains, offsets=offsets, weights=weights)


@pytest.mark.parametrize("method", ["bicubic", "lanczos3"])
def test_streaming_mean_with_other_interpolations(session, method):
    window = FrameWindowOptions(n_channels=3, interpolation=method)
    image, _, _ = _compare(session, method, window=window)
    store, jobs = _jobs(session, f"{method}-bilinear")
    for job in jobs:
        build_mean_region(job)
    bilinear, _, _ = _read(store)
    finite = np.isfinite(image) & np.isfinite(bilinear)
    # A different kernel gives a different (sharper) image with the same fluxes on average.
    assert not np.allclose(image[finite], bilinear[finite], rtol=1e-3)
    assert abs(np.mean(image[finite]) / np.mean(bilinear[finite]) - 1) < 1e-3


def test_sample_region_frames_equals_per_frame_resampling(session):
    _, frames, _, grid = session
    _, jobs = _jobs(session, "samples")
    job = max(jobs, key=lambda j: len(j.frames))
    result = sample_region_frames(job)
    expected = [(i, resample_frame_to_region(f, grid.wcs, job.region, job.window)) for i, f in enumerate(job.frames)]
    expected = [(i, c) for i, c in expected if c is not None]
    assert result.keep == [i for i, _ in expected]
    assert result.samples.shape == (len(expected), 3, *job.region.shape)
    for k, (_, contribution) in enumerate(expected):
        np.testing.assert_array_equal(result.footprints[k], contribution.footprint)
        np.testing.assert_allclose(result.samples[k], contribution.values, rtol=1e-6, atol=1e-4, equal_nan=True)


def test_rejection_jobs_are_refused(session):
    _, jobs = _jobs(session, "refused", StackOptions(rejection="kappa_sigma"))
    assert not can_stream_mean(jobs[0])
    with pytest.raises(ConfigError, match="rejection 'kappa_sigma'"):
        build_mean_region(jobs[0])
    _, jobs = _jobs(session, "refused-weights", StackOptions(rejection="none", weighting="noise_variance"))
    with pytest.raises(ConfigError, match="weighting"):
        build_mean_region(jobs[0])


def test_completed_region_is_reused(session):
    _, jobs = _jobs(session, "reuse")
    first = build_mean_region(jobs[0])
    again = build_mean_region(jobs[0])
    assert not first.reused and again.reused


def test_a_deep_task_keeps_every_frames_wcs_while_it_runs_and_no_longer():
    """Band after band visits every frame: inside ``wcs_cache_for`` no WCS is parsed twice."""
    from astropy.wcs import WCS

    from zemosaic_dask.units.frame_window import _WCS_CACHE_SIZE, thread_wcs, wcs_cache_for

    def header(i: int) -> str:
        wcs = WCS(naxis=2)
        wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        wcs.wcs.crval = [10.0 + i * 1e-4, 20.0]
        wcs.wcs.crpix = [50.0, 30.0]
        wcs.wcs.cdelt = [-1e-3, 1e-3]
        return wcs.to_header_string()

    headers = [header(i) for i in range(_WCS_CACHE_SIZE + 44)]
    with wcs_cache_for(len(headers)):
        first = [thread_wcs(h) for h in headers]
        second = [thread_wcs(h) for h in headers]  # the next band, the same frames in the same order
        assert all(a is b for a, b in zip(first, second, strict=True))
    again = [thread_wcs(h) for h in headers]  # back to the usual size: a cycle longer than it re-parses
    assert not any(a is b for a, b in zip(second, again, strict=True))
    assert thread_wcs(headers[-1]) is again[-1]  # and the cache still works
