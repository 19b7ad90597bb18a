"""Content fingerprints of input files: size, modification time and a BLAKE2b digest.

Ingest records them in each :class:`~zemosaic_dask.plans.FrameInfo`, so that a saved plan
can tell whether its inputs changed since it was made (:func:`frame_changed`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from ..plans.frames import FrameInfo

__all__ = ["BLOCK_BYTES", "FileFingerprint", "file_fingerprint", "frame_changed"]

#: Bytes read at a time while hashing.
BLOCK_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class FileFingerprint:
    """Size, modification time and BLAKE2b-128 hex digest of one file."""

    size: int
    mtime_ns: int
    content_hash: str


def file_fingerprint(path: str | os.PathLike[str]) -> FileFingerprint:
    """Stat a file and hash all of its bytes.

    Parameters
    ----------
    path : path
        File to fingerprint (read-only, in blocks of :data:`BLOCK_BYTES`).

    Returns
    -------
    FileFingerprint
        ``os.stat`` size and ``st_mtime_ns`` taken before reading, and the hex digest of
        ``hashlib.blake2b(digest_size=16)`` over the whole file.

    Raises
    ------
    OSError
        When the file cannot be read.
    """
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        status = os.fstat(handle.fileno())
        buffer = bytearray(BLOCK_BYTES)
        view = memoryview(buffer)
        while count := handle.readinto(buffer):
            digest.update(view[:count])
    return FileFingerprint(int(status.st_size), int(status.st_mtime_ns), digest.hexdigest())


def frame_changed(frame: FrameInfo) -> str | None:
    """Say whether a frame's file changed since it was ingested.

    Size and modification time are compared first; a file whose modification time moved
    but whose size did not (touched, copied) is hashed again and counts as changed only
    when its content differs.

    Parameters
    ----------
    frame : FrameInfo
        A frame as recorded in a plan.

    Returns
    -------
    str or None
        None when the file's size and ``st_mtime_ns`` (or content) still match the recorded
        ones, or when the frame has no recorded size (a plan written before they were recorded);
        otherwise a one-line reason: ``"missing"``, ``"size changed from A to B bytes"``
        or ``"modified since it was planned"``.
    """
    if frame.size <= 0:
        return None
    try:
        status = os.stat(frame.path)
    except FileNotFoundError:
        return "missing"
    except OSError as err:
        return f"cannot be read: {err.strerror or err}"
    if status.st_size != frame.size:
        return f"size changed from {frame.size} to {status.st_size} bytes"
    if status.st_mtime_ns != frame.mtime_ns and frame.content_hash:
        # Touched or copied: only a different content counts as a change.
        if file_fingerprint(frame.path).content_hash != frame.content_hash:
            return "modified since it was planned"
    elif status.st_mtime_ns != frame.mtime_ns:
        return "modified since it was planned"
    return None
