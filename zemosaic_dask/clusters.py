"""Start or attach to the Dask cluster a mosaic runs on.

One entry point, :func:`open_cluster`, turns a :class:`ClusterOptions` into a running
``distributed.Client``:

- ``kind="local"``: an embedded ``LocalCluster`` sized to the machine, or a ``LocalCUDACluster``
  (one worker per GPU, each advertising the resource ``GPU=1``) when ``gpus > 0``;
- ``scheduler`` / ``scheduler_file``: attach to a cluster somebody else started;
- ``kind="slurm"`` / ``kind="pbs"``: workers submitted as batch jobs through ``dask-jobqueue``,
  configured by the ``jobqueue.slurm`` / ``jobqueue.pbs`` sections of the Dask config with
  :attr:`ClusterOptions.jobqueue` merged over them;
- ``kind="synchronous"``: no client at all, dask's single-threaded scheduler (debugging).

GPU libraries (``dask_cuda``) and ``dask_jobqueue`` are imported only by the code that needs them.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import dask

from .cluster_jobqueue import build_jobqueue_cluster_kwargs, start_jobqueue, wait_for_first_worker
from .cluster_options import (
    CLUSTER_KINDS,
    JOBQUEUE_KINDS,
    LOOPBACK,
    ClusterError,
    ClusterHandle,
    ClusterOptions,
    free_dashboard_address,
)
from .errors import ConfigError, GpuUnavailableError
from .worker_server import worker_start_method

__all__ = [
    "CLUSTER_KINDS",
    "ClusterError",
    "ClusterHandle",
    "ClusterOptions",
    "LOCAL_WORKER_ENVIRON",
    "build_jobqueue_cluster_kwargs",
    "local_worker_environment",
    "open_cluster",
    "spawned_worker_environ",
    "worker_resources",
]

logger = logging.getLogger(__name__)

GPU_INSTALL_HINT = "pip install zemosaic-dask[gpu]"


def _check_scheduler_address(address: str) -> None:
    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port
    from distributed.comm.registry import backends

    try:
        scheme, location = parse_address(address)
        if scheme not in backends:
            raise ValueError(f"unknown protocol {scheme!r}, known: {', '.join(sorted(backends))}")
        if scheme in ("tcp", "tls", "ucx", "ws", "wss"):
            parse_host_port(location)
    except ValueError as err:
        raise ConfigError(
            f"scheduler address {address!r} is not valid: {err}; expected something like tcp://host:8786"
        ) from err


def _read_scheduler_file(path: str, timeout: float) -> str:
    """Wait up to ``timeout`` seconds for a scheduler file and return the address it holds."""
    deadline = time.monotonic() + timeout
    if not os.path.exists(path):
        logger.info("waiting up to %g s for scheduler file %s", timeout, path)
    while True:
        try:
            with open(path, encoding="utf-8") as stream:
                return str(json.load(stream)["address"])
        except FileNotFoundError as err:
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"scheduler file {path} did not appear within {timeout:g} s; start the scheduler with "
                    f"`dask scheduler --scheduler-file {path}` on a path every node shares, or raise connect_timeout"
                ) from err
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            # a scheduler writing the file right now: retry until the deadline
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"scheduler file {path} holds no scheduler address ({err!r}); "
                    "give the file written by `dask scheduler --scheduler-file`"
                ) from err
        time.sleep(0.1)


def _attach(options: ClusterOptions) -> Any:
    from distributed import Client

    if options.scheduler:
        address = options.scheduler
        target = f"scheduler {address}"
    else:
        path = os.fspath(str(options.scheduler_file))
        address = _read_scheduler_file(path, options.connect_timeout)
        target = f"scheduler {address} (from scheduler file {path})"
    _check_scheduler_address(address)
    try:
        return Client(address, timeout=options.connect_timeout)
    except (OSError, TimeoutError) as err:
        raise ClusterError(
            f"could not connect to {target} within {options.connect_timeout:g} s ({err}); "
            "check that the scheduler is running and reachable from this machine"
        ) from err


#: Environment of the worker processes started here. distributed starts workers with
#: MALLOC_TRIM_THRESHOLD_=65536, which also pins glibc's mmap threshold at 128 KiB: every
#: window-sized temporary becomes a fresh mmap and workers spent as much system time as user
#: time. A 64 MiB threshold halved the region tasks' wall time.
LOCAL_WORKER_ENVIRON = {"MALLOC_TRIM_THRESHOLD_": 64 * 2**20, "MALLOC_MMAP_THRESHOLD_": 64 * 2**20}


@contextlib.contextmanager
def local_worker_environment() -> Iterator[None]:
    """Start the worker processes of a local cluster created inside this block with :data:`LOCAL_WORKER_ENVIRON`."""
    with dask.config.set({"distributed.nanny.pre-spawn-environ": LOCAL_WORKER_ENVIRON}):
        yield


def spawned_worker_environ() -> dict[str, str]:
    """The variables the nanny sets before starting a local worker process (what a forked worker must inherit)."""
    with local_worker_environment():
        environ = {name: str(value) for name, value in dask.config.get("distributed.nanny.pre-spawn-environ").items()}
    environ.setdefault("PYTHONHASHSEED", "6640")  # as the nanny does, so that every worker hashes alike
    return environ


def _start_local(options: ClusterOptions) -> tuple[Any, str]:
    dashboard = free_dashboard_address(options.dashboard_address)
    if options.gpus:
        for module, package in (("dask_cuda", "dask-cuda"), ("cupy", "cupy")):
            try:
                importlib.import_module(module)
            except ImportError as err:
                raise GpuUnavailableError(
                    f"gpus={options.gpus} needs {package}, which is not importable ({err}); "
                    f"install the GPU extras with `{GPU_INSTALL_HINT}` or run without --gpus"
                ) from err
        from dask_cuda import LocalCUDACluster

        with local_worker_environment():
            cluster = LocalCUDACluster(
                CUDA_VISIBLE_DEVICES=list(range(options.gpus)),
                n_workers=options.gpus,
                threads_per_worker=options.threads_per_worker or 1,
                memory_limit=options.memory_limit,
                rmm_pool_size=options.rmm_pool_size,
                dashboard_address=dashboard,
                host=LOOPBACK,
                resources={"GPU": 1},
            )
        return cluster, "local-cuda"
    from distributed import LocalCluster

    method = worker_start_method()  # forkserver when the CLI started the worker server
    forked = {"distributed.worker.multiprocessing-method": method} if method and options.processes else {}
    with local_worker_environment(), dask.config.set(forked):
        cluster = LocalCluster(
            n_workers=options.n_workers,
            threads_per_worker=options.threads_per_worker,
            memory_limit=options.memory_limit,
            processes=options.processes,
            dashboard_address=dashboard,
            host=LOOPBACK if options.processes else None,
        )
    return cluster, "local"


@contextlib.contextmanager
def open_cluster(options: ClusterOptions) -> Iterator[ClusterHandle]:
    """Start or attach to a cluster and yield a :class:`ClusterHandle`; close what was started on exit.

    Parameters
    ----------
    options : ClusterOptions
        What to start or attach to.

    Yields
    ------
    ClusterHandle
        Client, cluster (when started here), printable dashboard link and the kind obtained.

    Raises
    ------
    ConfigError
        Contradictory options, a malformed scheduler address, missing jobqueue cores/memory.
    GpuUnavailableError
        ``gpus > 0`` without ``dask-cuda`` installed.
    ClusterError
        An existing scheduler cannot be reached, or no batch-job worker connected in time.
    """
    options.validate()
    if options.kind == "synchronous":
        with dask.config.set(scheduler="synchronous"):
            yield ClusterHandle(client=None, cluster=None, dashboard_link=None, kind="synchronous")
        return
    if options.scheduler or options.scheduler_file:
        client = _attach(options)
        try:
            logger.info("attached to %s, dashboard %s", client.scheduler.address, client.dashboard_link)
            yield ClusterHandle(client=client, cluster=None, dashboard_link=client.dashboard_link, kind="attached")
        finally:
            client.close()
        return

    from distributed import Client

    failures: list[str] = []
    if options.kind in JOBQUEUE_KINDS:
        (cluster, failures), kind = start_jobqueue(options), options.kind
    else:
        cluster, kind = _start_local(options)
    with contextlib.ExitStack() as stack:
        stack.callback(cluster.close)
        client = Client(cluster)
        stack.callback(client.close)
        if kind in JOBQUEUE_KINDS:
            wait_for_first_worker(client, options, failures)
        logger.info("started %s cluster, dashboard %s", kind, client.dashboard_link)
        yield ClusterHandle(client=client, cluster=cluster, dashboard_link=client.dashboard_link, kind=kind)


def worker_resources(client: Any) -> list[dict[str, Any]]:
    """Describe each worker of the client's cluster.

    Parameters
    ----------
    client : distributed.Client
        A connected client.

    Returns
    -------
    list of dict
        One dict per worker, sorted by address, with ``name``, ``address``, ``nthreads``,
        ``memory_limit`` (bytes), ``resources`` (e.g. ``{"GPU": 1}``), and ``gpu_name`` and
        ``gpu_memory`` (bytes) when the worker reports a GPU through NVML, else ``None``.
    """
    workers = client.scheduler_info(n_workers=-1)["workers"]
    described = []
    for address, info in sorted(workers.items()):
        gpu = info.get("gpu") or {}
        described.append(
            {
                "name": info.get("name"),
                "address": address,
                "nthreads": info.get("nthreads"),
                "memory_limit": info.get("memory_limit"),
                "resources": dict(info.get("resources") or {}),
                "gpu_name": gpu.get("name"),
                "gpu_memory": gpu.get("memory-total"),
            }
        )
    return described
