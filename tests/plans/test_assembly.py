"""The assembly plan fits every worker's memory and every GPU's memory minus the reserve."""

import json
import logging
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zemosaic_dask.errors import ConfigError, PlanError
from zemosaic_dask.plans import (
    AssemblyPlan,
    AssemblyTargets,
    ClusterResources,
    OutputGrid,
    WorkerResources,
    plan_assembly,
    region_side_for_budget,
    select_two_pass_plan,
    two_pass_use_gpu,
)
from zemosaic_dask.plans.layers import LayerPlan, layer_units

MiB, GiB = 2**20, 2**30
GRID = OutputGrid(crval=(10.0, 20.0), pixel_scale=2.4, crpix=(1.0, 1.0), shape=(3000, 5000))


def cpu_worker(name="w0", threads=4, memory=8 * GiB):
    return WorkerResources(name, threads, memory)


def gpu_worker(name="g0", threads=2, memory=32 * GiB, vram=16 * GiB):
    return WorkerResources(name, threads, memory, gpus=1, gpu_memory_bytes=vram)


workers = st.builds(
    WorkerResources,
    name=st.text("abcdef", min_size=1, max_size=4),
    nthreads=st.integers(1, 32),
    memory_limit_bytes=st.one_of(st.just(0), st.integers(16 * MiB, 256 * GiB)),
    gpus=st.sampled_from([0, 0, 1]),
    gpu_memory_bytes=st.one_of(st.just(0), st.integers(512 * MiB, 96 * GiB)),
)
targets = st.builds(
    AssemblyTargets,
    cpu_load=st.floats(0.05, 1.0),
    ram_fraction=st.floats(0.05, 1.0),
    vram_fraction=st.floats(0.05, 1.0),
    vram_reserve_bytes=st.integers(0, 4 * GiB),
    max_chunk_bytes=st.integers(MiB, 2 * GiB),
    gpu_max_chunk_bytes=st.integers(MiB, 4 * GiB),
    min_chunk_bytes=st.integers(1, 64 * MiB),
    force_cpu=st.booleans(),
    gpu_requested=st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(workers, min_size=1, max_size=6), targets, st.integers(1, 4000), st.integers(1, 20000))
def test_plan_never_exceeds_worker_or_gpu_memory(pool, config, height, width):
    grid = OutputGrid(crval=(0.0, 0.0), pixel_scale=1.0, crpix=(1.0, 1.0), shape=(height, width))
    resources = ClusterResources(tuple(pool))
    plan = plan_assembly(resources, grid, config)
    for w in pool:
        if w.memory_limit_bytes:
            assert plan.max_chunk_bytes * w.nthreads <= w.memory_limit_bytes
    assert 1 <= plan.max_chunk_bytes <= config.max_chunk_bytes
    threads = sum(w.nthreads for w in pool)
    regions = grid.n_regions[0] * grid.n_regions[1]
    assert 1 <= plan.cpu_workers <= min(threads, regions)
    row_bytes = width * (config.n_channels + 1) * 4
    assert 1 <= plan.rows_per_chunk <= grid.shape[0]
    assert plan.rows_per_chunk * row_bytes <= plan.max_chunk_bytes or plan.rows_per_chunk == 1
    has_gpu = any(w.gpus for w in pool)
    if config.force_cpu or not config.gpu_requested or not has_gpu:
        assert not plan.use_gpu
    if plan.use_gpu:
        assert plan.gpu_workers >= 1 and plan.gpu_max_chunk_bytes <= config.gpu_max_chunk_bytes
        for w in pool:
            if w.gpus and w.gpu_memory_bytes:
                assert plan.gpu_max_chunk_bytes <= w.gpu_memory_bytes - config.vram_reserve_bytes
            if w.gpus and w.gpu_memory_bytes < config.gpu_min_memory_bytes:
                assert plan.gpu_max_chunk_bytes <= config.small_gpu_max_chunk_bytes
        assert 1 <= plan.gpu_rows_per_chunk <= grid.shape[0]
    else:
        assert (plan.gpu_workers, plan.gpu_max_chunk_bytes, plan.gpu_rows_per_chunk) == (0, 0, 0)
    assert {k for k, _ in plan.reasons} >= {
        "cpu_workers",
        "gpu_workers",
        "use_gpu",
        "max_chunk_bytes",
        "gpu_max_chunk_bytes",
        "rows_per_chunk",
        "gpu_rows_per_chunk",
    }
    assert AssemblyPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    assert plan_assembly(ClusterResources(tuple(reversed(pool))), grid, config) == plan


