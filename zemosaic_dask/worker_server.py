"""Local worker processes forked from a server that has already imported the package.

A ``LocalCluster`` starts its workers with ``spawn``: each one is a fresh interpreter that
imports distributed, numpy, astropy, zarr and this package before its first task can run
(1 to 3 s per worker, and the workers compete with the client for the same cores while the
client imports the same modules). :func:`start_worker_server` starts Python's ``forkserver``
at the very beginning of a CLI run, before the client's own imports, with those modules
preloaded in the server; the run's local cluster then forks its workers from that server
(:func:`worker_start_method`), and they begin with everything imported.

The server is a single-threaded process started for this purpose, so forking it is safe
(unlike forking the client, which runs the scheduler's event loop in a thread). The workers
inherit the server's environment, not the client's: the environment the nanny would set
before spawning them (``distributed.nanny.pre-spawn-environ``) is given to the server when
it starts. Only the CLI starts the server (a process whose environment does not change
during the run); a program that calls the API keeps distributed's ``spawn``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Mapping, Sequence

__all__ = ["WORKER_MODULES", "start_worker_server", "worker_start_method"]

log = logging.getLogger(__name__)

#: What the server imports before it forks a worker: distributed and every task function's module.
WORKER_MODULES = (
    "distributed",
    "numpy",
    "zemosaic_dask.execute.run",
    "zemosaic_dask.io.products",
    "zemosaic_dask.worker_warmup",
)

_started = False


def start_worker_server(environ: Mapping[str, object], modules: Sequence[str] = WORKER_MODULES) -> bool:
    """Start the ``forkserver`` that later local workers are forked from, importing ``modules`` in it.

    Returns at once: the server imports the modules in its own process, alongside this one.

    Parameters
    ----------
    environ : mapping
        Variables added to the server's environment (the workers inherit them), such as
        :data:`~zemosaic_dask.clusters.LOCAL_WORKER_ENVIRON`; this process's environment is
        left as it was.
    modules : sequence of str
        Modules the server imports before forking its first worker.

    Returns
    -------
    bool
        True when the server runs (started now or before); False where the platform has
        no ``forkserver`` (workers are then spawned as usual).
    """
    global _started
    if _started:
        return True
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(list(modules))
    saved = {name: os.environ.get(name) for name in environ}
    os.environ.update({name: str(value) for name, value in environ.items()})
    try:
        forkserver.ensure_running()
    except OSError as err:  # no server: the cluster spawns its workers instead
        log.debug("worker server not started: %s", err)
        return False
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    _started = True
    return True


def worker_start_method() -> str | None:
    """``"forkserver"`` once :func:`start_worker_server` has started the server, else None (distributed's default)."""
    return "forkserver" if _started else None
