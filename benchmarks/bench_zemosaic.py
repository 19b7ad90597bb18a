"""One zemosaic-dask Mosaic-First run, measured (executed in a child process of bench_mosaic.py).

The run goes through :func:`zemosaic_dask.api.run_mosaic` attached to a LocalCluster
started here (``workers`` processes x 1 thread), so that the workers' own peak RSS can be
read before the cluster stops. The workers are warmed first (package imported, numba
kernels loaded from their cache) so that start-up costs stay out of the clock; scanning,
ingest, planning, the mosaic and the output products are timed.
"""

from __future__ import annotations

import json
import resource
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def warm_worker() -> int:
    """Import the package and load the numba kernels on a worker (compiled once, then cached)."""
    from zemosaic_dask.tasks.accumulate import MeanSums, WindowMapping, accumulate_window, sample_window
    from zemosaic_dask.units import mean_region  # noqa: F401

    nodes = np.zeros((2, 2))
    mapping = WindowMapping(nodes + 1.0, nodes + 1.0, 1, (2, 2))
    image = np.ones((3, 4, 4), np.float32)
    accumulate_window(image, mapping, MeanSums.zeros(3, (2, 2)))
    sample_window(image, mapping, np.empty((3, 2, 2), np.float32), np.empty((2, 2), np.float32))
    return 1


def peak_rss() -> int:
    """This process's peak resident set size in bytes (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class RssSampler:
    """Samples this process's RSS in a thread; ``peak`` is the largest value seen."""

    def __init__(self, interval: float = 0.05) -> None:
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run and measure one configuration; return the figures as a JSON-serialisable dict."""
    import bench_zemosaic
    import cloudpickle
    from distributed import Client, LocalCluster

    from zemosaic_dask.api import run_mosaic
    from zemosaic_dask.clusters import ClusterOptions, local_worker_environment
    from zemosaic_dask.config import load_config

    cloudpickle.register_pickle_by_value(bench_zemosaic)
    overrides: dict[str, Any] = {"mode": "mosaic-first", "stack.rejection": spec["rejection"], "stack.combine": "mean"}
    if spec.get("pixel_scale"):
        overrides["grid.pixel-scale"] = float(spec["pixel_scale"])
    config = load_config(overrides=overrides)
    with local_worker_environment():  # the worker environment of zemosaic-dask's own LocalCluster
        cluster = LocalCluster(
            n_workers=int(spec["workers"]),
            threads_per_worker=1,
            processes=True,
            memory_limit=spec.get("memory_limit") or "auto",
            dashboard_address=":0",
        )
    client = Client(cluster)
    try:
        client.run(warm_worker)
        out = Path(spec["out"])
        with RssSampler() as sampler:
            start = time.perf_counter()
            result = run_mosaic(
                sorted(str(path) for path in Path(spec["frames_dir"]).glob("frame_*.fits")),
                out,
                config=config,
                cluster=ClusterOptions(scheduler=cluster.scheduler_address),
                restart=True,
                show_progress=False,
                console_log=False,
            )
            seconds = time.perf_counter() - start
        workers = client.run(peak_rss)
    finally:
        client.close()
        cluster.close()
    report = json.loads((out / "report.json").read_text())
    return {
        "tool": "zemosaic-dask",
        "dataset": Path(spec["frames_dir"]).name,
        "rejection": spec["rejection"],
        "workers": int(spec["workers"]),
        "threads": int(spec["workers"]),
        "frames": len(result.plan.frames),
        "seconds": seconds,
        "stages": report.get("timings", {}),
        "max_map_error_px": report.get("max_map_error_px"),
        "region_backends": report.get("region_backends"),
        "grid_shape": list(result.plan.grid.shape),
        "channels": int(result.plan.n_channels),
        "client_peak_rss": max(sampler.peak, 0),
        "client_lifetime_peak_rss": peak_rss(),
        "worker_peak_rss": sorted(workers.values()),
        "memory_limit": spec.get("memory_limit"),
        "mosaic": str(out / "mosaic.fits"),
        "coverage": str(out / "mosaic_coverage.fits"),
    }
