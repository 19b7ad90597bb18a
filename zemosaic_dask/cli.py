"""Command-line interface: a thin layer over :mod:`zemosaic_dask.api`.

``zemosaic-dask run``, ``plan``, ``simulate`` and ``config``. Each flag maps to one
configuration key (shown in its help), so ``--config FILE`` and ``DASK_ZEMOSAIC__...``
variables set the same things.
"""

from __future__ import annotations

import atexit
import errno
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from . import __version__
from .cli_flags import cluster_flags, debug_flag, load_flags, pixel_flags, read_plan, stacking_flags
from .errors import ZeMosaicError
from .logs import UnretrievedTeardownFilter

__all__ = ["entry", "main"]

#: Exit status of a run stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


def _one_line(err: BaseException) -> str:
    """An expected failure as one line: the file or folder it concerns and what went wrong."""
    if isinstance(err, OSError) and not isinstance(err, ZeMosaicError) and err.strerror:
        where = f" {err.filename}" if err.filename else ""
        hint = "; free some space and run again to resume" if err.errno == errno.ENOSPC else ""
        return f"cannot access{where}: {err.strerror}{hint}"
    return str(err)


def _raise_interrupt(signum: int, frame: Any) -> None:  # noqa: ARG001
    raise KeyboardInterrupt


def _quiet_teardown() -> None:
    """Keep asyncio's reports of connection futures left unread at cluster shutdown off stderr."""
    asyncio_log = logging.getLogger("asyncio")
    if not any(isinstance(f, UnretrievedTeardownFilter) for f in asyncio_log.filters):
        asyncio_log.addFilter(UnretrievedTeardownFilter())


class CliGroup(click.Group):
    """The command group with the one top-level error handler.

    Every expected failure (:class:`ZeMosaicError`, an I/O error) is one line on stderr with
    exit status 2; Ctrl-C or SIGTERM stop the cluster, keep the resumable state and exit
    130; anything else is an internal error in one line, exit 1. ``--debug`` shows the
    traceback instead.
    """

    def invoke(self, ctx: click.Context) -> Any:
        _quiet_teardown()
        previous = signal.getsignal(signal.SIGTERM)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            if ctx.meta.get("debug"):
                raise
            output = ctx.meta.get("output")
            where = f" in {output}" if output else ""
            click.echo(
                f"interrupted: the cluster is stopped and finished work is kept{where}; "
                "run the same command again to resume",
                err=True,
            )
            sys.exit(EXIT_INTERRUPTED)
        except (ZeMosaicError, OSError) as err:
            if ctx.meta.get("debug"):
                raise
            click.echo(f"error: {_one_line(err)}", err=True)
            sys.exit(2)
        except Exception as err:
            if ctx.meta.get("debug"):
                raise
            click.echo(
                f"internal error: {type(err).__name__}: {err} (run again with --debug for the traceback)", err=True
            )
            sys.exit(1)
        finally:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, previous)


@click.group(cls=CliGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="zemosaic-dask")
@debug_flag
def main() -> None:
    """Deep, seamless, photometrically linear mosaics from smart-telescope frames, on Dask."""
    if click.get_current_context().invoked_subcommand == "run":
        # The local workers' server imports the package while this process parses the
        # configuration and imports the same modules (see zemosaic_dask.worker_server).
        from .clusters import spawned_worker_environ
        from .worker_server import start_worker_server

        start_worker_server(spawned_worker_environ())


