"""Peak worker memory of SDS as the number of batches grows (N, 2N, 4N batches).

Builds full-field Seestar sets (every frame covers the same field, so every SDS batch is a
full-field batch mosaic) with 5 frames per batch, runs SDS on one single-threaded worker
process, and prints each run's peak worker RSS (``ru_maxrss`` of the worker process) next
to the AssemblyPlan's chunk bytes. The peak must not grow with the number of batches.

    python benchmarks/bench_sds_memory.py [--batches 4 8 16] [--scale 0.5]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from zemosaic_dask.api import run_mosaic
from zemosaic_dask.clusters import ClusterOptions
from zemosaic_dask.config import load_config
from zemosaic_dask.testing import simulate_seestar


def _peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(batches: int, scale: float, workdir: Path, max_chunk_mb: float) -> dict:
    frames = simulate_seestar(workdir / f"sim{batches}", 5 * batches, 11, scale=scale, panels=(1, 1)).frames
    config = load_config(
        overrides={
            "mode": "sds",
            "sds.min-batch-size": 5,
            "sds.target-batch-size": 5,
            "sds.coverage-threshold": 1.0,
            "calibration.intertile": False,
            "assembly.max-chunk-mb": max_chunk_mb,
            "assembly.min-chunk-mb": 1,
        }
    )
    from distributed import Client, LocalCluster

    from zemosaic_dask.clusters import local_worker_environment

    with (
        local_worker_environment(),
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, memory_limit="4GB", dashboard_address=":0"
        ) as local,
        Client(local) as client,
    ):
        start = time.perf_counter()
        result = run_mosaic(
            [str(p) for p in frames],
            workdir / f"out{batches}",
            config=config,
            cluster=ClusterOptions(scheduler=local.scheduler_address),
            show_progress=False,
            console_log=False,
        )
        seconds = time.perf_counter() - start
        peaks = client.run(_peak_rss_kib)
    assembly = result.report["assembly_plan"]
    return {
        "batches": result.report["layers"],
        "frames": len(frames),
        "seconds": round(seconds, 1),
        "worker_peak_mib": round(max(peaks.values()) / 1024, 1),
        "max_chunk_mib": round(assembly["max_chunk_bytes"] / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--max-chunk-mb", type=float, default=256.0, help="assembly.max-chunk-mb of the runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows = [measure(n, args.scale, Path(folder), args.max_chunk_mb) for n in args.batches]
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
