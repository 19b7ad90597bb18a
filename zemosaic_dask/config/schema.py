"""The configuration schema: key specifications read from ``zemosaic-schema.yaml`` and value checks.

Everything here is driven by the schema file, so a key's accepted values are written once. Keys are
handled without the ``zemosaic.`` prefix (``"sds.min-batch-size"``); messages show the full name.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import yaml
from dask.utils import parse_bytes

from ..errors import ConfigError

__all__ = [
    "PREFIX",
    "KeySpec",
    "Schema",
    "coerce_value",
    "full_key",
    "load_schema",
    "normalise_name",
]

PREFIX = "zemosaic"
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_NULL = frozenset({"null", "none", "~", ""})
_TYPE_NAMES = {"integer": "an integer", "number": "a number", "boolean": "true or false", "string": "a string"}


def normalise_name(name: str) -> str:
    """Return a key part in canonical form: lower case, ``_`` read as ``-`` (Dask's convention)."""
    return str(name).strip().lower().replace("_", "-")


def full_key(key: str) -> str:
    """Return the user-facing name of a key: ``"sds.enabled"`` -> ``"zemosaic.sds.enabled"``."""
    return f"{PREFIX}.{key}" if key else PREFIX


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclass(frozen=True)
class KeySpec:
    """One configuration key as the schema describes it."""

    key: str
    types: tuple[str, ...]
    description: str
    enum: tuple[Any, ...] | None = None
    value_aliases: Mapping[str, Any] = field(default_factory=dict)
    null_values: tuple[Any, ...] = ()
    aliases: tuple[str, ...] = ()
    bounds: Mapping[str, float] = field(default_factory=dict)
    multiple_of: int | None = None
    pattern: str | None = None
    min_length: int | None = None
    fmt: str | None = None
    items: KeySpec | None = None
    min_items: int | None = None
    max_items: int | None = None
    increasing: bool = False
    accepted_text: str | None = None

    @property
    def nullable(self) -> bool:
        """Whether ``null`` is an accepted value."""
        return "null" in self.types

    def accepted(self) -> str:
        """Describe the accepted values in words, for error messages."""
        if self.accepted_text:
            return self.accepted_text
        prefix = "null or " if self.nullable else ""
        if self.enum is not None:
            return prefix + "one of " + ", ".join(_enum_text(v) for v in self.enum)
        kinds = [t for t in self.types if t != "null"]
        if kinds == ["array"] and self.items is not None:
            return prefix + self._array_text()
        text = " or ".join(_TYPE_NAMES.get(t, t) for t in kinds)
        if self.multiple_of:
            text = f"a multiple of {self.multiple_of}"
        return prefix + " ".join(p for p in (text, _range_text(self.bounds)) if p)

    def _array_text(self) -> str:
        assert self.items is not None
        count = f"{self.min_items} " if self.min_items is not None and self.min_items == self.max_items else ""
        noun = {"number": "numbers", "integer": "integers", "string": "strings"}[self.items.types[0]]
        text = f"a list of {count}{noun}"
        bounds = _range_text(self.items.bounds)
        if bounds:
            text += f" {bounds}"
        if self.increasing:
            text += ", in increasing order"
        return text


def _enum_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _range_text(bounds: Mapping[str, float]) -> str:
    low, high = bounds.get("minimum"), bounds.get("maximum")
    if low is not None and high is not None:
        return f"between {_fmt(low)} and {_fmt(high)}"
    parts = []
    for name, symbol in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if name in bounds:
            parts.append(f"{symbol} {_fmt(bounds[name])}")
    return " and ".join(parts)


def _spec_from_node(key: str, node: Mapping[str, Any]) -> KeySpec:
    types = node.get("type", "string")
    types = tuple(types) if isinstance(types, list) else (types,)
    items = _spec_from_node(f"{key}[]", {"description": "", **node["items"]}) if "items" in node else None
    bounds = {
        name: float(node[name])
        for name in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
        if node.get(name) is not None
    }
    value_aliases = {normalise_name(k).replace("-", "_"): v for k, v in (node.get("value-aliases") or {}).items()}
    return KeySpec(
        key=key,
        types=types,
        description=str(node.get("description", "")).strip(),
        enum=tuple(node["enum"]) if "enum" in node else None,
        value_aliases=value_aliases,
        null_values=tuple(node.get("null-values", ())),
        aliases=tuple(node.get("aliases", ())),
        bounds=bounds,
        multiple_of=node.get("multipleOf"),
        pattern=node.get("pattern"),
        min_length=node.get("minLength"),
        fmt=node.get("format"),
        items=items,
        min_items=node.get("minItems"),
        max_items=node.get("maxItems"),
        increasing=bool(node.get("increasing", False)),
        accepted_text=node.get("accepted"),
    )


@dataclass(frozen=True)
class Schema:
    """Key specifications, section names and alias table of the ``zemosaic`` config."""

    keys: Mapping[str, KeySpec]
    sections: frozenset[str]
    aliases: Mapping[str, str]

    def suggest(self, key: str) -> str | None:
        """Return the closest known key (or alias, with its key) to a misspelt one, if any is close."""
        wanted = normalise_name(key)
        candidates: dict[str, str] = {k: full_key(k) for k in (*self.keys, *self.sections)}
        for alias, target in self.aliases.items():
            candidates.setdefault(alias, f"{_underscored(alias)} ({full_key(target)})")
        match = difflib.get_close_matches(wanted, list(candidates), n=1, cutoff=0.75)
        if not match:
            leaf = wanted.rsplit(".", 1)[-1]
            leaves = {k.rsplit(".", 1)[-1]: k for k in self.keys}
            close = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.8)
            return full_key(leaves[close[0]]) if close else None
        return candidates[match[0]]


