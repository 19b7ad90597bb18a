"""GPU benchmark of the fused kernel (executed in a child process of bench_mosaic.py; needs cupy).

Two figures:

- kernel: every frame's prepared window is accumulated onto the busiest output region
  (2048 x 2048 px) with :func:`zemosaic_dask.tasks.accumulate.accumulate_window`, timed
  with CUDA events; the achieved memory bandwidth counts the bytes the kernel must move
  (the window read once, the float64 sums and coverage read and written once) and is
  compared with the card's peak, ``2 x memoryClockRate x memoryBusWidth``;
- end to end: :func:`zemosaic_dask.units.mean_region.build_mean_region` over every region
  of the mosaic on one GPU, in this process (reading and preparing windows included).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any


def _jobs(frames_dir: Path, store_dir: Path, chunk: int) -> tuple[list[Any], int]:
    from zemosaic_dask.graph.mosaic_first import region_jobs
    from zemosaic_dask.io.frames import inspect_frame
    from zemosaic_dask.io.store import open_mosaic_store
    from zemosaic_dask.plans.grid import plan_output_grid
    from zemosaic_dask.tasks.stacking import StackOptions
    from zemosaic_dask.units.frame_window import FrameWindowOptions

    frames = [inspect_frame(str(p)) for p in sorted(frames_dir.glob("frame_*.fits"))]
    grid = plan_output_grid(frames, chunk=chunk)
    store, _ = open_mosaic_store(str(store_dir / "gpu.zarr"), grid, 3, fingerprint=f"gpu-{chunk}", restart=True)
    jobs = region_jobs(grid, frames, store, StackOptions(rejection="none"), FrameWindowOptions(n_channels=3))
    return jobs, len(frames)


def _peak_bandwidth(cupy: Any) -> tuple[str, float]:
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return name, 2.0 * props["memoryClockRate"] * 1e3 * props["memoryBusWidth"] / 8.0


def kernel_figures(cupy: Any, jobs: list[Any], repeats: int = 5) -> dict[str, Any]:
    """Time the accumulate kernel on the busiest region; return frames/s and bandwidth."""
    from zemosaic_dask.tasks.accumulate import MeanSums, WindowMapping, accumulate_window
    from zemosaic_dask.units.frame_window import prepare_frame_window

    job = max(jobs, key=lambda j: len(j.frames))
    out_wcs = job.grid.wcs
    windows = []
    for frame in job.frames:
        prepared = prepare_frame_window(frame, out_wcs, job.region, job.window, cupy)
        if prepared is not None:
            windows.append(prepared)
    sums = MeanSums.zeros(3, job.region.shape, cupy)
    mappings = [WindowMapping.from_coarse(p.coarse, p.origin, p.valid_box) for p in windows]
    for prepared, mapping in zip(windows, mappings, strict=True):  # compile and warm up
        accumulate_window(prepared.image, mapping, sums)
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    for _ in range(repeats):
        for prepared, mapping in zip(windows, mappings, strict=True):
            accumulate_window(prepared.image, mapping, sums)
    stop.record()
    stop.synchronize()
    seconds = cupy.cuda.get_elapsed_time(start, stop) / 1e3 / repeats
    height, width = job.region.shape
    sums_bytes = 2 * (2 * 3 * height * width * 8 + height * width * 8)  # sum_wv, sum_w, coverage read + write
    moved = sum(p.image.nbytes for p in windows) + len(windows) * sums_bytes
    name, peak = _peak_bandwidth(cupy)
    return {
        "device": name,
        "kernel_region": f"{height}x{width}",
        "kernel_frames": len(windows),
        "kernel_frames_per_s": round(len(windows) / seconds, 1),
        "kernel_ms_per_frame": round(seconds / len(windows) * 1e3, 3),
        "achieved_GBps": round(moved / seconds / 1e9, 1),
        "peak_GBps": round(peak / 1e9, 1),
        "fraction_of_peak": round(moved / seconds / peak, 3),
    }


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Kernel and end-to-end GPU figures as a JSON-serialisable dict."""
    try:
        import cupy
    except ImportError as err:
        return {"tool": "gpu", "skipped": f"cupy is not importable ({err})"}
    from zemosaic_dask.units.mean_region import build_mean_region

    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        jobs, frames = _jobs(Path(spec["frames_dir"]), Path(tmp), chunk=2048)
        figures = kernel_figures(cupy, jobs)
        jobs, frames = _jobs(Path(spec["frames_dir"]), Path(tmp), chunk=512)
        build_mean_region(jobs[0], cupy)  # warm-up (kernel compile cached per process)
        jobs, frames = _jobs(Path(spec["frames_dir"]), Path(tmp), chunk=512)
        start = time.perf_counter()
        for job in jobs:
            build_mean_region(job, cupy)
        cupy.cuda.Device().synchronize()
        seconds = time.perf_counter() - start
    figures.update(tool="gpu", end_to_end_frames_per_s=round(frames / seconds, 2), end_to_end_seconds=round(seconds, 2))
    return figures
