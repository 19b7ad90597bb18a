"""GPU routing and GPU fallback of the region units, without a GPU.

The region unit runs unchanged on a fake GPU namespace (tests/_fakecupy.py); a GPU error
reruns it on the CPU with the same result; GPU-annotated tasks land only on a worker
advertising GPU=1; with no such worker the plan does not use the GPU.
"""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from distributed import Client, get_task_stream
from e2e import Mosaic

from zemosaic_dask.api import run_mosaic
from zemosaic_dask.clusters import ClusterOptions
from zemosaic_dask.config import load_config
from zemosaic_dask.graph.mosaic_first import region_jobs
from zemosaic_dask.io import inspect_frame
from zemosaic_dask.io.store import open_mosaic_store
from zemosaic_dask.plans import plan_output_grid
from zemosaic_dask.tasks.stacking import StackOptions
from zemosaic_dask.units.frame_window import FrameWindowOptions
from zemosaic_dask.units.gpu import run_with_gpu_fallback
from zemosaic_dask.units.mosaic_region import build_mosaic_region


@pytest.fixture(scope="module")
def small_job(seestar_set, tmp_path_factory):
    frames = [inspect_frame(p) for p in seestar_set[1][:8]]
    grid = plan_output_grid(frames, chunk=256)
    base = tmp_path_factory.mktemp("gpu-unit")

    def job(name):
        store, _ = open_mosaic_store(str(base / name), grid, 3, fingerprint="f")
        jobs = region_jobs(grid, frames, store, StackOptions(), FrameWindowOptions())
        return max(jobs, key=lambda j: len(j.frames)), store

    return job


def test_region_unit_on_gpu_namespace_equals_numpy(small_job, fakecupy):
    cpu_job, cpu_store = small_job("cpu")
    gpu_job, gpu_store = small_job("gpu")
    assert build_mosaic_region(cpu_job, np).backend == "cpu"
    assert build_mosaic_region(gpu_job, fakecupy).backend == "fakecupy"
    window = np.s_[:, cpu_job.region.y0 : cpu_job.region.y1, cpu_job.region.x0 : cpu_job.region.x1]
    cpu = np.asarray(cpu_store.array("mosaic")[window])
    assert np.isfinite(cpu).mean() > 0.5
    np.testing.assert_array_equal(np.asarray(gpu_store.array("mosaic")[window]), cpu)
    np.testing.assert_array_equal(
        np.asarray(gpu_store.array("coverage")[:]), np.asarray(cpu_store.array("coverage")[:])
    )


def test_gpu_error_reruns_the_unit_on_cpu(small_job, fakecupy, caplog):
    cpu_job, cpu_store = small_job("ref")
    build_mosaic_region(cpu_job, np)
    job, store = small_job("fallback")
    calls = []

    class FakeOutOfMemory(MemoryError):
        pass

    def work(xp):
        calls.append(xp.__name__)
        if xp is fakecupy:
            raise FakeOutOfMemory("out of memory allocating 4 GiB")
        return build_mosaic_region(job, xp)

    summary, fallback = run_with_gpu_fallback("stack-region-0-0", work, use_gpu=True, namespace=lambda: fakecupy)
    assert calls == ["fakecupy", "numpy"]
    assert "out of memory" in fallback and summary.backend == "cpu"
    assert "recomputed on CPU" in caplog.text
    np.testing.assert_array_equal(np.asarray(store.array("mosaic")[:]), np.asarray(cpu_store.array("mosaic")[:]))
    # A bug is not a GPU failure: it propagates instead of being hidden by a fallback.
    with pytest.raises(KeyError):
        run_with_gpu_fallback("x", lambda xp: {}["missing"], use_gpu=True, namespace=lambda: fakecupy)

    def buggy(xp):
        raise RuntimeError("a plain bug, not a CUDA error")

    with pytest.raises(RuntimeError, match="plain bug"):
        run_with_gpu_fallback("x", buggy, use_gpu=True, namespace=lambda: fakecupy)


