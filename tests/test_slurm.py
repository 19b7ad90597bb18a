"""Workers started as SLURM jobs through dask-jobqueue, on the local SLURM of deploy/local-slurm.

Selected with ``pytest -m slurm`` after ``deploy/local-slurm/install.sh && deploy/local-slurm/start.sh``
(as root). When SLURM is not running these tests fail and say how to start it: they only run when asked for.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid

import dask.array as da
import numpy as np
import pytest
from dask.utils import parse_bytes

from zemosaic_dask.clusters import ClusterError, ClusterOptions, open_cluster, worker_resources

pytestmark = pytest.mark.slurm

START_HINT = "start it with `deploy/local-slurm/install.sh && deploy/local-slurm/start.sh` (as root)"
# The test machine is small: one core and 2 GB per job.
JOB_SETTINGS = {"cores": 1, "processes": 1, "memory": "2GB", "walltime": "00:10:00"}


def _run(*command: str) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=30).stdout


@pytest.fixture(scope="module", autouse=True)
def slurm_running() -> None:
    for command in ("sinfo", "squeue", "sbatch", "scancel"):
        if shutil.which(command) is None:
            pytest.fail(f"`{command}` is not on PATH: SLURM is not installed; {START_HINT}")
    try:
        states = _run("sinfo", "-h", "-o", "%T").split()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        pytest.fail(f"SLURM does not answer (`sinfo` failed: {getattr(err, 'stderr', err)}); {START_HINT}")
    if not any(state.rstrip("*") in ("idle", "mixed") for state in states):
        pytest.fail(f"no SLURM node can take jobs (node states: {states or 'none'}); {START_HINT}")


def _job_ids_named(job_name: str) -> set[str]:
    return set(_run("squeue", "-h", "-n", job_name, "-o", "%i").split())


def _wait_until_no_job_named(job_name: str, timeout: float = 30.0) -> set[str]:
    deadline = time.monotonic() + timeout
    while (left := _job_ids_named(job_name)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def _worker_env(client, key: str) -> dict[str, str | None]:
    # os.getenv is pickled by reference: the workers need not import this test module
    return client.run(os.getenv, key)


def test_workers_run_inside_slurm_jobs(tmp_path):
    job_name = f"zemosaic-test-{uuid.uuid4().hex[:8]}"
    jobqueue = {**JOB_SETTINGS, "name": job_name, "log-directory": str(tmp_path / "logs")}
    options = ClusterOptions(kind="slurm", jobqueue=jobqueue, jobs=2, dashboard_address=":0", worker_timeout=120)
    with open_cluster(options) as handle:
        client = handle.client
        client.wait_for_workers(2, timeout=120)
        assert handle.kind == "slurm" and handle.dashboard_link.startswith("http")

        job_ids = _worker_env(client, "SLURM_JOB_ID")
        worker_job_ids = set(job_ids.values())
        assert len(job_ids) == 2 and None not in worker_job_ids
        assert len(worker_job_ids) == 2, "each worker must run in a job of its own"
        assert set(_worker_env(client, "SLURM_JOB_NAME").values()) == {job_name}
        assert set(_worker_env(client, "SLURM_JOB_PARTITION").values()) == {"debug"}
        # SLURM itself lists these jobs as ours, and dask-jobqueue tracks the same ids
        assert _job_ids_named(job_name) == worker_job_ids
        assert {job.job_id for job in handle.cluster.workers.values()} == worker_job_ids

        for worker in worker_resources(client):
            assert worker["nthreads"] == 1
            assert abs(worker["memory_limit"] - parse_bytes("2GB")) < 0.01 * parse_bytes("2GB")

        values = np.arange(200_000, dtype=np.float64).reshape(400, 500)
        total = client.compute(da.from_array(values, chunks=(50, 500)).sum(axis=1)).result()
        np.testing.assert_allclose(total, values.sum(axis=1))
        # the work was shared by the two SLURM jobs
        counts = client.run(lambda dask_worker: len(dask_worker.data) + dask_worker.state.executed_count)
        assert all(count > 0 for count in counts.values()), counts

    assert _wait_until_no_job_named(job_name) == set(), "closing the cluster must cancel its SLURM jobs"
    assert any(path.name.endswith(".err") for path in (tmp_path / "logs").iterdir())


def test_slurm_job_worker_advertises_the_gpu_resource(tmp_path):
    # No GPU here: the job's worker advertises GPU=1 as a GPU job's does, and GPU-annotated tasks run in it.
    job_name = f"zemosaic-test-{uuid.uuid4().hex[:8]}"
    jobqueue = {
        **JOB_SETTINGS,
        "name": job_name,
        "log-directory": str(tmp_path),
        "worker-extra-args": ["--resources", "GPU=1"],
    }
    options = ClusterOptions(kind="slurm", jobqueue=jobqueue, jobs=1, dashboard_address=":0", worker_timeout=120)
    with open_cluster(options) as handle:
        (worker,) = worker_resources(handle.client)
        assert worker["resources"] == {"GPU": 1}
        job_id = handle.client.submit(os.getenv, "SLURM_JOB_ID", resources={"GPU": 1}).result()
        assert job_id in _job_ids_named(job_name)
    assert _wait_until_no_job_named(job_name) == set()


def test_rejected_submission_fails_fast_with_sbatch_message(tmp_path):
    jobqueue = {**JOB_SETTINGS, "queue": "no-such-partition", "log-directory": str(tmp_path)}
    options = ClusterOptions(kind="slurm", jobqueue=jobqueue, dashboard_address=":0", worker_timeout=120)
    start = time.monotonic()
    with pytest.raises(ClusterError, match=r"submitting a slurm job failed(.|\n)*invalid partition"):
        with open_cluster(options):
            pass
    assert time.monotonic() - start < 60, "a rejected job script must not wait for worker_timeout"


def test_jobs_that_never_start_time_out_and_are_cancelled(tmp_path):
    job_name = f"zemosaic-test-{uuid.uuid4().hex[:8]}"
    jobqueue = {
        **JOB_SETTINGS,
        "name": job_name,
        "log-directory": str(tmp_path),
        "job-extra-directives": ["--begin=now+1hour"],  # stays pending
    }
    options = ClusterOptions(kind="slurm", jobqueue=jobqueue, dashboard_address=":0", worker_timeout=5)
    with pytest.raises(ClusterError, match=r"no slurm worker connected within 5 s(.|\n)*squeue"):
        with open_cluster(options):
            pass
    assert _wait_until_no_job_named(job_name) == set()


def test_mosaic_through_the_cli_on_slurm(tmp_path, seestar_set):
    """A real mosaic whose workers run as SLURM jobs, with the dashboard link and a performance report."""
    import json
    import subprocess
    import sys

    import yaml

    job_name = f"zemosaic-e2e-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "lab.yaml"
    config.write_text(
        yaml.safe_dump(
            {"jobqueue": {"slurm": {**JOB_SETTINGS, "name": job_name, "log-directory": str(tmp_path / "logs")}}}
        )
    )
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "zemosaic_dask.cli",
        "run",
        *seestar_set[1][:10],
        "-o",
        str(out),
        "--mode",
        "mosaic-first",
        "--cluster",
        "slurm",
        "--jobs",
        "2",
        "--config",
        str(config),
        "--dashboard-address",
        ":0",
        "--performance-report",
        str(tmp_path / "perf.html"),
        "--no-progress",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["cluster"]["kind"] == "slurm"
    assert report["dashboard"].startswith("http")
    assert len(report["slurm_jobs"]) >= 1 and all(j.isdigit() for j in report["slurm_jobs"])
    assert (tmp_path / "perf.html").stat().st_size > 10_000
    for name in ("mosaic.fits", "mosaic_coverage.fits", "preview.png", "plan.json", "zemosaic.log"):
        assert (out / name).exists(), name
    assert _wait_until_no_job_named(job_name) == set()
