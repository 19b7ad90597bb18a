"""The threaded RGBA PNG writer: any decoder reads back the pixels it was given."""

import zlib

import numpy as np
import pytest
from PIL import Image

from zemosaic_dask.io import png_rgba
from zemosaic_dask.io.png_rgba import write_png_rgba


def _pixels(height, width, seed=0):
    """Smooth ramps with noise and a transparent corner: values that wrap the Up filter's modulo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    rgba = np.empty((height, width, 4), dtype=np.uint8)
    rgba[..., 0] = (x * 7 + y) % 256
    rgba[..., 1] = rng.integers(0, 256, (height, width))
    rgba[..., 2] = (255 - y * 3) % 256
    rgba[..., 3] = 255
    rgba[: height // 4, : width // 5, 3] = 0
    return rgba


@pytest.mark.parametrize(("height", "width", "threads"), [(1, 1, None), (37, 23, None), (700, 600, 3), (701, 599, 8)])
def test_pillow_reads_back_the_pixels(tmp_path, monkeypatch, height, width, threads):
    monkeypatch.setattr(png_rgba, "_MIN_PIECE_BYTES", 4096)  # small images cut into as many pieces as threads
    rgba = _pixels(height, width)
    write_png_rgba(tmp_path / "x.png", rgba, threads=threads)
    with Image.open(tmp_path / "x.png") as image:
        assert image.mode == "RGBA" and image.size == (width, height)
        np.testing.assert_array_equal(np.asarray(image), rgba)


def _idat_stream(path):
    data = path.read_bytes()
    position, stream = 8, b""
    while position < len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        if kind == b"IDAT":
            stream += data[position + 8 : position + 8 + length]
        position += 12 + length
    return stream


def test_pieces_compressed_on_threads_make_one_zlib_stream(tmp_path):
    """Three pieces of 1.4 MB: zlib's own decoder accepts the joined stream and its checksum."""
    rgba = _pixels(1100, 1000, seed=1)
    write_png_rgba(tmp_path / "x.png", rgba, threads=3)
    filtered = zlib.decompress(_idat_stream(tmp_path / "x.png"))  # raises on a bad stream or Adler-32
    lines = np.frombuffer(filtered, dtype=np.uint8).reshape(1100, 1 + 1000 * 4)
    assert (lines[:, 0] == 2).all()  # every row filtered "Up"
    restored = np.cumsum(lines[:, 1:], axis=0, dtype=np.uint64) % 256  # undo the filter
    np.testing.assert_array_equal(restored.astype(np.uint8).reshape(1100, 1000, 4), rgba)


NOT_RGBA = [np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 4), np.uint16), np.zeros((0, 4, 4), np.uint8)]


@pytest.mark.parametrize("bad", NOT_RGBA)
def test_refuses_what_is_not_rgba_pixels(tmp_path, bad):
    with pytest.raises(ValueError, match="RGBA|at least one pixel"):
        write_png_rgba(tmp_path / "x.png", bad)
