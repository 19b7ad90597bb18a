"""The assembly plan (ZeMosaic's "Phase 5 plan"): workers, GPU use and chunk sizes.

:func:`plan_assembly` derives an :class:`AssemblyPlan` once from the cluster's actual
resources and the configured targets. The same value drives assembly onto the global grid
and the two-pass coverage renormalisation (:func:`select_two_pass_plan`), so both stages
run with the same workers, GPU decision and chunk sizes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import ConfigError, PlanError
from ..messages import msg as format_message
from .grid import OutputGrid

__all__ = [
    "AssemblyPlan",
    "AssemblyTargets",
    "ClusterResources",
    "WorkerResources",
    "plan_assembly",
    "region_side_for_budget",
    "select_two_pass_plan",
    "two_pass_use_gpu",
]

logger = logging.getLogger(__name__)

MiB = 1024**2
GiB = 1024**3
#: float32 values.
BYTES_PER_VALUE = 4
#: Regions are multiples of this side, in pixels.
REGION_QUANTUM = 64


@dataclass(frozen=True)
class WorkerResources:
    """What one Dask worker offers: threads, memory limit, GPUs and memory per GPU (0: unknown)."""

    name: str
    nthreads: int
    memory_limit_bytes: int = 0
    gpus: int = 0
    gpu_memory_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkerResources:
        """Build from :meth:`to_dict` output."""
        return cls(
            str(data["name"]),
            int(data["nthreads"]),
            int(data.get("memory_limit_bytes") or 0),
            int(data.get("gpus") or 0),
            int(data.get("gpu_memory_bytes") or 0),
        )


def _worker_key(worker: WorkerResources) -> tuple[str, int, int, int, int]:
    return (worker.name, worker.nthreads, worker.memory_limit_bytes, worker.gpus, worker.gpu_memory_bytes)


@dataclass(frozen=True)
class ClusterResources:
    """The workers of a cluster, sorted by name."""

    workers: tuple[WorkerResources, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "workers", tuple(sorted(self.workers, key=_worker_key)))

    @property
    def total_threads(self) -> int:
        """Threads over all workers."""
        return sum(max(0, w.nthreads) for w in self.workers)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary."""
        return {"workers": [w.to_dict() for w in self.workers]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClusterResources:
        """Build from :meth:`to_dict` output."""
        return cls(tuple(WorkerResources.from_dict(w) for w in data["workers"]))

    @classmethod
    def from_scheduler_info(cls, info: Mapping[str, Any]) -> ClusterResources:
        """Build from the dictionary ``distributed.Client.scheduler_info()`` returns.

        Reads each worker's ``name``, ``nthreads``, ``memory_limit``, ``resources["GPU"]``
        and, when the worker reported it at start-up, ``gpu["memory-total"]``.
        """
        workers = []
        for address, worker in sorted(dict(info.get("workers", {})).items()):
            resources = worker.get("resources") or {}
            gpu_info = worker.get("gpu") or {}
            workers.append(
                WorkerResources(
                    name=str(worker.get("name", address)),
                    nthreads=int(worker.get("nthreads") or 1),
                    memory_limit_bytes=int(worker.get("memory_limit") or 0),
                    gpus=int(resources.get("GPU") or 0),
                    gpu_memory_bytes=int(gpu_info.get("memory-total") or 0),
                )
            )
        return cls(tuple(workers))


@dataclass(frozen=True)
class AssemblyTargets:
    """Configured targets and caps for :func:`plan_assembly`.

    Attributes
    ----------
    cpu_load : float
        Share of the cluster's threads used for assembly tasks, in ``(0, 1]``.
    ram_fraction : float
        Share of a worker's memory limit its concurrent tasks' chunks may use, in ``(0, 1]``.
    vram_fraction : float
        Share of a GPU's memory (after the reserve) a chunk may use, in ``(0, 1]``.
    vram_reserve_bytes : int
        GPU memory kept free for the CUDA context and libraries.
    max_chunk_bytes : int
        Hard cap on a CPU chunk.
    gpu_max_chunk_bytes : int
        Hard cap on a GPU chunk.
    min_chunk_bytes : int
        Smallest chunk worth a task (never above what a worker's memory allows).
    gpu_min_memory_bytes : int
        Cards with less memory (or unknown memory) are "small": chunks clamped to ``small_gpu_max_chunk_bytes``.
    small_gpu_max_chunk_bytes : int
        Chunk cap on small cards.
    n_channels : int
        Channels of the mosaic (a coverage plane is added per row).
    min_part_samples : int
        Mosaic-First: least work of a row part of a deep region, in frame samples (0: never split;
        see :mod:`~zemosaic_dask.plans.region_parts`).
    force_cpu : bool
        Never use a GPU.
    gpu_requested : bool
        The user asked for GPU assembly.
    """

    cpu_load: float = 1.0
    ram_fraction: float = 0.5
    vram_fraction: float = 0.7
    vram_reserve_bytes: int = int(1.5 * GiB)
    max_chunk_bytes: int = 256 * MiB
    gpu_max_chunk_bytes: int = 512 * MiB
    min_chunk_bytes: int = 4 * MiB
    gpu_min_memory_bytes: int = 4 * GiB
    small_gpu_max_chunk_bytes: int = 64 * MiB
    n_channels: int = 3
    min_part_samples: int = 16_000_000
    force_cpu: bool = False
    gpu_requested: bool = True

    def __post_init__(self) -> None:
        for key in ("cpu_load", "ram_fraction", "vram_fraction"):
            value = getattr(self, key)
            if not (isinstance(value, int | float) and 0.0 < value <= 1.0):
                raise ConfigError(f"{key} must be in (0, 1], got {value!r}")
        for key in ("max_chunk_bytes", "gpu_max_chunk_bytes", "min_chunk_bytes", "small_gpu_max_chunk_bytes"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"{key} must be >= 1 byte, got {getattr(self, key)!r}")
        if self.vram_reserve_bytes < 0 or self.gpu_min_memory_bytes < 0:
            raise ConfigError(
                f"vram_reserve_bytes and gpu_min_memory_bytes must be >= 0, got "
                f"{self.vram_reserve_bytes!r} and {self.gpu_min_memory_bytes!r}"
            )
        if self.min_part_samples < 0:
            raise ConfigError(f"min_part_samples must be >= 0, got {self.min_part_samples!r}")
        if self.n_channels < 1:
            raise ConfigError(f"n_channels must be >= 1, got {self.n_channels!r}")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AssemblyTargets:
        """Build from :meth:`to_dict` output (unknown keys raise ConfigError)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown assembly target(s) {unknown}; accepted: {sorted(known)}")
        return cls(**dict(data))


@dataclass(frozen=True)
class AssemblyPlan:
    """How assembly and two-pass renormalisation run, and why (``reasons``: field -> text).

    ``rows_per_chunk`` rows of the grid fit in ``max_chunk_bytes``; likewise on the GPU.
    GPU values are 0 when ``use_gpu`` is False.
    """

    cpu_workers: int
    gpu_workers: int
    use_gpu: bool
    max_chunk_bytes: int
    gpu_max_chunk_bytes: int
    rows_per_chunk: int
    gpu_rows_per_chunk: int
    reasons: tuple[tuple[str, str], ...] = ()

    def reason(self, field_name: str) -> str:
        """Return why ``field_name`` has its value ("" when not recorded)."""
        return dict(self.reasons).get(field_name, "")

    @property
    def units_in_flight(self) -> int:
        """How many units may run at once: the GPU workers when units go to GPUs, else the CPU workers."""
        return max(1, self.gpu_workers) if self.use_gpu else max(1, self.cpu_workers)

    def log_fields(self) -> dict[str, Any]:
        """Values for the plan's log lines (chunk sizes in MiB)."""
        return {
            "cpu_workers": self.cpu_workers,
            "gpu_workers": self.gpu_workers,
            "use_gpu": self.use_gpu,
            "max_chunk_mb": self.max_chunk_bytes / MiB,
            "gpu_max_chunk_mb": self.gpu_max_chunk_bytes / MiB,
            "rows": self.rows_per_chunk,
            "gpu_rows": self.gpu_rows_per_chunk,
        }

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "reasons"}
        data["reasons"] = dict(self.reasons)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AssemblyPlan:
        """Build from :meth:`to_dict` output."""
        return cls(
            cpu_workers=int(data["cpu_workers"]),
            gpu_workers=int(data["gpu_workers"]),
            use_gpu=bool(data["use_gpu"]),
            max_chunk_bytes=int(data["max_chunk_bytes"]),
            gpu_max_chunk_bytes=int(data["gpu_max_chunk_bytes"]),
            rows_per_chunk=int(data["rows_per_chunk"]),
            gpu_rows_per_chunk=int(data["gpu_rows_per_chunk"]),
            reasons=tuple(sorted((str(k), str(v)) for k, v in dict(data.get("reasons", {})).items())),
        )


