"""Plate solving of frames without a WCS with astrometry.net's ``solve-field``.

The solver never sees the input file: the frame's pixels are read (read-only), reduced to
a clean luminance image and written into a private temporary folder, and ``solve-field``
runs there. The solution is kept in a cache, ``<cache_dir>/<sha256 of the input bytes>.wcs``
(a FITS header file as ``solve-field`` writes it, readable by ``wcsinfo``), so a re-run
of the same inputs never solves twice and the input file is never touched.

Runtime is bounded by the scale and position hints from the header (``FOCALLEN``,
``XPIXSZ``, ``RA``/``DEC`` or ``OBJCTRA``/``OBJCTDEC``), a 2x downsampling before source
extraction, ``--cpulimit`` and a wall-clock timeout that kills the solver's whole process
group.

Install the solver and index files suited to a Seestar field (~1.3 x 0.7 deg) with
``deploy/plate-solve/install.sh`` (Debian packages ``astrometry.net`` and
``astrometry-data-tycho2-*``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.coordinates import Angle
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS, FITSFixedWarning
from scipy.ndimage import maximum_filter, median_filter

from ..errors import FrameError

__all__ = [
    "NO_SOLVER",
    "SOLVER",
    "SolveHints",
    "cached_wcs_path",
    "file_sha256",
    "find_solver",
    "hints_from_header",
    "solve_frame",
    "solver_image",
]

log = logging.getLogger(__name__)

SOLVER = "solve-field"
NO_SOLVER = "no WCS and no plate solver"
_PLATE_SCALE = 206.264806  # arcsec/px = 206.265 * pixel size [um] / focal length [mm]
_HOT_PIXEL_SIGMA = 5.0
_HOT_PIXEL_NEIGHBOUR_FRACTION = 0.25


@dataclass(frozen=True)
class SolveHints:
    """What the header says about where the frame points and its pixel scale.

    Attributes
    ----------
    ra, dec : float or None
        Approximate field centre in degrees; the search is limited to ``radius_deg`` around it.
    radius_deg : float
        Search radius around ``(ra, dec)`` in degrees (mount pointing error plus half the field).
    pixel_scale : float or None
        Approximate pixel scale in arcsec/px; the search accepts ``pixel_scale * (1 +- scale_tolerance)``.
    scale_tolerance : float
        Relative tolerance on the pixel scale.
    """

    ra: float | None = None
    dec: float | None = None
    radius_deg: float = 5.0
    pixel_scale: float | None = None
    scale_tolerance: float = 0.1

    def describe(self) -> str:
        """Short human-readable summary, for log lines and rejection reasons."""
        parts = []
        if self.ra is not None and self.dec is not None:
            parts.append(f"within {self.radius_deg:g} deg of RA {self.ra:.4f} Dec {self.dec:+.4f}")
        if self.pixel_scale is not None:
            parts.append(f"scale {self.pixel_scale:.3f} arcsec/px +-{100 * self.scale_tolerance:g}%")
        return "searched " + ", ".join(parts) if parts else "blind search: no RA/DEC, FOCALLEN or XPIXSZ in the header"

    def solver_arguments(self) -> list[str]:
        """``solve-field`` options that restrict the search to these hints."""
        args: list[str] = []
        if self.pixel_scale is not None:
            low = self.pixel_scale * (1.0 - self.scale_tolerance)
            high = self.pixel_scale * (1.0 + self.scale_tolerance)
            args += ["--scale-units", "arcsecperpix", "--scale-low", f"{low:.6g}", "--scale-high", f"{high:.6g}"]
        if self.ra is not None and self.dec is not None:
            args += ["--ra", f"{self.ra:.8f}", "--dec", f"{self.dec:.8f}", "--radius", f"{self.radius_deg:.6g}"]
        return args


def _header_float(header: Mapping[str, object], key: str) -> float | None:
    value = header.get(key)
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _header_angle(header: Mapping[str, object], key: str, unit: str) -> float | None:
    value = header.get(key)
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return float(Angle(value.strip().replace(" ", ":"), unit=unit).degree)
    except ValueError:
        return None


def hints_from_header(header: Mapping[str, object]) -> SolveHints:
    """Read the solver's position and scale hints from a FITS header.

    Parameters
    ----------
    header : Mapping
        A FITS header (or any mapping of keywords). ``RA``/``DEC`` in degrees (Seestar,
        N.I.N.A.) or ``OBJCTRA`` (hours, sexagesimal) / ``OBJCTDEC`` (degrees, sexagesimal)
        give the position; ``FOCALLEN`` (mm) and ``XPIXSZ`` (um, after binning) give the scale
        ``206.265 * XPIXSZ / FOCALLEN`` arcsec/px.

    Returns
    -------
    SolveHints
        Missing or unreadable keywords leave the matching hint unset.
    """
    ra, dec = _header_float(header, "RA"), _header_float(header, "DEC")
    if ra is None or dec is None:
        ra, dec = _header_angle(header, "OBJCTRA", "hourangle"), _header_angle(header, "OBJCTDEC", "deg")
    if ra is None or dec is None or not -90.0 <= dec <= 90.0:
        ra = dec = None
    focal, pixel = _header_float(header, "FOCALLEN"), _header_float(header, "XPIXSZ")
    scale = _PLATE_SCALE * pixel / focal if focal and pixel and focal > 0 and pixel > 0 else None
    return SolveHints(ra=None if ra is None else ra % 360.0, dec=dec, pixel_scale=scale)


def find_solver() -> str | None:
    """Return the path of astrometry.net's ``solve-field`` on ``PATH``, or None."""
    return shutil.which(SOLVER)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes (the key of its cached plate solution)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_wcs_path(path: str | os.PathLike[str], cache_dir: str | os.PathLike[str]) -> Path:
    """Where the plate solution of ``path`` is cached: ``<cache_dir>/<sha256>.wcs``."""
    return Path(cache_dir) / f"{file_sha256(path)}.wcs"


