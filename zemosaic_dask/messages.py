"""The message catalogue: every user-facing log line and rejection reason, in English and French.

Texts live in ``messages/<lang>.json`` as ``str.format`` templates. :func:`msg` formats one in the current
language, chosen by :func:`set_language` (English until then, so logs are predictable). A key missing from
a translation falls back to English; an unknown key is a programming error and raises ``KeyError``.

Examples
--------
>>> from zemosaic_dask.messages import msg, set_language
>>> set_language("en")
'en'
>>> msg("frames_found", count=3)
'Found 3 input file(s)'
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from functools import cache
from importlib import resources
from types import MappingProxyType

__all__ = [
    "LANGUAGES",
    "catalogue",
    "detect_language",
    "get_language",
    "msg",
    "set_language",
]

log = logging.getLogger(__name__)

LANGUAGES: tuple[str, ...] = ("en", "fr")
_FALLBACK = "en"
_LOCALE_VARIABLES = ("LC_ALL", "LC_MESSAGES", "LANG")
_current = _FALLBACK


@cache
def catalogue(lang: str) -> Mapping[str, str]:
    """Return the read-only catalogue of one language (``{"frames_found": "Found {count} input file(s)", ...}``).

    Raises
    ------
    ValueError
        For a language other than those of :data:`LANGUAGES`.
    """
    if lang not in LANGUAGES:
        raise ValueError(f"no message catalogue for language {lang!r}; use one of {', '.join(LANGUAGES)}")
    text = resources.files(__package__).joinpath("messages", f"{lang}.json").read_text(encoding="utf-8")
    return MappingProxyType(json.loads(text))


def detect_language(environ: Mapping[str, str] | None = None) -> str:
    """Return the catalogue language the locale asks for, as gettext does: the first of LC_ALL,
    LC_MESSAGES and LANG that is set decides; ``fr_FR.UTF-8`` gives ``"fr"``; anything else gives ``"en"``.
    """
    environ = os.environ if environ is None else environ
    for variable in _LOCALE_VARIABLES:
        value = environ.get(variable, "").strip()
        if value:
            lang = value.split(".", 1)[0].split("@", 1)[0].split("_", 1)[0].split("-", 1)[0].lower()
            return lang if lang in LANGUAGES else _FALLBACK
    return _FALLBACK


def set_language(lang: str = "auto") -> str:
    """Choose the language of :func:`msg` for the whole process.

    Parameters
    ----------
    lang
        ``"en"``, ``"fr"``, or ``"auto"`` to follow the locale (see :func:`detect_language`).

    Returns
    -------
    str
        The language now in use.

    Raises
    ------
    ValueError
        For any other value.
    """
    global _current
    wanted = str(lang).strip().lower()
    if wanted == "auto":
        wanted = detect_language()
    elif wanted not in LANGUAGES:
        raise ValueError(f"unsupported language {lang!r}; use auto, {', '.join(LANGUAGES)} (set zemosaic.logging.lang)")
    _current = wanted
    log.debug("message language: %s", wanted)
    return wanted


def get_language() -> str:
    """Return the language :func:`msg` currently uses."""
    return _current


def msg(key: str, **fields: object) -> str:
    """Return the message ``key`` in the current language, formatted with ``fields``.

    Raises
    ------
    KeyError
        When ``key`` is not in the catalogue, or a field the text needs is missing.
    """
    text = catalogue(_current).get(key)
    if text is None:
        text = catalogue(_FALLBACK).get(key)
    if text is None:
        raise KeyError(f"unknown message key {key!r}; add it to zemosaic_dask/messages/en.json")
    try:
        return text.format(**fields)
    except KeyError as err:
        raise KeyError(f"message {key!r} needs the field {err.args[0]!r}; got {sorted(fields)}") from err
