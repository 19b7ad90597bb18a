"""The quality gate end to end: on a night with 15 % degraded frames the mosaic is that of the good frames."""

import numpy as np
import pytest
from e2e import run, star_flux_ratios, truth_on

from zemosaic_dask.tasks.star_quality import measure_frame_quality
from zemosaic_dask.testing import simulate_seestar

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    out = tmp_path_factory.mktemp("degraded-night")
    result = simulate_seestar(out, 40, 21, scale=0.25, degraded=0.15)
    degraded = {int(k) for k in result.parameters["degraded"]}
    assert len(degraded) >= 4
    return out, [str(p) for p in result.frames], degraded


def _mad_and_fwhm(mosaic, sim):
    median, ratios = star_flux_ratios(mosaic, truth_on(mosaic, sim))
    green = ratios[:, 1] if ratios.ndim == 2 else ratios
    mad = float(np.median(np.abs(green - np.median(green))))
    image = np.where(np.isfinite(mosaic.image), mosaic.image, np.nanmedian(mosaic.image))
    return median, mad, measure_frame_quality(image, "chw").fwhm_px


def test_the_gated_mosaic_matches_the_good_frames_alone(night, tmp_path):
    sim, frames, degraded = night
    gated = run(frames, tmp_path / "gated", mode="mosaic-first")
    good = [f for i, f in enumerate(frames) if i not in degraded]
    alone = run(good, tmp_path / "good", mode="mosaic-first", **{"quality.enabled": False})
    everything = run(frames, tmp_path / "all", mode="mosaic-first", **{"quality.enabled": False})
    rejected = {r["path"] for r in gated.report["inputs"]["rejected"] if r["reason"].startswith("quality gate")}
    assert len(rejected & {frames[i] for i in degraded}) >= 0.95 * len(degraded)
    assert not rejected - {frames[i] for i in degraded}
    median_g, mad_g, fwhm_g = _mad_and_fwhm(gated, sim)
    _, mad_a, fwhm_a = _mad_and_fwhm(alone, sim)
    _, mad_all, fwhm_all = _mad_and_fwhm(everything, sim)
    assert abs(mad_g - mad_a) <= 0.05 * mad_a and abs(fwhm_g - fwhm_a) <= 0.05 * fwhm_a
    assert np.all(np.abs(np.asarray(median_g) - 1.0) < 0.02)
    # Without the gate the degraded frames reach the mosaic: its stars are wider or scatter more.
    assert fwhm_all > fwhm_a * 1.02 or mad_all > mad_a * 1.05, (fwhm_all, fwhm_a, mad_all, mad_a)
