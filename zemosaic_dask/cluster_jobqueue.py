"""Workers submitted as batch jobs through ``dask-jobqueue`` (SLURM, PBS).

The ``jobqueue.slurm`` / ``jobqueue.pbs`` sections of the Dask config with
:attr:`~zemosaic_dask.cluster_options.ClusterOptions.jobqueue` merged over them; GPU jobs run
dask-cuda's worker. ``dask_jobqueue`` is imported only here, when such a cluster is started.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Mapping
from typing import Any

import dask

from .cluster_options import JOBQUEUE_KINDS, ClusterError, ClusterOptions, free_dashboard_address, loopback_default
from .errors import ConfigError

__all__ = ["build_jobqueue_cluster_kwargs", "start_jobqueue", "wait_for_first_worker"]

logger = logging.getLogger("zemosaic_dask.clusters")

# dask-jobqueue runs "<python> -m <worker_command>"; "python -m dask cuda worker" is dask-cuda's stock worker.
CUDA_WORKER_COMMAND = "dask cuda worker"


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
    scheduler_options["dashboard_address"] = loopback_default(options.dashboard_address)
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


def start_jobqueue(options: ClusterOptions) -> tuple[Any, list[str]]:
    kwargs = build_jobqueue_cluster_kwargs(options)
    scheduler_options = kwargs["scheduler_options"]
    scheduler_options["dashboard_address"] = free_dashboard_address(scheduler_options["dashboard_address"])
    cluster_cls, job_cls = _jobqueue_classes(options.kind)
    failures: list[str] = []
    cluster = cluster_cls(job_cls=_recording_job_class(job_cls, failures), **kwargs)
    logger.info("%s job script:\n%s", options.kind, cluster.job_script())
    cluster.scale(jobs=options.jobs)
    return cluster, failures


def wait_for_first_worker(client: Any, options: ClusterOptions, failures: list[str]) -> None:
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
