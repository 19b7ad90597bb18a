"""Logging set-up: the terminal and ``zemosaic.log`` show the same lines."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LOG_FORMAT", "UnretrievedTeardownFilter", "run_logging"]

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

#: How asyncio's default exception handler begins the report of a future garbage-collected with
#: its exception unread.
_UNRETRIEVED = "Future exception was never retrieved"


class UnretrievedTeardownFilter(logging.Filter):
    """Drop asyncio's report of a connection future that failed while a cluster shut down.

    When the embedded cluster closes, the comms between client, scheduler and workers can
    time out or close with nobody left to read their futures; asyncio then logs "Future
    exception was never retrieved" when it collects them, often after the command's own
    last line (such as its one-line error). Every future of a run is read by the run, so
    such a report carries nothing about the mosaic; any other asyncio report is kept.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Return False for an unretrieved timeout, closed-connection or cancellation; True otherwise."""
        if not str(record.msg).startswith(_UNRETRIEVED) or not record.exc_info:
            return True
        error = record.exc_info[1]
        return not isinstance(error, (OSError, asyncio.CancelledError))


@contextlib.contextmanager
def run_logging(
    output: str | os.PathLike[str] | None, level: str = "INFO", *, console: bool = True
) -> Iterator[Path | None]:
    """Send the ``zemosaic_dask`` loggers to the terminal and to ``<output>/zemosaic.log``.

    Handlers are removed again on exit, so runs in one process do not leak into each other.
    """
    logger = logging.getLogger("zemosaic_dask")
    previous_level = logger.level
    logger.setLevel(getattr(logging, str(level).upper(), logging.INFO))
    formatter = logging.Formatter(LOG_FORMAT)
    handlers: list[logging.Handler] = []
    log_path = None
    if output is not None:
        Path(output).mkdir(parents=True, exist_ok=True)
        log_path = Path(output) / "zemosaic.log"
        handlers.append(logging.FileHandler(log_path, mode="a", encoding="utf-8"))
    if console:
        handlers.append(logging.StreamHandler())
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    try:
        yield log_path
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(previous_level)
