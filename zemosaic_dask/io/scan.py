"""Finding input frames on disk."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["DEFAULT_EXTENSIONS", "scan_inputs"]

DEFAULT_EXTENSIONS = (".fit", ".fits", ".fts")


def _is_within(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def scan_inputs(
    inputs: Iterable[str | os.PathLike[str]],
    *,
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
    recursive: bool = True,
    exclude: str | os.PathLike[str] | None = None,
) -> tuple[list[str], list[tuple[str, str]]]:
    """List the FITS files named by ``inputs`` (files or folders), sorted and unique.

    Parameters
    ----------
    inputs : iterable of path
        Files and folders given by the user.
    extensions : sequence of str
        Accepted suffixes, compared case-insensitively.
    recursive : bool
        Descend into sub-folders.
    exclude : path, optional
        A folder to skip (the output folder when it lies inside an input folder).

    Returns
    -------
    files : list of str
        Absolute paths of the candidate frames.
    missing : list of (str, str)
        Inputs that do not exist, with the reason.
    """
    suffixes = tuple(s.lower() for s in extensions)
    skip = Path(exclude).resolve() if exclude is not None else None
    found: set[str] = set()
    missing: list[tuple[str, str]] = []
    for entry in inputs:
        path = Path(entry).expanduser().resolve()
        if path.is_file():
            found.add(str(path))
        elif path.is_dir():
            walker = os.walk(path) if recursive else [(str(path), [], os.listdir(path))]
            for root, dirs, names in walker:
                root_path = Path(root)
                dirs[:] = sorted(d for d in dirs if not _is_within(root_path / d, skip) and not d.startswith("."))
                for name in names:
                    candidate = root_path / name
                    if name.lower().endswith(suffixes) and candidate.is_file() and not _is_within(candidate, skip):
                        found.add(str(candidate))
        else:
            missing.append((str(path), "file or folder does not exist"))
    return sorted(found), missing
