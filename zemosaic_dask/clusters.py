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
import inspect
import json
import logging
import os
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import dask

from .errors import ConfigError, GpuUnavailableError, ZeMosaicError

__all__ = [
    "CLUSTER_KINDS",
    "ClusterError",
    "ClusterHandle",
    "ClusterOptions",
    "LOCAL_WORKER_ENVIRON",
    "build_jobqueue_cluster_kwargs",
    "local_worker_environment",
    "open_cluster",
    "worker_resources",
]

logger = logging.getLogger(__name__)

CLUSTER_KINDS = ("local", "slurm", "pbs", "synchronous")
JOBQUEUE_KINDS = ("slurm", "pbs")
GPU_INSTALL_HINT = "pip install zemosaic-dask[gpu]"
# dask-jobqueue runs "<python> -m <worker_command>"; "python -m dask cuda worker" is dask-cuda's stock worker.
CUDA_WORKER_COMMAND = "dask cuda worker"


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


def _normalise_key(key: str) -> str:
    return key.replace("-", "_")


def _jobqueue_classes(kind: str) -> tuple[type, type]:
    import dask_jobqueue

    if kind == "slurm":
        return dask_jobqueue.SLURMCluster, dask_jobqueue.slurm.SLURMJob
    return dask_jobqueue.PBSCluster, dask_jobqueue.pbs.PBSJob


def _accepted_jobqueue_keys(cluster_cls: type, job_cls: type) -> set[str]:
    from dask_jobqueue.core import Job, JobQueueCluster

    classes = [c for c in job_cls.__mro__ if issubclass(c, Job)]
    classes += [c for c in cluster_cls.__mro__ if issubclass(c, JobQueueCluster)]
    names: set[str] = set()
    for cls in classes:
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        for param in inspect.signature(init).parameters.values():
            if param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                names.add(param.name)
    # Set by open_cluster itself, or refused by dask-jobqueue outside scheduler_options.
    internal = {"self", "scheduler", "n_workers", "job_cls", "loop", "asynchronous", "dashboard_address", "host"}
    # "name" in a jobqueue config section is the batch job's name.
    return (names - internal) | {"name"}


def _merged_jobqueue_settings(options: ClusterOptions) -> dict[str, Any]:
    base = dask.config.get(f"jobqueue.{options.kind}", default={}) or {}
    merged = {_normalise_key(k): v for k, v in base.items()}
    merged.update({_normalise_key(k): v for k, v in options.jobqueue.items()})
    return merged


def build_jobqueue_cluster_kwargs(options: ClusterOptions) -> dict[str, Any]:
    """Keyword arguments for ``SLURMCluster`` / ``PBSCluster`` built from the options.

    Values of the ``jobqueue.<kind>`` Dask config section are left for ``dask-jobqueue`` to read,
    except those this function must extend (directives and worker arguments for GPU jobs, the
    scheduler's dashboard address). No cluster is started and nothing is submitted.

    Parameters
    ----------
    options : ClusterOptions
        Options with ``kind`` ``"slurm"`` or ``"pbs"``.

    Returns
    -------
    dict
        Keyword arguments; ``cluster_cls(**kwargs).job_script()`` shows the script a job would run.

    Raises
    ------
    ConfigError
        When ``cores`` or ``memory`` is missing, or a key is not a ``dask-jobqueue`` argument.
    """
    options.validate()
    if options.kind not in JOBQUEUE_KINDS:
        raise ConfigError(f"build_jobqueue_cluster_kwargs needs kind slurm or pbs, got {options.kind!r}")
    kind = options.kind
    cluster_cls, job_cls = _jobqueue_classes(kind)
    accepted = _accepted_jobqueue_keys(cluster_cls, job_cls)
    overrides = {_normalise_key(k): v for k, v in options.jobqueue.items()}
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise ConfigError(
            f"unknown jobqueue.{kind} key(s) {', '.join(unknown)}; accepted keys: {', '.join(sorted(accepted))}"
        )
    merged = _merged_jobqueue_settings(options)
    missing = [key for key in ("cores", "memory") if not merged.get(key)]
    if missing:
        raise ConfigError(
            f"--cluster {kind} needs jobqueue.{kind}.cores and memory (missing: {', '.join(missing)}), "
            f"for example in your --config file: jobqueue: {{{kind}: {{cores: 8, memory: 24GB}}}}"
        )

    kwargs: dict[str, Any] = dict(overrides)
    if "name" in kwargs:
        kwargs["job_name"] = kwargs.pop("name")
    kwargs["cores"] = merged["cores"]
    kwargs["memory"] = merged["memory"]
    scheduler_options = dict(merged.get("scheduler_options") or {})
    scheduler_options["dashboard_address"] = _loopback_default(options.dashboard_address)
    kwargs["scheduler_options"] = scheduler_options
    if options.gpu_per_job:
        _add_gpu_job_settings(kwargs, merged, options)
    return kwargs


