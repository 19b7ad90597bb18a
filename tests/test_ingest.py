"""Ingest: every unusable file becomes a rejection with its reason; inputs stay untouched."""

import hashlib

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from zemosaic_dask.io import inspect_frame, read_frame_window, scan_inputs
from zemosaic_dask.plans import FrameInfo, FrameRejection


def _wcs_header(shape=(64, 48)):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [83.8, -5.4]
    w.wcs.crpix = [shape[1] / 2, shape[0] / 2]
    w.wcs.cd = [[-2.4 / 3600, 0], [0, 2.4 / 3600]]
    return w.to_header()


def _raw_frame(path, *, wcs=True, instrument="Seestar S50", bayer="GRBG", data=None):
    rng = np.random.default_rng(0)
    values = data if data is not None else rng.integers(200, 400, size=(64, 48)).astype(np.uint16)
    hdu = fits.PrimaryHDU(values)  # uint16 is stored as int16 with BZERO = 32768
    if wcs:
        hdu.header.extend(_wcs_header(values.shape[-2:]), update=True)
    hdu.header["INSTRUME"] = instrument
    if bayer:
        hdu.header["BAYERPAT"] = bayer
    hdu.header["EXPTIME"] = 10.0
    hdu.writeto(path)
    return path


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    good = _raw_frame(folder / "good.FITS")
    _raw_frame(folder / "sub" / "good2.fit", bayer=None)
    _raw_frame(folder / "nowcs.fits", wcs=False)
    _raw_frame(folder / "nan.fits", bayer=None, data=np.full((64, 48), np.nan, np.float32))
    _raw_frame(folder / "flat.fits", bayer=None, data=np.full((64, 48), 7.0, np.float32))
    (folder / "notes.fits").write_text("this is not a FITS file\n")
    corrupt = folder / "corrupt.fits"
    corrupt.write_bytes(good.read_bytes()[: 2880 + 100])
    (folder / "readme.txt").write_text("ignored")
    return folder


def test_scan_is_recursive_case_insensitive_and_skips_output(inputs):
    (inputs / "out").mkdir()
    _raw_frame(inputs / "out" / "mosaic.fits")
    files, missing = scan_inputs([inputs, inputs / "nope"], exclude=inputs / "out")
    names = sorted(p.split("/")[-1] for p in files)
    assert names == ["corrupt.fits", "flat.fits", "good.FITS", "good2.fit", "nan.fits", "notes.fits", "nowcs.fits"]
    assert missing and missing[0][1] == "file or folder does not exist"


def test_each_bad_file_rejected_with_reason_and_inputs_unchanged(inputs):
    before = {p: _digest(p) for p in inputs.rglob("*") if p.is_file()}
    files, _ = scan_inputs([inputs])
    results = {p.split("/")[-1]: inspect_frame(p) for p in files}
    after = {p: _digest(p) for p in inputs.rglob("*") if p.is_file()}
    assert before == after
    assert isinstance(results["good.FITS"], FrameInfo)
    reasons = {name: r.reason for name, r in results.items() if isinstance(r, FrameRejection)}
    assert "no WCS" in reasons["nowcs.fits"]
    assert "NaN" in reasons["nan.fits"]
    assert "constant" in reasons["flat.fits"]
    assert "not a FITS file" in reasons["notes.fits"] or "unreadable" in reasons["notes.fits"]
    assert "corrupt.fits" in reasons


def test_layouts_and_bayer_defaults(inputs, tmp_path):
    good = inspect_frame(str(inputs / "good.FITS"))
    assert good.layout == "bayer" and good.bayer_pattern == "GRBG" and good.pixel_scale == pytest.approx(2.4)
    # A Seestar integer frame without BAYERPAT is debayered as GRBG.
    no_key = inspect_frame(str(inputs / "sub" / "good2.fit"))
    assert no_key.layout == "bayer" and no_key.bayer_pattern == "GRBG"
    # A float 2-D frame without the keyword from another camera is mono.
    mono = _raw_frame(
        tmp_path / "mono.fits",
        instrument="QHY",
        bayer=None,
        data=np.random.default_rng(1).normal(100, 5, (64, 48)).astype(np.float32),
    )
    assert inspect_frame(str(mono)).layout == "mono"
    # Colour cubes, channels first and last.
    cube = np.random.default_rng(2).normal(100, 5, (3, 64, 48)).astype(np.float32)
    chw = _raw_frame(tmp_path / "chw.fits", bayer=None, data=cube)
    hwc = _raw_frame(tmp_path / "hwc.fits", bayer=None, data=np.moveaxis(cube, 0, -1).copy())
    info_chw, info_hwc = inspect_frame(str(chw)), inspect_frame(str(hwc))
    assert info_chw.layout == "chw" and info_chw.shape == (64, 48)
    assert info_hwc.layout == "hwc" and info_hwc.shape == (64, 48)
    np.testing.assert_allclose(read_frame_window(info_hwc, 2, 10, 3, 9), cube[:, 2:10, 3:9])
    bad = _raw_frame(tmp_path / "bad.fits", bayer=None, data=np.ones((4, 64, 48), np.float32))
    assert "unexpected dimensions" in inspect_frame(str(bad)).reason


def test_window_read_applies_bzero(inputs):
    info = inspect_frame(str(inputs / "good.FITS"))
    window = read_frame_window(info, 4, 8, 2, 6)
    full = fits.getdata(inputs / "good.FITS").astype(np.float32)
    np.testing.assert_array_equal(window, full[4:8, 2:6])
    assert window.min() >= 200
    assert fits.getheader(inputs / "good.FITS")["BZERO"] == 32768


def test_ingest_stores_the_sky_geometry_the_planners_use(inputs):
    info = inspect_frame(str(inputs / "good.FITS"))
    bare = FrameInfo.from_dict({**info.to_dict(), "sky_center": [], "sky_border": []})
    assert len(info.sky_border) == 32
    np.testing.assert_array_equal(info.footprint_world(), bare.footprint_world())
    assert info.center_world() == bare.center_world()
    assert FrameInfo.from_dict(info.to_dict()) == info
    # Another sampling of the border is computed from the WCS.
    assert info.footprint_world(points_per_edge=3).shape == (12, 2)
