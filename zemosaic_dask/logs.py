"""Logging set-up: the terminal and ``zemosaic.log`` show the same lines."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LOG_FORMAT", "run_logging"]

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


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