def _underscored(alias: str) -> str:
    return alias.replace("-", "_")


@cache
def load_schema() -> Schema:
    """Read ``zemosaic-schema.yaml`` (once) into a :class:`Schema`."""
    text = resources.files("zemosaic_dask").joinpath("zemosaic-schema.yaml").read_text(encoding="utf-8")
    root = yaml.safe_load(text)["properties"][PREFIX]
    keys: dict[str, KeySpec] = {}
    sections: set[str] = set()

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for name, child in node["properties"].items():
            key = f"{prefix}{name}"
            if child.get("type") == "object":
                sections.add(key)
                walk(child, f"{key}.")
            else:
                keys[key] = _spec_from_node(key, child)

    walk(root, "")
    aliases = {normalise_name(alias): spec.key for spec in keys.values() for alias in spec.aliases}
    return Schema(keys=keys, sections=frozenset(sections), aliases=aliases)


class InvalidValue(ValueError):
    """A value does not fit its key's spec; the caller words the message."""


def coerce_value(spec: KeySpec, value: Any, source: str | None = None) -> Any:
    """Check ``value`` against ``spec`` and return it in canonical form.

    Parameters
    ----------
    spec
        The key's specification.
    value
        The value as read from YAML, the environment (already parsed as Dask does) or the command line.
    source
        Where the value came from (``"file:..."``, ``"env:..."``, ``"cli"``), added to the message.

    Raises
    ------
    ConfigError
        Naming the key, the value and the accepted values.
    """
    try:
        return _coerce(spec, value)
    except InvalidValue as err:
        name = full_key(spec.key)
        shown = repr(value) if isinstance(value, str) else _enum_text(value) if isinstance(value, bool) else value
        where = f"; the value comes from {source}" if source and source != "default" else ""
        detail = f" ({err})" if str(err) else ""
        raise ConfigError(f"{name} must be {spec.accepted()}, got {shown}{detail} (set {name}){where}") from None


def _coerce(spec: KeySpec, value: Any) -> Any:
    if not isinstance(value, bool) and any(value == v and not isinstance(v, bool) for v in spec.null_values):
        value = None
    if value is None or (isinstance(value, str) and value.strip().lower() in _NULL and spec.enum is None):
        if spec.nullable:
            return None
        if spec.enum is not None and "none" in spec.enum:
            return "none"
        raise InvalidValue("")
    if spec.enum is not None:
        return _match_enum(spec, value)
    kinds = [kind for kind in spec.types if kind != "null"]
    for kind in kinds:
        try:
            converted = _CONVERTERS[kind](spec, value)
        except InvalidValue:
            if len(kinds) == 1:
                raise
            continue
        return _check_format(spec, converted)
    raise InvalidValue("")


