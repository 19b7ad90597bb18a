"""``run_mosaic``: the one place that owns a Dask client and computes.

Data flow: scan -> ingest (tasks on workers) -> plan (pure) -> graph -> compute ->
products. Every stage's duration goes into ``report.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .clusters import ClusterHandle, ClusterOptions, open_cluster
from .config import ZeMosaicConfig, config_of_plan, load_config
from .config.policies import (
    cluster_options,
    finishing_options,
    ingest_options,
    planning_policies,
    quality_gate_policy,
)
from .errors import OutputError, PlanError
from .execute import Timings, cluster_resources, compute, execute_plan, plan_sections
from .execute.product_tasks import band_runner
from .execute.worker_memory import peak_rss_mib
from .graph.ingest import build_ingest_graph
from .graph.keys import run_keys
from .io.frames import IngestOptions
from .io.lock import output_lock
from .io.products import write_json, write_mosaic_products
from .io.scan import scan_inputs
from .io.store import open_mosaic_store
from .logs import run_logging
from .messages import msg
from .plans.frame_sanity import screen_frames
from .plans.frames import FrameInfo, FrameRejection
from .plans.grid import plan_output_grid
from .plans.modes import select_mode
from .plans.mosaic import MosaicPlan
from .plans.quality_gate import gate_frames

__all__ = [
    "PRODUCT_NAMES",
    "RunResult",
    "check_plan_frames",
    "default_wcs_cache",
    "discard_state",
    "ingest",
    "make_plan",
    "plan_mosaic",
    "prepare_output",
    "run_mosaic",
]

log = logging.getLogger(__name__)

PRODUCT_NAMES = ("mosaic.fits", "mosaic_coverage.fits", "preview.png", "mosaic.zarr", "plan.json", "report.json")
#: Products written at the end of a run from the store (removed when a new run starts building).
FINAL_PRODUCTS = (
    "mosaic.fits",
    "mosaic_coverage.fits",
    "preview.png",
    "mosaic_display.fits",
    "mosaic_aesthetic.fits",
    "mosaic_aesthetic.png",
    "report.json",
)
#: Diagnostics of a run that --restart removes with the store.
STATE_FILES = ("background_frames.csv", "intertile_pairs.csv")


@dataclass
class RunResult:
    """What a run produced: the output folder, the executed plan and the report."""

    output: Path
    plan: MosaicPlan
    report: dict[str, Any]


def ingest(
    paths: Sequence[str], options: IngestOptions, handle: ClusterHandle, *, show_progress: bool
) -> tuple[list[FrameInfo], list[FrameRejection]]:
    """Inspect every candidate file on the workers; split usable frames from rejections."""
    batches = compute(handle, build_ingest_graph(paths, options), label="ingest", show_progress=show_progress)
    results = [result for batch in batches for result in batch]
    frames = [r for r in results if isinstance(r, FrameInfo)]
    rejected = [r for r in results if isinstance(r, FrameRejection)]
    for rejection in rejected:
        log.warning(msg("frame_rejected", path=rejection.path, reason=rejection.reason))
    return frames, rejected


def plan_mosaic(
    frames: Sequence[FrameInfo],
    rejected: Sequence[FrameRejection],
    config: ZeMosaicConfig,
    *,
    resources: Any = None,
) -> MosaicPlan:
    """Build the :class:`MosaicPlan` for ingested frames (used by ``run`` and ``plan``)."""
    frames, screened = screen_frames(frames)
    for rejection in screened:
        log.warning(msg("frame_rejected", path=rejection.path, reason=rejection.reason))
    gate = gate_frames(frames, quality_gate_policy(config))
    for rejection in gate.rejected:
        log.warning(msg("frame_rejected", path=rejection.path, reason=rejection.reason))
    frames, rejected = list(gate.kept), [*rejected, *screened, *gate.rejected]
    if not frames:
        raise PlanError(
            f"no usable input frame ({len(rejected)} rejected); see the reasons above", reason="no usable frames"
        )
    grid = plan_output_grid(
        frames,
        pixel_scale=config.grid.pixel_scale,
        padding_px=config.grid.padding_px,
        chunk=config.grid.chunk,
        max_pixels=int(config.grid.max_pixels),
    )
    mode, why = select_mode(
        config.mode, frames, sds_enabled=config.sds.enabled, force_seestar=config.ingest.force_seestar
    )
    n_channels = 3 if any(f.n_channels == 3 for f in frames) else 1
    plan = MosaicPlan(
        mode=mode,
        mode_reason=why,
        frames=tuple(frames),
        rejected=tuple(rejected),
        grid=grid,
        n_channels=n_channels,
        config=config.to_dict(),
    )
    plan = plan_sections(plan, planning_policies(config, n_channels), resources, preplan=config.sds.preplan)
    return dataclasses.replace(plan, sections={**plan.sections, "quality_gate": gate.to_dict()})


#: Files from which ``plan`` ingests on the embedded cluster rather than in its own process (at
#: 17 ms of CPU per frame, 512 frames take about 9 s in one process, and the cluster 2-3 s to start).
PLAN_CLUSTER_MIN_FILES = 512


def make_plan(
    inputs: Sequence[str | os.PathLike[str]],
    config: ZeMosaicConfig,
    *,
    wcs_cache_dir: str | os.PathLike[str] | None = None,
) -> MosaicPlan:
    """Scan, ingest and plan without computing a mosaic (``zemosaic-dask plan``).

    Ingest runs on the configured scheduler when one is given; otherwise a session of at
    least :data:`PLAN_CLUSTER_MIN_FILES` files is ingested on the embedded local cluster
    (every core reads frames, as in ``run``), and a smaller one in this process, where a
    cluster would take longer to start than the files take to read. Frames without a WCS
    are plate-solved as ``run`` solves them (same setting, timeout and cache format); the
    solutions are cached in ``wcs_cache_dir`` (by default the user's cache,
    :func:`default_wcs_cache`), so the run that follows does not solve them again.
    """
    cache = str(wcs_cache_dir) if wcs_cache_dir is not None else str(default_wcs_cache())
    files, missing = scan_inputs(inputs, extensions=config.ingest.extensions, recursive=config.ingest.recursive)
    attach = config.cluster.scheduler or config.cluster.scheduler_file
    embedded = config.cluster.kind == "local" and len(files) >= PLAN_CLUSTER_MIN_FILES
    options = cluster_options(config) if attach or embedded else ClusterOptions(kind="synchronous")
    with open_cluster(options) as handle, run_keys():
        frames, rejected = ingest(files, ingest_options(config, cache), handle, show_progress=False)
        rejected = [FrameRejection(p, r) for p, r in missing] + rejected
        return plan_mosaic(frames, rejected, config, resources=cluster_resources(handle))


def default_wcs_cache() -> Path:
    """The plate-solving cache of ``plan`` without an output: ``$XDG_CACHE_HOME/zemosaic-dask/wcs-cache``.

    Entries are named by the frame's content hash, so one cache serves every session.
    """
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "zemosaic-dask" / "wcs-cache"


def run_mosaic(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    config: ZeMosaicConfig | None = None,
    cluster: ClusterOptions | None = None,
    plan: MosaicPlan | None = None,
    restart: bool = False,
    show_progress: bool = True,
    console_log: bool = True,
) -> RunResult:
    """Build a mosaic from input frames and write the output products into ``output``.

    Parameters
    ----------
    inputs : sequence of path
        Files and folders of FITS frames (ignored when ``plan`` is given).
    output : path
        Output folder (created); see the output contract in the README.
    config : ZeMosaicConfig, optional
        Resolved configuration; the packaged defaults when omitted.
    cluster : ClusterOptions, optional
        Where to compute; the configuration's ``cluster`` section when omitted
        (an embedded LocalCluster by default).
    plan : MosaicPlan, optional
        A saved plan to execute unchanged (``run --plan plan.json``): every setting that
        changes pixels comes from the plan; only cluster, logging and output settings come
        from ``config``.
    restart : bool
        Discard state left by an interrupted run instead of resuming it.
    show_progress : bool
        Show progress bars in the terminal.
    console_log : bool
        Also log to the terminal (the log file is always written).

    Returns
    -------
    RunResult
    """
    config = config or load_config()
    out = prepare_output(output)
    timings = Timings()
    report: dict[str, Any] = {"version": __version__, "output": str(out)}
    started = time.perf_counter()
    with run_logging(out, config.logging.level, console=console_log), output_lock(out):
        if restart:
            discard_state(out)
        if plan is None:
            with timings.stage("scan"):
                files, missing = scan_inputs(
                    inputs, extensions=config.ingest.extensions, recursive=config.ingest.recursive, exclude=out
                )
            log.info(msg("frames_found", count=len(files)))
            if not files:
                raise PlanError(_no_input_message(missing), reason="no usable frames")
            inputs = (files, missing)
        else:
            check_plan_frames(plan)
            config = config_of_plan(plan.config, config)  # the plan's settings are what runs
        cluster = cluster or cluster_options(config)
        with timings.stage("cluster"), contextlib.ExitStack() as stack:
            handle = stack.enter_context(open_cluster(cluster))
            report["task_token"] = stack.enter_context(run_keys())
            report["dashboard"] = handle.dashboard_link
            report["cluster"] = {"kind": handle.kind}
            if handle.dashboard_link:
                log.info(msg("dashboard", link=handle.dashboard_link))
            perf = config.cluster.performance_report
            if perf and handle.client is not None:
                from distributed import performance_report

                stack.enter_context(performance_report(filename=str(perf)))
            timings.stages.pop("cluster", None)
            timings.watch_workers(handle.client)
            return _run(inputs, out, config, handle, plan, show_progress, timings, report, started)


def prepare_output(output: str | os.PathLike[str]) -> Path:
    """Create the output folder, or say in one line why it cannot be used.

    Parameters
    ----------
    output : path
        The output folder.

    Returns
    -------
    Path
        Its absolute path.

    Raises
    ------
    OutputError
        The path (or a parent) is a file, it cannot be created or it is not writable, or it
        holds a ``mosaic.zarr`` that is not a folder.
    """
    out = Path(output).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise OutputError(f"the output {out} is a file, not a folder; choose a folder for -o")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"cannot create the output folder {out}: a parent of it is a file") from None
    except OSError as err:
        raise OutputError(f"cannot create the output folder {out}: {err.strerror}") from None
    out = out.resolve()
    try:  # a real write: permissions, a read-only file system and immutable folders all show here (also for root)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".zemosaic-probe-")
    except OSError as err:
        raise OutputError(
            f"the output folder {out} is not writable ({err.strerror}); choose another folder or fix its permissions"
        ) from None
    probe.close()
    zarr_path = out / "mosaic.zarr"
    if zarr_path.exists() and not zarr_path.is_dir():
        raise OutputError(
            f"{zarr_path} is a file, not the run's Zarr store; move it away or choose another output folder"
        )
    return out


def discard_state(out: Path) -> None:
    """Remove everything an earlier run left in ``out``: the store (mosaic, layers, tiles, batches) and products.

    The plate-solving cache (``wcs-cache``) is kept: it depends on the input files only.
    """
    store = out / "mosaic.zarr"
    if store.is_dir():
        log.info("--restart: removing %s", store)
        shutil.rmtree(store)
    for name in (*FINAL_PRODUCTS, "plan.json", *STATE_FILES):
        (out / name).unlink(missing_ok=True)


def check_plan_frames(plan: MosaicPlan) -> None:
    """Refuse a saved plan whose frames were deleted or changed since it was made.

    Raises
    ------
    PlanError
        Naming every missing or changed frame.
    """
    from .io.frames import frame_changed

    problems = [f"{frame.path}: {why}" for frame in plan.frames if (why := frame_changed(frame))]
    if problems:
        listed = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise PlanError(
            f"{len(problems)} frame(s) of the plan are missing or changed since it was made ({listed}); "
            "make a new plan or run without --plan",
            reason="plan frames changed",
        )


def _no_input_message(missing: Sequence[tuple[str, str]]) -> str:
    if not missing:
        return "no input frame found: give FITS files or folders holding them"
    listed = "; ".join(f"{path}: {reason}" for path, reason in missing[:5])
    return f"no usable input frame ({listed})"


def _environment_variable(name: str) -> str | None:
    """A worker's environment variable (run on the workers by ``client.run``)."""
    return os.environ.get(name)


