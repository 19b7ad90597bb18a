"""Where the time of a streaming-mean Mosaic-First goes, stage by stage, on one thread.

Runs the steps of :func:`zemosaic_dask.units.frame_window.prepare_frame_window` and the
fused kernel for every (region, frame) pair of the data set in this process, timing each:
ingest (``inspect_frame``), mapping (``coarse_pixel_map``), reading the raw window,
hot-pixel correction, demosaicing and the kernel (map interpolation + bilinear sampling
+ accumulation). Executed in a child process of ``bench_mosaic.py --profile``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Seconds per stage over the whole data set, and the (region, frame) pair count."""
    from bench_zemosaic import warm_worker

    from zemosaic_dask.graph.mosaic_first import region_jobs
    from zemosaic_dask.io.frames import inspect_frame, read_frame_window
    from zemosaic_dask.io.store import MosaicStore
    from zemosaic_dask.plans.grid import plan_output_grid
    from zemosaic_dask.tasks.accumulate import MeanSums, WindowMapping, accumulate_window
    from zemosaic_dask.tasks.debayer import correct_hot_pixels, debayer_bilinear
    from zemosaic_dask.tasks.mapping import coarse_pixel_map
    from zemosaic_dask.tasks.stacking import StackOptions
    from zemosaic_dask.units.frame_window import FrameWindowOptions, _window, thread_wcs

    warm_worker()  # numba kernels loaded before the clock starts
    seconds: dict[str, float] = defaultdict(float)
    clock = time.perf_counter
    start = clock()
    frames = [inspect_frame(str(p)) for p in sorted(Path(spec["frames_dir"]).glob("frame_*.fits"))]
    seconds["ingest (inspect_frame)"] = clock() - start
    grid = plan_output_grid(frames, chunk=512)
    options = FrameWindowOptions(n_channels=3)
    jobs = region_jobs(grid, frames, MosaicStore("unused"), StackOptions(rejection="none"), options)
    out_wcs = grid.wcs
    pairs = pixels = window_pixels = 0
    for job in jobs:
        sums = MeanSums.zeros(3, job.region.shape)
        for frame in job.frames:
            t0 = clock()
            coarse = coarse_pixel_map(
                out_wcs, thread_wcs(frame.wcs_header), (job.region.y0, job.region.x0), job.region.shape
            )
            finite = np.isfinite(coarse.x) & np.isfinite(coarse.y)
            window = None
            if finite.any():
                bounds = (
                    coarse.y[finite].min(),
                    coarse.y[finite].max(),
                    coarse.x[finite].min(),
                    coarse.x[finite].max(),
                )
                window = _window(tuple(float(b) for b in bounds), frame.shape)
            t1 = clock()
            seconds["mapping (coarse_pixel_map)"] += t1 - t0
            if window is None:
                continue
            y0, y1, x0, x1 = window
            window_pixels += (y1 - y0) * (x1 - x0)
            raw = read_frame_window(frame, y0, y1, x0, x1)
            t2 = clock()
            raw, _ = correct_hot_pixels(raw, float(np.median(frame.noise)), options.hot_pixel_sigma)
            t3 = clock()
            image = debayer_bilinear(raw, frame.bayer_pattern)
            t4 = clock()
            height, width = frame.shape
            box = (0.0 - y0, height - 1.0 - y0, 0.0 - x0, width - 1.0 - x0)
            pixels += accumulate_window(image, WindowMapping.from_coarse(coarse, (y0, x0), box), sums)
            t5 = clock()
            seconds["read window (read_frame_window)"] += t2 - t1
            seconds["hot pixels (correct_hot_pixels)"] += t3 - t2
            seconds["demosaic (debayer_bilinear)"] += t4 - t3
            seconds["kernel (accumulate_window)"] += t5 - t4
            pairs += 1
    total = sum(seconds.values())
    return {
        "tool": "profile",
        "frames": len(frames),
        "pairs": pairs,
        "output_pixels_accumulated": pixels,
        "window_pixels_per_frame_pixel": round(window_pixels / max(sum(f.shape[0] * f.shape[1] for f in frames), 1), 2),
        "stages": {name: round(value, 2) for name, value in seconds.items()},
        "total_seconds": round(total, 2),
        "kernel_ns_per_pixel": round(seconds["kernel (accumulate_window)"] / max(pixels, 1) * 1e9, 1),
    }
