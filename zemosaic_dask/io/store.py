"""The Zarr v3 store of a mosaic: ``mosaic``, ``coverage``, ``alpha`` and completion marks.

Every write covers whole chunks owned by one task (Zarr has no locks), and a region is
marked complete only after its data chunks are written, so a re-run after a crash
recomputes only what is missing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from ..errors import ResumeError
from ..plans.grid import OutputGrid, OutputRegion

__all__ = ["MosaicStore", "open_mosaic_store"]

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
        return zarr.open_array(store=self.url, path=self.array_path(name), mode=mode, zarr_format=3)

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


def _group(url: str, prefix: str, mode: str) -> zarr.Group:
    root = zarr.open_group(store=url, mode=mode, zarr_format=3)
    if not prefix:
        return root
    return root.require_group(prefix)


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
    group = _group(url, prefix, "a")
    existing = group.attrs.get("fingerprint")
    if existing is not None and not restart:
        if existing != fingerprint:
            raise ResumeError(
                f"the output store {url} was made from different inputs or settings "
                f"(fingerprint {existing[:12]} != {fingerprint[:12]}); use --restart to discard it or "
                "choose another output folder"
            )
        store = MosaicStore(url, prefix)
        return store, store.completed()
    if existing is not None and restart:
        for name in list(group.array_keys()):
            del group[name]
    height, width = grid.shape
    chunk = grid.chunk
    ny, nx = grid.n_regions
    pixel_arrays = (
        ("mosaic", (n_channels, height, width), (n_channels, chunk, chunk), "float32", float("nan")),
        ("coverage", (height, width), (chunk, chunk), "float32", 0.0),
        ("alpha", (height, width), (chunk, chunk), "uint8", 0),
    )
    for name, shape, chunks, dtype, fill in pixel_arrays:
        group.create_array(
            name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill, overwrite=True, compressors=pixel_codecs()
        )
    group.create_array("done", shape=(ny, nx), chunks=(1, 1), dtype="uint8", fill_value=0, overwrite=True)
    group.attrs["grid"] = json.loads(json.dumps(grid.to_dict()))
    group.attrs["fingerprint"] = fingerprint
    return MosaicStore(url, prefix), 0


def iter_row_bands(height: int, rows: int) -> Iterator[tuple[int, int]]:
    """Yield ``(y0, y1)`` bands of at most ``rows`` rows covering ``height``."""
    for y0 in range(0, height, max(1, rows)):
        yield y0, min(height, y0 + max(1, rows))
