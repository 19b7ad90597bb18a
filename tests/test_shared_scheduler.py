"""Two runs on one scheduler: task keys carry each run's token, so no run gets another's results."""

from __future__ import annotations

import pytest
from distributed import Client, LocalCluster, wait

from zemosaic_dask.api import run_mosaic
from zemosaic_dask.config import load_config
from zemosaic_dask.graph.ingest import build_ingest_graph
from zemosaic_dask.graph.keys import run_keys, task_key
from zemosaic_dask.io.frames import IngestOptions
from zemosaic_dask.testing import simulate_seestar


def test_task_keys_carry_the_run_token_only_inside_a_run():
    assert task_key("sky-blocks-3") == "sky-blocks-3"
    with run_keys("1f0c9a7e") as token:
        assert token == "1f0c9a7e"
        assert task_key("sky-blocks-3") == "sky-blocks-3-1f0c9a7e"
        with run_keys() as inner:
            assert inner != token and task_key("x") == f"x-{inner}"
        assert task_key("x") == "x-1f0c9a7e"
    assert task_key("sky-blocks-3") == "sky-blocks-3"


@pytest.fixture
def shared_scheduler():
    cluster = LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0")
    yield cluster
    cluster.close()


def test_a_run_never_takes_the_results_of_another_run_on_the_same_scheduler(tmp_path, shared_scheduler):
    """Run A's ingest is still held on the scheduler when run B starts on the same one.

    Without a run token both runs name their ingest tasks ``inspect-frames-0``, ... and the
    scheduler hands run B run A's frames: B's mosaic is made of A's files.
    """
    a = [str(p) for p in simulate_seestar(tmp_path / "a", 6, 1, scale=0.25).frames]
    b = [str(p) for p in simulate_seestar(tmp_path / "b", 6, 2, scale=0.25).frames]
    config = load_config(overrides={"cluster.scheduler": shared_scheduler.scheduler_address, "mode": "mosaic-first"})
    with Client(shared_scheduler) as other, run_keys() as token:
        held = other.compute(build_ingest_graph(a, IngestOptions()), optimize_graph=False)
        wait(held)
        assert all(f.key.endswith(f"-{token}") for f in held)
        result = run_mosaic(b, tmp_path / "out", config=config, show_progress=False, console_log=False)
        assert sorted(f.path for f in result.plan.frames) == sorted(b)
        assert result.report["task_token"] != token
        assert sorted(r.path for f in held for r in f.result()) == sorted(a)  # run A's results are untouched
