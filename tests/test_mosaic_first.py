"""Mosaic-First end to end on simulated Seestar frames, checked against the truth."""

import hashlib
import shutil

import numpy as np
import pytest
from astropy.io import fits
from e2e import (
    PROCESSES,
    SYNC,
    THREADS,
    Mosaic,
    excess,
    flux_ratio,
    holes,
    hot_pixels,
    residual_rms,
    run,
    trail_pixels,
    truth_on,
)


@pytest.fixture(scope="module")
def runs(seestar_set, tmp_path_factory):
    folder, frames = seestar_set
    base = tmp_path_factory.mktemp("mosaic-first")
    return {
        "sync": run(frames, base / "sync", SYNC, mode="mosaic-first"),
        "threads": run(frames, base / "threads", THREADS, mode="mosaic-first"),
        "processes": run(frames, base / "processes", PROCESSES, mode="mosaic-first"),
        "plain-mean": run(
            frames,
            base / "plain",
            SYNC,
            **{"mode": "mosaic-first", "stack.rejection": "none", "ingest.hot-pixel-correction": False},
        ),
    }


def test_accuracy_against_truth(runs, seestar_set):
    mosaic = runs["sync"]
    truth = truth_on(mosaic, seestar_set[0])
    ratio = flux_ratio(mosaic, truth)
    assert np.all(np.abs(ratio - 1) < 0.01), f"median star flux ratio per channel {ratio}"
    assert residual_rms(mosaic, truth) < 2.0
    assert holes(mosaic, truth) == 0
    assert truth.union.sum() > 0.5 * truth.union.size  # the check covers most of the canvas
    # Coverage is the number of frames: the deepest pixel sees many frames, never more than exist.
    assert 4 <= mosaic.coverage.max() <= 32
    assert mosaic.report["mode"] == "mosaic-first" and mosaic.report["fallback"] is None


def test_schedulers_give_identical_arrays(runs):
    reference = runs["sync"]
    for name in ("threads", "processes"):
        np.testing.assert_array_equal(runs[name].image, reference.image, err_msg=name)
        np.testing.assert_array_equal(runs[name].coverage, reference.coverage, err_msg=name)
    assert runs["threads"].report["dashboard"].startswith("http")


def test_trails_and_hot_pixels_are_rejected(runs, seestar_set):
    sim = seestar_set[0]
    clean, plain = runs["sync"], runs["plain-mean"]
    truth = truth_on(clean, sim)
    trail, hot = trail_pixels(sim, clean), hot_pixels(sim, clean)
    assert len(trail) > 100 and len(hot) > 50
    # Without rejection nor hot-pixel correction both defects show (the check can fail) ...
    assert excess(plain, truth, trail) > 4.0
    assert excess(plain, truth, hot) > 1.0
    # ... and the kappa-sigma mosaic is clean there.
    assert abs(excess(clean, truth, trail)) < 1.0
    assert abs(excess(clean, truth, hot)) < 0.5
    assert clean.report["hot_pixels_fixed"] > 0


