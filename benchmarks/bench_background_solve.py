"""How the global background model's solve grows with the number of frames, deep and wide.

The background model (``zemosaic_dask.tasks.background_solve``) is solved on the client from
every selected overlapping pair. This benchmark gives it what a run gives it, at survey sizes
no end-to-end benchmark reaches on 2 cores: the frames of ``bench_planning_scaling`` (deep:
full-size 1080 x 1920 frames of one field, rotated up to 30 deg; wide: a survey of quarter-size
frames), each frame's sky measured on the grid's cells as a run measures it (32 px; 8 px for the
wide layout's quarter-size frames, so that frames and overlaps hold as many cells as full ones) (every cell
the frame fills, 3 channels), made of a sky common to all frames (a halo larger than a frame),
each frame's own offset (+-60 ADU) and detector-fixed gradient (25 % of a 300 ADU sky over the
frame, turning with the frame), cell noise and 2 % of cells hit by a star or trail (+50 ADU).

For each (layout, N), a fresh child process times the steps the client runs (pair selection,
pair summaries, the frames' observed gradients, the solve) and reports its peak RSS, the
overlap rms before and after, and the error of the solved models against the truth (rms over
frames of the model's value at the frame centre, after removing the one offset and plane no
overlap can see).

    python benchmarks/bench_background_solve.py                         # 1000 4000 16000, both layouts
    python benchmarks/bench_background_solve.py --frames 1000 --layouts deep
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_planning_scaling import deep_frames, wide_frames  # noqa: E402

LAYOUTS = ("deep", "wide")
CHANNELS, SKY, NOISE, OUTLIERS = 3, 300.0, 0.5, 0.02
#: Cell side per layout: the wide layout's quarter-size frames get quarter-size cells, so that a frame
#: holds as many cells, and two neighbouring pointings share as many, as full frames on 32-px cells.
CELLS = {"deep": 32, "wide": 8}


def _affines(grid: Any, frames: list[Any]) -> list[Any]:
    """Each frame's pixel -> grid affine from three projected points."""
    from astropy.wcs import WCS

    from zemosaic_dask.tasks.background_solve import FrameAffine

    projection = grid.projection()
    out = []
    for frame in frames:
        wcs = WCS(frame.wcs_header)
        h, w = frame.shape
        xc, yc = (w - 1) / 2, (h - 1) / 2
        ra, dec = wcs.all_pix2world([xc, xc + 1, xc], [yc, yc, yc + 1], 0)
        gx, gy = projection.all_world2pix(ra, dec, 0)
        matrix = ((gx[1] - gx[0], gx[2] - gx[0]), (gy[1] - gy[0], gy[2] - gy[0]))
        out.append(FrameAffine((xc, yc), (float(gx[0]), float(gy[0])), matrix))
    return out


