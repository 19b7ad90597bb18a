"""Local workers forked from the worker server: modules preloaded, the nanny's environment kept, results right."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from zemosaic_dask.clusters import ClusterOptions, open_cluster, spawned_worker_environ
    from zemosaic_dask.worker_server import start_worker_server, worker_start_method

    os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)  # a parent's own local cluster may have set it
    started = start_worker_server(spawned_worker_environ()) if sys.argv[1] == "server" else False
    client_malloc = os.environ.get("MALLOC_TRIM_THRESHOLD_")  # (the nanny sets it here too, later)
    options = ClusterOptions(kind="local", processes=True, n_workers=2, threads_per_worker=1, dashboard_address=":0")
    with open_cluster(options) as handle:
        seen = handle.client.run(
            lambda: {
                "preloaded": "zemosaic_dask.execute.run" in sys.modules,
                "malloc": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
                "parent": os.getppid(),
            }
        )
        total = handle.client.submit(sum, range(1000)).result()
    print(json.dumps({
        "started": started, "method": worker_start_method(), "client": os.getpid(),
        "workers": list(seen.values()), "total": total,
        "client_malloc": client_malloc,
    }))
    """
)


def _run(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forkserver start method of Linux")
def test_workers_forked_from_the_server_start_with_the_package_imported_and_the_nanny_environment():
    forked = _run("server")
    assert forked["started"] and forked["method"] == "forkserver" and forked["total"] == 499500
    assert len(forked["workers"]) == 2
    for worker in forked["workers"]:
        assert worker["preloaded"]  # imported by the server before the fork, not by a task
        assert worker["malloc"] == str(64 * 2**20)  # the environment the nanny gives spawned workers
        assert worker["parent"] != forked["client"]  # children of the server, not of the client
    assert forked["client_malloc"] is None  # the client's own environment is left as it was

    spawned = _run("spawn")  # what an API user gets: distributed's default, nothing preloaded
    assert spawned["method"] is None and spawned["total"] == 499500
    assert not any(worker["preloaded"] for worker in spawned["workers"])
    assert all(worker["malloc"] == str(64 * 2**20) for worker in spawned["workers"])


WARM = textwrap.dedent(
    """
    import json
    import numpy as np
    import zemosaic_dask.worker_warmup as warmup
    from zemosaic_dask.plans.grid import OutputRegion
    from zemosaic_dask.tasks import kernels_cpu, kernels_layers, kernels_noise_clip, kernels_raw, kernels_stack
    from zemosaic_dask.tasks.debayer import correct_hot_pixels, debayer_bilinear
    from zemosaic_dask.tasks.sky_blocks import measure_bayer_sky_cells, measure_sky_cells
    from zemosaic_dask.tasks.stacking import StackOptions, stack_samples
    from zemosaic_dask.units.combine_region import CombineJob, _layer_noise
    from zemosaic_dask.units.region_write import held_pixels

    kernels = {
        "sample_window": kernels_cpu.sample_window_cpu, "accumulate": kernels_cpu.accumulate_window_cpu,
        "debayer": kernels_raw.debayer_bilinear_cpu, "hot": kernels_raw.correct_hot_pixels_cpu,
        "noise_clip": kernels_noise_clip.noise_clip_keep_cpu, "kappa_sigma": kernels_stack.kappa_sigma_keep_cpu,
        "mean": kernels_stack.weighted_mean_cpu, "bin": kernels_stack.bin_mean_cpu,
        "clip_pass": kernels_stack.cell_clip_pass_cpu, "colour_blocks": kernels_raw.bayer_block_means_cpu,
        "layer_noise": kernels_layers.layer_noise_cpu, "covered_stack": kernels_layers.covered_stack_cpu,
    }
    warmed = {name: len(k.signatures) for name, k in kernels.items()}
    # A run's own calls, at other sizes: they must find the specialisations already loaded.
    rng = np.random.default_rng(0)
    raw = rng.normal(300, 10, (64, 96)).astype(np.float32)
    image = debayer_bilinear(correct_hot_pixels(raw, 10.0)[0], "RGGB")
    measure_sky_cells(image, lambda x, y: (x * 0.9 + 3.0, y * 0.9 - 2.0), 32, (80, 120), noise=(10.0, 9.0, 11.0))
    measure_bayer_sky_cells(raw, "RGGB", lambda x, y: (x * 0.9 + 3.0, y * 0.9 - 2.0), 32, (80, 120), noise=(10.0,))
    samples = rng.normal(300, 10, (5, 3, 24, 40)).astype(np.float32)
    samples[2, :, :10] = np.nan
    footprints = np.isfinite(samples[:, 0]).astype(np.float32)
    per_frame = np.full((5, 3), 10.0, dtype=np.float32)
    stack_samples(samples, footprints, StackOptions(), noise=per_frame, background=per_frame * 30)
    job = CombineJob(OutputRegion(0, 0, 0, 24, 0, 40), (), None, 3, noise=(10.0, 9.0, 11.0))
    _layer_noise(job, footprints)
    block, covers = np.empty((2, 3, 24, 40), np.float32), np.empty((2, 24, 40), np.float32)
    held_pixels(samples[1], footprints[1], block[1], covers[1])
    after = {name: len(k.signatures) for name, k in kernels.items()}
    print(json.dumps({"ok": warmup.warm_kernels(), "warmed": warmed, "after": after}))
    """
)


def test_the_warm_up_loads_the_kernels_with_the_types_a_run_calls_them_with():
    done = subprocess.run([sys.executable, "-c", WARM], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["ok"]
    assert all(count >= 1 for count in seen["warmed"].values()), seen["warmed"]
    touched = ("debayer", "hot", "bin", "clip_pass", "noise_clip", "mean", "colour_blocks")
    touched += ("layer_noise", "covered_stack")
    assert {name: seen["after"][name] for name in touched} == {name: seen["warmed"][name] for name in touched}