def test_cpu_chunk_from_worker_memory():
    config = AssemblyTargets()
    # 8 GiB x 0.5 / 4 threads = 1 GiB, capped at 256 MiB.
    assert plan_assembly(ClusterResources((cpu_worker(),)), GRID, config).max_chunk_bytes == 256 * MiB
    # 1 GiB x 0.5 / 8 threads = 64 MiB.
    plan = plan_assembly(ClusterResources((cpu_worker(threads=8, memory=GiB),)), GRID, config)
    assert plan.max_chunk_bytes == 64 * MiB
    assert plan.rows_per_chunk == (64 * MiB) // (5000 * 4 * 4)
    # 16 MiB / 8 threads: the 4 MiB minimum would overflow the worker, so 2 MiB per thread.
    plan = plan_assembly(ClusterResources((cpu_worker(threads=8, memory=16 * MiB),)), GRID, config)
    assert plan.max_chunk_bytes == 2 * MiB
    # The tightest worker decides.
    pool = (cpu_worker("big", 4, 64 * GiB), cpu_worker("small", 16, 2 * GiB))
    assert plan_assembly(ClusterResources(pool), GRID, config).max_chunk_bytes == GiB // 16


def test_cpu_workers_follow_threads_load_and_the_grid_regions():
    pool = ClusterResources((cpu_worker("a", 8), cpu_worker("b", 8)))
    assert plan_assembly(pool, GRID, AssemblyTargets(cpu_load=0.5)).cpu_workers == 8
    assert plan_assembly(pool, GRID, AssemblyTargets()).cpu_workers == 16  # 6 x 10 regions: every thread
    small = OutputGrid(crval=(10.0, 20.0), pixel_scale=2.4, crpix=(1.0, 1.0), shape=(600, 1400))
    plan = plan_assembly(pool, small, AssemblyTargets())  # 2 x 3 regions of 512 px: 6 units at most
    assert plan.cpu_workers == 6 and "6 region" in plan.reason("cpu_workers")


def test_a_plan_with_layers_is_capped_by_its_layer_regions_not_the_grid():
    """A deep session on a one-region field still has one batch unit per batch to spread."""
    pool = ClusterResources((cpu_worker("a", 8), cpu_worker("b", 8)))
    one = OutputGrid(crval=(10.0, 20.0), pixel_scale=2.4, crpix=(1.0, 1.0), shape=(300, 400))
    assert plan_assembly(pool, one, AssemblyTargets()).cpu_workers == 1
    deep = plan_assembly(pool, one, AssemblyTargets(), units=40)
    assert deep.cpu_workers == 16 and "capped" not in deep.reason("cpu_workers")
    few = plan_assembly(pool, one, AssemblyTargets(), units=5)
    assert few.cpu_workers == 5 and "5 layer region(s)" in few.reason("cpu_workers")
    small = OutputGrid(crval=(10.0, 20.0), pixel_scale=2.4, crpix=(1.0, 1.0), shape=(600, 1400))
    assert plan_assembly(pool, small, AssemblyTargets(), units=2).cpu_workers == 6  # never below the regions


def test_layer_units_count_each_layers_regions():
    grid = OutputGrid(crval=(10.0, 20.0), pixel_scale=2.4, crpix=(1.0, 1.0), shape=(1200, 1400), chunk=512)
    layers = [
        LayerPlan(id=0, kind="batch", frames=(0,), salvage=False, box=(0, 1024, 0, 1400)),  # 2 x 3
        LayerPlan(id=1, kind="batch", frames=(1,), salvage=False, box=(512, 1024, 512, 1024)),  # 1 x 1
        LayerPlan(id=2, kind="batch", frames=(2,), salvage=False, box=(0, 0, 0, 0)),  # off the grid
    ]
    assert layer_units(layers, grid) == 7


def test_gpu_decisions():
    config = AssemblyTargets()
    plan = plan_assembly(ClusterResources((cpu_worker(),)), GRID, config)
    assert not plan.use_gpu and "no worker advertises a GPU" in plan.reason("use_gpu")
    big = plan_assembly(ClusterResources((gpu_worker(vram=80 * GiB),)), GRID, config)
    assert big.use_gpu and big.gpu_workers == 1 and big.gpu_max_chunk_bytes == 512 * MiB
    # 3 GiB card: (3 - 1.5) GiB x 0.7 = 1075 MiB, but a small card is clamped to 64 MiB.
    small = plan_assembly(ClusterResources((gpu_worker(vram=3 * GiB),)), GRID, config)
    assert small.use_gpu and small.gpu_max_chunk_bytes == 64 * MiB
    # 5 GiB card under a high cap: (5 - 1.5) GiB x 0.7 = 2.45 GiB.
    mid = plan_assembly(
        ClusterResources((gpu_worker(vram=5 * GiB),)), GRID, AssemblyTargets(gpu_max_chunk_bytes=8 * GiB)
    )
    assert mid.gpu_max_chunk_bytes == int((5 * GiB - int(1.5 * GiB)) * 0.7)
    tiny = plan_assembly(ClusterResources((gpu_worker(vram=GiB), cpu_worker())), GRID, config)
    assert not tiny.use_gpu and "reserve" in tiny.reason("use_gpu")
    forced = plan_assembly(ClusterResources((gpu_worker(),)), GRID, AssemblyTargets(force_cpu=True))
    assert not forced.use_gpu and "force_cpu" in forced.reason("use_gpu")


