"""Opened Zarr arrays kept by each process while their metadata document is unchanged.

Opening a Zarr array reads and parses its ``zarr.json`` and builds its codec pipeline
(about 0.8 ms alone, several under a busy worker's GIL). The tasks of a run open the same
arrays again and again: a 160-frame SDS run opened 2,361 of them, the ``done`` array of each
batch layer 935 times. An array is reused here only while its metadata document holds the
same bytes as when it was opened (read again each time: a few microseconds for its
kilobyte, where file times can repeat within a clock tick), so an array made again with
another shape, or given other attributes (``--restart``, another run into the same folder
on a long-lived cluster), is opened afresh; the array object is made from nothing else.
Stores that are not local folders (fsspec URLs) are always opened anew: their metadata
cannot be checked at that price.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

import zarr
import zarr.api.asynchronous as zarr_async

__all__ = ["CACHE_SIZE", "clear", "open_array", "open_async_array"]

#: Opened arrays kept per process, least recently used dropped first (an array takes tens of KB).
CACHE_SIZE = 1024

_lock = threading.Lock()
_arrays: OrderedDict[tuple[str, str, str], tuple[bytes, zarr.Array]] = OrderedDict()


def _signature(url: str, path: str) -> bytes | None:
    """The bytes of the array's metadata document, or None when it is not a local file."""
    if url.startswith("file://"):
        url = url[len("file://") :]
    elif "://" in url:
        return None
    try:
        with open(os.path.join(url, path, "zarr.json"), "rb") as handle:
            return handle.read()
    except OSError:
        return None  # Zarr's own open names what is missing


def _cached(key: tuple[str, str, str], signature: bytes | None) -> zarr.Array | None:
    if signature is None:
        return None
    with _lock:
        found = _arrays.get(key)
        if found is None or found[0] != signature:
            return None
        _arrays.move_to_end(key)
        return found[1]


def _remember(key: tuple[str, str, str], signature: bytes | None, array: zarr.Array) -> None:
    if signature is None:
        return
    with _lock:
        _arrays[key] = (signature, array)
        _arrays.move_to_end(key)
        while len(_arrays) > CACHE_SIZE:
            _arrays.popitem(last=False)


def open_array(url: str, path: str, mode: str) -> zarr.Array:
    """Open array ``path`` of the Zarr v3 store at ``url``, reusing this process's opened copy.

    Parameters
    ----------
    url : str
        Local folder or fsspec URL of the store.
    path : str
        The array's path within the store.
    mode : str
        Zarr's open mode (``"r"`` or ``"r+"``); each mode is kept apart.

    Returns
    -------
    zarr.Array
    """
    key = (url, path, mode)
    signature = _signature(url, path)
    array = _cached(key, signature)
    if array is None:
        array = zarr.open_array(store=url, path=path, mode=mode, zarr_format=3)
        _remember(key, signature, array)
    return array


async def open_async_array(url: str, path: str, mode: str) -> Any:
    """:func:`open_array` through Zarr's asynchronous interface; returns the ``AsyncArray``."""
    key = (url, path, mode)
    signature = _signature(url, path)
    array = _cached(key, signature)
    if array is None:
        opened = await zarr_async.open_array(store=url, path=path, mode=mode, zarr_format=3)
        array = zarr.Array(opened)
        _remember(key, signature, array)
    return array.async_array


def clear() -> None:
    """Forget every opened array of this process."""
    with _lock:
        _arrays.clear()