@main.command()
@click.argument("inputs", nargs=-1, type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option(
    "--plan",
    "plan_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Execute this saved plan.json unchanged (INPUTS are then ignored).",
)
@click.option("--restart", is_flag=True, help="Discard the state of an interrupted run in OUTPUT instead of resuming.")
@click.option(
    "--performance-report",
    type=click.Path(dir_okay=False),
    help="Save Dask's HTML performance report (cluster.performance-report).",
)
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
@stacking_flags
@cluster_flags
def run(
    inputs: tuple[str, ...], output: str, plan_file: str | None, restart: bool, progress: bool, **params: Any
) -> None:
    """Build a mosaic from INPUTS (files and folders of FITS frames) into OUTPUT."""
    from .api import run_mosaic

    click.get_current_context().meta["output"] = output
    if plan_file:
        given = [f"--{name.replace('_', '-')}" for name in pixel_flags() if params.get(name) is not None]
        if given:
            raise click.UsageError(
                f"{', '.join(given)} cannot be combined with --plan: a saved plan runs with the settings it "
                "was made with; make a new plan with `zemosaic-dask plan ... -o plan.json` to change them"
            )
    config = load_flags(params)
    plan = read_plan(plan_file) if plan_file else None
    if not inputs and plan is None:
        raise click.UsageError("give at least one INPUT file or folder, or --plan plan.json")
    result = run_mosaic(inputs, output, config=config, plan=plan, restart=restart, show_progress=progress)
    report = result.report
    click.echo(
        f"mode: {report['mode']}   frames: {len(report['inputs']['used'])} used, "
        f"{len(report['inputs']['rejected'])} rejected   time: {report['seconds']:.1f} s"
    )
    click.echo(f"output: {result.output}")


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option("-o", "--output", "plan_file", type=click.Path(dir_okay=False), help="Save the plan (plan.json).")
@click.option("--preview", type=click.Path(dir_okay=False), help="Draw every batch's footprints into this PNG.")
@stacking_flags
@cluster_flags
def plan(inputs: tuple[str, ...], as_json: bool, plan_file: str | None, preview: str | None, **params: Any) -> None:
    """Show what a run would do with INPUTS: mode, groups, batches, salvage, SDS coverage, assembly plan."""
    from .api import make_plan
    from .logs import run_logging

    config = load_flags(params)
    # Solutions go where the run beside the plan will look: <folder of plan.json>/wcs-cache.
    cache = Path(plan_file).resolve().parent / "wcs-cache" if plan_file else None
    with run_logging(None, config.logging.level):
        mosaic_plan = make_plan(inputs, config, wcs_cache_dir=cache)
    from .io.products import write_json
    from .plans.sections import batches_view

    view = {
        "mode": mosaic_plan.mode,
        "mode_reason": mosaic_plan.mode_reason,
        "fallback": mosaic_plan.fallback,
        "frames": [f.path for f in mosaic_plan.frames],
        "rejected": [r.to_dict() for r in mosaic_plan.rejected],
        "grid": mosaic_plan.grid.to_dict(),
        "batches": batches_view(mosaic_plan),
        "assembly_plan": mosaic_plan.sections.get("assembly_plan"),
        "altaz": mosaic_plan.sections.get("altaz"),
    }
    if plan_file:
        write_json(plan_file, mosaic_plan.to_dict())
    if preview:
        from .io.plan_preview import write_plan_preview

        write_plan_preview(preview, mosaic_plan)
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    click.echo(
        f"mode: {view['mode']} ({view['mode_reason']})"
        + (f"  fallback: {view['fallback']}" if view["fallback"] else "")
    )
    click.echo(f"frames: {len(view['frames'])} usable, {len(view['rejected'])} rejected")
    for rejection in view["rejected"]:
        click.echo(f"  rejected {rejection['path']}: {rejection['reason']}")
    height, width = mosaic_plan.grid.shape
    click.echo(
        f"grid: {width} x {height} px at {mosaic_plan.grid.pixel_scale:.3f} arcsec/px, chunk {mosaic_plan.grid.chunk}"
    )
    for batch in view["batches"]:
        extra = f" coverage={batch['coverage_fraction']:.3f}" if batch["coverage_fraction"] is not None else ""
        dup = (
            f" duplicated {batch['original_count']}->{batch['final_count']}"
            if batch["final_count"] != batch["original_count"]
            else ""
        )
        salvage = " SALVAGE" if batch["salvage"] else ""
        click.echo(f"  {batch['kind']} {batch['id']}: {batch['distinct_frames']} frame(s){dup}{extra}{salvage}")
    assembly = view["assembly_plan"] or {}
    click.echo("assembly plan: " + ", ".join(f"{k}={v}" for k, v in assembly.items() if not k.endswith("reason")))
    altaz = view["altaz"] or {}
    if altaz:
        click.echo(f"alt-az edge cleanup: {'on' if altaz['enabled'] else 'off'} ({altaz['reason']})")


@main.command()
@click.argument("output", type=click.Path(file_okay=False))
@click.option("--frames", "n_frames", type=int, default=40, show_default=True, help="Number of frames.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same bytes).")
@click.option(
    "--scale",
    type=float,
    default=1.0,
    show_default=True,
    help="Frame size factor: 1 gives 1080x1920 Seestar frames, 0.25 gives 270x480.",
)
@click.option(
    "--sky",
    type=click.Choice(["default", "realistic"]),
    default="default",
    show_default=True,
    help="default: constant sky, tiny gradients. realistic: sky level drifting 8-22 %, light-pollution "
    "gradients of 10-35 % toward the detector bottom, an M31-like galaxy, faint nebulosity, bright trails.",
)
@click.option(
    "--galaxy/--no-galaxy",
    default=None,
    help="Add (or leave out) the large galaxy. Default: on with --sky realistic, off otherwise.",
)
@click.option(
    "--nebulosity",
    type=float,
    default=None,
    help="Peak of the faint nebula as a fraction of the sky level, for example 0.03; 0 for none. "
    "Default: 0.03 with --sky realistic, 0 otherwise.",
)
@click.option(
    "--vignetting",
    type=float,
    default=0.0,
    show_default=True,
    help="Corner falloff of a radial vignetting, for example 0.03 (3 %); 0 for none.",
)
@click.option(
    "--order",
    type=click.Choice(["interleaved", "panel", "shuffled"]),
    default="interleaved",
    show_default=True,
    help="Panel order: interleaved (frame i on panel i mod n), panel (one panel after the other), shuffled.",
)
@click.option(
    "--panels",
    type=(int, int),
    default=(2, 2),
    show_default=True,
    help="Mosaic panels NX NY, for example --panels 3 2.",
)
@click.option(
    "--layout",
    type=click.Choice(["bayer", "chw", "mono"]),
    default="bayer",
    show_default=True,
    help="bayer: raw GRBG int16 frames; chw: float32 RGB cubes; mono: float32 green frames.",
)
@click.option(
    "--degraded",
    type=float,
    default=0.0,
    show_default=True,
    help="Share of frames taken through clouds, trailed or out of focus (the three in turn), for example 0.15.",
)
def simulate(
    output: str,
    n_frames: int,
    seed: int,
    scale: float,
    sky: str,
    galaxy: bool | None,
    nebulosity: float | None,
    vignetting: float,
    order: str,
    panels: tuple[int, int],
    layout: str,
    degraded: float,
) -> None:
    """Write simulated Seestar S50 frames, their truth sky and star list into OUTPUT."""
    from .simulation import GalaxyModel, SimulationConfig
    from .testing import simulate_seestar

    try:
        if sky == "realistic":
            config = SimulationConfig.realistic(
                galaxy=True if galaxy is None else galaxy,
                nebulosity=0.03 if nebulosity is None else nebulosity,
                vignetting=vignetting,
            )
        else:
            config = SimulationConfig(
                galaxy=GalaxyModel() if galaxy else None, nebulosity=nebulosity or 0.0, vignetting=vignetting
            )
        result = simulate_seestar(
            output,
            n_frames,
            seed,
            scale=scale,
            panels=panels,
            layout=layout,
            config=config,
            order=order,
            degraded=degraded,
        )
    except ValueError as err:
        raise click.UsageError(str(err)) from err
    extra = ", extended emission" if result.extended is not None else ""
    click.echo(f"wrote {len(result.frames)} frames, truth{extra} and star list to {Path(output).resolve()}")


@main.command()
@click.argument("output", type=click.Path(file_okay=False), default="demo", required=False)
@click.option("--frames", "n_frames", type=int, default=48, show_default=True, help="Number of simulated frames.")
@click.option("--scale", type=float, default=0.5, show_default=True, help="Frame size factor (1 = 1080x1920).")
@click.option("--seed", type=int, default=1, show_default=True, help="Random seed of the simulated sky.")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
@stacking_flags
@cluster_flags
def demo(output: str, n_frames: int, scale: float, seed: int, progress: bool, **params: Any) -> None:
    """Simulate a Seestar data set into OUTPUT/frames and build its mosaic into OUTPUT/mosaic."""
    from .api import run_mosaic
    from .testing import simulate_seestar

    frames_dir = Path(output) / "frames"
    if not any(frames_dir.glob("frame_*.fits")):
        click.echo(f"simulating {n_frames} Seestar S50 frames (scale {scale}) into {frames_dir} ...")
        simulate_seestar(frames_dir, n_frames, seed, scale=scale)
    frames = sorted(str(p) for p in frames_dir.glob("frame_*.fits"))  # truth.fits beside them is not an input
    click.get_current_context().meta["output"] = str(Path(output) / "mosaic")
    config = load_flags(params)
    result = run_mosaic(frames, Path(output) / "mosaic", config=config, show_progress=progress)
    report = result.report
    click.echo(f"mode: {report['mode']}   frames: {len(report['inputs']['used'])}   time: {report['seconds']:.1f} s")
    mosaic = "mosaic.fits" if report.get("products", {}).get("fits") != "skipped" else "mosaic.zarr"
    click.echo(f"mosaic: {result.output / mosaic}   preview: {result.output / 'preview.png'}")


@main.command(name="config")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), help="Merge this YAML file.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def config_command(config_file: str | None, as_json: bool) -> None:
    """Print the resolved configuration and where each value comes from."""
    from .config import describe_config

    entries = describe_config(config_file)
    if as_json:
        click.echo(json.dumps([{"key": e.key, "value": e.value, "source": e.source} for e in entries], indent=2))
        return
    width = max(len(e.key) for e in entries)
    for entry in entries:
        click.echo(f"{entry.key:<{width}}  {json.dumps(entry.value):<24}  {entry.source}")


def entry() -> None:
    """The ``zemosaic-dask`` console script: :func:`main`, then the process ends without interpreter teardown.

    When the command is over (products, report and logs written and closed, the cluster
    shut down), the exit handlers run as at any exit (``atexit``: logging's flush,
    multiprocessing's clean-up, temporary files) and the output streams are flushed; then
    the process ends at once with the command's status. Python's own teardown, which frees
    every module and object one by one, took 0.5 to 0.9 s after each run (a tenth of a
    40-frame run) and has nothing left to save. A traceback (``--debug``) ends the usual way.
    """
    try:
        main()
    except SystemExit as done:
        code = done.code
    else:  # pragma: no cover - click's standalone main always ends with SystemExit
        code = 0
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): the message on stderr, status 1, as the interpreter does
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()  # what a normal exit runs before tearing down
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can be written
            pass
    os._exit(status)


if __name__ == "__main__":  # pragma: no cover
    entry()
