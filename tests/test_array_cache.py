"""Opened Zarr arrays are reused only while their metadata is the one they were opened with."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from zarr.core.sync import sync

from zemosaic_dask.io import array_cache
from zemosaic_dask.io.store import MosaicStore, open_mosaic_store
from zemosaic_dask.plans.grid import OutputGrid
from zemosaic_dask.units.layer_reader import LayerReader

GRID = OutputGrid(crval=(10.0, 20.0), pixel_scale=2.4, crpix=(1.0, 1.0), shape=(96, 80), chunk=64)


@pytest.fixture(autouse=True)
def _empty_cache():
    array_cache.clear()
    yield
    array_cache.clear()


def _make(url: str, shape: tuple[int, ...], value: float) -> None:
    array = zarr.create_array(store=url, name="a", shape=shape, chunks=shape, dtype="float32", overwrite=True)
    array[...] = value


def test_an_unchanged_array_is_opened_once_per_mode(tmp_path):
    url = str(tmp_path / "s.zarr")
    _make(url, (4, 5), 1.0)
    first = array_cache.open_array(url, "a", "r")
    assert array_cache.open_array(url, "a", "r") is first
    assert array_cache.open_array("file://" + url, "a", "r") is not first  # keyed by the URL as given
    writable = array_cache.open_array(url, "a", "r+")
    assert writable is not first and array_cache.open_array(url, "a", "r+") is writable
    writable[0, 0] = 5.0  # data written through one copy is read through the other: nothing of it is kept
    assert first[0, 0] == 5.0


def test_an_array_made_again_is_opened_again(tmp_path):
    url = str(tmp_path / "s.zarr")
    _make(url, (4, 5), 1.0)
    old = array_cache.open_array(url, "a", "r")
    _make(url, (6, 7), 2.0)  # same path, another shape (a --restart, another run into the folder)
    new = array_cache.open_array(url, "a", "r")
    assert new.shape == (6, 7) and np.all(new[...] == 2.0)
    async_new = sync(array_cache.open_async_array(url, "a", "r"))
    assert async_new.shape == (6, 7)
    assert old.shape == (4, 5)


def test_changed_metadata_of_the_same_size_is_seen(tmp_path):
    url = str(tmp_path / "s.zarr")
    _make(url, (4, 5), 1.0)
    array = zarr.open_array(store=url, path="a", mode="r+")
    array.attrs["k"] = 1
    assert array_cache.open_array(url, "a", "r").attrs["k"] == 1
    array.attrs["k"] = 2  # the document keeps its size, and its times may stay within one clock tick
    assert array_cache.open_array(url, "a", "r").attrs["k"] == 2


def test_remote_stores_are_not_kept_and_missing_arrays_raise(tmp_path):
    assert array_cache._signature("s3://bucket/s.zarr", "a") is None
    assert array_cache._signature("memory://s.zarr", "a") is None
    with pytest.raises(FileNotFoundError):
        array_cache.open_array(str(tmp_path / "none.zarr"), "a", "r")


def test_at_most_cache_size_arrays_are_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(array_cache, "CACHE_SIZE", 2)
    url = str(tmp_path / "s.zarr")
    for name in "abc":
        zarr.create_array(store=url, name=name, shape=(2,), chunks=(2,), dtype="uint8")
    a = array_cache.open_array(url, "a", "r")
    array_cache.open_array(url, "b", "r")
    assert array_cache.open_array(url, "a", "r") is a  # used last: kept when c comes in
    array_cache.open_array(url, "c", "r")
    assert len(array_cache._arrays) == 2
    assert array_cache.open_array(url, "a", "r") is a
    assert (url, "b", "r") not in array_cache._arrays


def test_a_store_restarted_in_place_is_read_and_written_afresh(tmp_path):
    url = str(tmp_path / "m.zarr")
    store, _ = open_mosaic_store(url, GRID, 1, fingerprint="f1")
    region = GRID.region(0, 0)
    ones = np.ones(region.shape, np.float32)
    store.write_region(region, ones[None], ones, np.full(region.shape, 255, np.uint8))
    assert store.region_done(region)
    before = LayerReader([store]).read(region)[0][0]
    np.testing.assert_array_equal(before, ones[None])
    # Made again with another channel count: the reads must see the new arrays, not the kept ones.
    fresh, reused = open_mosaic_store(url, GRID, 3, fingerprint="f2", restart=True)
    assert reused == 0 and not fresh.region_done(region)
    assert MosaicStore(url).array("mosaic", mode="r").shape == (3, *GRID.shape)
    image, coverage = LayerReader([fresh]).read(region)[0]
    assert image.shape == (3, *region.shape) and np.all(np.isnan(image)) and np.all(coverage == 0)