def _luminance(data: np.ndarray) -> np.ndarray:
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 3:
        axis = 0 if data.shape[0] == 3 else -1
        data = data.sum(axis=axis, dtype=np.float32)
    if data.ndim != 2:
        raise FrameError(f"cannot plate-solve an image of shape {data.shape}: expected 2-D or a 3-plane cube")
    return data


def solver_image(data: np.ndarray) -> np.ndarray:
    """Return the clean float32 luminance image that ``solve-field`` is given.

    Colour cubes are summed over their planes. The image is binned 2x2 (one Bayer cell
    becomes one luminance value, so a raw Bayer frame loses its colour checkerboard),
    isolated hot pixels of the binned image are replaced by their 3x3 median (a hot pixel
    is brighter than every neighbour by far more than a star's core is), and each binned
    value is repeated over its 2x2 cell so that pixel coordinates stay those of the frame.

    Parameters
    ----------
    data : numpy.ndarray
        ``(H, W)`` raw or mono frame, or a ``(3, H, W)`` / ``(H, W, 3)`` colour cube.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float32 image without NaN.
    """
    image = _luminance(data)
    height, width = image.shape
    finite = np.isfinite(image)
    if not finite.any():
        raise FrameError("cannot plate-solve an image whose pixels are all NaN")
    image = np.where(finite, image, np.median(image[finite]))
    binned = image[: height // 2 * 2, : width // 2 * 2].reshape(height // 2, 2, width // 2, 2).sum(axis=(1, 3))
    median = median_filter(binned, size=3, mode="nearest")
    ring = np.ones((3, 3), dtype=bool)
    ring[1, 1] = False
    brightest_neighbour = maximum_filter(binned, footprint=ring, mode="nearest")
    excess = binned - median
    sigma = 1.4826 * float(np.median(np.abs(excess - np.median(excess))))
    hot = (excess > _HOT_PIXEL_SIGMA * sigma) & (brightest_neighbour - median < _HOT_PIXEL_NEIGHBOUR_FRACTION * excess)
    cleaned = np.where(hot, median, binned)
    full = np.repeat(np.repeat(cleaned, 2, axis=0), 2, axis=1)
    out = np.pad(full, ((0, height - full.shape[0]), (0, width - full.shape[1])), mode="edge")
    return out.astype(np.float32)


def _read_image(path: str, hdu: int | None) -> tuple[np.ndarray, fits.Header]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        with fits.open(path, mode="readonly", memmap=False, lazy_load_hdus=True) as hdul:
            if hdu is None:
                hdu = next((i for i, h in enumerate(hdul) if h.is_image and h.header.get("NAXIS", 0) >= 2), None)
                if hdu is None:
                    raise FrameError("no image data in any HDU")
            return np.asarray(hdul[hdu].data, dtype=np.float32), hdul[hdu].header.copy()


def _read_cached(cache: Path) -> str | None:
    try:
        header = fits.Header.fromfile(str(cache))
        return _wcs_header_string(header)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, FrameError) as err:
        log.warning("ignoring unreadable cached plate solution %s (%s); solving again", cache, err)
        return None


def _without_null_sip(header: fits.Header) -> fits.Header:
    """Drop a SIP distortion whose forward coefficients are all zero (``--tweak-order 1``)."""
    header = header.copy()
    forward = [key for key in header if key[:2] in ("A_", "B_") and not key.endswith("ORDER")]
    if not forward or any(float(header[key]) != 0.0 for key in forward):
        return header
    for key in [key for key in header if key.split("_")[0] in ("A", "B", "AP", "BP")]:
        del header[key]
    for axis in ("CTYPE1", "CTYPE2"):
        if isinstance(header.get(axis), str):
            header[axis] = header[axis].replace("-SIP", "")
    return header