def _match_enum(spec: KeySpec, value: Any) -> Any:
    assert spec.enum is not None
    if isinstance(value, bool):
        if value in [v for v in spec.enum if isinstance(v, bool)]:
            return value
        raise InvalidValue("")
    if not isinstance(value, str):
        raise InvalidValue("")
    wanted = re.sub(r"[-\s]+", "_", value.strip().lower())
    for candidate in spec.enum:
        if isinstance(candidate, str) and re.sub(r"-", "_", candidate.lower()) == wanted:
            return candidate
        if isinstance(candidate, bool) and wanted in (_TRUE if candidate else _FALSE):
            return candidate
    if wanted in spec.value_aliases:
        return spec.value_aliases[wanted]
    raise InvalidValue("")


def _to_bool(spec: KeySpec, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise InvalidValue("")


def _to_number(spec: KeySpec, value: Any, integer: bool = False) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidValue("")
    if isinstance(value, str):
        try:
            value = int(value.strip()) if integer and re.fullmatch(r"[+-]?\d+", value.strip()) else float(value)
        except ValueError:
            raise InvalidValue("") from None
    if not math.isfinite(value):
        raise InvalidValue("")
    if integer:
        if isinstance(value, float) and not value.is_integer():
            raise InvalidValue("")
        value = int(value)
    else:
        value = float(value)
    _check_bounds(spec, value)
    if spec.multiple_of and value % spec.multiple_of:
        raise InvalidValue("")
    return value


def _check_bounds(spec: KeySpec, value: float) -> None:
    b = spec.bounds
    if (
        ("minimum" in b and value < b["minimum"])
        or ("exclusiveMinimum" in b and value <= b["exclusiveMinimum"])
        or ("maximum" in b and value > b["maximum"])
        or ("exclusiveMaximum" in b and value >= b["exclusiveMaximum"])
    ):
        raise InvalidValue("")


def _to_string(spec: KeySpec, value: Any) -> str:
    if hasattr(value, "__fspath__"):
        value = str(value.__fspath__())
    if not isinstance(value, str):
        raise InvalidValue("")
    if spec.pattern and not re.fullmatch(spec.pattern, value):
        raise InvalidValue("")
    if spec.min_length and len(value) < spec.min_length:
        raise InvalidValue("")
    if spec.fmt == "path" and not value.strip():
        raise InvalidValue("empty path")
    return value


def _to_array(spec: KeySpec, value: Any) -> tuple[Any, ...]:
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            raise InvalidValue("") from None
    if not isinstance(value, (list, tuple)) or spec.items is None:
        raise InvalidValue("")
    if (spec.min_items is not None and len(value) < spec.min_items) or (
        spec.max_items is not None and len(value) > spec.max_items
    ):
        raise InvalidValue("")
    items = tuple(_coerce(spec.items, item) for item in value)
    if spec.increasing and any(b <= a for a, b in zip(items, items[1:], strict=False)):
        raise InvalidValue("not in increasing order")
    return items


_CONVERTERS = {
    "boolean": _to_bool,
    "integer": lambda spec, value: _to_number(spec, value, integer=True),
    "number": _to_number,
    "string": _to_string,
    "array": _to_array,
}


def _check_format(spec: KeySpec, value: Any) -> Any:
    """Apply the ``format`` checks that span several JSON types (memory sizes)."""
    if spec.fmt not in ("memory-limit", "byte-size"):
        return value
    if isinstance(value, str):
        if spec.fmt == "memory-limit" and value.strip().lower() == "auto":
            return "auto"
        try:
            if parse_bytes(value) <= 0:
                raise InvalidValue("")
        except ValueError:
            raise InvalidValue("") from None
        return value
    if isinstance(value, float) and not value.is_integer():
        if not 0 < value <= 1:
            raise InvalidValue("")
        return value
    if value <= 0:
        raise InvalidValue("")
    return int(value) if value > 1 else value
