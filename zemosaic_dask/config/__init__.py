"""Configuration of zemosaic-dask: frozen, validated dataclasses read once from dask.config.

The defaults live in ``zemosaic.yaml`` beside this module and are registered with
``dask.config.update_defaults`` under the ``zemosaic`` prefix when this module is imported; every key is
described in ``zemosaic-schema.yaml``. :func:`load_config` merges, by increasing precedence,

1. the package defaults,
2. whatever dask.config holds under ``zemosaic`` (Dask's YAML files, ``dask.config.set``),
3. a user file (``--config FILE``),
4. the environment (``DASK_ZEMOSAIC__SDS__MIN_BATCH_SIZE=3``, Dask's convention),
5. overrides from command-line flags (``{"sds.min-batch-size": 3}``),

then validates every value once. ZeMosaic's flat key names (``sds_min_batch_size``, ``target_stack``...)
are accepted wherever a key is. Unknown keys and bad values raise :class:`~zemosaic_dask.errors.ConfigError`
naming the key, the value and the accepted values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cache
from typing import Any

import dask.config

from ..errors import ConfigError
from ..plans.mosaic import NON_PIXEL_CONFIG
from .schema import coerce_value, full_key, load_schema, normalise_name
from .sections import (
    SECTIONS,
    AltazConfig,
    AssemblyConfig,
    BackgroundConfig,
    CalibrationConfig,
    ClassicConfig,
    ClusterConfig,
    GridConfig,
    IngestConfig,
    LoggingConfig,
    MappingConfig,
    OutputConfig,
    QualityConfig,
    SdsConfig,
    StackConfig,
    TwoPassConfig,
    field_key,
)
from .sources import Layer, collect_settings, defaults_layer, package_defaults, unknown_key_error

__all__ = [
    "AltazConfig",
    "AssemblyConfig",
    "BackgroundConfig",
    "CalibrationConfig",
    "ClassicConfig",
    "ClusterConfig",
    "ConfigEntry",
    "GridConfig",
    "IngestConfig",
    "LoggingConfig",
    "MappingConfig",
    "OutputConfig",
    "QualityConfig",
    "SdsConfig",
    "StackConfig",
    "TwoPassConfig",
    "ZeMosaicConfig",
    "default_config",
    "config_of_plan",
    "describe_config",
    "load_config",
]

dask.config.update_defaults(package_defaults())


@dataclass(frozen=True)
class ZeMosaicConfig:
    """The whole ``zemosaic`` configuration; build it with :func:`load_config`."""

    mode: str
    grid: GridConfig
    ingest: IngestConfig
    mapping: MappingConfig
    stack: StackConfig
    classic: ClassicConfig
    sds: SdsConfig
    assembly: AssemblyConfig
    calibration: CalibrationConfig
    background: BackgroundConfig
    quality: QualityConfig
    two_pass: TwoPassConfig
    altaz: AltazConfig
    output: OutputConfig
    cluster: ClusterConfig
    logging: LoggingConfig

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", coerce_value(load_schema().keys["mode"], self.mode))
        for name, cls in SECTIONS.items():
            value = getattr(self, name.replace("-", "_"))
            if not isinstance(value, cls):
                raise ConfigError(f"ZeMosaicConfig.{name.replace('-', '_')} must be a {cls.__name__}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as nested JSON-serialisable dicts with hyphenated keys (for report.json)."""
        out: dict[str, Any] = {"mode": self.mode}
        for name in SECTIONS:
            out[name] = getattr(self, name.replace("-", "_")).to_dict()
        return out

    def flat(self) -> dict[str, Any]:
        """Return ``{"sds.min-batch-size": 5, ...}``: every key, dotted, without the ``zemosaic.`` prefix."""
        out: dict[str, Any] = {"mode": self.mode}
        for name, section in self.to_dict().items():
            if isinstance(section, dict):
                out.update({f"{name}.{key}": value for key, value in section.items()})
        return out

    def get(self, key: str) -> Any:
        """Return one value by dotted key (``"sds.min-batch-size"``, with or without ``zemosaic.``) or alias."""
        schema = load_schema()
        name = normalise_name(key)
        name = name[len("zemosaic.") :] if name.startswith("zemosaic.") else name
        name = schema.aliases.get(name, name)
        flat = self.flat()
        if name not in flat:
            raise unknown_key_error(full_key(name), "ZeMosaicConfig.get", schema)
        return flat[name]


