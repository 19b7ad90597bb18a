"""The background graph: the solve runs as a task, and the client receives only counts and the model."""

from __future__ import annotations

import dask
import numpy as np
import pytest

from zemosaic_dask.graph.background import FRAMES_PER_TASK, PAIRS_PER_TASK, build_background_graph
from zemosaic_dask.io import inspect_frame
from zemosaic_dask.plans import plan_output_grid
from zemosaic_dask.plans.grid import frame_pixel_boxes
from zemosaic_dask.plans.pair_graph import select_overlapping_pairs
from zemosaic_dask.tasks.background_solve import planes_in_frame_pixels, solve_background_planes
from zemosaic_dask.tasks.overlap_planes import PairTable
from zemosaic_dask.testing import held_bytes
from zemosaic_dask.units.background_model import BackgroundModel
from zemosaic_dask.units.background_pairs import (
    frame_summaries,
    gain_equations,
    pair_scale,
    pair_summaries,
    solve_gains,
)
from zemosaic_dask.units.frame_sky import measure_frame_sky
from zemosaic_dask.units.frame_window import FrameWindowOptions

CELL, MODEL, MAX_POINTS, ITERATIONS = 32, "plane", 500, 3


@pytest.fixture(scope="module")
def session(seestar_set):
    frames = [inspect_frame(p) for p in seestar_set[1][:12]]
    grid = plan_output_grid(frames, chunk=256)
    overlaps = select_overlapping_pairs(frame_pixel_boxes(grid, frames), k=None, min_overlap_px=CELL)
    noise = tuple(float(v) for v in np.median([f.noise for f in frames], axis=0))
    return frames, grid, overlaps, noise


def _graph(session, gains: bool):
    frames, grid, overlaps, noise = session
    return build_background_graph(
        frames,
        FrameWindowOptions(),
        grid,
        overlaps,
        cell=CELL,
        noise=noise,
        model=MODEL,
        max_points=MAX_POINTS,
        iterations=ITERATIONS,
        gains=gains,
        channels=3,
    )


def _reference(session, gains: bool) -> np.ndarray:
    """The planes as the units give them called one by one in this process, the solve here too."""
    frames, grid, overlaps, noise = session
    header = grid.header_string()
    measured = [measure_frame_sky(f, FrameWindowOptions(), header, grid.shape, CELL, noise) for f in frames]
    summaries = frame_summaries(*measured)
    everyone = list(range(len(frames)))
    found = solve_gains(len(frames), 3, gain_equations(overlaps, everyone, noise, *measured)) if gains else None
    scale = pair_scale(overlaps, everyone, MODEL, MAX_POINTS, found, *measured)
    pairs = pair_summaries(overlaps, everyone, MODEL, MAX_POINTS, ITERATIONS, found, scale, *measured)
    factors = found.gains if found is not None else np.ones((len(frames), 3))
    observed = np.stack([s[1] for s in summaries]) * factors[:, :, None]
    affines = [s[0] for s in summaries]
    centres = np.array([a.grid_centre for a in affines])
    solution = solve_background_planes(
        len(frames), PairTable.concatenate([pairs]), centres, observed, model=MODEL, iterations=ITERATIONS
    )
    return np.concatenate([planes_in_frame_pixels(solution, affines), factors[:, :, None]], axis=2)


@pytest.mark.parametrize("gains", [False, True])
def test_the_model_task_gives_the_solve_of_its_measurements_and_the_client_only_counts(session, gains):
    frames, _, overlaps, _ = session
    assert len(overlaps) > 8  # enough pairs for a plane per frame
    graph = _graph(session, gains)
    results = dask.compute(*graph.tasks(), scheduler="synchronous")
    *counts, model = results
    # One count per batch of frames and of pairs, each the batch's length: nothing else comes back.
    assert counts == [len(frames)] * -(-len(frames) // FRAMES_PER_TASK) + [
        min(PAIRS_PER_TASK, len(overlaps) - start) for start in range(0, len(overlaps), PAIRS_PER_TASK)
    ]
    assert isinstance(model, BackgroundModel)
    assert model.planes.shape == (len(frames), 3, 4)
    assert model.solution.pairs == len(overlaps)
    np.testing.assert_array_equal(model.planes, _reference(session, gains))


