"""Resume and faults: a killed run finishes on re-run, equal bit for bit, nothing lost."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zarr
from astropy.io import fits
from distributed import Client, LocalCluster
from e2e import SYNC, Mosaic, run

from zemosaic_dask.api import run_mosaic
from zemosaic_dask.clusters import ClusterOptions
from zemosaic_dask.config import load_config
from zemosaic_dask.errors import ResumeError

OVERRIDES = {"mode": "mosaic-first", "grid.chunk": 64}


def _command(frames, out, *extra, mode="mosaic-first"):
    return [
        sys.executable,
        "-m",
        "zemosaic_dask.cli",
        "run",
        *frames,
        "-o",
        str(out),
        "--mode",
        mode,
        "--chunk",
        "64",
        "--n-workers",
        "1",
        "--threads-per-worker",
        "1",
        "--dashboard-address",
        ":0",
        "--no-progress",
        *extra,
    ]


def _env():
    return {**os.environ, "DASK_ZEMOSAIC__CLUSTER__PROCESSES": "false", "PYTHONUNBUFFERED": "1"}


def _done_regions(out):
    try:
        return int(np.asarray(zarr.open_array(store=str(out / "mosaic.zarr"), path="done", mode="r")[...]).sum())
    except (FileNotFoundError, KeyError, ValueError, OSError):
        return 0


@pytest.fixture(scope="module")
def reference(seestar_set, tmp_path_factory):
    frames = seestar_set[1][:10]
    out = tmp_path_factory.mktemp("resume") / "reference"
    return frames, run(frames, out, SYNC, **OVERRIDES)


@pytest.mark.parametrize("kill_after", [0, 3, "all"])
def test_client_killed_then_rerun_equals_uninterrupted(reference, tmp_path, kill_after):
    frames, expected = reference
    out = tmp_path / "out"
    total = expected.report["regions"]["total"]
    process = subprocess.Popen(_command(frames, out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = total if kill_after == "all" else kill_after
    deadline = time.monotonic() + 120
    while _done_regions(out) < target and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = _done_regions(out)
    assert not (out / "report.json").exists() or kill_after == 0  # killed before the end (a kill at 0 may be late)
    if (out / "mosaic.fits").exists():  # only ever a complete file, written atomically (the others may not exist yet)
        np.testing.assert_array_equal(fits.getdata(out / "mosaic.fits").astype(np.float32), expected.image)
    done = subprocess.run(_command(frames, out), env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = Mosaic.load(out)
    np.testing.assert_array_equal(resumed.image, expected.image)
    np.testing.assert_array_equal(resumed.coverage, expected.coverage)
    assert resumed.report["regions"]["reused"] == killed_at
    if kill_after != 0:
        assert killed_at >= target


def test_fused_sds_run_killed_then_rerun_equals_uninterrupted(seestar_set, tmp_path):
    """A fused SDS region is written (its batch counts, then its pixels) by one task: a rerun reuses it whole."""
    frames = seestar_set[1][:16]
    expected = run(frames, tmp_path / "reference", SYNC, **{"mode": "sds", "grid.chunk": 64})
    assert expected.report["sds_execution"]["fused"] and expected.report["sds_masked_pixels"] > 0
    out = tmp_path / "out"
    process = subprocess.Popen(
        _command(frames, out, mode="sds"), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while _done_regions(out) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = _done_regions(out)
    assert 3 <= killed_at < expected.report["regions"]["total"] and not (out / "report.json").exists()
    done = subprocess.run(_command(frames, out, mode="sds"), env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = Mosaic.load(out)
    np.testing.assert_array_equal(resumed.image, expected.image)
    np.testing.assert_array_equal(resumed.coverage, expected.coverage)
    assert resumed.report["regions"]["reused"] == killed_at
    assert resumed.report["sds_mask"] == expected.report["sds_mask"]


def test_changed_inputs_or_settings_are_refused_then_restart(reference, tmp_path):
    frames, expected = reference
    out = tmp_path / "out"
    run(frames, out, SYNC, **OVERRIDES)
    with pytest.raises(ResumeError, match="different inputs or settings.*--restart"):
        run(frames, out, SYNC, **OVERRIDES, **{"stack.kappa-low": 2.5})
    with pytest.raises(ResumeError):
        run(frames[:-1], out, SYNC, **OVERRIDES)
    # Another cluster or log level is not a different mosaic: it resumes (everything reused).
    again = run(frames, out, SYNC, **OVERRIDES, **{"logging.level": "DEBUG", "cluster.n-workers": 3})
    assert again.report["regions"]["reused"] == again.report["regions"]["total"]
    config = load_config(overrides={**OVERRIDES, "stack.kappa-low": 2.5})
    run_mosaic(
        frames,
        out,
        config=config,
        cluster=ClusterOptions(kind="synchronous"),
        restart=True,
        show_progress=False,
        console_log=False,
    )
    assert json.loads((out / "report.json").read_text())["regions"]["reused"] == 0


def test_worker_killed_mid_run_does_not_change_the_result(reference, tmp_path):
    frames, expected = reference
    out = tmp_path / "out"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster) as client:
            victim = sorted(client.run(os.getpid).values())[0]

        def kill_when_started():
            deadline = time.monotonic() + 60
            while _done_regions(out) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(victim, signal.SIGKILL)

        killer = threading.Thread(target=kill_when_started)
        killer.start()
        config = load_config(overrides=OVERRIDES)
        attach = ClusterOptions(scheduler=cluster.scheduler_address)
        run_mosaic(frames, out, config=config, cluster=attach, show_progress=False, console_log=False)
        killer.join()
        with Client(cluster) as client:
            assert victim not in client.run(os.getpid).values()  # the worker really died (and was replaced)
    np.testing.assert_array_equal(Mosaic.load(out).image, expected.image)
