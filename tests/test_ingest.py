"""Ingest: every unusable file becomes a rejection with its reason; inputs stay untouched."""

import dataclasses
import gzip
import hashlib
import json
import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from zemosaic_dask.errors import FrameError
from zemosaic_dask.io import inspect_frame, read_frame_window, scan_inputs
from zemosaic_dask.io.frames import frame_changed
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
    assert missing == [(str(inputs / "nope"), f"no such file or folder: {inputs / 'nope'}")]


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


def _compressed_copies(folder, plain):
    """``plain`` gzipped and tile-compressed (lossless RICE_1 on its 16-bit integers)."""
    gz = folder / f"{plain.stem}.fits.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    with fits.open(plain) as hdul:
        tiled = fits.CompImageHDU(hdul[0].data, header=hdul[0].header, compression_type="RICE_1")
        fz = folder / f"{plain.stem}.fits.fz"
        fits.HDUList([fits.PrimaryHDU(), tiled]).writeto(fz)
    return gz, fz


def test_compressed_frames_are_found_and_read_like_the_plain_file(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    plain = _raw_frame(folder / "frame.fits")
    gz, fz = _compressed_copies(folder, plain)
    bare = folder / "bare.fz"  # the fpack short name
    bare.write_bytes(fz.read_bytes())
    gz_fit = folder / "other.fit.gz"
    gz_fit.write_bytes(gz.read_bytes())
    files, missing = scan_inputs([folder])
    assert sorted(files) == sorted(str(p) for p in (plain, gz, fz, bare, gz_fit)) and missing == []
    reference = inspect_frame(str(plain))
    for path in (gz, fz, bare):
        info = inspect_frame(str(path))
        assert isinstance(info, FrameInfo), getattr(info, "reason", "")
        assert info.hdu == (1 if path.suffix == ".fz" else 0)
        assert (info.shape, info.layout, info.bayer_pattern) == (reference.shape, "bayer", "GRBG")
        assert info.background == reference.background and info.wcs_header == reference.wcs_header
        for window in ((0, 64, 0, 48), (5, 17, 3, 40), (63, 64, 47, 48)):
            np.testing.assert_array_equal(read_frame_window(info, *window), read_frame_window(reference, *window))


def test_float_frames_compress_losslessly_with_gzip_tiles(tmp_path):
    data = np.random.default_rng(3).normal(100, 5, (64, 48)).astype(np.float32)
    plain = _raw_frame(tmp_path / "float.fits", instrument="QHY", bayer=None, data=data)
    with fits.open(plain) as hdul:
        tiled = fits.CompImageHDU(data, header=hdul[0].header, compression_type="GZIP_1", quantize_level=0.0)
        fits.HDUList([fits.PrimaryHDU(), tiled]).writeto(tmp_path / "float.fits.fz")
    info = inspect_frame(str(tmp_path / "float.fits.fz"))
    assert info.layout == "mono" and info.hdu == 1
    np.testing.assert_array_equal(read_frame_window(info, 3, 30, 2, 45), data[3:30, 2:45])


def test_symbolic_links_are_followed_or_reported(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    target = _raw_frame(tmp_path / "elsewhere.fits")
    (folder / "linked.fits").symlink_to(target)
    (folder / "dangling.fits").symlink_to(tmp_path / "gone.fits")
    (folder / "loop.fits").symlink_to(folder / "loop2.fits")
    (folder / "loop2.fits").symlink_to(folder / "loop.fits")
    (folder / "dangling.txt").symlink_to(tmp_path / "gone.txt")  # not a frame name: ignored
    (folder / "nights").symlink_to(tmp_path, target_is_directory=True)  # a link back above: scanned once
    files, missing = scan_inputs([folder])
    assert files == [str(target)]
    reasons = dict(missing)
    assert set(reasons) == {str(folder / "dangling.fits"), str(folder / "loop.fits"), str(folder / "loop2.fits")}
    assert reasons[str(folder / "dangling.fits")].startswith("broken symbolic link")
    assert str(tmp_path / "gone.fits") in reasons[str(folder / "dangling.fits")]
    assert reasons[str(folder / "loop.fits")].startswith("symbolic link loop")
    # Given explicitly: the same reasons, and a valid link is used like its target.
    files, missing = scan_inputs([folder / "linked.fits", folder / "dangling.fits", folder / "loop.fits"])
    assert files == [str(target)]
    assert [path for path, _ in missing] == [str(folder / "dangling.fits"), str(folder / "loop.fits")]
    assert isinstance(inspect_frame(files[0]), FrameInfo)


def test_a_missing_input_is_named_in_its_reason(tmp_path):
    files, missing = scan_inputs(["nowhere/frame.fits"])
    assert files == []
    ((path, reason),) = missing
    assert path.endswith("nowhere/frame.fits") and reason == "no such file or folder: nowhere/frame.fits"


def _output_folder(folder):
    """What a run leaves in its output folder."""
    (folder / "mosaic.zarr" / "0").mkdir(parents=True)
    _raw_frame(folder / "mosaic.zarr" / "0" / "chunk.fits")
    _raw_frame(folder / "mosaic.fits")
    _raw_frame(folder / "mosaic_coverage.fits")
    (folder / "plan.json").write_text("{}")
    (folder / "report.json").write_text("{}")


def test_the_products_of_earlier_runs_are_not_inputs(tmp_path):
    folder = tmp_path / "night"
    (folder / "sub").mkdir(parents=True)
    frames = [_raw_frame(folder / "a.fits"), _raw_frame(folder / "sub" / "b.fits")]
    for name in ("run1", "run2", "run3"):  # earlier outputs, recognised by what they hold
        (folder / name).mkdir()
        _raw_frame(folder / name / "stray.fits")
    (folder / "run1" / "plan.json").write_text("{}")
    (folder / "run2" / "report.json").write_text("{}")
    (folder / "run3" / "mosaic.zarr").mkdir()
    _output_folder(folder / "sub")  # frames beside products, in a sub-folder: the whole folder is an output
    files, missing = scan_inputs([folder])
    assert files == [str(frames[0])] and missing == []
    # -o equal to the input folder: its frames are still found, its products are not.
    _output_folder(folder)
    files, _ = scan_inputs([folder], exclude=folder)
    assert files == [str(frames[0])]
    # -o inside the input folder, with nothing written yet, is skipped as before.
    (folder / "out").mkdir()
    partial = _raw_frame(folder / "out" / "partial.fits")
    assert scan_inputs([folder], exclude=folder / "out")[0] == [str(frames[0])]
    # -o above the input folder does not hide the frames.
    assert scan_inputs([folder], exclude=tmp_path)[0] == [str(frames[0]), str(partial)]
    # A product named explicitly in an output folder is a rejection; elsewhere it is a frame like any other.
    files, missing = scan_inputs([folder / "mosaic.fits", frames[0]])
    assert files == [str(frames[0])]
    assert missing[0][0] == str(folder / "mosaic.fits") and "output folder" in missing[0][1]
    stored = folder / "mosaic.zarr" / "0" / "chunk.fits"
    assert [path for path, _ in scan_inputs([stored])[1]] == [str(stored)]
    elsewhere = _raw_frame(tmp_path / "mosaic.fits")
    assert scan_inputs([elsewhere]) == ([str(elsewhere)], [])


@pytest.mark.parametrize("value", ["N/A", "", "ten seconds", True])
def test_a_non_numeric_exposure_is_unknown_not_a_rejection(tmp_path, caplog, value):
    path = _raw_frame(tmp_path / "frame.fits")
    with fits.open(path, mode="update") as hdul:
        hdul[0].header["EXPTIME"] = value
    with caplog.at_level("WARNING", logger="zemosaic_dask.io.frames"):
        info = inspect_frame(str(path))
    assert isinstance(info, FrameInfo), getattr(info, "reason", "")
    assert info.exposure == 0.0 and "EXPTIME" in info.exposure_note and "not a number" in info.exposure_note
    assert str(path) in caplog.text and "unknown exposure" in caplog.text
    assert FrameInfo.from_dict(info.to_dict()) == info
    # EXPOSURE is used when EXPTIME is unusable, without a warning.
    with fits.open(path, mode="update") as hdul:
        hdul[0].header["EXPOSURE"] = 12.5
    caplog.clear()
    with caplog.at_level("WARNING", logger="zemosaic_dask.io.frames"):
        info = inspect_frame(str(path))
    assert info.exposure == 12.5 and info.exposure_note == "" and "exposure" not in caplog.text
    # A number written as a string is still a number.
    with fits.open(path, mode="update") as hdul:
        hdul[0].header["EXPTIME"] = " 10.5 "
    assert inspect_frame(str(path)).exposure == 10.5


def _wcs_frame(path, cards):
    hdu = fits.PrimaryHDU(np.random.default_rng(4).normal(100, 5, (64, 48)).astype(np.float32))
    hdu.header.update({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 10.0, "CRVAL2": 20.0, **cards})
    hdu.header.update({"CRPIX1": 24.0, "CRPIX2": 32.0})
    hdu.writeto(path)
    return path


@pytest.mark.parametrize(
    "cards",
    [
        {"CD1_1": 0.0, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": 0.0},  # wcslib would silently use 1 deg/px
        {"CD1_1": 1e-3, "CD1_2": 1e-3, "CD2_1": 1e-3, "CD2_2": 1e-3},  # rank 1
        {"CD1_1": 6.7e-4, "CD2_2": 0.0},
        {"CDELT1": 0.0, "CDELT2": 6.7e-4},
        {"CDELT1": 6.7e-4, "CDELT2": 6.7e-4, "PC1_1": 0.0, "PC1_2": 0.0, "PC2_1": 0.0, "PC2_2": 0.0},
    ],
    ids=["zero-cd", "rank-1-cd", "zero-row", "zero-cdelt", "zero-pc"],
)
def test_a_singular_wcs_is_rejected_naming_the_file(tmp_path, cards):
    path = _wcs_frame(tmp_path / "singular.fits", cards)
    result = inspect_frame(str(path))
    assert isinstance(result, FrameRejection) and result.path == str(path)
    assert result.reason.startswith("singular WCS"), result.reason


def test_a_non_finite_wcs_matrix_is_singular(tmp_path):
    path = _wcs_frame(tmp_path / "nan.fits", {"CD1_1": 6.7e-4, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": 6.7e-4})
    blob = bytearray(path.read_bytes())
    start = blob.find(b"CD1_1   =")
    blob[start : start + 80] = b"CD1_1   =                  NAN".ljust(80)
    path.write_bytes(bytes(blob))
    assert inspect_frame(str(path)).reason.startswith("singular WCS")
    healthy = _wcs_frame(tmp_path / "ok.fits", {"CD1_1": -6.7e-4, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": 6.7e-4})
    assert isinstance(inspect_frame(str(healthy)), FrameInfo)


def test_content_fingerprints_tell_files_apart(tmp_path):
    values = np.random.default_rng(5).integers(200, 400, size=(64, 48)).astype(np.uint16)
    first = _raw_frame(tmp_path / "a.fits", data=values)
    changed = values.copy()
    changed[10, 10] += 1
    second = _raw_frame(tmp_path / "b.fits", data=changed)
    assert fits.getheader(first) == fits.getheader(second)
    a, b, again = inspect_frame(str(first)), inspect_frame(str(second)), inspect_frame(str(first))
    assert len(a.content_hash) == 32 and a.content_hash != b.content_hash
    assert again.content_hash == a.content_hash
    assert a.content_hash == hashlib.blake2b(first.read_bytes(), digest_size=16).hexdigest()
    status = os.stat(first)
    assert (a.size, a.mtime_ns) == (status.st_size, status.st_mtime_ns)
    assert FrameInfo.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    # A plan written before the fingerprints loads with empty ones.
    old = {k: v for k, v in a.to_dict().items() if k not in ("size", "mtime_ns", "content_hash", "exposure_note")}
    assert (FrameInfo.from_dict(old).size, FrameInfo.from_dict(old).content_hash) == (0, "")


def test_frame_changed_compares_size_modification_time_and_content(tmp_path):
    path = _raw_frame(tmp_path / "a.fits")
    info = inspect_frame(str(path))
    assert frame_changed(info) is None
    assert frame_changed(dataclasses.replace(info, size=0, mtime_ns=0)) is None  # an old plan: nothing to compare
    status = os.stat(path)
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000_000))
    assert frame_changed(info) is None  # touched: same bytes, not a change
    with open(path, "r+b") as handle:  # same size, one byte of the data unit changed
        handle.seek(-1, os.SEEK_END)
        last = handle.read(1)
        handle.seek(-1, os.SEEK_END)
        handle.write(bytes([last[0] ^ 0xFF]))
    assert frame_changed(info) == "modified since it was planned"
    with open(path, "ab") as handle:
        handle.write(b"\0" * 2880)
    assert frame_changed(info) == f"size changed from {info.size} to {info.size + 2880} bytes"
    path.unlink()
    assert frame_changed(info) == "missing"


def test_a_frame_truncated_after_ingest_is_an_error_naming_it(tmp_path):
    path = _raw_frame(tmp_path / "a.fits")
    info = inspect_frame(str(path))
    assert read_frame_window(info, 0, 8, 0, 8).shape == (8, 8)
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)
    with pytest.raises(FrameError, match="a.fits.*(changed|truncated) during the run"):
        read_frame_window(info, info.shape[0] - 8, info.shape[0], 0, 8)


def test_the_simulators_truth_images_are_not_taken_for_frames(tmp_path):
    from zemosaic_dask.testing import simulate_seestar

    result = simulate_seestar(tmp_path, 3, 0, scale=0.1)
    files, missing = scan_inputs([tmp_path])
    assert not missing and str(tmp_path / "truth.fits") in files
    outcomes = {os.path.basename(p): inspect_frame(p) for p in files}
    assert isinstance(outcomes["truth.fits"], FrameRejection) and "ground-truth" in outcomes["truth.fits"].reason
    assert all(isinstance(outcomes[p.name], FrameInfo) for p in result.frames)