def test_pair_batches_are_held_as_arrays(session):
    """A pair task carries its pairs and frames as int32 arrays: bytes a pair, not a Python tuple of ints each."""
    import pickle

    frames, grid, _, noise = session
    rng = np.random.default_rng(3)
    many = [tuple(int(v) for v in rng.choice(len(frames), 2, replace=False)) for _ in range(20 * PAIRS_PER_TASK)]
    graph = build_background_graph(
        frames, FrameWindowOptions(), grid, many, cell=CELL, noise=noise, model=MODEL,
        max_points=MAX_POINTS, iterations=ITERATIONS, gains=False, channels=3,
    )  # fmt: skip
    layer = next(iter(graph.model.dask.layers.values()))  # the graph is one layer
    pair_tasks = [task for key, task in layer.items() if str(key).startswith("overlap-pairs-") and "count" not in key]
    assert len(pair_tasks) == 20
    kept = pickle.loads(pickle.dumps([task[0].args for task in pair_tasks]))
    held = held_bytes(pickle.dumps([args[:2] for args in kept]))
    assert all(isinstance(args[0], np.ndarray) and args[0].dtype == np.int32 for args in kept)
    assert held < 16 * len(many)  # as tuples of Python ints: about 120 bytes a pair


def test_a_bayer_frames_sky_is_binned_by_colour_and_agrees_with_its_demosaiced_sky(session):
    """``sky-blocks`` reads a Bayer frame's cells from its raw colour blocks, not from a demosaiced frame.

    The two roads measure the same cells of the same sky: their values agree within a small
    fraction of a cell's noise (no bias), and the raw road is what the task returns.
    """
    from zemosaic_dask.io import read_frame_window
    from zemosaic_dask.tasks.sky_blocks import measure_bayer_sky_cells, measure_sky_cells
    from zemosaic_dask.units.frame_sky import frame_affine, thread_wcs
    from zemosaic_dask.units.frame_window import prepare_window

    frames, grid, _, noise = session
    header = grid.header_string()
    differences = []
    for frame in frames[:4]:
        assert frame.layout == "bayer"
        cells, affine = measure_frame_sky(frame, FrameWindowOptions(), header, grid.shape, CELL, noise)
        assert affine == frame_affine(frame, thread_wcs(header))
        raw = read_frame_window(frame, 0, frame.shape[0], 0, frame.shape[1])
        area = abs(float(np.linalg.det(np.asarray(affine.matrix))))
        direct = measure_bayer_sky_cells(
            raw, frame.bayer_pattern, affine.to_grid, CELL, grid.shape, pixel_area=area, noise=noise
        )
        np.testing.assert_array_equal(cells.ids, direct.ids)
        np.testing.assert_array_equal(cells.values, direct.values)
        image, _ = prepare_window(raw, frame, FrameWindowOptions())
        demosaiced = measure_sky_cells(
            image, affine.to_grid, CELL, grid.shape, pixel_area=area, noise=noise, bayer_pattern=frame.bayer_pattern
        )
        # The same binned pixels at the same places: the same cells are filled.
        np.testing.assert_array_equal(cells.ids, demosaiced.ids)
        assert cells.ids.size > 50
        differences.append(cells.values - demosaiced.values)
    difference = np.concatenate(differences, axis=1)
    # A cell mean's noise is the raw noise / 32 or less here (1,024+ colour samples): about
    # 0.5 ADU for this set. Measured: median differences -0.02 / -0.01 / -0.05 ADU (R, G, B; the
    # colour sites sit up to half a pixel from the demosaiced block centre, on a sloping sky),
    # median absolute difference 0.08-0.18 ADU.
    cell_noise = np.asarray(noise) / 32.0
    assert np.all(np.abs(np.median(difference, axis=1)) < 0.2 * cell_noise), np.median(difference, axis=1)
    assert np.all(np.median(np.abs(difference), axis=1) < cell_noise), np.median(np.abs(difference), axis=1)
