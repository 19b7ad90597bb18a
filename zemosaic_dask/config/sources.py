"""Where configuration values come from: package defaults, dask.config, a user file, the environment, the CLI.

Each source becomes a *layer*: a mapping from canonical key (``"sds.min-batch-size"``, no prefix) to a
:class:`Setting` that remembers the value as given and where it came from. Layers are merged in order of
precedence (defaults < dask.config < user file < environment < overrides) and validated afterwards.
Unknown keys fail here, with the closest known key suggested.
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import dask.config
import yaml

from ..errors import ConfigError
from .schema import PREFIX, Schema, full_key, load_schema, normalise_name

__all__ = [
    "Setting",
    "collect_settings",
    "dask_layer",
    "env_layer",
    "file_layer",
    "override_layer",
    "package_defaults",
]

ENV_PREFIX = "DASK_ZEMOSAIC__"
# Top-level Dask settings that may appear in a user file besides ``zemosaic:`` even before the
# library that registers them (distributed, dask-jobqueue, dask-cuda) has been imported.
_DASK_TOP_LEVEL = frozenset(
    {
        "distributed",
        "jobqueue",
        "array",
        "dataframe",
        "optimization",
        "scheduler",
        "temporary-directory",
        "local-directory",
        "num-workers",
        "tokenize",
        "visualization",
        "admin",
        "cuda",
        "rmm",
        "ucx",
        "logging",
    }
)


@dataclass(frozen=True)
class Setting:
    """A value as given by one source, before validation."""

    value: Any
    source: str
    written_as: str


Layer = dict[str, Setting]


@cache
def _defaults_text() -> str:
    return resources.files("zemosaic_dask").joinpath("zemosaic.yaml").read_text(encoding="utf-8")


def package_defaults() -> dict[str, Any]:
    """Return a fresh copy of the package's ``zemosaic.yaml`` (with its top-level ``zemosaic`` key)."""
    return yaml.safe_load(_defaults_text())


def _entries(
    mapping: Mapping[Any, Any], source: str, schema: Schema, prefix: str = "", written_prefix: str = ""
) -> Iterator[tuple[str, Any, str]]:
    """Yield ``(key, value, written_as)`` for every setting of ``mapping`` rooted at section ``prefix``."""
    for raw_name, value in mapping.items():
        name = str(raw_name)
        parts = [normalise_name(part) for part in name.split(".")]
        if not prefix and parts[0] == PREFIX:
            parts = parts[1:]
        key = ".".join([*([prefix] if prefix else []), *parts])
        written = f"{written_prefix}.{name}" if written_prefix else name
        if key in schema.keys:
            yield key, value, written
        elif key in schema.sections or not key:
            if not isinstance(value, Mapping):
                example = next(k for k in schema.keys if k.startswith(f"{key}.")) if key else "mode"
                raise ConfigError(
                    f"{full_key(key)} is a section, not a value: got {value!r} from {source}; "
                    f"set its keys instead, e.g. {full_key(example)}"
                )
            yield from _entries(value, source, schema, key, written)
        elif not prefix and len(parts) == 1 and parts[0] in schema.aliases:
            yield schema.aliases[parts[0]], value, written
        else:
            raise unknown_key_error(full_key(key) if prefix or len(parts) > 1 else name, source, schema)


def unknown_key_error(name: str, source: str, schema: Schema) -> ConfigError:
    """Build the error for an unknown key, suggesting the closest known one."""
    bare = name[len(PREFIX) + 1 :] if name.startswith(f"{PREFIX}.") else name
    suggestion = schema.suggest(bare)
    if suggestion:
        return ConfigError(f"unknown key {name}; did you mean {suggestion}? (from {source})")
    return ConfigError(f"unknown key {name} (from {source}); `zemosaic-dask config` lists the accepted keys")


def _layer(mapping: Mapping[Any, Any], source: str, schema: Schema) -> Layer:
    layer: Layer = {}
    for key, value, written in _entries(mapping, source, schema):
        _add(layer, key, Setting(value, source, written))
    return layer


def _add(layer: Layer, key: str, setting: Setting) -> None:
    previous = layer.get(key)
    if previous is not None and previous.source == setting.source and previous.value != setting.value:
        raise ConfigError(
            f"{full_key(key)} is set twice in {setting.source}: {previous.written_as}={previous.value!r} and "
            f"{setting.written_as}={setting.value!r}; keep one of them"
        )
    layer[key] = setting


def defaults_layer(schema: Schema) -> Layer:
    """The package defaults, every key with source ``"default"``."""
    return _layer(package_defaults()[PREFIX], "default", schema)


