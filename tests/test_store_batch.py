"""Many layer stores opened at once are what opening them one by one makes, and resume as they do."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from zemosaic_dask.errors import ResumeError
from zemosaic_dask.io.store import MosaicStore, open_mosaic_store, open_mosaic_stores
from zemosaic_dask.plans.grid import OutputGrid

GRID = OutputGrid(crval=(10.0, 20.0), pixel_scale=2.4, crpix=(1.0, 1.0), shape=(96, 80), chunk=64)
TILE = OutputGrid(crval=(10.1, 20.0), pixel_scale=2.4, crpix=(1.0, 1.0), shape=(40, 70), chunk=64)


def _layout(store: MosaicStore) -> dict:
    group = zarr.open_group(store=store.url, path=store.prefix, mode="r", zarr_format=3)
    arrays = {
        name: (a.shape, a.chunks, str(a.dtype), a.fill_value if name != "mosaic" else "nan", a.metadata.codecs)
        for name, a in group.arrays()
    }
    return {"attrs": dict(group.attrs), "arrays": arrays}


def test_stores_opened_at_once_equal_stores_opened_one_by_one_and_work(tmp_path):
    specs = [(f"layers/{k}", GRID) for k in range(6)] + [(f"tiles/{k}", TILE) for k in range(3)]
    together = open_mosaic_stores(str(tmp_path / "a.zarr"), specs, 3, fingerprint="f1")
    alone = [open_mosaic_store(str(tmp_path / "b.zarr"), g, 3, fingerprint="f1", prefix=p) for p, g in specs]
    assert [s.prefix for s, _ in together] == [p for p, _ in specs] and all(n == 0 for _, n in together)
    for (a, _), (b, _) in zip(together, alone, strict=True):
        assert _layout(a) == _layout(b)
    # A store made from another's metadata is written, read and resumed like any other.
    store = together[4][0]
    region = GRID.region(1, 0)
    image = np.full((3, *region.shape), 7.0, np.float32)
    store.write_region(region, image, np.ones(region.shape, np.float32), np.full(region.shape, 255, np.uint8))
    assert store.region_done(region) and not store.region_done(GRID.region(0, 0))
    np.testing.assert_array_equal(store.read_rows("mosaic", region.y0, region.y1)[:, :, : region.x1], image)
    again = open_mosaic_stores(str(tmp_path / "a.zarr"), specs, 3, fingerprint="f1")
    assert [n for _, n in again] == [0, 0, 0, 0, 1, 0, 0, 0, 0]
    np.testing.assert_array_equal(store.read_rows("mosaic", region.y0, region.y1)[:, :, : region.x1], image)


def test_a_store_of_another_run_is_refused_and_restart_discards_it(tmp_path):
    url = str(tmp_path / "a.zarr")
    specs = [(f"layers/{k}", GRID) for k in range(3)]
    store = open_mosaic_stores(url, specs, 1, fingerprint="f1")[1][0]
    region = GRID.region(0, 0)
    store.write_region(
        region,
        np.ones((1, *region.shape), np.float32),
        np.ones(region.shape, np.float32),
        np.ones(region.shape, np.uint8),
    )
    with pytest.raises(ResumeError, match="different inputs or settings"):
        open_mosaic_stores(url, specs, 1, fingerprint="f2")
    fresh = open_mosaic_stores(url, specs, 1, fingerprint="f2", restart=True)
    assert [n for _, n in fresh] == [0, 0, 0] and not fresh[1][0].region_done(region)
    assert all(s.attrs()["fingerprint"] == "f2" for s, _ in fresh)


def test_a_store_whose_making_was_interrupted_is_made_again(tmp_path):
    url = str(tmp_path / "a.zarr")
    specs = [(f"layers/{k}", GRID) for k in range(3)]
    open_mosaic_stores(url, specs, 1, fingerprint="f1")
    (tmp_path / "a.zarr" / "layers" / "2" / "zarr.json").unlink()  # the group document is written last
    (tmp_path / "a.zarr" / "layers" / "1" / "zarr.json").unlink()
    opened = open_mosaic_stores(url, specs, 1, fingerprint="f1")
    assert [n for _, n in opened] == [0, 0, 0]
    assert all(s.attrs()["fingerprint"] == "f1" and s.array("coverage").shape == GRID.shape for s, _ in opened)
