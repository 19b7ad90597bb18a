"""Finding input frames on disk.

A folder scan takes every file whose name ends with one of the accepted extensions
(compressed ``.fits.gz`` and ``.fits.fz`` files included by default) and skips what a
mosaic run writes: ``mosaic.fits``, ``mosaic_coverage.fits``, ``mosaic.zarr`` stores and
any sub-folder holding a run's ``plan.json``, ``report.json`` or ``mosaic.zarr``. Symbolic
links are followed; a broken or looping one is reported with its reason instead of being
skipped silently.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..messages import msg

__all__ = ["DEFAULT_EXTENSIONS", "OUTPUT_MARKERS", "PRODUCT_FILES", "is_output_folder", "scan_inputs"]

log = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = (
    ".fit",
    ".fits",
    ".fts",
    ".fit.gz",
    ".fits.gz",
    ".fts.gz",
    ".fit.fz",
    ".fits.fz",
    ".fts.fz",
    ".fz",
)
#: Files a run writes that look like FITS frames but never are inputs.
PRODUCT_FILES = frozenset({"mosaic.fits", "mosaic_coverage.fits"})
#: Entries that mark a folder as a run's output folder.
OUTPUT_MARKERS = ("mosaic.zarr", "plan.json", "report.json")
_STORE = "mosaic.zarr"


def is_output_folder(folder: str | os.PathLike[str]) -> bool:
    """Return True when ``folder`` holds a mosaic run's products.

    Parameters
    ----------
    folder : path
        Folder to look into.

    Returns
    -------
    bool
        True when it contains a ``mosaic.zarr`` folder or a ``plan.json`` or
        ``report.json`` file.
    """
    base = Path(folder)
    return any((base / name).is_dir() if name == _STORE else (base / name).is_file() for name in OUTPUT_MARKERS)


def _link_problem(path: Path) -> str | None:
    """Why the symbolic link ``path`` cannot be followed, or None when it leads somewhere."""
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return msg("reason_link_loop", path=path)
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            return msg("reason_dangling_link", path=path, target=target)
        return msg("reason_unreadable", error=err)
    return None


def _entry_is(entry: os.DirEntry[str], kind: str) -> bool:
    """``entry.is_dir()`` or ``entry.is_file()`` (following links), False when it cannot be told."""
    try:
        return entry.is_dir() if kind == "dir" else entry.is_file()
    except OSError:  # a looping link or a permission error: reported by _link_problem if it matters
        return False


def _in_store(path: Path) -> bool:
    """True for anything inside a ``mosaic.zarr`` store."""
    return any(part.lower() == _STORE for part in path.parts[:-1])


@dataclass
class _Scan:
    suffixes: tuple[str, ...]
    recursive: bool
    skip: Path | None
    found: set[str] = field(default_factory=set)
    missing: list[tuple[str, str]] = field(default_factory=list)
    visited: set[Path] = field(default_factory=set)

    def add_file(self, path: Path) -> None:
        """Take one explicitly named file (a symbolic link is followed to its target)."""
        folder = path.parent
        named_like_product = path.name.lower() in PRODUCT_FILES
        if _in_store(path) or (named_like_product and (is_output_folder(folder) or folder.resolve() == self.skip)):
            self.missing.append((str(path), msg("reason_output_product", folder=folder)))
            return
        self.found.add(str(path.resolve()))

    def walk(self, folder: Path) -> None:
        """Collect the frames of ``folder``; sub-folders holding a run's products are skipped."""
        real = folder.resolve()
        if real in self.visited:  # a link back to a folder already scanned
            return
        self.visited.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as err:
            self.missing.append((str(folder), msg("reason_unreadable", error=err)))
            return
        for entry in entries:
            path = Path(entry.path)
            if _entry_is(entry, "dir"):
                if self.recursive and not entry.name.startswith(".") and not self._skipped_folder(path):
                    self.walk(path)
            elif entry.name.lower().endswith(self.suffixes) and entry.name.lower() not in PRODUCT_FILES:
                problem = _link_problem(path) if entry.is_symlink() else None
                if problem is not None:
                    self.missing.append((str(path), problem))
                elif _entry_is(entry, "file"):
                    self.found.add(str(path.resolve()))

    def _skipped_folder(self, path: Path) -> bool:
        if path.name.lower() == _STORE:
            return True
        if self.skip is not None and path.resolve() == self.skip:
            log.debug("not scanning the output folder %s", path)
            return True
        if is_output_folder(path):
            log.debug("not scanning %s: it holds the products of a mosaic run", path)
            return True
        return False


def _scan_input(scan: _Scan, path: Path, given: str | os.PathLike[str]) -> None:
    if path.is_symlink() and (problem := _link_problem(path)) is not None:
        scan.missing.append((str(path), problem))
    elif path.is_dir():
        scan.walk(path)
    elif path.is_file():
        scan.add_file(path)
    elif os.path.lexists(path):
        scan.missing.append((str(path), msg("reason_not_a_file", path=path)))
    else:
        scan.missing.append((str(path), msg("reason_missing_input", path=given)))


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
        Files and folders given by the user. Symbolic links are followed.
    extensions : sequence of str
        Accepted suffixes of the files found in folders, compared case-insensitively
        (explicitly named files are taken whatever their name).
    recursive : bool
        Descend into sub-folders (hidden ones, ``mosaic.zarr`` stores and folders holding
        a run's ``plan.json`` or ``report.json`` excepted).
    exclude : path, optional
        The output folder: skipped when it lies inside an input folder; when it is an input
        folder itself, the frames in it are still taken, its products are not.

    Returns
    -------
    files : list of str
        Absolute paths (symbolic links resolved) of the candidate frames.
    missing : list of (str, str)
        Inputs that cannot be used, with the reason: paths that do not exist, broken or
        looping symbolic links (given or found in a folder), unreadable folders and
        explicitly named products of an earlier run.
    """
    skip = Path(exclude).expanduser().resolve() if exclude is not None else None
    scan = _Scan(tuple(s.lower() for s in extensions), recursive, skip)
    for entry in inputs:
        path = Path(os.path.abspath(Path(entry).expanduser()))
        try:
            _scan_input(scan, path, entry)
        except OSError as err:  # such as a folder on the way that cannot be read
            scan.missing.append((str(path), msg("reason_unreadable", error=err)))
    return sorted(scan.found), scan.missing
