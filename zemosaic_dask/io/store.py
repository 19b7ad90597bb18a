"""The Zarr v3 store of a mosaic: ``mosaic``, ``coverage``, ``alpha`` and completion marks.

Every write covers whole chunks owned by one task (Zarr has no locks), and a region is
marked complete only after its data chunks are written, so a re-run after a crash
recomputes only what is missing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
import zarr.api.asynchronous as zarr_async
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from ..errors import ResumeError
from ..plans.grid import OutputGrid, OutputRegion
from . import array_cache

__all__ = ["MosaicStore", "open_mosaic_store", "open_mosaic_stores"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MosaicStore:
    """Location and layout of one mosaic's arrays inside a Zarr group.

    Attributes
    ----------
    url : str
        Path or fsspec URL of the Zarr group (``.../mosaic.zarr``).
    prefix : str
        Sub-group holding the arrays ("" for the final mosaic, ``batches/<id>`` for an
        intermediate).
    """

    url: str
    prefix: str = ""

    def array_path(self, name: str) -> str:
        """Path of array ``name`` within the Zarr store at :attr:`url`."""
        return f"{self.prefix}/{name}" if self.prefix else name

    def array(self, name: str, mode: str = "r+") -> zarr.Array:
        """Open one array of the store."""
        return array_cache.open_array(self.url, self.array_path(name), mode)

    def region_done(self, region: OutputRegion) -> bool:
        """Return True when the region's chunks are complete."""
        return bool(self.array("done", mode="r")[region.iy, region.ix])

    def write_region(self, region: OutputRegion, image: np.ndarray, coverage: np.ndarray, alpha: np.ndarray) -> None:
        """Write one region's chunks, then mark it complete."""
        self.array("mosaic")[:, region.y0 : region.y1, region.x0 : region.x1] = image
        self.array("coverage")[region.y0 : region.y1, region.x0 : region.x1] = coverage
        self.array("alpha")[region.y0 : region.y1, region.x0 : region.x1] = alpha
        self.array("done")[region.iy, region.ix] = 1

    def read_rows(self, name: str, y0: int, y1: int) -> np.ndarray:
        """Read rows ``[y0:y1]`` of an array (all channels for ``mosaic``)."""
        arr = self.array(name, mode="r")
        return np.asarray(arr[:, y0:y1, :] if arr.ndim == 3 else arr[y0:y1, :])

    def completed(self) -> int:
        """Number of regions marked complete."""
        return int(np.asarray(self.array("done", mode="r")[...]).sum())

    def attrs(self) -> dict[str, Any]:
        """The store's attributes (fingerprint of the run that created it)."""
        return dict(zarr.open_group(store=self.url, path=self.prefix or None, mode="r", zarr_format=3).attrs)


def pixel_codecs() -> list[Any]:
    """Compression of the pixel arrays: Blosc LZ4 on byte-shuffled values.

    Measured on noisy float32 mosaic chunks: 4x faster to write and 5x faster to read
    than zarr's default Zstd, with a slightly better ratio (1.34 against 1.29).
    """
    from zarr.codecs import BloscCodec

    return [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]


def open_mosaic_store(
    url: str,
    grid: OutputGrid,
    n_channels: int,
    *,
    fingerprint: str,
    prefix: str = "",
    restart: bool = False,
) -> tuple[MosaicStore, int]:
    """Create the store's arrays, or reopen them to resume an interrupted run.

    Parameters
    ----------
    url : str
        Path or fsspec URL of the Zarr group.
    grid : OutputGrid
        The output grid; chunks are ``grid.chunk`` square.
    n_channels : int
        1 for mono, 3 for colour.
    fingerprint : str
        Digest of the inputs and configuration; a store made by a different run is refused.
    prefix : str
        Sub-group for intermediates.
    restart : bool
        Discard any previous state instead of resuming.

    Returns
    -------
    store : MosaicStore
    reused : int
        Number of regions already complete (0 for a new store).
    """
    return open_mosaic_stores(url, [(prefix, grid)], n_channels, fingerprint=fingerprint, restart=restart)[0]


def open_mosaic_stores(
    url: str,
    stores: Sequence[tuple[str, OutputGrid]],
    n_channels: int,
    *,
    fingerprint: str,
    restart: bool = False,
) -> list[tuple[MosaicStore, int]]:
    """:func:`open_mosaic_store` for many sub-groups of one Zarr store at once.

    ``stores`` lists each sub-group's prefix and grid. They are created (or reopened)
    concurrently through Zarr's asynchronous interface: one by one, each store's eight
    metadata round trips took 25 ms, 65 s for the 2,560 batch layers of 16,000 frames.

    Raises
    ------
    ResumeError
        When a store was made by a run with another fingerprint (and ``restart`` is False).
    """
    parents = sorted({prefix.rsplit("/", 1)[0] for prefix, _ in stores if "/" in prefix})
    return sync(_open_all(url, parents, stores, n_channels, fingerprint, restart))


