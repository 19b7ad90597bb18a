"""The output grid covers every frame, near the pole and across RA = 0, without blow-up."""

import numpy as np
import pytest
from astropy.wcs import WCS

from zemosaic_dask.errors import PlanError
from zemosaic_dask.plans import FrameInfo, plan_output_grid
from zemosaic_dask.plans.regions import assign_frames_to_regions


def frame(ra, dec, rot=0.0, shape=(480, 270), scale=2.4, name="f"):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(shape[1] + 1) / 2, (shape[0] + 1) / 2]
    s, t = scale / 3600, np.radians(rot)
    w.wcs.cd = [[-s * np.cos(t), s * np.sin(t)], [s * np.sin(t), s * np.cos(t)]]
    return FrameInfo(
        path=f"/x/{name}.fits",
        hdu=0,
        shape=shape,
        layout="bayer",
        bayer_pattern="GRBG",
        wcs_header=w.to_header_string(),
        pixel_scale=scale,
    )


def _corners_inside(grid, f):
    ymin, ymax, xmin, xmax = grid.frame_bbox(f)
    return ymin >= 0 and xmin >= 0 and ymax <= grid.shape[0] - 1 and xmax <= grid.shape[1] - 1


@pytest.mark.parametrize("dec", [0.0, 45.0, 89.5])
def test_grid_covers_frames_compactly(dec):
    frames = [frame(10.0, dec, name="a"), frame(10.0, dec + 0.2, rot=30, name="b")]
    grid = plan_output_grid(frames, padding_px=8, chunk=128)
    assert all(_corners_inside(grid, f) for f in frames)
    # Compact: the canvas is no larger than the union's extent in the projection plane + padding.
    # Two frames of 480 px offset by 0.2 deg = 300 px, rotated by at most 30 deg: < 900 px tall.
    assert grid.shape[0] < 900 and grid.shape[1] < 900
    assert grid.pixel_scale == pytest.approx(2.4)


def test_grid_across_ra_zero():
    frames = [frame(359.95, 20.0, name="a"), frame(0.05, 20.0, name="b")]
    grid = plan_output_grid(frames, chunk=128)
    assert all(_corners_inside(grid, f) for f in frames)
    assert grid.shape[1] < 600  # not a 360-degree-wide canvas
    assert grid.crval[0] < 0.01 or grid.crval[0] > 359.99


def test_regions_index_matches_brute_force():
    frames = [frame(10 + 0.1 * i, 20 + 0.05 * j, rot=7 * i, name=f"{i}{j}") for i in range(3) for j in range(3)]
    grid = plan_output_grid(frames, chunk=64)
    table = assign_frames_to_regions(grid, frames, margin_px=0)
    for region in grid.regions():
        expected = []
        for index, f in enumerate(frames):
            ymin, ymax, xmin, xmax = grid.frame_bbox(f)
            if ymax >= region.y0 and ymin < region.y1 and xmax >= region.x0 and xmin < region.x1:
                expected.append(index)
        assert table.get((region.iy, region.ix), []) == expected


def test_no_frames_is_a_plan_error():
    with pytest.raises(PlanError, match="no usable frames"):
        plan_output_grid([])