def dask_layer(schema: Schema, defaults: Layer) -> Layer:
    """Values of dask.config's ``zemosaic`` section that differ from the package defaults.

    They come from Dask's own YAML files (``~/.config/dask``), from ``dask.config.set`` or from the
    environment as Dask read it at import or at the last ``dask.config.refresh()``.
    """
    current = dask.config.get(PREFIX, default=None)
    if current is None:
        return {}
    if not isinstance(current, Mapping):
        raise ConfigError(f"dask.config key {PREFIX} must be a mapping, got {current!r}; fix your Dask config files")
    layer: Layer = {}
    for key, value, written in _entries(copy.deepcopy(dict(current)), "dask-config", schema):
        if key in defaults and defaults[key].value == value:
            continue
        _add(layer, key, Setting(value, "dask-config", written))
    return layer


def env_layer(schema: Schema, environ: Mapping[str, str] | None = None) -> Layer:
    """Settings from ``DASK_ZEMOSAIC__...`` variables, parsed exactly as Dask parses them."""
    environ = os.environ if environ is None else environ
    layer: Layer = {}
    for var in sorted(environ):
        if not (var.startswith("DASK_") and var[5:].lower().startswith(ENV_PREFIX[5:].lower())):
            continue
        parsed = dask.config.collect_env({var: environ[var]})
        source = f"env:{var}"
        for key, value, _ in _entries(parsed, source, schema):
            _add(layer, key, Setting(value, source, var))
    return layer


def file_layer(path: str | os.PathLike[str], schema: Schema) -> tuple[Layer, dict[str, Any]]:
    """Read a user config file.

    Returns
    -------
    layer
        Its ``zemosaic`` settings (under ``zemosaic:``, or ZeMosaic flat names at the top level).
    passthrough
        Its other top-level sections (``jobqueue:``, ``distributed:``...), meant for dask.config.
    """
    file = Path(path).expanduser()
    source = f"file:{file}"
    if not file.is_file():
        raise ConfigError(f"config file {file} does not exist; check the --config path")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {file} is not valid YAML: {err}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {file}: {err}") from err
    if data is None:
        return {}, {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"config file {file} must hold a mapping such as `zemosaic: {{sds: {{min-batch-size: 3}}}}`, "
            f"got a {type(data).__name__}"
        )
    ours: list[tuple[str, Any]] = []
    passthrough: dict[str, Any] = {}
    known_dask = {normalise_name(k) for k in dask.config.config} | _DASK_TOP_LEVEL
    for name, value in data.items():
        norm = normalise_name(name)
        if norm == PREFIX or norm.startswith(f"{PREFIX}.") or norm in schema.aliases:
            ours.append((str(name), value))
        elif norm in known_dask:
            passthrough[str(name)] = value
        elif isinstance(value, Mapping) and difflib.SequenceMatcher(None, norm, PREFIX).ratio() < 0.75:
            passthrough[str(name)] = value
        elif isinstance(value, Mapping):
            raise ConfigError(f"unknown section {name} in {file}; did you mean {PREFIX}?")
        else:
            raise unknown_key_error(str(name), source, schema)
    layer: Layer = {}
    for name, value in ours:
        for key, val, written in _entries({name: value}, source, schema):
            _add(layer, key, Setting(val, source, written))
    return layer, passthrough


def override_layer(overrides: Mapping[str, Any], schema: Schema) -> Layer:
    """Settings given on the command line as dotted keys (``{"sds.min-batch-size": 3}``)."""
    return _layer(overrides, "cli", schema)


def collect_settings(
    config_file: str | os.PathLike[str] | None,
    overrides: Mapping[str, Any] | None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Layer, dict[str, Any]]:
    """Merge every layer by precedence.

    Returns
    -------
    settings
        One :class:`Setting` per schema key, from the highest-precedence source that sets it.
    passthrough
        The user file's non-``zemosaic`` sections, for dask.config.
    """
    schema = load_schema()
    settings = defaults_layer(schema)
    settings.update(dask_layer(schema, settings))
    passthrough: dict[str, Any] = {}
    if config_file is not None:
        layer, passthrough = file_layer(config_file, schema)
        settings.update(layer)
    settings.update(env_layer(schema, environ))
    if overrides:
        settings.update(override_layer(overrides, schema))
    missing = sorted(set(schema.keys) - set(settings))
    if missing:
        raise ConfigError(f"the package defaults lack {', '.join(map(full_key, missing))}; reinstall zemosaic-dask")
    return settings, passthrough