def _add_gpu_job_settings(kwargs: dict[str, Any], merged: Mapping[str, Any], options: ClusterOptions) -> None:
    n_gpu = options.gpu_per_job
    if int(merged["cores"]) < n_gpu:
        raise ConfigError(
            f"jobqueue.{options.kind}.cores ({merged['cores']}) must be >= gpu_per_job ({n_gpu}): "
            "each GPU worker of a job needs at least one thread"
        )
    directives = list(merged.get("job_extra_directives") or [])
    if options.kind == "slurm":
        directives.append(f"--gres=gpu:{n_gpu}")
    else:
        from dask.utils import parse_bytes
        from dask_jobqueue.pbs import pbs_format_bytes_ceil

        spec = merged.get("resource_spec") or (
            f"select=1:ncpus={merged['cores']}:mem={pbs_format_bytes_ceil(parse_bytes(merged['memory']))}"
        )
        if "ngpus=" not in spec:
            spec = f"{spec}:ngpus={n_gpu}"
        kwargs["resource_spec"] = spec
    kwargs["job_extra_directives"] = directives
    worker_args = list(merged.get("worker_extra_args") or [])
    if "--resources" not in worker_args:
        worker_args += ["--resources", "GPU=1"]
    if options.rmm_pool_size and "--rmm-pool-size" not in worker_args:
        worker_args += ["--rmm-pool-size", str(options.rmm_pool_size)]
    kwargs["worker_extra_args"] = worker_args
    kwargs["worker_command"] = CUDA_WORKER_COMMAND
    # dask cuda worker starts one worker per GPU named "<job>-<i>"; one "process" per GPU keeps
    # dask-jobqueue's worker names, thread and memory split in step with it.
    kwargs["processes"] = n_gpu


#: Where a dashboard given as a bare ``:PORT`` listens: this machine only. A lab's shared
#: node must not show every user's task stream (nor the scheduler's HTTP routes) to all.
LOOPBACK = "127.0.0.1"


def _loopback_default(address: str | None) -> str | None:
    """A bare ``:PORT`` bound to :data:`LOOPBACK`; any other address unchanged."""
    return f"{LOOPBACK}{address}" if address and address.startswith(":") else address


def _free_dashboard_address(address: str | None) -> str | None:
    """Return ``address`` when its port is free (or ``0``), else the same host with port 0; ``None``: no dashboard.

    A bare ``:PORT`` is served on loopback (:data:`LOOPBACK`); ``0.0.0.0:PORT`` or a host
    name opens the dashboard to the network.
    """
    if address is None:
        return None
    address = _loopback_default(address)
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


def _start_local(options: ClusterOptions) -> tuple[Any, str]:
    dashboard = _free_dashboard_address(options.dashboard_address)
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

    with local_worker_environment():
        cluster = LocalCluster(
            n_workers=options.n_workers,
            threads_per_worker=options.threads_per_worker,
            memory_limit=options.memory_limit,
            processes=options.processes,
            dashboard_address=dashboard,
            host=LOOPBACK if options.processes else None,
        )
    return cluster, "local"


def _recording_job_class(job_cls: type, failures: list[str]) -> type:
    """``job_cls`` whose failed submissions are recorded, so a bad job script fails fast, not at the timeout."""
    from distributed.core import Status

    class RecordingJob(job_cls):  # type: ignore[misc, valid-type]
        async def start(self) -> None:
            try:
                await super().start()
            except RuntimeError as err:  # dask-jobqueue's error for a failed sbatch/qsub
                self.status = Status.failed
                failures.append(str(err).strip())
                raise

    RecordingJob.__name__ = RecordingJob.__qualname__ = job_cls.__name__
    return RecordingJob


def _start_jobqueue(options: ClusterOptions) -> tuple[Any, list[str]]:
    kwargs = build_jobqueue_cluster_kwargs(options)
    scheduler_options = kwargs["scheduler_options"]
    scheduler_options["dashboard_address"] = _free_dashboard_address(scheduler_options["dashboard_address"])
    cluster_cls, job_cls = _jobqueue_classes(options.kind)
    failures: list[str] = []
    cluster = cluster_cls(job_cls=_recording_job_class(job_cls, failures), **kwargs)
    logger.info("%s job script:\n%s", options.kind, cluster.job_script())
    cluster.scale(jobs=options.jobs)
    return cluster, failures


def _wait_for_first_worker(client: Any, options: ClusterOptions, failures: list[str]) -> None:
    deadline = None if options.worker_timeout is None else time.monotonic() + options.worker_timeout
    while True:
        if failures:
            raise ClusterError(
                f"submitting a {options.kind} job failed; check the jobqueue.{options.kind} settings "
                f"(queue, account, cores, memory, walltime):\n{failures[0]}"
            )
        step = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
        if step <= 0:
            hint = "squeue --me" if options.kind == "slurm" else "qstat -u $USER"
            raise ClusterError(
                f"no {options.kind} worker connected within {options.worker_timeout:g} s; the jobs may be queued "
                f"or failing: check `{hint}` and the job logs (set jobqueue.{options.kind}.log-directory), "
                "or raise the wait with worker_timeout"
            )
        try:
            client.wait_for_workers(1, timeout=step)
        except TimeoutError:
            continue
        return


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
        (cluster, failures), kind = _start_jobqueue(options), options.kind
    else:
        cluster, kind = _start_local(options)
    with contextlib.ExitStack() as stack:
        stack.callback(cluster.close)
        client = Client(cluster)
        stack.callback(client.close)
        if kind in JOBQUEUE_KINDS:
            _wait_for_first_worker(client, options, failures)
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
