"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import types

import pytest


@pytest.fixture
def fakecupy() -> types.ModuleType:
    """The fake cupy module of ``tests/_fakecupy.py`` (registered as ``sys.modules["fakecupy"]``)."""
    from _fakecupy import fakecupy as module

    return module


@pytest.fixture(scope="session")
def seestar_set(tmp_path_factory: pytest.TempPathFactory):
    """A simulated Seestar data set shared by the end-to-end tests: 32 frames at scale 0.25."""
    from zemosaic_dask.testing import simulate_seestar

    folder = tmp_path_factory.mktemp("seestar")
    result = simulate_seestar(folder, 32, 7, scale=0.25)
    return folder, [str(p) for p in result.frames]


@pytest.fixture
def cpu_and_gpu_workers():
    """A cluster of one plain worker and one advertising ``GPU=1`` (without a GPU: units fall back to the CPU)."""
    from distributed import Scheduler, SpecCluster, Worker

    workers = {
        "cpu-worker": {"cls": Worker, "options": {"nthreads": 1}},
        "gpu-worker": {"cls": Worker, "options": {"nthreads": 1, "resources": {"GPU": 1}}},
    }
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
    with SpecCluster(workers=workers, scheduler=scheduler) as cluster:
        yield cluster