def _wcs_header_string(header: fits.Header) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(_without_null_sip(header), relax=True).celestial
    if not wcs.has_celestial:
        raise FrameError("the plate solution holds no celestial WCS")
    return wcs.to_header_string(relax=True)


def _run_solver(command: list[str], cwd: str, timeout_s: float) -> tuple[int, str]:
    """Run ``command`` in its own process group; kill the whole group past ``timeout_s``."""
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # the group ended on its own between the timeout and the kill
        process.communicate()
        raise
    return process.returncode, output


def _solve(path: str, solver: str, timeout_s: float, hints: SolveHints | None, hdu: int | None, workdir: str) -> Path:
    data, header = _read_image(path, hdu)
    hints = hints_from_header(header) if hints is None else hints
    image_path = os.path.join(workdir, "frame.fits")
    fits.PrimaryHDU(solver_image(data)).writeto(image_path)
    command = [
        solver,
        image_path,
        "--dir",
        workdir,
        "--temp-dir",
        workdir,
        "--new-fits",
        "none",
        "--overwrite",
        "--no-plots",
        "--no-verify",
        "--crpix-center",
        "--tweak-order",
        "1",  # TAN: ~30 Tycho-2 stars per Seestar field cannot pin a SIP polynomial at the corners
        "--downsample",
        "2",
        "--cpulimit",
        str(max(1, math.ceil(timeout_s))),
        *hints.solver_arguments(),
    ]
    log.debug("plate solving %s: %s", path, " ".join(command))
    started = time.perf_counter()
    try:
        status, output = _run_solver(command, workdir, timeout_s)
    except subprocess.TimeoutExpired as err:
        raise FrameError(
            f"no WCS and plate solving timed out after {timeout_s:g} s (raise zemosaic.ingest.solve-timeout-s)"
        ) from err
    except OSError as err:
        raise FrameError(f"no WCS and the plate solver {solver} could not start: {err}") from err
    solution = Path(workdir) / "frame.wcs"
    if status != 0:
        last = next((line.strip() for line in reversed(output.splitlines()) if line.strip()), "no output")
        raise FrameError(f"no WCS and plate solving failed: {SOLVER} exited with status {status} ({last[:200]})")
    if not solution.is_file():
        raise FrameError(f"no WCS and plate solving failed: no solution found ({hints.describe()})")
    log.info("plate solved %s in %.1f s", path, time.perf_counter() - started)
    return solution


def solve_frame(
    path: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    *,
    timeout_s: float = 60.0,
    hints: SolveHints | None = None,
    hdu: int | None = None,
) -> str:
    """Plate-solve one frame, or reuse its cached solution, and return the WCS header.

    Parameters
    ----------
    path : path-like
        The input frame. It is only read: ``solve-field`` works on a cleaned copy of its
        pixels (see :func:`solver_image`) in a temporary folder.
    cache_dir : path-like
        Folder of cached solutions (``<output>/wcs-cache``), created if needed. A solution
        is stored as ``<sha256 of the input bytes>.wcs`` and reused whenever it exists,
        even when the solver is no longer installed.
    timeout_s : float
        Wall-clock limit of the solve; the solver's process group is killed past it.
    hints : SolveHints, optional
        Position and scale hints; read from the frame's header when omitted.
    hdu : int, optional
        Index of the image HDU; the first HDU holding an image when omitted.

    Returns
    -------
    str
        The celestial WCS header (``WCS.to_header_string``), TAN with its reference pixel
        at the frame centre.

    Raises
    ------
    FrameError
        ``"no WCS and no plate solver"`` when ``solve-field`` is not on ``PATH`` and nothing
        is cached, or a reason starting with ``"no WCS and plate solving"`` when the solve
        fails or times out.
    """
    if not (timeout_s > 0 and math.isfinite(timeout_s)):
        raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    path = os.fspath(path)
    cache = cached_wcs_path(path, cache_dir)
    cached = _read_cached(cache)
    if cached is not None:
        log.debug("reusing the cached plate solution %s for %s", cache, path)
        return cached
    solver = find_solver()
    if solver is None:
        raise FrameError(NO_SOLVER)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="solve-", dir=cache.parent) as workdir:
        solution = _solve(path, solver, float(timeout_s), hints, hdu, workdir)
        header_string = _wcs_header_string(fits.Header.fromfile(str(solution)))
        staged = Path(workdir) / "cached.wcs"
        shutil.copyfile(solution, staged)
        os.replace(staged, cache)  # atomic: concurrent solves of the same bytes leave one whole file
    return header_string
