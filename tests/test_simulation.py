"""The synthetic Seestar generator and the accuracy helpers, checked against independent references."""

from __future__ import annotations

import json
import math
import time
from datetime import datetime

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales
from scipy.special import erf

from zemosaic_dask.testing import (
    SimulationConfig,
    background_residual,
    footprint_count,
    frame_shape,
    load_stars,
    measure_star_flux_ratio,
    render_stars,
    simulate_seestar,
    star_mask,
    union_footprint_mask,
)

SEESTAR_SCALE = 206.264806 * 2.9 / 250.0  # arcsec/px from 2.9 um pixels at 250 mm


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    return simulate_seestar(tmp_path_factory.mktemp("sim"), 30, seed=7, scale=0.25)


@pytest.fixture(scope="module")
def truth(session):
    return session.load_truth()


def _physical(path):
    with fits.open(path, memmap=False) as hdul:
        return np.asarray(hdul[0].data, dtype=np.float64), hdul[0].header


def _grid_wcs(center, scale_arcsec, shape, rotation_deg=0.0):
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = list(center)
    wcs.wcs.crpix = [(shape[1] + 1) / 2.0, (shape[0] + 1) / 2.0]
    s = scale_arcsec / 3600.0
    c, n = math.cos(math.radians(rotation_deg)), math.sin(math.radians(rotation_deg))
    wcs.wcs.cd = np.array([[-s * c, s * n], [s * n, s * c]])
    return wcs


def _single_star_frame(tmp_path, fluxes, seed=3):
    """One frame (1 panel) with one star at the mosaic centre; no hot pixel, no trail."""
    config = SimulationConfig()
    stars = {"ra": [config.center[0]], "dec": [config.center[1]], **{k: [v] for k, v in fluxes.items()}}
    result = simulate_seestar(tmp_path, 1, seed, 0.25, panels=(1, 1), trails=0, hot_pixels=0.0, stars=stars)
    data, header = _physical(result.frames[0])
    x, y = WCS(header).all_world2pix(stars["ra"], stars["dec"], 0)
    return result, data, float(x[0]), float(y[0])


def test_frame_shape_rounds_to_even_and_keeps_seestar_size():
    assert frame_shape(1.0) == (1920, 1080)
    assert frame_shape(0.25) == (480, 270)
    h, w = frame_shape(0.3)
    assert h % 2 == 0 and w % 2 == 0 and abs(h - 576) <= 1 and abs(w - 324) <= 1
    with pytest.raises(ValueError, match="scale"):
        frame_shape(0.0)


def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    a = simulate_seestar(tmp_path / "a", 6, seed=11, scale=0.125)
    b = simulate_seestar(tmp_path / "b", 6, seed=11, scale=0.125)
    c = simulate_seestar(tmp_path / "c", 6, seed=12, scale=0.125)
    names = [p.name for p in a.frames] + ["truth.fits", "stars.csv", "simulation.json"]
    assert len(names) == 9
    for name in names:
        assert (a.out_dir / name).read_bytes() == (b.out_dir / name).read_bytes(), name
    for name in [p.name for p in a.frames] + ["stars.csv"]:
        assert (a.out_dir / name).read_bytes() != (c.out_dir / name).read_bytes(), name


def test_header_contract(session):
    with fits.open(session.frames[0], do_not_scale_image_data=True, memmap=False) as hdul:
        header = hdul[0].header
        stored = hdul[0].data
    assert header["BITPIX"] == 16 and stored.dtype.kind == "i" and stored.dtype.itemsize == 2
    assert header["BZERO"] == 32768 and header["BSCALE"] == 1
    assert (header["NAXIS1"], header["NAXIS2"]) == (270, 480)
    assert header["BAYERPAT"] == "GRBG"
    assert header["INSTRUME"] == "Seestar S50"
    assert header["EXPTIME"] == 10 and header["FOCALLEN"] == 250 and header["XPIXSZ"] == 2.9
    assert header["EQMODE"] == 0
    assert header["CTYPE1"] == "RA---TAN" and header["CTYPE2"] == "DEC--TAN"
    assert all(f"CD{i}_{j}" in header for i in (1, 2) for j in (1, 2))
    physical = stored.astype(np.int64) + 32768
    assert physical.min() >= 0 and physical.max() < 65535
    rotations, dates = [], []
    for path in session.frames:
        header = fits.getheader(path)
        wcs = WCS(header)
        scales = proj_plane_pixel_scales(wcs) * 3600.0
        np.testing.assert_allclose(scales, SEESTAR_SCALE, rtol=1e-6)
        centre = wcs.all_pix2world([[(270 - 1) / 2.0, (480 - 1) / 2.0]], 0)[0]
        np.testing.assert_allclose(centre, [header["RA"], header["DEC"]], atol=1e-9)
        rotations.append(math.degrees(math.atan2(header["CD2_1"], header["CD2_2"])))
        dates.append(datetime.fromisoformat(header["DATE-OBS"]))
    steps = np.diff([d.timestamp() for d in dates])
    np.testing.assert_allclose(steps, 10.0)
    assert 0.5 < np.ptp(rotations) < 10.0 and np.max(np.abs(rotations)) < 5.0