def test_gpu_tasks_run_only_on_the_gpu_worker(seestar_set, tmp_path, cpu_and_gpu_workers):
    frames = seestar_set[1][:12]
    command = [
        sys.executable,
        "-m",
        "zemosaic_dask.cli",
        "run",
        *frames,
        "-o",
        str(tmp_path / "gpu"),
        "--mode",
        "mosaic-first",
        "--use-gpu",
        "true",
        "--chunk",
        "128",
        "--no-progress",
        "--scheduler",
        cpu_and_gpu_workers.scheduler_address,
    ]
    # The run is a separate client process, as on a real cluster; this one only watches the scheduler.
    with Client(cpu_and_gpu_workers) as client, get_task_stream(client=client) as stream:
        gpu_address = next(a for a, w in client.scheduler_info()["workers"].items() if w["resources"].get("GPU"))
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    placed = {entry["key"]: entry["worker"] for entry in stream.data}
    stacking = {k: w for k, w in placed.items() if str(k).startswith("stack-region-")}
    assert len(stacking) >= 4
    assert set(stacking.values()) == {gpu_address}
    ingest = {w for k, w in placed.items() if str(k).startswith("inspect-frames-")}
    assert len(ingest) == 2  # unannotated tasks use both workers
    report = json.loads((tmp_path / "gpu" / "report.json").read_text())
    assert report["assembly_plan"]["use_gpu"] is True
    # No cupy on the "GPU" worker here: every unit fell back to the CPU and says so ...
    assert len(report["gpu_fallbacks"]) == len(stacking)
    assert all("cupy is not installed" in f["reason"] for f in report["gpu_fallbacks"])
    # ... with the result a CPU-only run gives.
    cpu_config = load_config(overrides={"mode": "mosaic-first", "assembly.use-gpu": False, "grid.chunk": 128})
    run_mosaic(
        frames,
        tmp_path / "cpu",
        config=cpu_config,
        cluster=ClusterOptions(kind="synchronous"),
        show_progress=False,
        console_log=False,
    )
    np.testing.assert_array_equal(Mosaic.load(tmp_path / "gpu").image, Mosaic.load(tmp_path / "cpu").image)
    shutil.rmtree(tmp_path)


def test_without_gpu_worker_the_plan_stays_on_cpu(seestar_set, tmp_path):
    config = load_config(overrides={"mode": "mosaic-first", "assembly.use-gpu": "auto"})
    cluster = ClusterOptions(kind="local", processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0")
    run_mosaic(seestar_set[1][:6], tmp_path, config=config, cluster=cluster, show_progress=False, console_log=False)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["assembly_plan"]["use_gpu"] is False
    assert "no worker advertises" in report["assembly_plan"]["reasons"]["use_gpu"]
    assert report["gpu_fallbacks"] == []


def test_units_routed_to_gpus_get_the_gpu_byte_budget():
    from zemosaic_dask.execute.routing import unit_chunk_bytes
    from zemosaic_dask.plans import AssemblyTargets, ClusterResources, OutputGrid, WorkerResources, plan_assembly

    grid = OutputGrid(crval=(10.0, 20.0), pixel_scale=2.4, crpix=(1.0, 1.0), shape=(3000, 5000))
    cpu = WorkerResources("cpu", 4, 8 * 2**30)
    gpu = WorkerResources("gpu", 2, 32 * 2**30, gpus=1, gpu_memory_bytes=16 * 2**30)
    on_gpus = plan_assembly(ClusterResources((cpu, gpu)), grid, AssemblyTargets(n_channels=3))
    assert on_gpus.use_gpu and on_gpus.gpu_max_chunk_bytes != on_gpus.max_chunk_bytes
    assert unit_chunk_bytes(on_gpus) == on_gpus.gpu_max_chunk_bytes
    on_cpus = plan_assembly(ClusterResources((cpu,)), grid, AssemblyTargets(n_channels=3))
    assert not on_cpus.use_gpu and unit_chunk_bytes(on_cpus) == on_cpus.max_chunk_bytes
    assert unit_chunk_bytes(None) is None
