"""Fuzzing ingest: no header, byte sequence, compressed stream or symbolic link crashes it; every bad
file becomes a rejection."""

import gzip
import io

import numpy as np
from astropy.io import fits
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from zemosaic_dask.io import inspect_frame, read_frame_window, scan_inputs
from zemosaic_dask.plans import FrameInfo, FrameRejection

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _valid_bytes() -> bytes:
    data = np.random.default_rng(0).integers(100, 400, size=(24, 16)).astype(np.uint16)
    hdu = fits.PrimaryHDU(data)
    hdu.header.update(
        {
            "CTYPE1": "RA---TAN",
            "CTYPE2": "DEC--TAN",
            "CRVAL1": 10.0,
            "CRVAL2": 20.0,
            "CRPIX1": 8.0,
            "CRPIX2": 12.0,
            "CD1_1": -6.6e-4,
            "CD1_2": 0.0,
            "CD2_1": 0.0,
            "CD2_2": 6.6e-4,
            "INSTRUME": "Seestar S50",
            "BAYERPAT": "GRBG",
        }
    )
    buffer = io.BytesIO()
    hdu.writeto(buffer)
    return buffer.getvalue()


VALID = _valid_bytes()


def _check(path):
    result = inspect_frame(str(path))
    assert isinstance(result, (FrameInfo, FrameRejection))
    if isinstance(result, FrameRejection):
        assert result.reason and result.path == str(path)
    return result


def test_the_unfuzzed_file_is_usable(tmp_path):
    path = tmp_path / "ok.fits"
    path.write_bytes(VALID)
    assert isinstance(_check(path), FrameInfo)


@FUZZ
@given(st.binary(max_size=6000))
def test_random_bytes(tmp_path, blob):
    path = tmp_path / "random.fits"
    path.write_bytes(blob)
    assert isinstance(_check(path), FrameRejection)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=40))
def test_mutated_bytes(tmp_path, edits):
    blob = bytearray(VALID)
    for position, value in edits:
        blob[position] = value
    path = tmp_path / "mutated.fits"
    path.write_bytes(bytes(blob))
    _check(path)


NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.integers(-(10**6), 10**6))
WORDS = st.sampled_from(["RA---TAN", "DEC--TAN", "RA---SIN", "GLON-CAR", "", "XX", "RA---TAN-SIP", "DEC--TAN-SIP"])


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "CRVAL1",
                "CRVAL2",
                "CRPIX1",
                "CRPIX2",
                "CD1_1",
                "CD1_2",
                "CD2_1",
                "CD2_2",
                "CDELT1",
                "CDELT2",
                "EXPTIME",
                "BZERO",
                "BSCALE",
                "XBAYROFF",
                "YBAYROFF",
                "A_ORDER",
                "EQUINOX",
            ]
        ),
        NUMBERS,
        max_size=8,
    ),
    st.dictionaries(
        st.sampled_from(["CTYPE1", "CTYPE2", "BAYERPAT", "INSTRUME", "DATE-OBS", "RADESYS"]), WORDS, max_size=4
    ),
    st.sampled_from([(24, 16), (3, 24, 16), (24, 16, 3), (2, 3, 4), (1, 1), (4, 24, 16)]),
    st.sampled_from(["uint16", "float32", "int32", "uint8"]),
)
def test_random_headers_and_shapes(tmp_path, numbers, words, shape, dtype):
    data = (np.random.default_rng(1).random(shape) * 300).astype(dtype)
    hdu = fits.PrimaryHDU(data)
    for key, value in {**numbers, **words}.items():
        try:
            hdu.header[key] = value
        except (ValueError, TypeError):
            continue  # astropy refuses to even write that card: not a file ingest can meet
    path = tmp_path / "headers.fits"
    try:
        hdu.writeto(path, overwrite=True, output_verify="silentfix")
    except (ValueError, TypeError, OSError, fits.VerifyError):
        return
    _check(path)


def _tiled_bytes() -> bytes:
    with fits.open(io.BytesIO(VALID)) as hdul:
        tiled = fits.CompImageHDU(hdul[0].data, header=hdul[0].header, compression_type="RICE_1", tile_shape=(4, 16))
        buffer = io.BytesIO()
        fits.HDUList([fits.PrimaryHDU(), tiled]).writeto(buffer)
    return buffer.getvalue()


GZIPPED = gzip.compress(VALID)
TILED = _tiled_bytes()
EXPECTED = np.asarray(fits.getdata(io.BytesIO(VALID)), dtype=np.float32)


def _check_read(path):
    """Ingest, then read the whole frame when it was accepted: no exception either way."""
    result = _check(path)
    if isinstance(result, FrameInfo):
        height, width = result.shape
        window = read_frame_window(result, 0, height, 0, width)
        assert window.shape[-2:] == (height, width)
    return result


def test_the_compressed_files_are_usable(tmp_path):
    for name, blob in (("ok.fits.gz", GZIPPED), ("ok.fits.fz", TILED)):
        path = tmp_path / name
        path.write_bytes(blob)
        info = _check_read(path)
        assert isinstance(info, FrameInfo)
        np.testing.assert_array_equal(read_frame_window(info, 0, 24, 0, 16), EXPECTED)


@FUZZ
@given(st.sampled_from(["gz", "fz"]), st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_compressed_files(tmp_path, kind, fraction):
    blob = GZIPPED if kind == "gz" else TILED
    path = tmp_path / f"truncated.fits.{kind}"
    path.write_bytes(blob[: int(len(blob) * fraction)])
    result = _check_read(path)
    if isinstance(result, FrameInfo):  # only the padding after the last tile or row was cut
        np.testing.assert_array_equal(read_frame_window(result, 0, 24, 0, 16), EXPECTED)


@FUZZ
@given(
    st.sampled_from(["gz", "fz"]),
    st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=20),
)
@example("gz", [(0.1315692420413701, 110)])  # astropy fails with an AttributeError inside fits.open
def test_corrupt_compressed_files(tmp_path, kind, edits):
    blob = bytearray(GZIPPED if kind == "gz" else TILED)
    for where, value in edits:
        blob[int(where * len(blob))] = value
    path = tmp_path / f"corrupt.fits.{kind}"
    path.write_bytes(bytes(blob))
    _check_read(path)


def test_corrupt_tiles_of_a_compressed_frame(tmp_path):
    # Garbage written every 7 bytes over the last block, where the heap of compressed tiles lies.
    path = tmp_path / "tiles.fits.fz"
    for position in range(len(TILED) - 2880, len(TILED), 7):
        blob = bytearray(TILED)
        blob[position : position + 4] = b"\xff\x00\xa5\x5a"
        path.write_bytes(bytes(blob))
        _check_read(path)


def test_broken_symbolic_links(tmp_path):
    (tmp_path / "dangling.fits").symlink_to(tmp_path / "gone.fits")
    (tmp_path / "loop.fits").symlink_to(tmp_path / "loop.fits")
    (tmp_path / "ok.fits").write_bytes(VALID)
    (tmp_path / "link.fits.gz").symlink_to(tmp_path / "ok.fits")  # a plain file behind a .gz name
    files, missing = scan_inputs([tmp_path])
    assert files == [str(tmp_path / "ok.fits")]
    assert sorted(path for path, _ in missing) == [str(tmp_path / "dangling.fits"), str(tmp_path / "loop.fits")]
    assert all(reason for _, reason in missing)
    for name in ("dangling.fits", "loop.fits"):  # given straight to ingest, they are rejections too
        assert isinstance(_check(tmp_path / name), FrameRejection)
    assert isinstance(_check_read(tmp_path / "link.fits.gz"), FrameInfo)
