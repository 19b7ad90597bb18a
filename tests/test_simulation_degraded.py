"""Degraded frames of the simulator: recorded in simulation.json and rendered as described."""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from zemosaic_dask.simulation import simulate_seestar
from zemosaic_dask.simulation.degraded import CLOUD_SKY_FACTOR, DEFOCUS_FACTOR


def test_degraded_frames_are_recorded_and_rendered(tmp_path):
    clear = simulate_seestar(tmp_path / "clear", 12, 5, scale=0.2, layout="mono", hot_pixels=0.0, trails=0)
    bad = simulate_seestar(tmp_path / "bad", 12, 5, scale=0.2, layout="mono", hot_pixels=0.0, trails=0, degraded=0.25)
    degraded = {int(k): v["kind"] for k, v in bad.parameters["degraded"].items()}
    assert clear.parameters["degraded"] == {}
    assert sorted(degraded.values()) == ["clouds", "defocus", "trailing"]
    for index in range(12):
        a = fits.getdata(clear.frames[index]).astype(float)
        b = fits.getdata(bad.frames[index]).astype(float)
        kind = degraded.get(index)
        if kind is None:
            np.testing.assert_array_equal(a, b)  # good frames keep their pixels
            continue
        sky_a, sky_b = np.median(a), np.median(b)
        # Peaks away from the edges: a trailed star just outside the frame may trail into it.
        peak_a, peak_b = np.max(a[24:-24, 24:-24]) - sky_a, np.max(b[24:-24, 24:-24]) - sky_b
        if kind == "clouds":
            assert (
                bad.parameters["sky"]["levels"][index][1]
                == CLOUD_SKY_FACTOR * clear.parameters["sky"]["levels"][index][1]
            )
            assert abs(sky_b / sky_a - CLOUD_SKY_FACTOR) < 0.02
            assert 0.4 < peak_b / peak_a < 0.6
        else:  # the light of a star spread over more pixels: a lower peak
            assert abs(sky_b / sky_a - 1.0) < 0.01
            assert peak_b / peak_a < 0.6
        if kind == "defocus":
            assert fits.getheader(bad.frames[index])["FWHM"] == DEFOCUS_FACTOR * bad.parameters["fwhm_px"][index]