def _worker_summary(handle: ClusterHandle, timings: Timings) -> list[dict[str, Any]]:
    """Each worker's resources and its peak resident memory over the run (the largest of its stages' peaks)."""
    if handle.client is None or timings.workers is None:
        return []
    from .clusters import worker_resources

    timings.workers.take()
    peaks = dict(timings.workers.overall)
    keys = ("name", "address", "nthreads", "memory_limit", "resources")
    return [
        {**{k: w.get(k) for k in keys}, "peak_rss_mib": peaks.get(w.get("address"))}
        for w in worker_resources(handle.client)
    ]


def _run(inputs, out, config, handle, plan, show_progress, timings, report, started) -> RunResult:  # noqa: ANN001
    if plan is None:
        files, missing = inputs
        with timings.stage("ingest"):
            frames, rejected = ingest(
                files, ingest_options(config, str(out / "wcs-cache")), handle, show_progress=show_progress
            )
        rejected = [FrameRejection(p, r) for p, r in missing] + rejected
        with timings.stage("plan"):
            plan = plan_mosaic(frames, rejected, config, resources=cluster_resources(handle))
    log.info(msg("mode_selected", mode=plan.mode, why=plan.mode_reason))
    store_url = str(out / "mosaic.zarr")
    store, reused = open_mosaic_store(store_url, plan.grid, plan.n_channels, fingerprint=plan.fingerprint())
    # The store was accepted: products of an earlier run no longer describe what is being built.
    for name in FINAL_PRODUCTS:
        (out / name).unlink(missing_ok=True)
    write_json(out / "plan.json", plan.to_dict())
    executed = execute_plan(plan, store, handle, timings=timings, show_progress=show_progress)
    with timings.stage("products"):
        products = write_mosaic_products(
            out,
            store,
            plan.grid,
            run_bands=band_runner(handle.client, show_progress=show_progress),
            extra_header={"ZMMODE": executed.mode},
            preview_max_side=config.output.preview_max_side,
            preview_stretch=config.output.preview_stretch,
            fits_max_pixels=config.output.fits_max_pixels,
            finishing=finishing_options(config),
        )
    report.update(
        {
            "mode": executed.mode,
            "requested_mode": config.mode,
            "fallback": executed.fallback,
            "inputs": {"used": [f.path for f in plan.frames], "rejected": [r.to_dict() for r in plan.rejected]},
            "quality_gate": plan.sections.get("quality_gate"),
            "timings": timings.stages,
            "regions": {"total": executed.regions, "reused": reused},
            **executed.report,
            "products": products,
        }
    )
    report["workers"] = _worker_summary(handle, timings)
    if timings.worker_peak_mib:
        peaks = timings.worker_peak_mib
        report["worker_peak_mib"] = {"by_stage": peaks, "per_stage": bool(timings.workers and timings.workers.reset)}
    report["client"] = {
        "peak_rss_mib": peak_rss_mib(),
        "cpu_s": {**timings.client_cpu, "total": round(time.process_time(), 3)},
    }
    if handle.kind in ("slurm", "pbs") and handle.client is not None:
        variable = "SLURM_JOB_ID" if handle.kind == "slurm" else "PBS_JOBID"
        ids = handle.client.run(_environment_variable, variable)
        report["slurm_jobs" if handle.kind == "slurm" else "pbs_jobs"] = sorted({v for v in ids.values() if v})
    seconds = time.perf_counter() - started
    report["seconds"] = round(seconds, 3)
    write_json(out / "report.json", report)
    log.info(msg("run_done", path=str(out), seconds=seconds))
    return RunResult(out, plan, report)