def test_pixel_scale_does_not_change_with_scale(tmp_path):
    result = simulate_seestar(tmp_path, 1, seed=1, scale=0.5, trails=0)
    wcs = WCS(fits.getheader(result.frames[0]))
    np.testing.assert_allclose(proj_plane_pixel_scales(wcs) * 3600.0, SEESTAR_SCALE, rtol=1e-6)
    assert fits.getdata(result.frames[0]).shape == (960, 540)


def test_bayer_sites_of_a_red_star(tmp_path):
    _, data, x, y = _single_star_frame(tmp_path, {"flux_r": 200_000.0, "flux_g": 4_000.0, "flux_b": 2_000.0})
    iy, ix = int(round(y)), int(round(x))
    window = data[iy - 6 : iy + 7, ix - 6 : ix + 7]
    order = np.argsort(window, axis=None)[::-1][:6]
    wy, wx = np.unravel_index(order, window.shape)
    sy, sx = wy + iy - 6, wx + ix - 6
    assert np.all(sy % 2 == 0) and np.all(sx % 2 == 1), list(zip(sy, sx, strict=True))


def test_raw_red_sites_conserve_flux(tmp_path):
    flux_r = 80_000.0
    result, data, x, y = _single_star_frame(tmp_path, {"flux_r": flux_r, "flux_g": 60_000.0, "flux_b": 30_000.0})
    yy, xx = np.mgrid[: data.shape[0], : data.shape[1]]
    red_site = (yy % 2 == 0) & (xx % 2 == 1)
    r = np.hypot(xx - x, yy - y)
    ring = red_site & (r >= 20) & (r < 40)
    sky = np.median(data[ring])
    assert abs(sky - 300.0) < 5.0
    disc = red_site & (r < 14)
    measured = 4.0 * np.sum(data[disc] - sky)
    assert measured == pytest.approx(flux_r, rel=0.03)


def test_render_stars_integrates_to_flux_and_centres_on_wcs():
    wcs = _grid_wcs((40.0, -20.0), 2.0, (120, 100), rotation_deg=17.0)
    rng = np.random.default_rng(0)
    x = rng.uniform(25, 75, 12)
    y = rng.uniform(25, 95, 12)
    ra, dec = wcs.all_pix2world(x, y, 0)
    fluxes = rng.uniform(100, 5000, (12, 3))
    image = render_stars(ra, dec, fluxes, wcs, (120, 100), fwhm_px=3.3)
    assert image.shape == (3, 120, 100) and image.dtype == np.float32
    np.testing.assert_allclose(image.sum(axis=(1, 2)), fluxes.sum(axis=0), rtol=1e-5)
    single = render_stars(ra[:1], dec[:1], [[1000.0]], wcs, (120, 100), fwhm_px=3.3, background=7.0)[0] - 7.0
    yy, xx = np.mgrid[:120, :100]
    assert np.sum(single * xx) / np.sum(single) == pytest.approx(x[0], abs=1e-3)
    assert np.sum(single * yy) / np.sum(single) == pytest.approx(y[0], abs=1e-3)
    # A Gaussian integrated over the central pixel: independent erf reference.
    sigma = 3.3 / (2 * math.sqrt(2 * math.log(2)))
    iy, ix = int(round(y[0])), int(round(x[0]))

    def frac(c, i):
        return 0.5 * (erf((i + 0.5 - c) / (sigma * math.sqrt(2))) - erf((i - 0.5 - c) / (sigma * math.sqrt(2))))

    assert single[iy, ix] == pytest.approx(1000.0 * frac(x[0], ix) * frac(y[0], iy), rel=1e-4)


