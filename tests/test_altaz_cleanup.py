"""Alt-az edge cleanup end to end: a simulated alt-az session is cleaned, an equatorial one is not touched."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from astropy.io import fits
from e2e import run

CLEAN = {"mode": "mosaic-first", "grid.chunk": 128}


def _alpha(out) -> np.ndarray:
    with fits.open(out / "mosaic.fits") as hdul:
        return np.asarray(hdul["ALPHA"].data)


@pytest.fixture(scope="module")
def altaz_runs(seestar_set, tmp_path_factory):
    """The simulated session (EQMODE 0, rotated frames) with the cleanup on ``auto`` and off."""
    _, frames = seestar_set
    base = tmp_path_factory.mktemp("altaz")
    cleaned = run(frames, base / "auto", **CLEAN, **{"altaz.cleanup": "auto"})
    plain = run(frames, base / "off", **CLEAN, **{"altaz.cleanup": False})
    return cleaned, plain


def test_auto_cleans_an_alt_az_session_and_the_plan_says_why(altaz_runs):
    cleaned, _ = altaz_runs
    section = json.loads((cleaned.out / "plan.json").read_text())["sections"]["altaz"]
    assert section["enabled"] and "EQMODE alt-az" in section["reason"]
    assert section["mounts"]["altaz"] == len(cleaned.report["inputs"]["used"])
    report = cleaned.report["altaz"]
    assert report["enabled"] and report["masked_pixels"] > 0
    covered = int((cleaned.coverage > 0).sum())
    assert report["covered_pixels"] == covered
    assert report["masked_fraction"] == pytest.approx(report["masked_pixels"] / covered, abs=1e-6)
    assert "altaz-cleanup" in cleaned.report["timings"]


def test_the_ragged_edges_are_masked_and_no_kept_pixel_is_below_the_threshold(altaz_runs):
    cleaned, plain = altaz_runs
    threshold = cleaned.report["altaz"]["threshold"]
    assert threshold == pytest.approx(max(2.0, 0.3 * cleaned.report["altaz"]["typical_coverage"]))
    kept = np.all(np.isfinite(cleaned.image), axis=0)
    alpha = _alpha(cleaned.out)
    np.testing.assert_array_equal(alpha > 0, kept)
    assert np.all(cleaned.coverage[kept] >= threshold)
    thin = (plain.coverage > 0) & (plain.coverage < threshold)
    assert thin.sum() > 1000, "the rotated frames leave thinly covered wedges along the edges"
    assert np.all(np.isfinite(plain.image[:, thin])), "without the cleanup they are in the mosaic"
    assert not kept[thin].any()
    assert int((~kept & (plain.coverage > 0)).sum()) == cleaned.report["altaz"]["masked_pixels"]
    # the soft edge is in the alpha only: the linear values kept are those of the run without cleanup
    assert np.any((alpha > 0) & (alpha < 255))
    np.testing.assert_array_equal(cleaned.image[:, kept], plain.image[:, kept])
    np.testing.assert_array_equal(cleaned.coverage, plain.coverage)


def test_an_equatorial_session_is_bit_identical_to_no_cleanup(seestar_set, tmp_path):
    _, frames = seestar_set
    copies = tmp_path / "eq"
    copies.mkdir()
    for path in frames[:12]:  # copies: the shared session's files are never edited
        shutil.copy(path, copies)
    for path in copies.glob("*.fits"):
        fits.setval(path, "EQMODE", value=1)
    eq_frames = sorted(str(p) for p in copies.glob("*.fits"))
    auto = run(eq_frames, tmp_path / "auto", **CLEAN, **{"altaz.cleanup": "auto"})
    off = run(eq_frames, tmp_path / "off", **CLEAN, **{"altaz.cleanup": False})
    section = json.loads((auto.out / "plan.json").read_text())["sections"]["altaz"]
    assert not section["enabled"] and section["mounts"]["equatorial"] == len(eq_frames)
    assert auto.report["altaz"] == {"enabled": False, "reason": "auto: no frame has EQMODE alt-az"}
    np.testing.assert_array_equal(auto.image, off.image)
    np.testing.assert_array_equal(auto.coverage, off.coverage)
    np.testing.assert_array_equal(_alpha(auto.out), _alpha(off.out))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["classic", "sds"])
def test_the_layer_modes_are_cleaned_after_their_assembly(seestar_set, tmp_path, mode):
    _, frames = seestar_set
    cleaned = run(frames, tmp_path / mode, mode=mode, **{"grid.chunk": 128, "altaz.cleanup": True})
    report = cleaned.report["altaz"]
    kept = np.all(np.isfinite(cleaned.image), axis=0)
    assert cleaned.report["mode"] == mode and report["masked_pixels"] > 0
    assert np.all(cleaned.coverage[kept] >= report["threshold"])
    assert not kept[(cleaned.coverage > 0) & (cleaned.coverage < report["threshold"])].any()