def test_bad_inputs_are_listed_and_nothing_is_lost(seestar_set, tmp_path):
    folder, frames = seestar_set
    inputs = tmp_path / "in"
    inputs.mkdir()
    for path in frames[:12]:
        shutil.copy(path, inputs)
    good = fits.open(frames[0])
    (inputs / "corrupt.fits").write_bytes(open(frames[1], "rb").read()[:5000])
    (inputs / "notes.fits").write_text("SIMPLE = not really\n")
    header = good[0].header.copy()
    for key in ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1", "CD2_2"):
        header.remove(key, ignore_missing=True)
    fits.PrimaryHDU(good[0].data, header).writeto(inputs / "nowcs.fits")
    nan_header = good[0].header.copy()
    for key in ("BZERO", "BSCALE"):
        nan_header.remove(key, ignore_missing=True)
    fits.PrimaryHDU(np.full(good[0].data.shape, np.nan, np.float32), nan_header).writeto(inputs / "allnan.fits")
    good.close()
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs.iterdir()}
    mosaic = run([str(inputs)], tmp_path / "out", SYNC, mode="mosaic-first")
    assert digests == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs.iterdir()}
    rejected = {r["path"].split("/")[-1]: r["reason"] for r in mosaic.report["inputs"]["rejected"]}
    assert set(rejected) == {"corrupt.fits", "notes.fits", "nowcs.fits", "allnan.fits"}
    assert "no WCS" in rejected["nowcs.fits"] and "NaN" in rejected["allnan.fits"]
    assert len(mosaic.report["inputs"]["used"]) == 12
    assert np.isfinite(mosaic.image).any()
    report = Mosaic.load(tmp_path / "out").report
    assert isinstance(report["timings"]["ingest"], float)
    # The client's own CPU per stage (what does not spread over workers) and its peak memory.
    client = report["client"]
    assert set(report["timings"]) <= set(client["cpu_s"]) and client["peak_rss_mib"] > 50
    assert 0 < sum(client["cpu_s"][s] for s in report["timings"]) <= client["cpu_s"]["total"]


def test_normalisation_and_weighting_use_whole_frame_coefficients(seestar_set, tmp_path):
    folder, frames = seestar_set
    shifted = tmp_path / "in"
    shifted.mkdir()
    for index, path in enumerate(frames[:12]):
        with fits.open(path) as hdul:
            data = hdul[0].data.astype(np.float64) + (200.0 if index % 2 else 0.0)  # a sky pedestal on odd frames
            fits.PrimaryHDU(data.astype(np.uint16), hdul[0].header).writeto(shifted / f"frame_{index:04d}.fits")
    inputs = sorted(str(p) for p in shifted.glob("*.fits"))
    common = {"mode": "mosaic-first", "stack.rejection": "none"}
    raw = run(inputs, tmp_path / "raw", SYNC, **common)
    matched = run(
        inputs,
        tmp_path / "matched",
        SYNC,
        **common,
        **{"stack.normalisation": "sky_mean", "stack.weighting": "noise_variance"},
    )
    truth = truth_on(raw, folder)
    sky = ~truth.stars_mask & (raw.coverage >= 2)
    # Without normalisation the pedestal of half the frames lifts the sky by ~100 ADU; with the
    # additive sky matching to frame 0 (unshifted) it is gone, in every region alike.
    assert np.median((raw.image - truth.image)[:, sky]) > 60
    assert abs(np.median((matched.image - truth.image)[:, sky])) < 5
    assert np.all(np.abs(flux_ratio(matched, truth_on(matched, folder)) - 1) < 0.02)


def test_unsupported_settings_are_refused_at_load():
    from zemosaic_dask.config import load_config
    from zemosaic_dask.errors import ConfigError

    with pytest.raises(ConfigError, match="radial-weight"):
        load_config(overrides={"stack.radial-weight": True})
    with pytest.raises(ConfigError, match="display-stretch"):
        load_config(overrides={"output.display-stretch": "log"})
    # the aesthetic product is written now: the key is accepted and reaches the products' options
    from zemosaic_dask.config.policies import finishing_options

    options = finishing_options(load_config(overrides={"output.write-aesthetic": True}))
    assert options.write_aesthetic and not options.write_display and options.enabled


def test_peak_memory_in_the_report_is_the_runs_own_not_its_parents():
    """A run started by a large parent (a notebook, a benchmark) reports its own peak memory."""
    import subprocess
    import sys

    probe = "from zemosaic_dask.execute.worker_memory import peak_rss_mib; print(peak_rss_mib())"
    parent = (
        "import subprocess, sys, numpy as np\n"
        "held = np.ones(800 * 2**20 // 8)\n"  # 800 MiB touched by the parent
        f"print(subprocess.run([sys.executable, '-c', {probe!r}], capture_output=True, text=True, check=True).stdout)"
    )
    result = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, check=True)
    child_peak = float(result.stdout)
    assert 20 < child_peak < 500  # importing the package costs ~120 MiB; the parent held 800
