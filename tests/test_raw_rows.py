"""Direct row reads of plain 2-D FITS images equal astropy's values for every supported storage."""

import gzip
import hashlib
import os

import numpy as np
import pytest
from astropy.io import fits

from zemosaic_dask.io import read_frame_window
from zemosaic_dask.io.raw_rows import raw_layout, read_rows
from zemosaic_dask.plans import FrameInfo

RNG = np.random.default_rng(11)
STORAGES = {
    "uint8": RNG.integers(0, 255, size=(23, 31)).astype(np.uint8),
    "int16": RNG.integers(-30000, 30000, size=(23, 31)).astype(np.int16),
    "uint16 (BZERO 32768)": RNG.integers(0, 65535, size=(23, 31)).astype(np.uint16),
    "int32": RNG.integers(-(2**31), 2**31 - 1, size=(23, 31)).astype(np.int32),
    "float32": RNG.normal(0, 1e5, size=(23, 31)).astype(np.float32),
    "float64": RNG.normal(0, 1e5, size=(23, 31)),
}


def _frame(path, shape) -> FrameInfo:
    return FrameInfo(path=str(path), hdu=0, shape=shape, layout="mono", bayer_pattern=None, wcs_header="")


@pytest.mark.parametrize("name", list(STORAGES))
def test_direct_read_equals_astropy(tmp_path, name):
    data = STORAGES[name]
    path = tmp_path / "image.fits"
    fits.PrimaryHDU(data).writeto(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    layout = raw_layout(str(path), 0)
    assert layout is not None and layout.shape == data.shape
    expected = np.asarray(fits.getdata(path), dtype=np.float32)
    got = read_frame_window(_frame(path, data.shape), 3, 17, 5, 29)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected[3:17, 5:29])
    np.testing.assert_array_equal(read_rows(str(path), layout, 0, 23), expected)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_images_that_do_not_qualify_are_read_through_astropy(tmp_path):
    data = RNG.integers(0, 1000, size=(12, 9)).astype(np.int16)
    scaled = fits.PrimaryHDU(data)
    scaled.header["BSCALE"] = 2.0
    blank = fits.PrimaryHDU(data)
    blank.header["BLANK"] = -1
    extension = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data.astype(np.float32))])
    for name, hdul, index in (("scaled", scaled, 0), ("blank", blank, 0), ("extension", extension, 1)):
        path = tmp_path / f"{name}.fits"
        hdul.writeto(path)
        layout = raw_layout(str(path), index)
        if name == "extension":  # an image extension qualifies, at its own offset
            assert layout is not None and layout.offset > 2880
        else:
            assert layout is None
        frame = FrameInfo(path=str(path), hdu=index, shape=(12, 9), layout="mono", bayer_pattern=None, wcs_header="")
        expected = np.asarray(fits.getdata(path, ext=index), dtype=np.float32)[2:7, 1:8]
        np.testing.assert_array_equal(read_frame_window(frame, 2, 7, 1, 8), expected)


def test_a_replaced_file_is_described_again(tmp_path):
    path = tmp_path / "image.fits"
    fits.PrimaryHDU(np.zeros((8, 8), np.float32)).writeto(path)
    first = raw_layout(str(path), 0)
    fits.PrimaryHDU(np.ones((10, 6), np.uint16)).writeto(path, overwrite=True)
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 1_000_000))
    second = raw_layout(str(path), 0)
    assert first.shape == (8, 8) and second.shape == (10, 6) and second.zero == 32768.0
    np.testing.assert_array_equal(read_rows(str(path), second, 0, 10), np.ones((10, 6), np.float32))


def test_truncated_data_is_an_error(tmp_path):
    path = tmp_path / "image.fits"
    fits.PrimaryHDU(np.zeros((64, 64), np.float32)).writeto(path)
    layout = raw_layout(str(path), 0)
    with open(path, "r+b") as handle:
        handle.truncate(layout.offset + 100)
    with pytest.raises(OSError, match="truncated"):
        read_rows(str(path), layout, 0, 64)
    with pytest.raises(ValueError, match="outside"):
        read_rows(str(path), layout, 0, 65)


def test_the_direct_path_is_chosen_by_content_not_by_name(tmp_path):
    data = RNG.integers(0, 65535, size=(20, 14)).astype(np.uint16)
    plain = tmp_path / "plain.fits"
    fits.PrimaryHDU(data).writeto(plain)
    # A gzip stream named .fits and a plain file named .fits.gz.
    gzipped = tmp_path / "gzip-named-plain.fits"
    gzipped.write_bytes(gzip.compress(plain.read_bytes()))
    misnamed = tmp_path / "plain-named.fits.gz"
    misnamed.write_bytes(plain.read_bytes())
    tiled = tmp_path / "tiled.fits"  # tile-compressed, without the .fz name
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, compression_type="RICE_1")]).writeto(tiled)
    assert raw_layout(str(gzipped), 0) is None and raw_layout(str(tiled), 1) is None
    assert raw_layout(str(misnamed), 0) == raw_layout(str(plain), 0) is not None
    expected = data[4:15, 3:11].astype(np.float32)
    for path, index in ((plain, 0), (gzipped, 0), (misnamed, 0), (tiled, 1)):
        frame = FrameInfo(path=str(path), hdu=index, shape=(20, 14), layout="mono", bayer_pattern=None, wcs_header="")
        np.testing.assert_array_equal(read_frame_window(frame, 4, 15, 3, 11), expected, err_msg=path.name)
