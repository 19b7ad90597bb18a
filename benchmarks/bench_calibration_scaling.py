"""How the pair selection and the global gain/offset solve scale with the frames of a session.

Two layouts of frame boxes on the output grid (Seestar frames, 1080 x 1920 px):

- ``deep``: every frame points at one field, with a jitter of ``--jitter`` px (a deep session:
  every frame overlaps every other one);
- ``wide``: frame centres spread uniformly over a square holding about ``--depth`` frames per
  frame area (a mosaic of many panels, each covered several times).

For each set it prints the number of pairs and the time of the pair search with every
overlapping pair (``find_overlapping_pairs``, "all") and with the bounded selection
(``select_overlapping_pairs``, "bounded"), then the time of the global solve
(``solve_tile_corrections``) on synthetic pair fits made from planted gains and offsets (pair
gains measured to ``--gain-noise``), with the largest error of the recovered gains and offsets.
"All" is run only where it fits: pairs up to ``--max-all-pairs`` for the search and
``--max-solve-pairs`` for the solve (the count of every pair is always given, from a vectorised
brute-force count).

Usage::

    python benchmarks/bench_calibration_scaling.py
    python benchmarks/bench_calibration_scaling.py --frames 250 1000 --wide 4000 --k 6
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from zemosaic_dask.plans.overlaps import find_overlapping_pairs
from zemosaic_dask.plans.pair_graph import DEFAULT_PAIR_NEIGHBOURS, select_overlapping_pairs
from zemosaic_dask.tasks.gain_solve import solve_tile_corrections
from zemosaic_dask.tasks.intertile import PairFit

SHAPE = (1080, 1920)
SKY = 500.0


def deep_boxes(rng: np.random.Generator, n: int, jitter: float) -> np.ndarray:
    centres = np.round(rng.normal(0.0, jitter, (n, 2))).astype(np.int64) + 10_000
    return np.column_stack([centres[:, 0], centres[:, 0] + SHAPE[0], centres[:, 1], centres[:, 1] + SHAPE[1]])


def wide_boxes(rng: np.random.Generator, n: int, depth: float) -> np.ndarray:
    side = np.sqrt(n / depth)  # in frame sizes
    y = rng.uniform(0.0, side * SHAPE[0], n).astype(np.int64)
    x = rng.uniform(0.0, side * SHAPE[1], n).astype(np.int64)
    return np.column_stack([y, y + SHAPE[0], x, x + SHAPE[1]])


def count_all_pairs(boxes: np.ndarray, chunk: int = 1000) -> int:
    total = 0
    for start in range(0, len(boxes), chunk):
        part = boxes[start : start + chunk]
        dy = np.minimum(part[:, None, 1], boxes[None, :, 1]) - np.maximum(part[:, None, 0], boxes[None, :, 0])
        dx = np.minimum(part[:, None, 3], boxes[None, :, 3]) - np.maximum(part[:, None, 2], boxes[None, :, 2])
        hit = (dy >= 8) & (dx >= 8)
        rows = np.arange(start, start + len(part))[:, None]
        total += int(np.count_nonzero(hit & (np.arange(len(boxes))[None, :] > rows)))
    return total


def synthetic_fits(rng: np.random.Generator, pairs, gains: np.ndarray, offsets: np.ndarray, noise: float):
    """Pair fits ``x_j = a x_i + b`` of layers ``G_k truth + O_k``, gains measured to ``noise``."""
    fits = []
    sky = np.full(gains.shape[1], SKY)
    for i, j in pairs:
        a = gains[j] / gains[i] * (1.0 + rng.normal(0.0, noise, gains.shape[1]))
        b = offsets[j] + gains[j] / gains[i] * (sky - offsets[i]) - a * sky + rng.normal(0.0, 0.5, gains.shape[1])
        fits.append(PairFit(i, j, tuple(a), tuple(b), 900, (15.0,) * len(a), tuple(sky), None, (noise,) * len(a)))
    return fits


def solve(n: int, pairs, gains, offsets, noise: float, seed: int) -> tuple[float, float, float]:
    fits = synthetic_fits(np.random.default_rng(seed), pairs, gains, offsets, noise)
    start = time.perf_counter()
    corrections = solve_tile_corrections(n, fits)
    elapsed = time.perf_counter() - start
    ref = corrections.anchor
    effective_gain = corrections.gain_array * gains
    effective_offset = corrections.gain_array * offsets + corrections.offset_array
    gain_error = np.abs(effective_gain / effective_gain[ref] - 1.0).max()
    offset_error = np.abs((effective_offset - effective_offset[ref]) / effective_gain[ref] / SKY).max()
    return elapsed, float(gain_error), float(offset_error)


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def bench(name: str, boxes: np.ndarray, args: argparse.Namespace) -> None:
    n = len(boxes)
    rng = np.random.default_rng(args.seed)
    gains = rng.uniform(0.8, 1.2, (n, 1))
    offsets = rng.uniform(-25.0, 25.0, (n, 1))
    every = count_all_pairs(boxes)
    bounded, t_bounded = timed(select_overlapping_pairs, boxes.tolist(), k=args.k, min_overlap_px=8)
    all_pairs, t_all = None, float("nan")
    if every <= args.max_all_pairs:
        all_pairs, t_all = timed(find_overlapping_pairs, boxes.tolist(), min_overlap_px=8)
    s_bounded = solve(n, bounded, gains, offsets, args.gain_noise, args.seed)
    s_all = (float("nan"),) * 3
    if all_pairs is not None and every <= args.max_solve_pairs:
        s_all = solve(n, all_pairs, gains, offsets, args.gain_noise, args.seed)
    print(
        f"| {name} | {n:,} | {every:,} | {len(bounded):,} | {t_all:.2f} | {t_bounded:.2f} "
        f"| {s_all[0]:.2f} | {s_bounded[0]:.2f} | {100 * s_all[1]:.2f} / {100 * s_all[2]:.2f} "
        f"| {100 * s_bounded[1]:.2f} / {100 * s_bounded[2]:.2f} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="*", default=[250, 1000, 4000, 16000], help="deep sets")
    parser.add_argument("--wide", type=int, nargs="*", default=[4000, 16000], help="wide sets")
    parser.add_argument("--jitter", type=float, default=60.0, help="deep pointing jitter, px (1 sigma)")
    parser.add_argument("--depth", type=float, default=8.0, help="wide: frames per frame area")
    parser.add_argument("--k", type=int, default=DEFAULT_PAIR_NEIGHBOURS, help="overlaps kept per frame")
    parser.add_argument("--gain-noise", type=float, default=0.003, help="relative error of a pair's gain")
    parser.add_argument("--max-all-pairs", type=int, default=600_000, help="largest 'all pairs' search run")
    parser.add_argument("--max-solve-pairs", type=int, default=50_000, help="largest 'all pairs' solve run")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("zemosaic_dask").setLevel(logging.ERROR)
    print(f"k = {args.k}; times in s; errors: largest gain / offset error in % (pair gains to {args.gain_noise:.1%})")
    print("| layout | frames | pairs (all) | pairs (bounded) | search all | search bounded | solve all "
          "| solve bounded | error all | error bounded |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(args.seed)
    for n in args.frames:
        bench("deep", deep_boxes(rng, n, args.jitter), args)
    for n in args.wide:
        bench("wide", wide_boxes(rng, n, args.depth), args)


if __name__ == "__main__":
    main()