def _mib(n: float) -> str:
    return f"{n / MiB:.1f} MiB"


def _cpu_chunk(resources: ClusterResources, targets: AssemblyTargets) -> tuple[int, str]:
    limited = [w for w in resources.workers if w.memory_limit_bytes > 0]
    if not limited:
        return targets.max_chunk_bytes, f"no worker memory limit known: cap {_mib(targets.max_chunk_bytes)}"
    tightest = min(limited, key=lambda w: (w.memory_limit_bytes / max(1, w.nthreads), w.name))
    threads = max(1, tightest.nthreads)
    soft = int(tightest.memory_limit_bytes * targets.ram_fraction) // threads
    hard = tightest.memory_limit_bytes // threads
    chunk = min(targets.max_chunk_bytes, max(targets.min_chunk_bytes, soft), hard)
    why = (
        f"worker {tightest.name}: {_mib(tightest.memory_limit_bytes)} x ram_fraction {targets.ram_fraction} "
        f"/ {threads} thread(s) = {_mib(soft)}; clamped to [{_mib(targets.min_chunk_bytes)}, "
        f"{_mib(targets.max_chunk_bytes)}] and to {_mib(hard)} per thread"
    )
    return chunk, why


def _gpu_chunk(resources: ClusterResources, targets: AssemblyTargets) -> tuple[int, str]:
    """Return the GPU chunk (0: GPU unusable) and why; the tightest GPU worker decides."""
    budgets = []
    for worker in (w for w in resources.workers if w.gpus > 0):
        memory = worker.gpu_memory_bytes
        if memory <= 0:
            why = f"worker {worker.name}: GPU memory unknown, small-card clamp"
            budgets.append((min(targets.small_gpu_max_chunk_bytes, targets.gpu_max_chunk_bytes), why))
            continue
        usable = memory - targets.vram_reserve_bytes
        if usable <= 0:
            return 0, (
                f"worker {worker.name}: GPU memory {_mib(memory)} is not above the reserve "
                f"{_mib(targets.vram_reserve_bytes)}"
            )
        budget = min(targets.gpu_max_chunk_bytes, max(targets.min_chunk_bytes, int(usable * targets.vram_fraction)))
        budget = min(budget, usable)
        why = f"worker {worker.name}: ({_mib(memory)} - reserve) x vram_fraction {targets.vram_fraction}"
        if memory < targets.gpu_min_memory_bytes:
            budget = min(budget, targets.small_gpu_max_chunk_bytes)
            why += f", small card (< {_mib(targets.gpu_min_memory_bytes)}) clamped"
        budgets.append((budget, why + f", cap {_mib(targets.gpu_max_chunk_bytes)}"))
    return min(budgets)