def test_render_stars_keeps_surface_brightness_on_a_coarser_grid():
    fine = _grid_wcs((10.0, 60.0), 2.4, (80, 80))
    coarse = _grid_wcs((10.0, 60.0), 4.8, (40, 40))
    image = render_stars([10.0], [60.0], [500.0], coarse, (40, 40), fwhm_px=2.0, flux_pixel_scale=2.4)
    assert image.sum() == pytest.approx(500.0 / 4.0, rel=1e-5)
    same = render_stars([10.0], [60.0], [500.0], fine, (80, 80), fwhm_px=3.0, flux_pixel_scale=2.4)
    assert same.sum() == pytest.approx(500.0, rel=1e-5)


def test_truth_and_catalogue_agree(session, truth):
    cube, wcs = truth
    stars = load_stars(session.stars)
    assert stars.dtype.names == ("ra", "dec", "flux_r", "flux_g", "flux_b")
    assert len(stars) == session.parameters["stars"]["count"] > 100
    assert cube.shape == tuple(session.parameters["truth"]["shape"]) and cube.dtype == np.float32
    fwhm = session.parameters["fwhm_px"]
    assert all(2.8 <= f <= 3.8 for f in fwhm) and np.ptp(fwhm) > 0.2
    assert fits.getheader(session.truth)["FWHM"] == pytest.approx(float(np.median(fwhm)))
    # Star light inside the grid against an independent erf computation of each star's share.
    x, y = wcs.all_world2pix(stars["ra"], stars["dec"], 0)
    sigma = float(np.median(fwhm)) / (2 * math.sqrt(2 * math.log(2))) * math.sqrt(2)
    height, width = cube.shape[1:]
    share = (
        0.5
        * (erf((width - 0.5 - x) / sigma) - erf((-0.5 - x) / sigma))
        * 0.5
        * (erf((height - 0.5 - y) / sigma) - erf((-0.5 - y) / sigma))
    )
    sky = np.asarray(session.sky_level)
    starlight = cube.astype(np.float64).sum(axis=(1, 2)) - sky * height * width
    expected = np.stack([np.sum(stars[c] * share) for c in ("flux_r", "flux_g", "flux_b")])
    np.testing.assert_allclose(starlight, expected, rtol=1e-4)
    np.testing.assert_allclose(cube.min(axis=(1, 2)), sky, rtol=1e-6)
    # Power law: most stars are faint, a few are bright.
    g = np.maximum.reduce([stars["flux_r"], stars["flux_g"], stars["flux_b"]])
    assert np.median(g) < 0.01 * g.max() and np.sum(g > 30 * g.min()) < 0.2 * len(g)
    ratio_rb = stars["flux_r"] / stars["flux_b"]
    assert np.percentile(ratio_rb, 90) / np.percentile(ratio_rb, 10) > 1.5


def test_measure_star_flux_ratio_on_truth_and_scaled_truth(session, truth):
    cube, wcs = truth
    stars = load_stars(session.stars)
    median, per_star = measure_star_flux_ratio(cube, wcs, stars, aperture_px=7.0, annulus=(10.0, 14.0))
    assert per_star.shape[1] == 3 and per_star.shape[0] >= 10
    np.testing.assert_allclose(median, 1.0, atol=0.005)
    gains = np.array([1.1, 0.9, 1.25], dtype=np.float32)
    scaled, _ = measure_star_flux_ratio(cube * gains[:, None, None], wcs, stars, aperture_px=7.0, annulus=(10.0, 14.0))
    np.testing.assert_allclose(scaled, gains, atol=0.006)
    offset, _ = measure_star_flux_ratio(cube + 50.0, wcs, stars, aperture_px=7.0, annulus=(10.0, 14.0))
    np.testing.assert_allclose(offset, 1.0, atol=0.005)


