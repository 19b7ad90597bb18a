"""The global background model end to end: a panel 50 % brighter, a tilted sky and a trail, in every mode."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits
from e2e import SYNC, run, truth_on

from zemosaic_dask.testing import simulate_seestar

OFFSET = 0.5  # the second panel's frames carry +50 % of the sky level
SLOPE = 0.15  # and every frame a detector-fixed gradient of 15 % of the sky over its height


@pytest.fixture(scope="module")
def drifted_session(tmp_path_factory):
    """Eight mono frames on 2x1 panels; panel 1 brighter by half the sky, all frames tilted; a trail."""
    folder = tmp_path_factory.mktemp("drifted")
    sim = simulate_seestar(folder, 8, seed=11, scale=0.2, panels=(2, 1), layout="mono", trails=[5])
    params = json.loads((folder / "simulation.json").read_text())
    sky = float(params["sky_level"][1])
    for path, pointing in zip(sim.frames, params["pointings"], strict=True):
        with fits.open(path) as hdul:
            data, header = hdul[0].data.astype(np.float64), hdul[0].header
        height = data.shape[0]
        tilt = SLOPE * sky * (np.arange(height)[:, None] - (height - 1) / 2) / height
        data = data + tilt + (OFFSET * sky if pointing["panel"] == 1 else 0.0)
        fits.PrimaryHDU(data.astype(np.float32), header).writeto(path, overwrite=True)
    return folder, list(sim.frames), params


def _panel_levels(mosaic, params, truth):
    """Median sky (stars masked) where only panel 0's frames reach, and where only panel 1's do."""
    from zemosaic_dask.simulation.measure import footprint_count

    image = mosaic.image if mosaic.image.ndim == 2 else mosaic.image[0]
    used = sorted(mosaic.report["inputs"]["used"])
    panels = [p["panel"] for p in params["pointings"]]
    counts = [
        footprint_count([f for f, p in zip(used, panels, strict=True) if p == panel], None, mosaic.wcs, image.shape)
        for panel in (0, 1)
    ]
    stars = truth.stars_mask if truth.stars_mask.ndim == 2 else truth.stars_mask.any(axis=0)
    sky = np.isfinite(image) & ~stars
    only = [(counts[k] > 0) & (counts[1 - k] == 0) & sky for k in (0, 1)]
    return [float(np.median(image[mask])) for mask in only], image, sky


@pytest.mark.parametrize("mode", ["mosaic-first", "classic", "sds"])
def test_a_panel_offset_and_detector_gradients_are_removed_in_every_mode(drifted_session, tmp_path, mode):
    folder, frames, params = drifted_session
    sky = float(params["sky_level"][1])
    noise = float(np.median(np.asarray(params["noise_sigma"])[:, 1]))
    mosaic = run(frames, tmp_path / mode, SYNC, mode=mode, **{"sds.min-batch-size": 2, "sds.target-batch-size": 4})
    assert mosaic.report["mode"] == mode and mosaic.report["fallback"] is None
    background = mosaic.report["background"]
    assert background["model"] == "plane" and background["groups"] == 1
    # After the model, overlapping frames agree to about their cells' noise (a few tenths of the pixel noise).
    assert background["overlap_rms_after"][0] < 0.1 * noise < background["overlap_rms_before"][0]
    truth = truth_on(mosaic, folder)
    (level0, level1), image, sky_mask = _panel_levels(mosaic, params, truth)
    # Without the model the two panels would differ by 0.5 x sky (about 200 ADU): now within the noise.
    assert abs(level1 - level0) < 0.1 * noise, (level0, level1)
    # The mosaic keeps the frames' mean level: sky + half the offset (4 of 8 frames carry it), no pedestal removed.
    assert abs(np.median(image[sky_mask]) - sky * (1 + OFFSET / 2)) < 0.2 * noise
    # The detector-fixed tilt (15 % of the sky over a frame) is gone: rows of the mosaic agree.
    rows = [np.median(image[y][sky_mask[y]]) for y in range(image.shape[0]) if sky_mask[y].sum() > 50]
    assert np.ptp(np.convolve(rows, np.ones(15) / 15, mode="valid")) < 0.3 * noise


def test_gains_recovered_from_the_starlight_of_overlaps():
    from zemosaic_dask.tasks.frame_gains import pair_gain, solve_frame_gains
    from zemosaic_dask.tasks.sky_blocks import SkyCells

    rng = np.random.default_rng(4)
    n_cells, true_gains = 400, np.array([1.0, 0.8, 1.1, 0.95])
    stars = rng.pareto(1.0, n_cells) * 5000 + 2000  # starlight per cell, common to every frame
    cells = []
    for gain in true_gains:
        fluxes = stars / gain + rng.normal(0, 20, n_cells)  # a frame at gain g records F/g
        fluxes[rng.integers(0, n_cells, 5)] += 1e5  # a satellite trail through a few cells
        cells.append(SkyCells(np.arange(n_cells), np.zeros((1, n_cells)), fluxes[None], 32, 100))
    equations = []
    for i in range(4):
        for j in range(i + 1, 4):
            found = pair_gain(cells[i], cells[j], (1.0,))
            assert found is not None
            equations.append((i, j, *found))
    solution = solve_frame_gains(4, 1, equations)
    expected = true_gains / np.exp(np.mean(np.log(true_gains)))  # the mean log-gain is kept at 0
    np.testing.assert_allclose(solution.gains[:, 0], expected, rtol=0.005)
    # A frame that overlaps nothing keeps gain 1.
    assert solve_frame_gains(5, 1, equations).gains[4, 0] == 1.0


def test_gains_and_planes_solved_on_a_cluster(drifted_session, tmp_path):
    """On a threaded cluster with gains on: cell skies, gains and pair summaries come from worker tasks.

    (These small frames hold too few star-rich cells for a gain equation: the gains stay 1; the
    gain maths is checked on cells in ``tasks/test_background_pairs.py``.)
    """
    from e2e import THREADS

    folder, frames, params = drifted_session
    noise = float(np.median(np.asarray(params["noise_sigma"])[:, 1]))
    mosaic = run(
        frames,
        tmp_path / "gains",
        THREADS,
        mode="mosaic-first",
        **{"background.gains": True, "background.block-px": 16},
    )
    background = mosaic.report["background"]
    assert background["groups"] == 1 and background["pairs"] == 28 and background["points"] > 1000
    assert background["gain_range"] == [1.0, 1.0]
    truth = truth_on(mosaic, folder)
    (level0, level1), _, _ = _panel_levels(mosaic, params, truth)
    assert abs(level1 - level0) < 0.1 * noise, (level0, level1)
