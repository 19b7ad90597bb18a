"""The realistic simulated sky (drift, gradients, galaxy, frame order) and the mosaic-quality helpers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from click.testing import CliRunner

from zemosaic_dask.simulation import (
    SimulationConfig,
    background_flatness,
    background_tilt,
    extended_flux_recovery,
    galaxy_radius,
    holes_in_union,
    load_stars,
    pixel_sigma,
    render_extended,
    render_stars,
    seam_step,
    simulate_seestar,
    star_mask,
    trail_ridges,
)
from zemosaic_dask.simulation.seestar import default_trail_frames
from zemosaic_dask.simulation.sky import Pointing, rotated_cd, tan_wcs


def _physical(path):
    with fits.open(path, memmap=False) as hdul:
        return np.asarray(hdul[0].data, dtype=np.float64), WCS(hdul[0].header, naxis=2)


def _star_light(result, wcs, shape):
    stars = load_stars(result.stars)
    fluxes = np.stack([stars["flux_r"], stars["flux_g"], stars["flux_b"]], axis=1)
    return render_stars(stars["ra"], stars["dec"], fluxes, wcs, shape, fwhm_px=3.8).max(axis=0)


@pytest.fixture(scope="module")
def drifting(tmp_path_factory):
    """Realistic sky without extended emission: raw Bayer frames."""
    config = SimulationConfig.realistic(galaxy=False, nebulosity=0.0)
    return simulate_seestar(tmp_path_factory.mktemp("drift"), 12, 21, 0.2, trails=0, hot_pixels=0.0, config=config)


@pytest.fixture(scope="module")
def galaxy(tmp_path_factory):
    """Realistic sky with the galaxy (no nebula), debayered float frames."""
    config = SimulationConfig.realistic(nebulosity=0.0)
    folder = tmp_path_factory.mktemp("galaxy")
    return simulate_seestar(folder, 8, 5, 0.2, trails=0, hot_pixels=0.0, layout="chw", config=config)


def test_drift_and_light_pollution_are_in_the_pixels(drifting):
    params = drifting.parameters
    levels = drifting.frame_sky_levels
    np.testing.assert_allclose(levels.mean(axis=0), drifting.sky_level, rtol=1e-12)
    relative = np.ptp(levels[:, 1]) / drifting.sky_level[1]
    assert 0.08 <= relative <= 0.35
    measured = []
    for index, path in enumerate(drifting.frames):
        data, wcs = _physical(path)
        height, width = data.shape
        yy, xx = np.mgrid[:height, :width]
        use = (_star_light(drifting, wcs, data.shape) < 0.5) & ((yy + xx) % 2 == 0)
        xc, yc = (width - 1) / 2.0, (height - 1) / 2.0
        design = np.stack([np.ones(use.sum()), xx[use] - xc, yy[use] - yc], axis=1)
        (level, gx, gy), *_ = np.linalg.lstsq(design, data[use], rcond=None)
        measured.append(level)
        lp, small = params["sky"]["light_pollution"][index], params["gradients"][index]
        assert gx == pytest.approx(lp["gx"][1] + small["gx"][1], abs=5e-3)  # 3 sigma of the fit
        assert gy == pytest.approx(lp["gy"][1] + small["gy"][1], abs=3e-3)
        peak_to_peak = abs(gx) * (width - 1) + abs(gy) * (height - 1)
        assert 0.09 < peak_to_peak / levels[index, 1] < 0.40
        angle = math.degrees(math.atan2(gy - small["gy"][1], gx - small["gx"][1])) % 360.0
        assert angle == pytest.approx(lp["angle_deg"], abs=2.0)
        assert gy < 0 and abs(angle - 270.0) < 12.0  # brighter at the bottom of the detector
    np.testing.assert_allclose(measured, levels[:, 1], atol=1.0)
    assert np.ptp(measured) / drifting.sky_level[1] == pytest.approx(relative, abs=0.01)


def test_truth_holds_the_mean_sky_only(drifting):
    cube, wcs = drifting.load_truth()
    assert not (drifting.out_dir / "extended.fits").exists() and drifting.extended is None
    free = _star_light(drifting, wcs, cube.shape[1:]) < 1e-3
    for channel in range(3):
        values = cube[channel][free]
        assert np.max(np.abs(values - drifting.sky_level[channel])) < 0.01


def test_galaxy_is_in_frames_truth_and_extended_file(galaxy):
    params = galaxy.parameters
    geometry = params["extended"]["galaxy"]
    assert (geometry["ra"], geometry["dec"]) == pytest.approx(tuple(params["center"]))
    data, wcs = _physical(galaxy.frames[2])
    shape = data.shape[1:]
    emission = render_extended(params, wcs, shape)
    radius = galaxy_radius(geometry, wcs, shape)
    ring = (radius > 0.2) & (radius < 0.3) & (_star_light(galaxy, wcs, shape) < 0.5)
    assert ring.sum() > 500
    sky = params["sky"]["light_pollution"][2]
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    levels = params["sky"]["levels"][2]
    for channel in range(3):
        model = levels[channel] + sky["gx"][channel] * (xx - sky["xc"]) + sky["gy"][channel] * (yy - sky["yc"])
        excess = np.median((data[channel] - model)[ring])
        expected = np.median(emission[channel][ring])
        assert expected > 0.2 * galaxy.sky_level[1]
        assert excess == pytest.approx(expected, rel=0.03, abs=1.0)
    assert np.median(emission[0][ring]) / np.median(emission[1][ring]) == pytest.approx(1.15, rel=1e-6)
    cube, truth_wcs = galaxy.load_truth()
    extended, _ = galaxy.load_extended()
    np.testing.assert_allclose(extended, render_extended(params, truth_wcs, cube.shape[1:]), rtol=1e-5, atol=1e-3)
    centre = tuple(int(round(v)) for v in truth_wcs.all_world2pix([[geometry["ra"], geometry["dec"]]], 0)[0])
    window = (slice(None), slice(centre[1] - 3, centre[1] + 4), slice(centre[0] - 3, centre[0] + 4))
    stars = _star_light(galaxy, truth_wcs, cube.shape[1:])[window[1:]]
    sky_level = np.asarray(galaxy.sky_level)[:, None, None]
    np.testing.assert_allclose(cube[window] - sky_level - stars[None], extended[window], atol=0.5, rtol=1e-3)
    assert extended[1][window[1:]].min() > galaxy.sky_level[1]  # the bulge outshines the sky


def test_galaxy_major_axis_points_to_the_position_angle(galaxy):
    cube, wcs = galaxy.load_truth()
    extended, _ = galaxy.load_extended()
    geometry = galaxy.parameters["extended"]["galaxy"]
    x0, y0 = wcs.all_world2pix([[geometry["ra"], geometry["dec"]]], 0)[0]
    pa = math.radians(geometry["position_angle_deg"])
    r = 0.5 * geometry["edge_radius_px"]
    along = extended[1, int(round(y0 + r * math.cos(pa))), int(round(x0 - r * math.sin(pa)))]
    across = extended[1, int(round(y0 + r * math.sin(pa))), int(round(x0 + r * math.cos(pa)))]
    disk_at_half = geometry["disk_central_adu"][1] * math.exp(-r / geometry["disk_scale_length_px"])
    assert along == pytest.approx(disk_at_half, rel=0.05)
    assert across < 0.01 * along


def test_panel_order_groups_frames_and_shuffled_is_seeded(tmp_path):
    grouped = simulate_seestar(tmp_path / "p", 12, 3, 0.1, trails=0, order="panel")
    panels = [p["panel"] for p in grouped.parameters["pointings"]]
    assert panels == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3] and grouped.parameters["order"] == "panel"
    centres = [_physical(path)[1].all_pix2world([[53.5, 95.5]], 0)[0] for path in grouped.frames]
    moves = np.diff(np.asarray(centres), axis=0)
    steps = np.hypot(moves[:, 0] * math.cos(math.radians(35.0)), moves[:, 1]) * 3600.0
    within = steps[[k for k in range(11) if panels[k] == panels[k + 1]]]
    assert within.max() < 30.0 < 100.0 < steps[[2, 5, 8]].min()  # arcsec: dithers vs panel steps
    shuffled = simulate_seestar(tmp_path / "s", 12, 3, 0.1, trails=0, order="shuffled")
    again = simulate_seestar(tmp_path / "s2", 12, 3, 0.1, trails=0, order="shuffled")
    order = [p["panel"] for p in shuffled.parameters["pointings"]]
    assert sorted(order) == sorted(panels) and order != [i % 4 for i in range(12)] and order != panels
    assert order == [p["panel"] for p in again.parameters["pointings"]]
    with pytest.raises(ValueError, match="order must be one of"):
        simulate_seestar(tmp_path / "x", 2, 3, 0.1, order="random")


def test_realistic_trails_are_bright_and_six_in_forty(tmp_path):
    assert len(default_trail_frames(40, np.random.default_rng(0), 40.0 / 6.0)) == 6
    result = simulate_seestar(tmp_path, 40, 9, 0.1, config=SimulationConfig.realistic(galaxy=False, nebulosity=0.0))
    params = result.parameters
    assert len(params["trail_frames"]) == 6 and len(params["trails"]) == 6
    for trail in params["trails"].values():
        assert 560.0 <= trail["peak_adu"] <= 1020.0
        assert {"angle_deg", "x0", "y0", "fwhm_px", "peak_adu"} <= set(trail)


def test_vignetting_darkens_the_corners(tmp_path):
    result = simulate_seestar(
        tmp_path,
        1,
        2,
        0.25,
        panels=(1, 1),
        trails=0,
        hot_pixels=0.0,
        layout="mono",
        config=SimulationConfig(vignetting=0.05),
    )
    data, wcs = _physical(result.frames[0])
    free = _star_light(result, wcs, data.shape) < 0.5
    yy, xx = np.mgrid[:480, :270]
    r2 = ((yy - 239.5) ** 2 + (xx - 134.5) ** 2) / (239.5**2 + 134.5**2)
    assert result.parameters["sky"]["model"] == "drifting" and result.frame_sky_levels[0, 1] == 400.0
    for region in (r2 < 0.1, r2 > 0.8):
        expected = 400.0 * np.median(1.0 - 0.05 * r2[region & free])
        assert np.median(data[region & free]) == pytest.approx(expected, abs=1.0)


def test_cli_simulate_realistic(tmp_path):
    from zemosaic_dask.cli import main

    args = ["simulate", str(tmp_path), "--frames", "4", "--scale", "0.1", "--sky", "realistic"]
    done = CliRunner().invoke(main, [*args, "--order", "panel", "--panels", "2", "1", "--layout", "chw"])
    assert done.exit_code == 0, done.output
    params = json.loads((tmp_path / "simulation.json").read_text())
    assert params["order"] == "panel" and params["panels"] == [2, 1] and params["layout"] == "chw"
    assert params["extended"]["galaxy"] and params["extended"]["nebula"]["fraction"] == 0.03
    assert params["config"]["light_pollution_range"] == [0.1, 0.35] and (tmp_path / "extended.fits").exists()
    done = CliRunner().invoke(main, ["simulate", str(tmp_path / "bad"), "--vignetting", "0.9"])
    assert done.exit_code == 2 and "vignetting" in done.output


# --- measurement helpers on images built to have a known answer -------------------------------------------


def _noise(shape, sigma=1.0, seed=0):
    return np.random.default_rng(seed).normal(0.0, sigma, size=shape)


def test_pixel_sigma_is_robust():
    image = 100.0 + _noise((256, 256), 2.0)
    image[::17, ::13] += 500.0  # "stars"
    assert pixel_sigma(image)[0] == pytest.approx(2.0, rel=0.05)


def test_seam_step_sees_a_known_step():
    image = 50.0 + _noise((256, 256))
    coverage = np.ones((256, 256))
    flat = seam_step(image, coverage)
    image[:, 128:] += 0.5
    assert flat < 0.25
    assert seam_step(image, coverage) == pytest.approx(0.5, abs=0.12)
    bump = 3.0 * np.exp(-((np.arange(256)[None] - 60.0) ** 2 + (np.arange(256)[:, None] - 90.0) ** 2) / 2000.0)
    assert seam_step(image + bump, coverage, extended=bump) == pytest.approx(seam_step(image, coverage), abs=1e-6)
    assert seam_step(image + bump, coverage) > 0.8
    coverage[:, :140] = 0  # the step's blocks are no longer fully covered
    assert seam_step(image, coverage) < 0.25


def test_background_flatness_ignores_a_plane_but_not_a_bump():
    yy, xx = np.mgrid[:256, :256]
    plane = 20.0 + 0.01 * xx - 0.02 * yy
    coverage = np.ones((256, 256))
    assert background_flatness(plane + _noise((256, 256)), coverage) < 0.08
    blobs = 0.6 * np.sin(xx / 20.0) * np.sin(yy / 25.0)
    assert background_flatness(plane + blobs + _noise((256, 256)), coverage) > 0.25


def test_background_tilt_measures_the_plane_flatness_ignores():
    yy, xx = np.mgrid[:256, :256]
    noise = _noise((256, 256))  # pixel sigma 1
    coverage = np.ones((256, 256))
    assert background_tilt(20.0 + noise, coverage) < 0.05
    # 0.01 ADU per px in x and -0.02 in y: the blocks' centres span 224 px, so 0.03 * 224 = 6.72
    tilted = 20.0 + 0.01 * xx - 0.02 * yy + noise
    assert background_tilt(tilted, coverage) == pytest.approx(6.72, rel=0.02)
    assert background_flatness(tilted, coverage) < 0.08
    bump = 3.0 * np.exp(-((xx - 60.0) ** 2 + (yy - 90.0) ** 2) / 2000.0)  # emission in the truth is no tilt
    assert background_tilt(20.0 + noise + bump, coverage, extended=bump) < 0.05


def test_extended_flux_recovery_on_truth_and_halo_free_truth(galaxy):
    cube, wcs = galaxy.load_truth()
    extended, _ = galaxy.load_extended()
    cube, extended = cube.astype(np.float64), extended.astype(np.float64)
    coverage = np.ones(cube.shape[1:])
    mask = star_mask(cube - extended, galaxy.sky_level)
    recover = dict(star_mask=mask)
    full = extended_flux_recovery(cube, wcs, coverage, galaxy.parameters, extended, **recover)
    assert set(full) == {"inner", "middle", "outer"}
    assert all(v == pytest.approx(1.0, abs=0.01) for v in full.values()), full
    shifted = extended_flux_recovery(cube + 37.0, wcs, coverage, galaxy.parameters, extended, **recover)
    assert shifted == pytest.approx(full, abs=1e-9)
    none = extended_flux_recovery(cube - extended, wcs, coverage, galaxy.parameters, extended, **recover)
    assert all(abs(v) < 0.01 for v in none.values()), none
    radius = galaxy_radius(galaxy.parameters["extended"]["galaxy"], wcs, cube.shape[1:])
    halo_cut = np.where(radius >= 2.0 / 3.0, cube - extended, cube)
    cut = extended_flux_recovery(halo_cut, wcs, coverage, galaxy.parameters, extended, **recover)
    assert cut["inner"] == pytest.approx(1.0, abs=0.01) and abs(cut["outer"]) < 0.01
    half = extended_flux_recovery(cube - 0.5 * extended, wcs, coverage, galaxy.parameters, extended, **recover)
    assert all(v == pytest.approx(0.5, abs=0.01) for v in half.values()), half


def _trail_setup():
    scale = 2.3926717524663177
    params = {
        "frame_shape": [200, 120],
        "pixel_scale_arcsec": scale,
        "pointings": [{"index": 0, "panel": 0, "ra": 150.0, "dec": 35.0, "dither_px": [0.0, 0.0], "rotation_deg": 7.0}],
        "trails": {"0": {"angle_deg": 60.0, "x0": 60.0, "y0": 90.0, "fwhm_px": 3.0, "peak_adu": 500.0}},
    }
    wcs = tan_wcs((150.0, 35.0), (150.0, 150.0), rotated_cd(scale, 0.0))
    frame = Pointing(0, 0, 150.0, 35.0, (0.0, 0.0), 7.0).wcs((200, 120), scale)
    return params, wcs, frame


def _distance_to_trail(wcs, frame):
    """Distance (mosaic px) of every pixel of the 300 x 300 grid from the trail of :func:`_trail_setup`."""
    t = np.linspace(-300, 300, 20001)
    theta = math.radians(60.0)
    mx, my = wcs.all_world2pix(*frame.all_pix2world(60.0 + t * math.cos(theta), 90.0 + t * math.sin(theta), 0), 0)
    yy, xx = np.mgrid[:300, :300]
    direction = np.array([mx[-1] - mx[0], my[-1] - my[0]]) / np.hypot(mx[-1] - mx[0], my[-1] - my[0])
    return np.abs((xx - mx[10000]) * direction[1] - (yy - my[10000]) * direction[0])


def test_trail_ridge_measures_a_painted_trail():
    params, wcs, frame = _trail_setup()
    distance = _distance_to_trail(wcs, frame)
    image = 80.0 + _noise((300, 300), 2.0, seed=4) + np.where(distance <= 2.5, 3.0, 0.0)
    coverage = np.full((300, 300), 3.0)
    (ridge,) = trail_ridges(image, wcs, coverage, params)
    assert ridge.frame == 0 and ridge.n_points > 300
    assert ridge.ridge_adu[0] == pytest.approx(3.0, abs=0.25)
    assert ridge.ridge_sigma[0] == pytest.approx(1.5, abs=0.15)
    coverage[:, 150:] = 2.0
    (partial,) = trail_ridges(image, wcs, coverage, params)
    assert 0 < partial.n_points < ridge.n_points
    (none,) = trail_ridges(image, wcs, np.full((300, 300), 2.0), params)
    assert none.n_points == 0 and math.isnan(none.ridge_adu[0])


def test_trail_wings_are_measured_beside_a_rejected_core():
    """A trail whose core was removed but whose wings were kept: two faint lines 2-4 px either
    side of the line. The centre line sees nothing; the wing figure finds them, with their sign."""
    params, wcs, frame = _trail_setup()
    distance = _distance_to_trail(wcs, frame)
    noise = _noise((300, 300), 2.0, seed=5)
    wings = np.where((distance >= 2.0) & (distance <= 4.0), 4.0, 0.0)
    coverage = np.full((300, 300), 3.0)
    (ridge,) = trail_ridges(80.0 + noise + wings, wcs, coverage, params)
    assert abs(ridge.ridge_adu[0]) < 0.3  # the core: nothing
    assert ridge.wing_adu[0] == pytest.approx(4.0, abs=0.6)
    assert ridge.worst_wing_sigma == pytest.approx(2.0, abs=0.35)
    (dark,) = trail_ridges(80.0 + noise - wings, wcs, coverage, params)
    assert dark.wing_adu[0] == pytest.approx(-4.0, abs=0.6)
    (clean,) = trail_ridges(80.0 + noise, wcs, coverage, params)
    assert abs(clean.wing_adu[0]) < 0.4


def test_trail_ridge_follows_a_simulated_trail(tmp_path):
    result = simulate_seestar(tmp_path, 1, 4, 0.25, panels=(1, 1), trails=1, hot_pixels=0.0, layout="chw")
    data, wcs = _physical(result.frames[0])
    params = result.parameters
    (ridge,) = trail_ridges(data, wcs, np.full(data.shape[1:], 3.0), params)
    peak = params["trails"]["0"]["peak_adu"]
    assert ridge.n_points > 200
    for value in ridge.ridge_adu:
        assert 0.8 * peak < value < 1.02 * peak


def test_holes_in_union_counts_a_known_hole():
    image = np.ones((3, 100, 100))
    union = np.zeros((100, 100), dtype=bool)
    union[10:90, 10:90] = True
    image[:, :5] = np.nan  # outside the union: not a hole
    image[1, 40:50, 40:50] = np.nan
    holes = holes_in_union(image, union)
    assert holes.count == 100 and holes.union_pixels == 6400
    assert holes.fraction == pytest.approx(100 / 6400)
    coverage = np.ones((100, 100))
    coverage[20:22, 20:30] = 0
    assert holes_in_union(image, union, coverage).count == 120
