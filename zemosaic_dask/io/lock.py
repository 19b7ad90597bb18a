"""One run per output folder: an exclusive lock file that names its holder.

The lock is ``<output>/.zemosaic.lock``, held with ``flock`` for the whole run. The
kernel releases it when the holding process dies, however it dies, so a lock left by a
killed run is stale by construction and the next run takes it over (and says so). The
file keeps the holder's host, pid and start time so that a refused run can name it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import OutputBusyError

__all__ = ["LOCK_NAME", "output_lock"]

log = logging.getLogger(__name__)

LOCK_NAME = ".zemosaic.lock"


def _holder_text(raw: str) -> str:
    try:
        holder = json.loads(raw)
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder["started"])))
        return f"pid {holder['pid']} on host {holder['host']} (started {started})"
    except (ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the exclusive lock of an output folder for the duration of the block.

    Parameters
    ----------
    folder : path
        The output folder (must exist).

    Yields
    ------
    Path
        The lock file.

    Raises
    ------
    OutputBusyError
        Another live process holds the folder; the message names it.
    """
    path = Path(folder) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_text(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
            raise OutputBusyError(
                f"the output folder {folder} is in use by {holder}; wait for that run to finish "
                "or choose another output folder"
            ) from None
        previous = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        if previous:
            log.warning(
                "taking over the lock of %s left by %s, which is no longer running", folder, _holder_text(previous)
            )
        record = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
