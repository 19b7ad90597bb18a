"""Worker peak memory stage by stage: each stage's own peak, the run's peak the largest of them."""

from __future__ import annotations

import numpy as np
import pytest
from distributed import Client, LocalCluster
from e2e import PROCESSES, run

from zemosaic_dask.execute.compute import Timings


def _allocate(mib: int) -> int:
    block = np.ones(mib * 2**20 // 8)  # touched: resident
    return int(block.size)


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster) as c:
            yield c


def test_a_stage_reports_its_own_peak_not_an_earlier_ones(client):
    timings = Timings()
    timings.watch_workers(client)
    with timings.stage("heavy"):
        client.submit(_allocate, 400, pure=False).result()
    with timings.stage("light"):
        client.submit(_allocate, 8, pure=False).result()
    heavy, light = timings.worker_peak_mib["heavy"], timings.worker_peak_mib["light"]
    assert timings.workers is not None and timings.workers.reset
    assert heavy > light + 300, (heavy, light)  # without the reset, "light" would repeat "heavy"'s peak
    (overall,) = timings.workers.overall.values()
    assert overall >= heavy


def test_a_run_reports_worker_peaks_by_stage(seestar_set, tmp_path):
    _, frames = seestar_set
    mosaic = run(frames[:12], tmp_path / "out", PROCESSES, mode="mosaic-first")
    peaks = mosaic.report["worker_peak_mib"]
    assert peaks["per_stage"] is True
    assert {"ingest", "plan", "background", "mosaic", "products"} <= set(peaks["by_stage"])
    workers = [w["peak_rss_mib"] for w in mosaic.report["workers"]]
    assert all(value > 0 for value in peaks["by_stage"].values())
    assert max(peaks["by_stage"].values()) <= max(workers)
