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