def _rows(chunk_bytes: int, grid: OutputGrid, n_channels: int) -> int:
    row_bytes = int(grid.shape[1]) * (n_channels + 1) * BYTES_PER_VALUE
    return max(1, min(int(grid.shape[0]), chunk_bytes // max(1, row_bytes)))


def plan_assembly(
    resources: ClusterResources, grid: OutputGrid, config: AssemblyTargets, *, units: int | None = None
) -> AssemblyPlan:
    """Derive the assembly plan from the cluster's resources and the configured targets.

    Parameters
    ----------
    resources : ClusterResources
        Workers with their threads, memory limits and GPUs.
    grid : OutputGrid
        The global grid (its width sets the bytes per row; its regions are the units every
        stage runs, so no more workers are planned than it has regions).
    config : AssemblyTargets
        Targets, caps and GPU switches.
    units : int, optional
        The most units one stage of the run computes (:func:`~zemosaic_dask.plans.layers.layer_units`:
        every layer's regions, for classic tiles and SDS batches); the grid's regions when
        fewer or not given (mosaic-first runs one unit per region). No more workers are
        planned than there are units.

    Returns
    -------
    AssemblyPlan
        A chunk never exceeds a worker's memory limit divided by its threads, nor a GPU's
        memory minus the reserve.

    Raises
    ------
    PlanError
        When the cluster has no worker or no thread.
    """
    if not resources.workers or resources.total_threads < 1:
        raise PlanError(
            "the cluster has no worker threads to assemble with; start workers or check the scheduler address",
            reason="no workers",
        )
    ny, nx = grid.n_regions
    regions = max(1, ny * nx)
    n_units = max(regions, units or 0)
    what = f"{n_units} region(s) of the grid" if n_units == regions else f"{n_units} layer region(s) of the plan"
    reasons: dict[str, str] = {}
    threads = resources.total_threads
    cpu_workers = max(1, math.floor(threads * config.cpu_load))
    reasons["cpu_workers"] = f"floor({threads} thread(s) x cpu_load {config.cpu_load}) = {cpu_workers}"
    if cpu_workers > n_units:
        cpu_workers = n_units
        reasons["cpu_workers"] += f", capped by {what}"
    max_chunk, reasons["max_chunk_bytes"] = _cpu_chunk(resources, config)
    rows = _rows(max_chunk, grid, config.n_channels)
    reasons["rows_per_chunk"] = f"{_mib(max_chunk)} / row of {grid.shape[1]} px x {config.n_channels + 1} planes"
    gpu_chunk, use_gpu, gpu_workers, gpu_rows = 0, False, 0, 0
    gpu_count = sum(w.gpus for w in resources.workers if w.gpus > 0)
    if config.force_cpu:
        why = "force_cpu is set"
    elif not config.gpu_requested:
        why = "GPU not requested"
    elif gpu_count == 0:
        why = "no worker advertises a GPU resource"
    else:
        gpu_chunk, why = _gpu_chunk(resources, config)
        use_gpu = gpu_chunk > 0
        if use_gpu:
            gpu_workers = min(gpu_count, n_units)
            gpu_rows = _rows(gpu_chunk, grid, config.n_channels)
    reasons["use_gpu"] = why if not use_gpu else f"{gpu_count} GPU(s) advertised and usable"
    reasons["gpu_workers"] = f"{gpu_workers} GPU worker(s) used" if use_gpu else f"0: {why}"
    reasons["gpu_max_chunk_bytes"] = why if use_gpu else f"0: {why}"
    reasons["gpu_rows_per_chunk"] = f"{_mib(gpu_chunk)} / row" if use_gpu else f"0: {why}"
    plan = AssemblyPlan(
        cpu_workers=cpu_workers,
        gpu_workers=gpu_workers,
        use_gpu=use_gpu,
        max_chunk_bytes=int(max_chunk),
        gpu_max_chunk_bytes=int(gpu_chunk),
        rows_per_chunk=rows,
        gpu_rows_per_chunk=gpu_rows,
        reasons=tuple(sorted(reasons.items())),
    )
    logger.info(format_message("assembly_plan", **plan.log_fields()))
    return plan


def region_side_for_budget(max_chunk_bytes: int, n_channels: int, depth: int) -> int:
    """Side (pixels, a multiple of 64, at least 64) of a square region whose stack fits the budget.

    A stacking task holds ``depth`` float32 layers of ``n_channels`` values plus one weight
    per pixel: ``side**2 * depth * (n_channels + 1) * 4`` bytes.

    Parameters
    ----------
    max_chunk_bytes : int
        Memory budget of one task.
    n_channels : int
        Channels per frame.
    depth : int
        Expected number of frames stacked in the region.
    """
    per_pixel = max(1, int(depth)) * (max(1, int(n_channels)) + 1) * BYTES_PER_VALUE
    side = math.isqrt(max(0, int(max_chunk_bytes)) // per_pixel)
    return max(REGION_QUANTUM, side // REGION_QUANTUM * REGION_QUANTUM)


def select_two_pass_plan(
    assembly_plan: AssemblyPlan | None, derive_fallback: Callable[[], AssemblyPlan]
) -> AssemblyPlan:
    """Return the assembly plan for two-pass renormalisation; ``derive_fallback()`` only when there is none.

    Logs one ``[TwoPass] plan=...`` line naming which plan was taken and its values.
    """
    if assembly_plan is not None:
        chosen, source = assembly_plan, "AssemblyPlan"
    else:
        chosen, source = derive_fallback(), "fallback"
    logger.info(format_message("two_pass_plan", source=source, **chosen.log_fields()))
    return chosen


def two_pass_use_gpu(plan: AssemblyPlan, gpu_requested: bool) -> bool:
    """Return ``gpu_requested and plan.use_gpu``, logging when the plan overrides the request."""
    effective = bool(gpu_requested) and plan.use_gpu
    if bool(gpu_requested) and not effective:
        logger.warning(format_message("two_pass_gpu_disabled"))
    return effective
