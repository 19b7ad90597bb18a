"""Graph of the background model's measurements, all on the workers.

- ``sky-blocks-<i>``: one frame's sky on the grid cells (:func:`~zemosaic_dask.units.frame_sky.measure_frame_sky`);
- ``frame-gradients-<b>``: a batch of frames' affine maps and own gradients;
- ``gain-pairs-<b>`` and ``frame-gains`` (only with ``background.gains``): the frames' relative gains;
- ``overlap-scale``: the residual scale every pair's robust fit shares, from a sample of pairs;
- ``overlap-pairs-<b>``: a batch of overlapping pairs, each reduced to a robust plane of its differences;
- ``background-model``: the global solve (:func:`~zemosaic_dask.units.background_model.solve_background_model`)
  from the batch gradients, the gains and every pair batch.

Only the model comes back to the client: a few numbers per frame. The cell skies stay on the
workers and are released once their pairs are done; each batch's ``*-count`` task returns its
length, so the client follows the stage's progress without gathering the measurements.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from ..plans.frames import FrameInfo
from ..plans.grid import OutputGrid
from ..tasks.overlap_planes import sample_pairs
from ..units.background_model import solve_background_model
from ..units.background_pairs import frame_summaries, gain_equations, pair_scale, pair_summaries, solve_gains
from ..units.frame_sky import measure_frame_sky
from ..units.frame_window import FrameWindowOptions
from .keys import task_key

__all__ = ["BackgroundGraph", "build_background_graph"]

#: Frames per ``frame-gradients`` task and pairs per ``gain-pairs`` / ``overlap-pairs`` task.
FRAMES_PER_TASK, PAIRS_PER_TASK = 256, 256
#: Pairs the shared residual scale is measured on.
SCALE_SAMPLE = 256


@dataclass(frozen=True)
class BackgroundGraph:
    """The delayed results the client computes: one count per measurement batch, then the model."""

    counts: list[Delayed]
    model: Delayed

    def tasks(self) -> list[Delayed]:
        """Every task to compute: the counts (for the progress bar), the model last."""
        return [*self.counts, self.model]


class _Graph:
    """The background graph as one layer of tasks: dependencies are named by key, never looked for.

    Built with ``dask.delayed``, every task's dependencies (a pair batch reads up to 500
    cell skies) were found by walking its arguments and merging their graphs: 23 s of
    client CPU for the 16,629 tasks of 16,000 frames. Here each task is a bound function and
    the keys of its inputs, and only the results the client gathers become Delayed values.
    """

    def __init__(self) -> None:
        self.name = task_key("background")
        self.tasks: dict[str, tuple] = {}

    def add(self, name: str, func: Any, constants: tuple = (), inputs: Sequence[str | None] = ()) -> str:
        """Add ``func(*constants, *inputs)`` (``inputs``: keys, or None passed as it is) named ``name``."""
        key = task_key(name)
        self.tasks[key] = (functools.partial(func, *constants), *inputs)
        return key

    def delayed(self, keys: Sequence[str]) -> list[Delayed]:
        """The results at ``keys``, each with the whole layer."""
        graph = HighLevelGraph.from_collections(self.name, self.tasks, dependencies=())
        return [Delayed(key, graph, layer=self.name) for key in keys]


def _sky_blocks(
    graph: _Graph,
    frames: Sequence[FrameInfo],
    options: FrameWindowOptions,
    grid: OutputGrid,
    cell: int,
    noise: tuple[float, ...] | None,
) -> list[str]:
    """One :func:`~zemosaic_dask.units.frame_sky.measure_frame_sky` per frame; their keys."""
    header = grid.header_string()
    constants = (options, header, grid.shape, int(cell), noise)
    return [
        graph.add(f"sky-blocks-{index}", functools.partial(measure_frame_sky, frame), constants)
        for index, frame in enumerate(frames)
    ]


def _batches(pairs: Sequence[tuple[int, int]], size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Consecutive batches of ``pairs`` (``(P, 2)`` int32) and the frames each one reads (sorted int32).

    Arrays, not lists of tuples: a task holds its batch while it lives, in the client's graph and
    in the scheduler (about 8 bytes a pair here, 120 as Python tuples of ints).
    """
    out = []
    for start in range(0, len(pairs), size):
        batch = np.asarray(pairs[start : start + size], dtype=np.int32).reshape(-1, 2)
        out.append((batch, np.unique(batch)))
    return out


def build_background_graph(
    frames: Sequence[FrameInfo],
    options: FrameWindowOptions,
    grid: OutputGrid,
    overlaps: Sequence[tuple[int, int]],
    *,
    cell: int,
    noise: tuple[float, ...] | None,
    model: str,
    max_points: int,
    iterations: int,
    gains: bool,
    channels: int,
) -> BackgroundGraph:
    """The background model's measurement graph (see the module docstring).

    Parameters
    ----------
    frames : sequence of FrameInfo
        The plan's frames.
    options : FrameWindowOptions
        Frame preparation options.
    grid : OutputGrid
        The global grid.
    overlaps : sequence of tuple of int
        The overlapping pairs ``(i, j)`` the solve uses.
    cell : int
        Cell side in grid pixels.
    noise : tuple of float or None
        The session's typical pixel noise per channel (clipping unit of the cells).
    model : {"offset", "plane"}
        What each pair's differences are fitted with.
    max_points : int
        Overlap cells used per pair at most.
    iterations : int
        Robust reweighting passes of each pair's fit.
    gains : bool
        Also solve the frames' relative gains first, and compare gain-corrected skies.
    channels : int
        Channels of the mosaic.

    Returns
    -------
    BackgroundGraph
    """
    graph = _Graph()
    sky = _sky_blocks(graph, frames, options, grid, cell, noise)
    gradients = [
        graph.add(f"frame-gradients-{b}", frame_summaries, (), sky[start : start + FRAMES_PER_TASK])
        for b, start in enumerate(range(0, len(frames), FRAMES_PER_TASK))
    ]
    gain_task = None
    if gains and noise:
        equations = [
            graph.add(f"gain-pairs-{b}", gain_equations, (pairs, used, tuple(noise)), [sky[f] for f in used])
            for b, (pairs, used) in enumerate(_batches(overlaps, PAIRS_PER_TASK))
        ]
        gain_task = graph.add("frame-gains", solve_gains, (len(frames), len(noise)), equations)
    sampled = sample_pairs(overlaps, SCALE_SAMPLE)
    sample, used = _batches(sampled, len(sampled))[0] if sampled else ([], [])
    scale = graph.add(
        "overlap-scale", pair_scale, (sample, used, model, max_points), [gain_task, *[sky[f] for f in used]]
    )
    pair_tasks = [
        graph.add(
            f"overlap-pairs-{b}",
            pair_summaries,
            (pairs, used, model, max_points, iterations),
            [gain_task, scale, *[sky[f] for f in used]],
        )
        for b, (pairs, used) in enumerate(_batches(overlaps, PAIRS_PER_TASK))
    ]
    counts = [graph.add(f"frame-gradients-{b}-count", len, (), [key]) for b, key in enumerate(gradients)]
    counts += [graph.add(f"overlap-pairs-{b}-count", len, (), [key]) for b, key in enumerate(pair_tasks)]
    solve = graph.add(
        "background-model",
        solve_background_model,
        (len(frames), channels, model, iterations, len(gradients), gain_task is not None),
        [*gradients, *([gain_task] if gain_task else []), *pair_tasks],
    )
    out = graph.delayed([*counts, solve])
    return BackgroundGraph(out[:-1], out[-1])