def test_measure_star_flux_ratio_skips_uncovered_stars(session, truth):
    cube, wcs = truth
    stars = load_stars(session.stars)
    holed = cube.copy()
    holed[:, :, : cube.shape[2] // 2] = np.nan
    _, full = measure_star_flux_ratio(cube, wcs, stars, aperture_px=7.0, annulus=(10.0, 14.0))
    _, half = measure_star_flux_ratio(holed, wcs, stars, aperture_px=7.0, annulus=(10.0, 14.0))
    assert 0 < len(half) < len(full)
    coverage = np.zeros(cube.shape[1:])
    with pytest.raises(ValueError, match="no star qualifies"):
        measure_star_flux_ratio(cube, wcs, stars, aperture_px=7.0, annulus=(10.0, 14.0), coverage=coverage)


def test_frame_background_noise_matches_recorded_sigma(session):
    data, header = _physical(session.frames[3])
    wcs = WCS(header)
    stars = load_stars(session.stars)
    fluxes = np.stack([stars["flux_r"], stars["flux_g"], stars["flux_b"]], axis=1)
    light = render_stars(stars["ra"], stars["dec"], fluxes, wcs, data.shape, fwhm_px=3.8).max(axis=0)
    free = light < 0.5
    for y, x in session.parameters["hot_pixels"]["positions"]:
        free[y, x] = False
    yy, xx = np.mgrid[: data.shape[0], : data.shape[1]]
    sites = {0: (yy % 2 == 0) & (xx % 2 == 1), 1: (yy + xx) % 2 == 0, 2: (yy % 2 == 1) & (xx % 2 == 0)}
    sigma = session.noise_sigma[3]
    for channel, site in sites.items():
        values = data[site & free]
        level = np.median(values)
        robust = 1.4826 * np.median(np.abs(values - level))
        assert level == pytest.approx(session.sky_level[channel], abs=2.0)
        assert robust == pytest.approx(sigma[channel], rel=0.10)
        assert np.std(values) == pytest.approx(sigma[channel], rel=0.10)


def test_frame_gradient_matches_recorded_plane(session):
    stars = load_stars(session.stars)
    fluxes = np.stack([stars["flux_r"], stars["flux_g"], stars["flux_b"]], axis=1)
    slopes = []
    for index in (0, 1):
        data, header = _physical(session.frames[index])
        light = render_stars(stars["ra"], stars["dec"], fluxes, WCS(header), data.shape, fwhm_px=3.8).max(axis=0)
        yy, xx = np.mgrid[: data.shape[0], : data.shape[1]]
        use = (light < 0.5) & ((yy + xx) % 2 == 0) & (data < 600)
        design = np.stack([np.ones(use.sum()), xx[use] - 134.5, yy[use] - 239.5], axis=1)
        (level, gx, gy), *_ = np.linalg.lstsq(design, data[use], rcond=None)
        recorded = session.parameters["gradients"][index]
        assert level == pytest.approx(400.0, abs=0.5)
        assert gx == pytest.approx(recorded["gx"][1], abs=4e-3)
        assert gy == pytest.approx(recorded["gy"][1], abs=4e-3)
        slopes.append((gx, gy))
        ptp = abs(gx) * 269 + abs(gy) * 479
        assert 0.2 * session.noise_sigma[index][1] < ptp < 0.6 * session.noise_sigma[index][1]
    assert np.hypot(*np.subtract(*slopes)) > 5e-3


def test_hot_pixels_are_fixed_and_trails_are_drawn(session):
    params = session.parameters
    positions = np.asarray(params["hot_pixels"]["positions"])
    assert len(positions) == round(1e-4 * 480 * 270)
    assert params["trail_frames"] and len(params["trail_frames"]) == 3
    for k, path in enumerate(session.frames[:6]):
        data, _ = _physical(path)
        assert np.all(data[positions[:, 0], positions[:, 1]] > 1500), k
    index = params["trail_frames"][0]
    trail = params["trails"][str(index)]
    data, _ = _physical(session.frames[index])
    theta = math.radians(trail["angle_deg"])
    t = np.arange(-200, 201)
    px = np.rint(trail["x0"] + t * math.cos(theta)).astype(int)
    py = np.rint(trail["y0"] + t * math.sin(theta)).astype(int)
    ok = (px >= 0) & (px < 270) & (py >= 0) & (py < 480)
    assert ok.sum() > 50
    assert np.median(data[py[ok], px[ok]]) > 400 + 0.5 * trail["peak_adu"]
    for other in range(6):
        if other not in params["trail_frames"]:
            assert np.median(_physical(session.frames[other])[0][py[ok], px[ok]]) < 450


def test_default_trail_count():
    from zemosaic_dask.simulation.seestar import default_trail_frames

    rng = np.random.default_rng(0)
    assert default_trail_frames(4, rng) == []
    assert len(default_trail_frames(5, rng)) == 1
    assert len(default_trail_frames(40, rng)) == 4


def test_coverage_of_the_mosaic_pattern(session, truth):
    cube, wcs = truth
    count = footprint_count(session.frames, None, wcs, cube.shape[1:])
    covered = count[count > 0]
    assert np.mean(covered >= 3) > 0.9
    centre = count[cube.shape[1] // 2, cube.shape[2] // 2]
    assert centre >= 20 and centre > np.median(covered)
    assert np.all(count[:4] == 0) and np.all(count[:, :4] == 0)
    panels = [p["panel"] for p in session.parameters["pointings"]]
    assert panels[:8] == [0, 1, 2, 3, 0, 1, 2, 3]


def test_union_footprint_mask_matches_exact_projection(session, truth):
    cube, wcs = truth
    frame = session.frames[5]
    header = fits.getheader(frame)
    mask = union_footprint_mask([frame], None, wcs, cube.shape[1:], shrink_px=1.5)
    yy, xx = np.mgrid[: cube.shape[1], : cube.shape[2]]
    fx, fy = WCS(header).all_world2pix(*wcs.all_pix2world(xx.ravel(), yy.ravel(), 0), 0)
    exact = ((fx >= 1.0) & (fx <= 268.0) & (fy >= 1.0) & (fy <= 478.0)).reshape(mask.shape)
    assert np.sum(mask != exact) <= 2
    assert mask.sum() == pytest.approx(267 * 477, rel=0.01)
    same = union_footprint_mask([WCS(header)], [(480, 270)], wcs, cube.shape[1:], shrink_px=1.5)
    np.testing.assert_array_equal(same, mask)


def test_background_residual_is_in_noise_units(session, truth):
    cube, _ = truth
    rng = np.random.default_rng(5)
    coverage = rng.integers(1, 12, size=cube.shape[1:]).astype(np.float32)
    sigma = np.asarray(session.noise_sigma[0])
    noisy = cube + rng.normal(size=cube.shape) * sigma[:, None, None] / np.sqrt(coverage)
    mask = star_mask(cube, session.sky_level)
    assert background_residual(noisy, cube, coverage, sigma, star_mask=mask) == pytest.approx(1.0, rel=0.02)
    biased = noisy + 2.0 * sigma[:, None, None] / np.sqrt(coverage)
    value = background_residual(biased, cube, coverage, sigma, star_mask=mask)
    assert value == pytest.approx(math.sqrt(5.0), rel=0.02)
    holes = coverage.copy()
    holes[:, : cube.shape[2] // 2] = 0
    half = noisy.copy()
    half[:, :, : cube.shape[2] // 2] = np.nan
    assert background_residual(half, cube, holes, sigma, star_mask=mask) == pytest.approx(1.0, rel=0.03)


def test_star_mask_covers_stars_and_leaves_empty_sky(session, truth):
    cube, wcs = truth
    stars = load_stars(session.stars)
    mask = star_mask(cube, session.sky_level, threshold=0.1, grow_px=2)
    x, y = wcs.all_world2pix(stars["ra"], stars["dec"], 0)
    inside = (x > 0) & (x < cube.shape[2] - 1) & (y > 0) & (y < cube.shape[1] - 1)
    assert np.all(mask[np.rint(y[inside]).astype(int), np.rint(x[inside]).astype(int)])
    starlight = (cube - np.asarray(session.sky_level)[:, None, None]).max(axis=0)
    assert np.all(starlight[~mask] <= 0.1)
    assert 0.02 < mask.mean() < 0.5


def test_chw_layout_writes_float_cubes(tmp_path):
    result = simulate_seestar(tmp_path, 2, seed=2, scale=0.125, layout="chw", trails=0)
    data, header = _physical(result.frames[0])
    assert data.shape == (3, 240, 136) and "BAYERPAT" not in header
    assert fits.getheader(result.frames[0])["BITPIX"] == -32
    levels = np.median(data.reshape(3, -1), axis=1)
    np.testing.assert_allclose(levels, result.sky_level, atol=3.0)
    json.loads(result.parameters_path.read_text())
    mono = simulate_seestar(tmp_path / "mono", 1, seed=2, scale=0.125, layout="mono", trails=0)
    data, header = _physical(mono.frames[0])
    assert data.shape == (240, 136) and "BAYERPAT" not in header
    assert np.median(data) == pytest.approx(mono.sky_level[1], abs=3.0)


@pytest.mark.slow
def test_full_size_session_is_fast(tmp_path):
    start = time.perf_counter()
    result = simulate_seestar(tmp_path, 40, seed=4, scale=1.0)
    assert time.perf_counter() - start < 60.0
    assert fits.getdata(result.frames[0]).shape == (1920, 1080)


def test_default_sky_is_constant_and_recorded(session):
    params = session.parameters
    assert params["order"] == "interleaved" and params["extended"] is None and session.extended is None
    assert params["sky"]["model"] == "constant"
    np.testing.assert_array_equal(session.frame_sky_levels, np.tile(session.sky_level, (30, 1)))
    assert all(lp is None for lp in params["sky"]["light_pollution"])
    np.testing.assert_allclose(session.noise_sigma, np.tile(SimulationConfig().noise_sigma(), (30, 1)), rtol=1e-15)
    assert not (session.out_dir / "extended.fits").exists()