async def _open_all(
    url: str,
    parents: list[str],
    stores: Sequence[tuple[str, OutputGrid]],
    n_channels: int,
    fingerprint: str,
    restart: bool,
) -> list[tuple[MosaicStore, int]]:
    root = await zarr_async.open_group(store=url, mode="a", zarr_format=3)
    for parent in parents:  # made first, so that no two stores create the same parent at once
        await root.require_group(parent)
    found = await _gather_bounded([root.store.exists(_metadata_key(prefix)) for prefix, _ in stores])
    # A new store on a grid already made once has the same metadata under another prefix: the
    # first one per grid is made through Zarr, the others get a copy of its metadata documents.
    first: dict[str, int] = {}
    for index, ((prefix, grid), exists) in enumerate(zip(stores, found, strict=True)):
        if prefix and not exists:
            first.setdefault(_grid_key(grid), index)
    templates = sorted(first.values())
    made = await _gather_bounded(
        [_open_one(root, url, *stores[i], n_channels, fingerprint, restart) for i in templates]
    )
    opened = dict(zip(templates, made, strict=True))
    documents = {i: await _metadata_documents(root.store, stores[i][0]) for i in templates}
    rest = [index for index in range(len(stores)) if index not in opened]
    jobs = []
    for index in rest:
        prefix, grid = stores[index]
        if prefix and not found[index]:
            jobs.append(_copied(root.store, url, documents[first[_grid_key(grid)]], prefix))
        else:
            jobs.append(_open_one(root, url, prefix, grid, n_channels, fingerprint, restart))
    opened.update(zip(rest, await _gather_bounded(jobs), strict=True))
    return [opened[index] for index in range(len(stores))]


def _grid_key(grid: OutputGrid) -> str:
    return json.dumps(grid.to_dict(), sort_keys=True)


_ARRAYS = ("mosaic", "coverage", "alpha", "done")


def _metadata_key(prefix: str) -> str:
    return f"{prefix}/zarr.json" if prefix else "zarr.json"


async def _metadata_documents(store: Any, prefix: str) -> list[tuple[str, Any]]:
    """The arrays' then the group's ``zarr.json`` of the store at ``prefix``, as stored."""
    prototype = default_buffer_prototype()
    names = [f"{name}/zarr.json" for name in _ARRAYS] + ["zarr.json"]
    return [(name, await store.get(f"{prefix}/{name}", prototype=prototype)) for name in names]


async def _copied(store: Any, url: str, documents: list[tuple[str, Any]], target: str) -> tuple[MosaicStore, int]:
    """A new store at ``target`` made by writing another store's metadata ``documents`` there, in order.

    The group's document (which holds the fingerprint) comes last, as when a store is made
    through Zarr, so a store interrupted here has no fingerprint and is made again.
    """
    for name, document in documents:
        await store.set(f"{target}/{name}", document)
    return MosaicStore(url, target), 0


async def _gather_bounded(coroutines: list[Any]) -> list[Any]:
    """Await ``coroutines`` :data:`_OPEN_AT_ONCE` at a time, results in order."""
    out: list[Any] = []
    for start in range(0, len(coroutines), _OPEN_AT_ONCE):
        out += await asyncio.gather(*coroutines[start : start + _OPEN_AT_ONCE])
    return out


#: Stores created concurrently at most (each holds a few open files while it is written).
_OPEN_AT_ONCE = 256


async def _open_one(
    root: Any, url: str, prefix: str, grid: OutputGrid, n_channels: int, fingerprint: str, restart: bool
) -> tuple[MosaicStore, int]:
    group = await root.require_group(prefix) if prefix else root
    existing = group.attrs.get("fingerprint")
    store = MosaicStore(url, prefix)
    if existing is not None and not restart:
        if existing != fingerprint:
            raise ResumeError(
                f"the output store {url} was made from different inputs or settings "
                f"(fingerprint {existing[:12]} != {fingerprint[:12]}); use --restart to discard it or "
                "choose another output folder"
            )
        done = await group.getitem("done")
        return store, int(np.asarray(await done.getitem(...)).sum())
    if existing is not None and restart:
        for name in [name async for name in group.array_keys()]:
            await group.delitem(name)
    height, width = grid.shape
    chunk = grid.chunk
    ny, nx = grid.n_regions
    pixel_arrays = (
        ("mosaic", (n_channels, height, width), (n_channels, chunk, chunk), "float32", float("nan")),
        ("coverage", (height, width), (chunk, chunk), "float32", 0.0),
        ("alpha", (height, width), (chunk, chunk), "uint8", 0),
    )
    created = [
        group.create_array(
            name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill, overwrite=True, compressors=pixel_codecs()
        )
        for name, shape, chunks, dtype, fill in pixel_arrays
    ]
    created.append(
        group.create_array("done", shape=(ny, nx), chunks=(1, 1), dtype="uint8", fill_value=0, overwrite=True)
    )
    await asyncio.gather(*created)
    await group.update_attributes({"grid": json.loads(json.dumps(grid.to_dict())), "fingerprint": fingerprint})
    return store, 0


def iter_row_bands(height: int, rows: int) -> Iterator[tuple[int, int]]:
    """Yield ``(y0, y1)`` bands of at most ``rows`` rows covering ``height``."""
    for y0 in range(0, height, max(1, rows)):
        yield y0, min(height, y0 + max(1, rows))
