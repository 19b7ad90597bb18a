"""The command line's flags: each maps to one configuration key, checked by the schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .errors import ZeMosaicError

__all__ = [
    "FLAG_KEYS",
    "SchemaChoice",
    "cluster_flags",
    "debug_flag",
    "load_flags",
    "pixel_flags",
    "read_plan",
    "stacking_flags",
]

# flag name -> configuration key (dotted, relative to ``zemosaic.``)
FLAG_KEYS: dict[str, str] = {
    "mode": "mode",
    "scheduler": "cluster.scheduler",
    "scheduler_file": "cluster.scheduler-file",
    "cluster": "cluster.kind",
    "n_workers": "cluster.n-workers",
    "threads_per_worker": "cluster.threads-per-worker",
    "memory_limit": "cluster.memory-limit",
    "gpus": "cluster.gpus",
    "performance_report": "cluster.performance-report",
    "dashboard_address": "cluster.dashboard-address",
    "chunk": "grid.chunk",
    "pixel_scale": "grid.pixel-scale",
    "rejection": "stack.rejection",
    "kappa": None,
    "normalisation": "stack.normalisation",
    "weighting": "stack.weighting",
    "combine": "stack.combine",
    "preplan": "sds.preplan",
    "sds": "sds.enabled",
    "log_level": "logging.level",
    "lang": "logging.lang",
    "use_gpu": "assembly.use-gpu",
    "altaz_cleanup": "altaz.cleanup",
    "jobs": "cluster.jobs",
    "gpu_per_job": "cluster.gpu-per-job",
}


class SchemaChoice(click.ParamType):
    """A flag whose values (and their aliases) are those the configuration schema accepts for ``key``.

    The value is checked and normalised by the schema itself, so the command line accepts
    exactly what a configuration file does (``--rejection winsorized`` included).
    """

    def __init__(self, key: str) -> None:
        self.key = key

    def _spec(self) -> Any:
        from .config.schema import load_schema

        return load_schema().keys[self.key]

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:  # noqa: ARG002
        return "[" + "|".join(str(v).lower() for v in self._spec().enum or ()) + "]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from .config.schema import coerce_value

        try:
            return coerce_value(self._spec(), value, "cli")
        except ZeMosaicError as err:
            self.fail(str(err), param, ctx)


def pixel_flags() -> tuple[str, ...]:
    """Flags that change what is computed (their key is not in a cluster, logging or output section)."""
    from .plans.mosaic import NON_PIXEL_CONFIG

    return tuple(
        name for name, key in FLAG_KEYS.items() if (key or "stack.kappa").split(".", 1)[0] not in NON_PIXEL_CONFIG
    )


def flag_overrides(params: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, key in FLAG_KEYS.items():
        value = params.get(name)
        if value is None:
            continue
        if name == "kappa":
            found["stack.kappa-low"] = value
            found["stack.kappa-high"] = value
        elif key is not None:
            found[key] = value
    return found


def load_flags(params: dict[str, Any]):  # noqa: ANN202
    from .config import load_config
    from .messages import set_language

    config = load_config(params.get("config_file"), flag_overrides(params))
    set_language(config.logging.lang)
    return config


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> bool:  # noqa: ARG001
    if value:
        ctx.meta["debug"] = True
    return value


debug_flag = click.option(
    "--debug",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_set_debug,
    help="Show the full traceback of an error instead of one line.",
)


def read_plan(path: str) -> Any:
    """The :class:`MosaicPlan` saved in ``path``, or a one-line error saying what is wrong with the file."""
    from .errors import PlanError
    from .plans.mosaic import MosaicPlan

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PlanError(f"{path} is not a plan.json written by `zemosaic-dask plan -o` ({err})") from None
    try:
        return MosaicPlan.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        detail = f"missing {err}" if isinstance(err, KeyError) else str(err)
        raise PlanError(
            f"{path} is not a complete plan ({detail}); make it again with `zemosaic-dask plan -o`"
        ) from None


def cluster_flags(func):  # noqa: ANN001, ANN201
    """Options shared by the commands that compute."""
    options = [
        click.option(
            "--scheduler",
            metavar="ADDRESS",
            help="Attach to a running scheduler, e.g. tcp://host:8786 (cluster.scheduler).",
        ),
        click.option(
            "--scheduler-file",
            type=click.Path(dir_okay=False),
            help="Attach through a scheduler file "
            "written by `dask scheduler --scheduler-file` (cluster.scheduler-file).",
        ),
        click.option(
            "--cluster",
            type=SchemaChoice("cluster.kind"),
            help="Start workers locally or through dask-jobqueue with the config's jobqueue section (cluster.kind).",
        ),
        click.option("--n-workers", type=click.IntRange(min=1), help="Workers to start (cluster.n-workers)."),
        click.option(
            "--threads-per-worker", type=click.IntRange(min=1), help="Threads per worker (cluster.threads-per-worker)."
        ),
        click.option("--memory-limit", help="Memory limit per worker, e.g. 4GB or auto (cluster.memory-limit)."),
        click.option(
            "--gpus",
            type=int,
            help="Start a LocalCUDACluster with this many GPUs, one worker each with "
            "the resource GPU=1 (cluster.gpus).",
        ),
        click.option("--jobs", type=int, help="Batch jobs to start with --cluster slurm|pbs (cluster.jobs)."),
        click.option(
            "--gpu-per-job", type=int, help="GPUs per batch job; its workers get GPU=1 (cluster.gpu-per-job)."
        ),
        click.option("--dashboard-address", help="Dashboard address, e.g. :8787 or :0 (cluster.dashboard-address)."),
        click.option(
            "--config",
            "config_file",
            type=click.Path(exists=True, dir_okay=False),
            help="Merge this YAML configuration file (a `zemosaic:` mapping, plus `jobqueue:` etc.).",
        ),
        click.option(
            "--log-level",
            type=SchemaChoice("logging.level"),
            help="Log level (logging.level).",
        ),
        click.option("--lang", type=SchemaChoice("logging.lang"), help="Language of messages (logging.lang)."),
        debug_flag,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def stacking_flags(func):  # noqa: ANN001, ANN201
    """Options that change what is computed."""
    options = [
        click.option(
            "--mode",
            type=SchemaChoice("mode"),
            help="Pipeline mode (mode); auto = sds for Seestar data, else classic.",
        ),
        click.option("--chunk", type=int, help="Output chunk side in pixels (grid.chunk)."),
        click.option("--pixel-scale", type=float, help="Output pixel scale in arcsec/px (grid.pixel-scale)."),
        click.option(
            "--rejection",
            type=SchemaChoice("stack.rejection"),
            help="Rejection algorithm (stack.rejection).",
        ),
        click.option("--kappa", type=float, help="Rejection kappa, low and high (stack.kappa-low/-high)."),
        click.option(
            "--normalisation",
            type=SchemaChoice("stack.normalisation"),
            help="Frame normalisation (stack.normalisation).",
        ),
        click.option("--weighting", type=SchemaChoice("stack.weighting"), help="Frame weights (stack.weighting)."),
        click.option("--combine", type=SchemaChoice("stack.combine"), help="Final combine (stack.combine)."),
        click.option("--sds/--no-sds", default=None, help="Enable or disable SDS mega-batches (sds.enabled)."),
        click.option(
            "--preplan",
            type=click.Path(exists=True, dir_okay=False),
            help="JSON list of lists of frame paths to use as SDS batches (sds.preplan).",
        ),
        click.option("--use-gpu", type=SchemaChoice("assembly.use-gpu"), help="GPU use (assembly.use-gpu)."),
        click.option(
            "--altaz-cleanup",
            type=SchemaChoice("altaz.cleanup"),
            help="Mask the low-coverage edge wedges of alt-az sessions; auto: when EQMODE says alt-az (altaz.cleanup).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func
