"""The noise clip's compiled CPU kernel against its array-operation version, on the same samples.

Samples as the stacking units hand them over (float32 ``(K, C, H, W)``, frames covering
parts of the rows, a sky with stars, a smooth emission and a satellite trail in one sample;
each sample's noise, sky and shot level per frame and channel; the default rejection
settings, the growth around strong rejections included unless ``--grow-radius`` says
otherwise): a dense stack (every sample covers every row, ``K`` samples) and a sparse one
like an SDS batch (10 frames side by side, under one sample per pixel on average). Prints
nanoseconds per sample for each and their ratio, and checks that the keep masks are equal.

    .venv/bin/python benchmarks/bench_noise_clip.py                # K = 4 10 16 40, dense and sparse
    .venv/bin/python benchmarks/bench_noise_clip.py --depths 16 --rows 256
    .venv/bin/python benchmarks/bench_noise_clip.py --grow-radius 0  # without the growth
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np

from zemosaic_dask.config import load_config
from zemosaic_dask.config.policies import stack_options
from zemosaic_dask.tasks.noise_rejection import _reject_noise_clip_arrays, reject_noise_clip
from zemosaic_dask.tasks.signal_structure import smooth_level
from zemosaic_dask.tasks.stacking import STRUCTURE_RADIUS_PX, StackOptions

WIDTH = 2048


def samples(depth: int, rows: int, sparse: bool, seed: int = 0) -> tuple[np.ndarray, ...]:
    """``(values, valid, noise, sky, shot)`` of a simulated stack (see the module docstring)."""
    rng = np.random.default_rng(seed)
    sky = rng.uniform(498.0, 502.0, (depth, 3, 1, 1)).astype(np.float32)
    noise = rng.uniform(8.0, 12.0, (depth, 3, 1, 1)).astype(np.float32)
    yy, xx = np.mgrid[0:rows, 0:WIDTH]
    signal = np.zeros((rows, WIDTH), np.float32)
    for _ in range(40):
        cy, cx = rng.uniform(0, rows), rng.uniform(0, WIDTH)
        signal += 2000.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 4.0)
    signal += 300.0 * np.exp(-((xx - WIDTH / 2) ** 2) / (2 * 300.0**2))
    values = sky + signal[None, None] + rng.normal(0.0, 1.0, (depth, 3, rows, WIDTH)).astype(np.float32) * noise
    valid = np.ones(values.shape, bool)
    for k in range(depth):
        if sparse:  # panels side by side, each frame a block of rows
            y0, x0 = rng.integers(-rows, rows), (k % 5) * 400 + rng.integers(-50, 50)
            inside = np.zeros((rows, WIDTH), bool)
            inside[max(0, y0) : max(0, y0 + rows), max(0, x0) : x0 + 520] = True
            valid[k] &= inside[None]
        else:
            a, b = rng.integers(0, WIDTH // 3), rng.integers(2 * WIDTH // 3, WIDTH)
            valid[k, :, :, :a] = valid[k, :, :, b:] = False
    values = values.astype(np.float32)
    values[~valid] = np.nan
    values[0, :, rows // 2 - 1 : rows // 2 + 2, :] += 700.0  # a trail
    return values, valid, noise, sky, sky.copy()


def array_version(
    values: np.ndarray, valid: np.ndarray, noise: np.ndarray, sky: np.ndarray, shot: np.ndarray, settings: dict
) -> object:
    """The array-operation version, with the smooth level it is given (the kernel computes its own)."""
    floor = smooth_level(values, valid, STRUCTURE_RADIUS_PX)
    return _reject_noise_clip_arrays(values, valid & np.isfinite(values), noise, sky, shot, floor, **settings)


def best_of(repeats: int, call: object) -> float:
    """Shortest of ``repeats`` timed calls, seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=int, nargs="+", default=[4, 10, 16, 40], help="samples per dense stack")
    parser.add_argument("--rows", type=int, default=64, help="rows of 2048 px per stack")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--grow-radius", type=int, default=None, help="default: the configuration's (stack.grow-radius)"
    )
    args = parser.parse_args()
    options: StackOptions = stack_options(load_config())  # the settings a default run stacks with
    settings = dict(
        kappa_low=options.kappa_low,
        kappa_high=options.kappa_high,
        max_iterations=options.max_iterations,
        min_samples=options.min_samples_for_rejection,
        noise_scale=options.noise_scale,
        grow_radius=options.grow_radius if args.grow_radius is None else args.grow_radius,
        grow_kappa=options.grow_kappa,
    )
    print(f"settings: {settings}")
    cases = [(depth, False) for depth in args.depths] + [(10, True)]
    print("| stack | samples | compiled ns/sample | array version ns/sample | array / compiled | masks |")
    print("|---|---|---|---|---|---|")
    for depth, sparse in cases:
        values, valid, noise, sky, shot = samples(depth, args.rows, sparse)

        compiled = functools.partial(
            reject_noise_clip,
            values,
            valid,
            noise,
            background=sky,
            shot_level=shot,
            structure_radius=STRUCTURE_RADIUS_PX,
            **settings,
        )
        arrays = functools.partial(array_version, values, valid, noise, sky, shot, settings)
        first, reference = compiled(), arrays()  # the first call compiles (or loads) the kernel
        same = np.array_equal(first.keep, reference.keep) and (first.pair_rejections, first.grown_rejections) == (
            reference.pair_rejections,
            reference.grown_rejections,
        )
        fast, slow = best_of(args.repeats, compiled), best_of(max(1, args.repeats // 2), arrays)
        size = values.size
        name = f"{'sparse (SDS batch)' if sparse else 'dense'} K={depth}"
        print(
            f"| {name} | {size / 1e6:.1f} M | {fast / size * 1e9:.2f} | {slow / size * 1e9:.2f} | "
            f"{slow / fast:.1f} | {'equal' if same else 'DIFFER'} |"
        )


if __name__ == "__main__":
    main()
