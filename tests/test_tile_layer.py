"""A master tile put onto the global grid: the compiled sampling writes what the dense array path computes."""

from __future__ import annotations

import numpy as np
from numpy.testing import assert_array_equal

from zemosaic_dask.io.store import open_mosaic_stores
from zemosaic_dask.plans.grid import OutputGrid
from zemosaic_dask.tasks.mapping import coarse_pixel_map, interpolate_pixel_map
from zemosaic_dask.tasks.resample import sample_bilinear
from zemosaic_dask.units.tile_layer import TileLayerJob, build_tile_layer_region

GRID = OutputGrid(crval=(10.0, 20.0), pixel_scale=2.4, crpix=(1.0, 1.0), shape=(96, 120), chunk=48)
TILE = OutputGrid(crval=(10.02, 20.01), pixel_scale=2.1, crpix=(1.0, 1.0), shape=(70, 90), chunk=128)


def _expected(region, tile_img, tile_cov):
    """The normalised bilinear of the tile's coverage-weighted values on a dense map (the array path)."""
    coarse = coarse_pixel_map(GRID.wcs, TILE.wcs, (region.y0, region.x0), region.shape, max_error_px=0.01)
    map_x, map_y = interpolate_pixel_map(coarse, np)
    height, width = TILE.shape
    has_data = (tile_cov > 0) & np.all(np.isfinite(tile_img), axis=0)
    weight = np.where(has_data, tile_cov, np.float32(0))
    stacked = np.concatenate([np.where(has_data[None], tile_img, 0) * weight[None], weight[None]])
    values, footprint = sample_bilinear(stacked, map_x, map_y, (0.0, height - 1.0, 0.0, width - 1.0))
    den = np.where(footprint > 0, values[-1], np.float32(0))
    valid = den > 1e-6
    image = np.where(valid[None], values[:-1] / np.where(valid, den, np.float32(1))[None], np.float32(np.nan))
    return image.astype(np.float32), np.where(valid, den, 0).astype(np.float32)


def test_tile_on_the_grid_equals_the_dense_normalised_bilinear(tmp_path):
    rng = np.random.default_rng(3)
    (tile, _), (layer, _) = open_mosaic_stores(
        str(tmp_path / "s.zarr"), [("tiles/0", TILE), ("layers/0", GRID)], 3, fingerprint="t"
    )
    yy, xx = np.mgrid[0 : TILE.shape[0], 0 : TILE.shape[1]].astype(np.float32)
    tile_img = np.stack([100 + xx + 0.5 * yy, 200 - yy, rng.normal(50, 3, TILE.shape)]).astype(np.float32)
    tile_img[1, 10:14, 20:25] = np.nan  # a gap in one channel
    tile_cov = np.clip(rng.normal(4, 1, TILE.shape), 0, None).astype(np.float32)
    tile_cov[:, :6] = 0  # an edge without data
    tile.write_region(TILE.region(0, 0), tile_img, tile_cov, np.full(TILE.shape, 255, np.uint8))
    reached = 0
    for region in GRID.regions():
        summary = build_tile_layer_region(TileLayerJob(region, GRID, TILE, tile, layer))
        image, coverage = _expected(region, tile_img, tile_cov)
        rows = layer.read_rows("mosaic", region.y0, region.y1)[:, :, region.x0 : region.x1]
        cover = layer.read_rows("coverage", region.y0, region.y1)[:, region.x0 : region.x1]
        assert_array_equal(rows, image)
        assert_array_equal(cover, coverage)
        reached += summary.contributing
        assert summary.contributing == int((coverage > 0).any())
    assert 0 < reached < sum(1 for _ in GRID.regions())  # the tile covers some regions, not all
