"""The approximate pixel mapping stays within its bound of astropy's exact one."""

import numpy as np
import pytest
from astropy.wcs import WCS

from zemosaic_dask.tasks.mapping import coarse_pixel_map, exact_pixel_map, interpolate_pixel_map


def _tan(ra, dec, scale_arcsec, rot_deg, crpix, sip=False):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"] if sip else ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = list(crpix)
    s = scale_arcsec / 3600
    t = np.radians(rot_deg)
    w.wcs.cd = [[-s * np.cos(t), s * np.sin(t)], [s * np.sin(t), s * np.cos(t)]]
    if sip:
        from astropy.wcs import Sip

        a = np.zeros((4, 4))
        b = np.zeros((4, 4))
        a[2, 0], a[0, 2], a[3, 0] = 2e-6, -1.5e-6, 4e-10
        b[1, 1], b[0, 3] = 1.8e-6, -3e-10
        w.sip = Sip(a, b, None, None, w.wcs.crpix)
    return w


@pytest.mark.parametrize("sip", [False, True])
@pytest.mark.parametrize("dec", [10.0, 85.0])
def test_mapping_error_below_bound(sip, dec):
    out = _tan(150.0, dec, 2.4, 0.0, (600, 500))
    frame = _tan(150.02, dec + 0.05, 2.4, 17.0, (540, 960), sip=sip)
    coarse = coarse_pixel_map(out, frame, (100, 200), (300, 400), max_error_px=0.01)
    map_x, map_y = interpolate_pixel_map(coarse, np)
    gy, gx = np.mgrid[100:400, 200:600]
    true_x, true_y = exact_pixel_map(out, frame, gy.astype(float), gx.astype(float))
    error = np.hypot(map_x - true_x, map_y - true_y)
    assert error.max() <= 0.01
    assert coarse.step > 1  # the approximation is actually used (not the exact dense map)


def test_tighter_bound_refines_grid():
    out = _tan(10.0, 60.0, 2.4, 0.0, (600, 500))
    frame = _tan(10.3, 60.2, 2.4, 30.0, (540, 960), sip=True)
    loose = coarse_pixel_map(out, frame, (0, 0), (256, 256), max_error_px=0.5, initial_step=128)
    tight = coarse_pixel_map(out, frame, (0, 0), (256, 256), max_error_px=1e-4, initial_step=128)
    assert tight.step < loose.step
    assert tight.max_error <= 1e-4


@pytest.mark.parametrize("shape", [(1, 300), (300, 1), (1, 1)])
def test_a_region_one_pixel_thin_is_mapped_within_the_bound_without_warnings(shape):
    """A band of one row (the last band of a deep region) keeps a coarse map along its length."""
    import warnings

    out = _tan(150.0, 40.0, 2.4, 0.0, (600, 500))
    frame = _tan(150.02, 40.05, 2.4, 17.0, (540, 960), sip=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        coarse = coarse_pixel_map(out, frame, (120, 80), shape, max_error_px=0.01)
        map_x, map_y = interpolate_pixel_map(coarse, np)
    gy, gx = np.mgrid[120 : 120 + shape[0], 80 : 80 + shape[1]]
    true_x, true_y = exact_pixel_map(out, frame, gy.astype(float), gx.astype(float))
    assert np.hypot(map_x - true_x, map_y - true_y).max() <= 0.01
    assert coarse.step > 1 or max(shape) == 1


def _exact_nodes(out, frame, origin, coarse):
    """The exact mapping at a coarse map's nodes (node (i, j) is pixel min(i*step, h-1), min(j*step, w-1))."""
    height, width = coarse.shape
    rows = np.minimum(np.arange(coarse.x.shape[0]) * coarse.step, height - 1) + origin[0]
    cols = np.minimum(np.arange(coarse.x.shape[1]) * coarse.step, width - 1) + origin[1]
    gy, gx = np.meshgrid(rows.astype(float), cols.astype(float), indexing="ij")
    return exact_pixel_map(out, frame, gy, gx)


def test_frames_sharing_an_output_wcs_share_its_points_and_nothing_else():
    """The output side of the map is kept per output WCS object: frames of one region share it,
    another output grid (even on the same region, shape and step) or another region gets its own."""
    frames = [_tan(150.0 + 0.01 * k, 20.0 + 0.01 * k, 2.4, 5.0 * k, (540, 960), sip=k % 2 == 1) for k in range(4)]
    first = _tan(150.0, 20.0, 2.4, 0.0, (600, 500))
    moved = _tan(150.05, 20.03, 2.4, 0.0, (600, 500))  # another grid: the same pixels are elsewhere on the sky
    for out in (first, moved, first):
        for origin, shape in (((100, 200), (300, 400)), ((0, 0), (97, 513)), ((400, 100), (300, 400))):
            for frame in frames:
                coarse = coarse_pixel_map(out, frame, origin, shape, max_error_px=0.01)
                true_x, true_y = _exact_nodes(out, frame, origin, coarse)
                np.testing.assert_array_equal(coarse.x, true_x)
                np.testing.assert_array_equal(coarse.y, true_y)
                assert coarse.max_error <= 0.01 and coarse.shape == shape
    fine = coarse_pixel_map(first, frames[1], (100, 200), (300, 400), max_error_px=1e-7)  # halves down to step 1
    true_x, true_y = _exact_nodes(first, frames[1], (100, 200), fine)
    assert fine.step == 1 and fine.max_error == 0.0
    np.testing.assert_array_equal(fine.x, true_x)
