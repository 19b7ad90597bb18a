"""Task keys that belong to one run, so that runs sharing a scheduler never share a task.

A scheduler takes two tasks of the same key for the same computation: a lab's scheduler
serving two runs at once would hand the second run the first one's ``sky-blocks-3`` (the sky
of *another* frame 3). Every key a graph builder makes goes through :func:`task_key`, which
appends the token of the run in progress (:func:`run_keys`, entered by the api for each
``plan`` and ``run``): ``sky-blocks-3-1f0c9a7e``. The dashboard groups tasks by the part
before the token (``sky-blocks``), as before. Outside a run (graph builders called
directly, as tests do) keys stay bare.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from contextvars import ContextVar

__all__ = ["run_keys", "task_key"]

_TOKEN: ContextVar[str | None] = ContextVar("zemosaic_run_token", default=None)


@contextlib.contextmanager
def run_keys(token: str | None = None) -> Iterator[str]:
    """Give every task key made inside the ``with`` block the run's token.

    Parameters
    ----------
    token : str, optional
        The token; by default 8 random hexadecimal digits.

    Yields
    ------
    str
        The token in use.
    """
    token = token or uuid.uuid4().hex[:8]
    previous = _TOKEN.set(token)
    try:
        yield token
    finally:
        _TOKEN.reset(previous)


def task_key(name: str) -> str:
    """``name`` with the current run's token appended (``name`` itself outside a run)."""
    token = _TOKEN.get()
    return name if token is None else f"{name}-{token}"
