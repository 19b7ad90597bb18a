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