def _cells(grid: Any, frames: list[Any], affines: list[Any], seed: int, cell: int) -> tuple[list[Any], np.ndarray]:
    """Every frame's cell sky and the true models ``(N, C, 3)`` in grid coordinates."""
    from zemosaic_dask.tasks.background_solve import PLANE_LENGTH
    from zemosaic_dask.tasks.sky_blocks import SkyCells

    rng = np.random.default_rng(seed)
    height, width = grid.shape
    n_columns = -(-width // cell)
    centre = np.array([width / 2, height / 2])
    truth = np.zeros((len(frames), CHANNELS, 3))
    cells = []
    for k, (frame, affine) in enumerate(zip(frames, affines, strict=True)):
        h, w = frame.shape
        m = np.asarray(affine.matrix)
        reach = 0.5 * (abs(m) @ np.array([w, h]))
        x0, x1 = (np.array([-1, 1]) * reach[0] + affine.grid_centre[0]) // cell
        y0, y1 = (np.array([-1, 1]) * reach[1] + affine.grid_centre[1]) // cell
        rows, columns = np.mgrid[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1].astype(np.int64)
        ids = (rows * n_columns + columns).ravel()
        gx, gy = (columns.ravel() + 0.5) * cell - 0.5, (rows.ravel() + 0.5) * cell - 0.5
        fx, fy = affine.to_frame(gx, gy)
        margin = cell / 2  # the whole cell inside the frame
        inside = (fx > margin) & (fx < w - margin) & (fy > margin) & (fy < h - margin)
        ids, gx, gy, fy = ids[inside], gx[inside], gy[inside], fy[inside]
        offset = rng.uniform(-60, 60, CHANNELS)
        slope = 0.25 * SKY / h * rng.uniform(0.8, 1.2, CHANNELS)  # per frame pixel along the detector's y
        grid_slope = np.outer(slope, np.linalg.inv(m)[1])  # d/dX, d/dY on the grid
        truth[k, :, 0] = offset
        truth[k, :, 1:] = grid_slope * PLANE_LENGTH
        halo = 40.0 * np.exp(-(((gx - centre[0]) ** 2 + (gy - centre[1]) ** 2) / (2 * (0.3 * max(height, width)) ** 2)))
        own = (
            offset[:, None]
            + grid_slope[:, :1] * (gx - affine.grid_centre[0])
            + grid_slope[:, 1:] * (gy - affine.grid_centre[1])
        )
        values = SKY + halo + own + rng.normal(0.0, NOISE, (CHANNELS, ids.size))
        values[:, rng.random(ids.size) < OUTLIERS] += 50.0
        cells.append(SkyCells(ids, values, np.zeros_like(values), cell, n_columns))
    return cells, truth


def _error(solved: np.ndarray, truth: np.ndarray, centres: np.ndarray, pairs: list[Any]) -> float:
    """Rms over frames and channels of the models' difference at the frame centres, null space removed.

    The null space is one offset and plane per group of frames linked by overlaps: it moves
    every frame's offset by the same plane's value at the frame's centre.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from zemosaic_dask.tasks.background_solve import PLANE_LENGTH

    n = len(centres)
    graph = coo_matrix((np.ones(len(pairs)), ([p.i for p in pairs], [p.j for p in pairs])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    basis = np.column_stack([np.ones(n), centres / PLANE_LENGTH])
    squares = np.zeros(truth.shape[1])
    for group in np.unique(labels):
        members = labels == group
        for c in range(truth.shape[1]):
            delta = solved[members, c, 0] - truth[members, c, 0]
            fit, *_ = np.linalg.lstsq(basis[members], delta, rcond=None)
            squares[c] += float(np.sum((delta - basis[members] @ fit) ** 2))
    return float(np.sqrt(squares.max() / n))


def run_child(frames_file: str, seed: int, cell: int) -> None:
    """Build the cells, then time the client's steps; print one JSON line of results."""
    from zemosaic_dask.config import default_config
    from zemosaic_dask.plans import plan_output_grid
    from zemosaic_dask.plans.grid import frame_pixel_boxes
    from zemosaic_dask.plans.pair_graph import select_overlapping_pairs
    from zemosaic_dask.tasks.background_solve import frame_gradients, solve_background_planes
    from zemosaic_dask.tasks.overlap_planes import overlap_scale, summarise_pair

    config = default_config()
    with open(frames_file, "rb") as fh:
        frames = pickle.load(fh)
    g = config.grid
    grid = plan_output_grid(frames, padding_px=g.padding_px, chunk=g.chunk, max_pixels=int(g.max_pixels))
    affines = _affines(grid, frames)
    cells, truth = _cells(grid, frames, affines, seed, cell)
    settings = config.background
    steps: dict[str, float] = {}
    start = time.perf_counter()
    overlaps = select_overlapping_pairs(
        frame_pixel_boxes(grid, frames), k=config.calibration.pair_neighbours, min_overlap_px=cell
    )
    steps["pairs"] = time.perf_counter() - start
    start = time.perf_counter()
    scale = overlap_scale(cells, overlaps, max_points=settings.max_points_per_pair)
    pairs = []
    for i, j in overlaps:
        found = summarise_pair(
            i,
            j,
            cells[i],
            cells[j],
            max_points=settings.max_points_per_pair,
            iterations=settings.iterations,
            scale=scale,
        )
        if found is not None:
            pairs.append(found)
    steps["summaries"] = time.perf_counter() - start
    start = time.perf_counter()
    observed = frame_gradients(cells, affines)
    steps["gradients"] = time.perf_counter() - start
    centres = np.array([a.grid_centre for a in affines])
    start = time.perf_counter()
    solution = solve_background_planes(len(frames), pairs, centres, observed, iterations=settings.iterations)
    steps["solve"] = time.perf_counter() - start
    result = {
        "steps": steps,
        "pairs": len(pairs),
        "points": solution.points,
        "cells_mib": sum(c.ids.nbytes + c.values.nbytes + c.fluxes.nbytes for c in cells) / 2**20,
        "rms_before": float(solution.rms_before.max()),
        "rms_after": float(solution.rms_after.max()),
        "model_error": _error(solution.coefficients, truth, centres, pairs),
        "groups": solution.groups,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--child", nargs=3, metavar=("FRAMES", "SEED", "CELL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child[0], int(args.child[1]), int(args.child[2]))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for layout in args.layouts:
            for n in args.frames:
                frames = (deep_frames if layout == "deep" else wide_frames)(n, seed=args.seed)
                frames_file = str(Path(tmp) / f"{layout}-{n}.pkl")
                with open(frames_file, "wb") as fh:
                    pickle.dump(frames, fh)
                out = subprocess.run(
                    [sys.executable, __file__, "--child", frames_file, str(args.seed), str(CELLS[layout])],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                row = {"layout": layout, "frames": n, **json.loads(out.strip().splitlines()[-1])}
                rows.append(row)
                steps = row["steps"]
                print(
                    f"{layout:5s} {n:6d}  pairs {row['pairs']:7d} ({row['pairs'] / n:4.1f}/frame,"
                    + f" {row['groups']} group(s))  "
                    + "  ".join(f"{k} {v:7.2f} s" for k, v in steps.items())
                    + f"  peak {row['peak_rss_mib']:6.0f} MiB (cells {row['cells_mib']:.0f})"
                    + f"  rms {row['rms_before']:.1f} -> {row['rms_after']:.3f}"
                    + f"  model error {row['model_error']:.3f} ADU",
                    flush=True,
                )
    if len(rows) > 1:
        for layout in args.layouts:
            mine = [r for r in rows if r["layout"] == layout]
            if len(mine) > 1:
                n = np.log([r["frames"] for r in mine])
                for key in ("summaries", "solve"):
                    t = np.log([max(r["steps"][key], 1e-6) for r in mine])
                    print(f"{layout}: {key} time grows as N^{np.polyfit(n, t, 1)[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