@dataclass(frozen=True)
class ConfigEntry:
    """One line of ``zemosaic-dask config``: a key, its value in effect and where the value came from.

    ``source`` is ``"default"``, ``"file:<path>"``, ``"env:<VARIABLE>"``, ``"cli"``, or ``"dask-config"``
    for a value set through Dask's own configuration (its YAML files or ``dask.config.set``).
    """

    key: str
    value: Any
    source: str


def _build(settings: Layer) -> ZeMosaicConfig:
    specs = load_schema().keys
    values = {key: coerce_value(specs[key], s.value, s.source) for key, s in settings.items()}
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        kwargs = {f.name: values[field_key(name, f.name)] for f in fields(cls)}  # type: ignore[arg-type]
        sections[name.replace("-", "_")] = cls(**kwargs)
    return ZeMosaicConfig(mode=values["mode"], **sections)


def load_config(
    config_file: str | os.PathLike[str] | None = None, overrides: Mapping[str, Any] | None = None
) -> ZeMosaicConfig:
    """Read, merge and validate the configuration.

    Parameters
    ----------
    config_file
        A user YAML file. Its ``zemosaic:`` mapping (or ZeMosaic flat key names at its top level) sets
        zemosaic-dask keys; any other top-level section (``jobqueue:``, ``distributed:``...) is merged into
        ``dask.config`` for the cluster code.
    overrides
        Dotted keys from command-line flags, e.g. ``{"sds.min-batch-size": 3}``; they win over everything.

    Returns
    -------
    ZeMosaicConfig
        Frozen and validated.

    Raises
    ------
    ConfigError
        For an unknown key (with the closest known key), a bad value (with the accepted values) or
        inconsistent values (naming both keys).
    """
    settings, passthrough = collect_settings(config_file, overrides)
    config = _build(settings)
    if passthrough:
        dask.config.update(dask.config.config, passthrough, priority="new")
    return config


def describe_config(
    config_file: str | os.PathLike[str] | None = None, overrides: Mapping[str, Any] | None = None
) -> list[ConfigEntry]:
    """List every key with its value in effect and its source, in schema order (for ``zemosaic-dask config``).

    Takes the same arguments as :func:`load_config` and validates the same way, without touching dask.config.
    """
    settings, _ = collect_settings(config_file, overrides)
    flat = _build(settings).flat()
    return [ConfigEntry(full_key(key), flat[key], settings[key].source) for key in load_schema().keys]


@cache
def default_config() -> ZeMosaicConfig:
    """Return the package defaults alone (no Dask config, file or environment), e.g. for tests."""
    return _build(defaults_layer(load_schema()))


def config_of_plan(plan_config: Mapping[str, Any], current: ZeMosaicConfig) -> ZeMosaicConfig:
    """The configuration a saved plan runs with: its own settings, the current cluster, logging and output.

    Parameters
    ----------
    plan_config : mapping
        ``MosaicPlan.config``: the resolved configuration the plan was made with.
    current : ZeMosaicConfig
        The configuration in effect now (command line, file, environment).

    Returns
    -------
    ZeMosaicConfig
        Every pixel setting from the plan (so ``plan.json`` is what runs), the execution
        sections from ``current``.

    Raises
    ------
    ConfigError
        The plan holds a key or value this version does not accept (named).
    """
    flat: dict[str, Any] = {}
    for name, section in plan_config.items():
        if name in NON_PIXEL_CONFIG:
            continue
        if isinstance(section, Mapping):
            flat.update({f"{name}.{key}": value for key, value in section.items()})
        else:
            flat[name] = section
    flat.update({k: v for k, v in current.flat().items() if k.split(".", 1)[0] in NON_PIXEL_CONFIG})
    settings, _ = collect_settings(None, flat)
    return _build(settings)