def test_no_workers_is_a_plan_error():
    with pytest.raises(PlanError):
        plan_assembly(ClusterResources(()), GRID, AssemblyTargets())


def test_targets_validation():
    with pytest.raises(ConfigError, match="ram_fraction"):
        AssemblyTargets(ram_fraction=1.5)
    with pytest.raises(ConfigError, match="unknown assembly target"):
        AssemblyTargets.from_dict({"ram_fractoin": 0.5})
    assert AssemblyTargets.from_dict(AssemblyTargets().to_dict()) == AssemblyTargets()


def test_resources_from_scheduler_info_round_trip():
    info = {
        "workers": {
            "tcp://10.0.0.2:4000": {
                "name": "gpu-0",
                "nthreads": 2,
                "memory_limit": 32 * GiB,
                "resources": {"GPU": 1},
                "gpu": {"memory-total": 24 * GiB, "name": "NVIDIA L4"},
            },
            "tcp://10.0.0.1:4000": {"name": 0, "nthreads": 8, "memory_limit": 16 * GiB, "resources": {}},
        }
    }
    resources = ClusterResources.from_scheduler_info(info)
    assert resources.workers == (
        WorkerResources("0", 8, 16 * GiB, 0, 0),
        WorkerResources("gpu-0", 2, 32 * GiB, 1, 24 * GiB),
    )
    assert ClusterResources.from_dict(json.loads(json.dumps(resources.to_dict()))) == resources


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2 * GiB), st.integers(1, 4), st.integers(1, 200))
def test_region_side_is_the_largest_multiple_of_64_within_budget(budget, channels, depth):
    side = region_side_for_budget(budget, channels, depth)
    bytes_for = lambda s: s * s * depth * (channels + 1) * 4  # noqa: E731
    assert side % 64 == 0 and side >= 64
    if bytes_for(64) <= budget:
        assert bytes_for(side) <= budget < bytes_for(side + 64)
    else:
        assert side == 64


def _line(message):
    return re.fullmatch(
        r"\[TwoPass\] plan=(\w+) cpu_workers=(\d+) use_gpu=(True|False) max_chunk_mb=([\d.]+) "
        r"gpu_max_chunk_mb=([\d.]+) rows=(\d+) gpu_rows=(\d+)",
        message,
    )


def test_two_pass_uses_the_assembly_plan_object(caplog):
    caplog.set_level(logging.INFO, logger="zemosaic_dask")
    plan = plan_assembly(ClusterResources((cpu_worker(),)), GRID, AssemblyTargets())
    fallback = plan_assembly(ClusterResources((cpu_worker(threads=1),)), GRID, AssemblyTargets())
    assert select_two_pass_plan(plan, lambda: pytest.fail("derived although the plan has one")) is plan
    match = _line(caplog.messages[-1])
    assert match and match.group(1) == "AssemblyPlan"
    assert int(match.group(2)) == plan.cpu_workers and match.group(3) == "False"
    assert float(match.group(4)) == pytest.approx(plan.max_chunk_bytes / MiB, abs=0.05)
    assert int(match.group(6)) == plan.rows_per_chunk
    assert select_two_pass_plan(None, lambda: fallback) is fallback
    assert _line(caplog.messages[-1]).group(1) == "fallback"


def test_two_pass_gpu_follows_the_plan(caplog):
    caplog.set_level(logging.INFO, logger="zemosaic_dask")
    cpu_plan = plan_assembly(ClusterResources((cpu_worker(),)), GRID, AssemblyTargets())
    gpu_plan = plan_assembly(ClusterResources((gpu_worker(),)), GRID, AssemblyTargets())
    caplog.clear()
    assert two_pass_use_gpu(gpu_plan, True) is True
    assert two_pass_use_gpu(gpu_plan, False) is False
    assert two_pass_use_gpu(cpu_plan, False) is False
    assert caplog.messages == []
    assert two_pass_use_gpu(cpu_plan, True) is False
    assert caplog.messages == ["[TwoPass] GPU requested but disabled by plan.use_gpu=False -> forcing CPU"]
