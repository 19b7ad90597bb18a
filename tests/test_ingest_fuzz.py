"""Fuzzing ingest: no header or byte sequence crashes it; every bad file becomes a rejection."""

import io

import numpy as np
from astropy.io import fits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zemosaic_dask.io import inspect_frame
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
