"""The Phase 5 assembly plan controls execution: every field of it changes what runs.

- ``cpu_workers`` / ``gpu_workers`` bound the units in flight (:func:`execute.compute.compute`);
- ``max_chunk_bytes`` / ``gpu_max_chunk_bytes`` are the stacking units' byte budget
  (tests/graph/test_gpu_routing.py);
- ``use_gpu`` routes the stacking units and the two-pass units to GPU workers;
- ``rows_per_chunk`` / ``gpu_rows_per_chunk`` are the bands a two-pass unit works in.
"""

import dataclasses
import json
import subprocess
import sys
import threading
import time

import dask
import numpy as np
from distributed import Client, get_task_stream
from e2e import Mosaic

from zemosaic_dask.api import make_plan
from zemosaic_dask.clusters import ClusterOptions, open_cluster
from zemosaic_dask.config import load_config
from zemosaic_dask.execute import compute
from zemosaic_dask.execute.routing import units_in_flight
from zemosaic_dask.plans import AssemblyPlan

_SPANS: list[tuple[float, float]] = []
_LOCK = threading.Lock()


def _sleepy(index: int) -> int:
    start = time.perf_counter()
    time.sleep(0.25)
    with _LOCK:
        _SPANS.append((start, time.perf_counter()))
    return index * 10


def _most_at_once(spans):
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def test_compute_keeps_at_most_the_plans_workers_in_flight():
    options = ClusterOptions(kind="local", processes=False, n_workers=1, threads_per_worker=3, dashboard_address=":0")
    with open_cluster(options) as handle:
        for bound, expected in ((1, 1), (2, 2), (None, 3)):
            _SPANS.clear()
            tasks = [dask.delayed(_sleepy, pure=False)(i) for i in range(7)]
            results = compute(handle, tasks, label="probe", show_progress=False, max_in_flight=bound)
            assert results == [i * 10 for i in range(7)]
            assert _most_at_once(_SPANS) == expected, (bound, _SPANS)


def test_units_in_flight_follow_the_plan():
    plan = AssemblyPlan(3, 0, False, 64 << 20, 0, 100, 0)
    assert units_in_flight(plan) == 3
    assert units_in_flight(dataclasses.replace(plan, use_gpu=True, gpu_workers=2, gpu_max_chunk_bytes=1 << 20)) == 2
    assert units_in_flight(None) is None


def test_two_pass_units_are_routed_and_banded_by_the_same_assembly_plan(seestar_set, tmp_path, cpu_and_gpu_workers):
    overrides = {
        "mode": "classic",
        "two-pass.enabled": True,
        "assembly.use-gpu": True,
        "grid.chunk": 128,
        "cluster.scheduler": cpu_and_gpu_workers.scheduler_address,
    }
    config = load_config(overrides=overrides)
    plan = make_plan(seestar_set[1][:12], config)
    assembly = AssemblyPlan.from_dict(plan.sections["assembly_plan"])
    assert assembly.use_gpu and assembly.gpu_workers == 1
    assert len(plan.sections["layers"]) > 1  # two-pass runs on several layers
    narrow = dict(plan.sections["assembly_plan"], gpu_rows_per_chunk=16)
    banded = dataclasses.replace(plan, sections={**plan.sections, "assembly_plan": narrow})
    address = cpu_and_gpu_workers.scheduler_address
    # Each run is a separate client process, as on a real cluster; this one only watches the scheduler.
    with Client(cpu_and_gpu_workers) as client, get_task_stream(client=client) as stream:
        gpu_address = next(a for a, w in client.scheduler_info()["workers"].items() if w["resources"].get("GPU"))
        for name, which in (("whole", plan), ("banded", banded)):
            saved = tmp_path / f"{name}.json"
            saved.write_text(json.dumps(which.to_dict()))
            command = [
                sys.executable,
                "-m",
                "zemosaic_dask.cli",
                "run",
                "--plan",
                str(saved),
                "-o",
                str(tmp_path / name),
            ]
            done = subprocess.run([*command, "--no-progress", "--scheduler", address], capture_output=True, text=True)
            assert done.returncode == 0, done.stderr[-3000:]
    placed = {entry["key"]: entry["worker"] for entry in stream.data}
    two_pass = {k: w for k, w in placed.items() if str(k).startswith("two-pass-region-")}
    assert two_pass and set(two_pass.values()) == {gpu_address}
    whole = json.loads((tmp_path / "whole" / "report.json").read_text())["two_pass"]
    narrow_report = json.loads((tmp_path / "banded" / "report.json").read_text())["two_pass"]
    assert whole["use_gpu"] and whole["rows_per_band"] == assembly.gpu_rows_per_chunk
    assert narrow_report["rows_per_band"] == 16 and narrow_report["bands"] > whole["bands"]
    # No cupy on the "GPU" worker: the units fell back to the CPU, said so, and banding changed no pixel.
    assert narrow_report["fallbacks"] and all("cupy" in f["fallback"] for f in narrow_report["fallbacks"])
    np.testing.assert_array_equal(Mosaic.load(tmp_path / "whole").image, Mosaic.load(tmp_path / "banded").image)
