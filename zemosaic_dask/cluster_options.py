"""What a cluster is asked to be (:class:`ClusterOptions`) and what opening it yields (:class:`ClusterHandle`)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, ZeMosaicError

__all__ = [
    "CLUSTER_KINDS",
    "JOBQUEUE_KINDS",
    "LOOPBACK",
    "ClusterError",
    "ClusterHandle",
    "ClusterOptions",
    "free_dashboard_address",
    "loopback_default",
]

logger = logging.getLogger("zemosaic_dask.clusters")

CLUSTER_KINDS = ("local", "slurm", "pbs", "synchronous")
JOBQUEUE_KINDS = ("slurm", "pbs")


class ClusterError(ZeMosaicError, RuntimeError):
    """A cluster could not be started or reached; the message says what was tried and what to check."""


@dataclass(frozen=True)
class ClusterOptions:
    """How to obtain the cluster a run computes on.

    Parameters
    ----------
    kind : str
        ``"local"`` (default), ``"slurm"``, ``"pbs"`` or ``"synchronous"``.
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``); attach to it instead of starting one.
    scheduler_file : str, optional
        Scheduler file written by ``dask scheduler --scheduler-file``; attach to that scheduler.
    n_workers, threads_per_worker : int, optional
        Local cluster size; ``None`` lets ``distributed`` size it to the machine.
    memory_limit : str
        Memory limit per local worker (``"auto"``, ``"4GB"``, ...).
    processes : bool
        Local workers in separate processes (default) or threads of this process.
    gpus : int
        With ``kind="local"``, start a ``LocalCUDACluster`` with one worker per GPU on GPUs
        ``0..gpus-1``, each advertising ``GPU=1``.
    rmm_pool_size : str, optional
        RMM pool per GPU worker (``"20GB"``), for local GPU workers and GPU jobs.
    dashboard_address : str, optional
        Where the scheduler serves its dashboard; a busy port falls back to a free one; ``None``: no dashboard.
    jobqueue : Mapping
        Keyword overrides for ``SLURMCluster`` / ``PBSCluster`` (``cores``, ``memory``, ``walltime``,
        ``queue``, ``account``, ``job_extra_directives``, ``worker_extra_args``, ...), merged over the
        ``jobqueue.<kind>`` Dask config section. Hyphenated config spellings are accepted.
    jobs : int
        Number of batch jobs to scale to.
    gpu_per_job : int
        GPUs requested by each job (``--gres=gpu:N`` on SLURM, ``ngpus=N`` on PBS); the job then runs
        ``dask cuda worker --resources GPU=1``, one worker per GPU.
    connect_timeout : float
        Seconds to wait for an existing scheduler (address or scheduler file).
    worker_timeout : float, optional
        Seconds to wait for the first batch-job worker to connect; ``None`` waits forever.
    """

    kind: str = "local"
    scheduler: str | None = None
    scheduler_file: str | None = None
    n_workers: int | None = None
    threads_per_worker: int | None = None
    memory_limit: str | int | float = "auto"
    processes: bool = True
    gpus: int = 0
    rmm_pool_size: str | int | float | None = None
    dashboard_address: str | None = ":8787"
    jobqueue: Mapping[str, Any] = field(default_factory=dict)
    jobs: int = 1
    gpu_per_job: int = 0
    connect_timeout: float = 10.0
    worker_timeout: float | None = 600.0

    def validate(self) -> None:
        """Raise :class:`ConfigError` when the options contradict each other."""
        if self.kind not in CLUSTER_KINDS:
            raise ConfigError(
                f"cluster kind must be one of {', '.join(CLUSTER_KINDS)}, got {self.kind!r} (set --cluster)"
            )
        if self.scheduler and self.scheduler_file:
            raise ConfigError(
                f"give either a scheduler address or a scheduler file, not both "
                f"(got {self.scheduler!r} and {self.scheduler_file!r})"
            )
        attaching = bool(self.scheduler or self.scheduler_file)
        if attaching and self.kind != "local":
            raise ConfigError(
                f"--cluster {self.kind} starts its own scheduler and cannot attach to "
                f"{self.scheduler or self.scheduler_file}; "
                "drop --cluster to use the existing scheduler, or drop --scheduler/--scheduler-file"
            )
        if self.gpus < 0 or self.gpu_per_job < 0:
            raise ConfigError(f"gpus and gpu_per_job must be >= 0, got {self.gpus} and {self.gpu_per_job}")
        if self.gpus and (attaching or self.kind != "local"):
            raise ConfigError(
                f"gpus={self.gpus} starts local GPU workers and only applies to --cluster local; "
                "on SLURM/PBS request GPUs per job (gpu_per_job), on an existing cluster start the workers "
                "with `dask cuda worker --resources GPU=1`"
            )
        if self.jobs < 1:
            raise ConfigError(f"jobs must be >= 1, got {self.jobs}")


@dataclass
class ClusterHandle:
    """What :func:`open_cluster` yields.

    Attributes
    ----------
    client : distributed.Client or None
        The client to compute with; ``None`` for ``kind="synchronous"``.
    cluster : object or None
        The cluster object started here; ``None`` when attached to an existing scheduler.
    dashboard_link : str or None
        Printable URL of the scheduler's dashboard, when there is one.
    kind : str
        ``"local"``, ``"local-cuda"``, ``"slurm"``, ``"pbs"``, ``"attached"`` or ``"synchronous"``.
    """

    client: Any | None
    cluster: Any | None
    dashboard_link: str | None
    kind: str


#: Where a dashboard given as a bare ``:PORT`` listens: this machine only. A lab's shared
#: node must not show every user's task stream (nor the scheduler's HTTP routes) to all.
LOOPBACK = "127.0.0.1"


def loopback_default(address: str | None) -> str | None:
    """A bare ``:PORT`` bound to :data:`LOOPBACK`; any other address unchanged."""
    return f"{LOOPBACK}{address}" if address and address.startswith(":") else address


def free_dashboard_address(address: str | None) -> str | None:
    """Return ``address`` when its port is free (or ``0``), else the same host with port 0; ``None``: no dashboard.

    A bare ``:PORT`` is served on loopback (:data:`LOOPBACK`); ``0.0.0.0:PORT`` or a host
    name opens the dashboard to the network.
    """
    if address is None:
        return None
    address = loopback_default(address)
    host, _, port_text = address.rpartition(":")
    try:
        port = int(port_text)
    except ValueError as err:
        raise ConfigError(
            f"dashboard address must look like ':8787' or 'host:8787', got {address!r} (set --dashboard-address)"
        ) from err
    if port == 0:
        return address
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host or "", port))
        except OSError:
            logger.info("dashboard port %d is busy; serving the dashboard on a free port instead", port)
            return f"{host}:0"
    return address
