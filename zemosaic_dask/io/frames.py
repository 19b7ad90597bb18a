"""Reading input frames: header inspection, validation and window reads.

Files are always opened read-only; nothing is ever written next to an input.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS, FITSFixedWarning, SingularMatrixError
from astropy.wcs.utils import proj_plane_pixel_scales

from ..errors import FrameError
from ..messages import msg
from ..plans.frame_quality import FrameQuality
from ..plans.frames import SEESTAR_TOKENS, FrameInfo, FrameRejection
from ..tasks.debayer import BAYER_PATTERNS
from ..tasks.star_quality import measure_frame_quality
from .fingerprint import file_fingerprint, frame_changed
from .plate_solve import NO_SOLVER, find_solver, hints_from_header, solve_frame
from .raw_rows import raw_layout, read_rows

__all__ = [
    "TRUTH_KEYWORD",
    "IngestOptions",
    "frame_changed",
    "inspect_frame",
    "read_frame_window",
    "shift_bayer_pattern",
]

log = logging.getLogger(__name__)

#: Header keyword marking the simulator's truth images: ingest never takes them for frames.
TRUTH_KEYWORD = "ZMTRUTH"

try:  # raised by astropy for a corrupt tile of a CompImageHDU (a private class, hence the guard)
    from astropy.io.fits.hdu.compressed._compression import CfitsioException
except ImportError:  # pragma: no cover - another astropy layout
    _DECOMPRESSION_ERRORS: tuple[type[Exception], ...] = (zlib.error,)
else:
    _DECOMPRESSION_ERRORS = (zlib.error, CfitsioException)


@dataclass(frozen=True)
class IngestOptions:
    """How ingest reads frames (built from the ``zemosaic.ingest`` config section).

    ``plate_solve`` is ``auto`` (solve frames without a WCS when ``solve-field`` is
    installed), ``never`` or ``always`` (re-solve every frame, keeping the header WCS when
    the solve fails); solutions are cached in ``wcs_cache_dir`` (``<output>/wcs-cache``),
    and frames without a WCS are not solved when it is None. ``measure_quality`` measures
    each frame's stars, FWHM, elongation and noise (:class:`FrameQuality`) for the quality
    gate (``zemosaic.quality.enabled``).
    """

    default_bayer_pattern: str = "GRBG"
    force_seestar: bool = False
    plate_solve: str = "auto"
    solve_timeout_s: float = 60.0
    wcs_cache_dir: str | None = None
    measure_quality: bool = True


def shift_bayer_pattern(pattern: str, dy: int, dx: int) -> str:
    """Return the pattern seen from a window starting ``(dy, dx)`` pixels further."""
    pattern = pattern.upper()
    cells = [[pattern[0], pattern[1]], [pattern[2], pattern[3]]]
    return "".join(cells[(r + dy) % 2][(c + dx) % 2] for r in (0, 1) for c in (0, 1))


def _raised_in_astropy(err: BaseException) -> bool:
    """Whether the innermost frame of ``err``'s traceback is astropy's code."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and str(tb.tb_frame.f_globals.get("__name__", "")).startswith("astropy.")


@contextmanager
def _open_fits(path: str) -> Iterator[fits.HDUList]:
    """``fits.open`` read-only and lazily, for ingest and window reads alike.

    On some corrupt streams (a gzip member with a flipped byte, a damaged extension header)
    astropy fails inside its own HDU construction with an ``AttributeError``; that is a
    bad file, not a bug, so it surfaces as the ``OSError`` an unreadable file raises. An
    ``AttributeError`` raised by the caller's code in the block passes unchanged.
    """
    try:
        with fits.open(path, mode="readonly", memmap=False, lazy_load_hdus=True) as hdul:
            yield hdul
    except AttributeError as err:
        if not _raised_in_astropy(err):
            raise
        raise OSError(f"corrupt data (astropy: {type(err).__name__}: {err})") from err


def _select_image_hdu(hdul: fits.HDUList) -> int:
    for index, hdu in enumerate(hdul):
        if isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)) and hdu.header.get("NAXIS", 0) >= 2:
            naxes = [hdu.header.get(f"NAXIS{i}", 0) for i in range(1, hdu.header["NAXIS"] + 1)]
            if all(n > 0 for n in naxes):
                return index
    raise FrameError(msg("reason_no_image"))


def _layout(
    header: fits.Header, ndim: int, shape: tuple[int, ...], integer: bool, options: IngestOptions
) -> tuple[str, str | None]:
    if ndim == 3:
        if shape[0] == 3:
            return "chw", None
        if shape[-1] == 3:
            return "hwc", None
        raise FrameError(f"unexpected dimensions {shape}: a colour cube needs 3 planes first or last")
    if ndim != 2:
        raise FrameError(msg("reason_bad_dims", shape=shape))
    keyword = header.get("BAYERPAT") or header.get("CFAIMAGE") or header.get("COLORTYP")
    if isinstance(keyword, str) and keyword.strip().upper() in BAYER_PATTERNS:
        pattern = keyword.strip().upper()
        pattern = shift_bayer_pattern(pattern, int(header.get("YBAYROFF", 0) or 0), int(header.get("XBAYROFF", 0) or 0))
        return "bayer", pattern
    text = f"{header.get('INSTRUME', '')} {header.get('CREATOR', '')}".lower()
    seestar = options.force_seestar or any(token in text for token in SEESTAR_TOKENS)
    if integer and seestar:
        return "bayer", options.default_bayer_pattern.upper()
    return "mono", None


def _number(header: fits.Header, key: str, default: float) -> float:
    """A header value as a float (numeric strings such as ``'10.5'`` included): ``default``
    when absent, NaN when it is not a number."""
    if key not in header:
        return default
    try:
        value = header[key]
    except (fits.VerifyError, ValueError):  # an unparsable card, such as "NAN"
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return math.nan
    try:
        return float(value)
    except (ValueError, OverflowError):
        return math.nan


def _linear_matrix(header: fits.Header, axes: tuple[int, int]) -> np.ndarray:
    """The header's pixel-to-sky matrix of two axes (1-based): CDi_j, else CDELTi x PCi_j."""
    cd_keys = [f"CD{i}_{j}" for i in axes for j in axes]
    if any(key in header for key in cd_keys):
        values = [_number(header, key, 0.0) for key in cd_keys]
        return np.array(values, dtype=float).reshape(2, 2)
    pc = np.array([[_number(header, f"PC{i}_{j}", float(i == j)) for j in axes] for i in axes])
    cdelt = np.array([_number(header, f"CDELT{i}", 1.0) for i in axes])
    return cdelt[:, None] * pc


def _singular_reason(matrix: np.ndarray) -> str | None:
    """The rejection reason when a 2x2 pixel-to-sky matrix is singular or not finite."""
    matrix = np.asarray(matrix, dtype=float)
    determinant = float(np.linalg.det(matrix)) if np.all(np.isfinite(matrix)) else math.nan
    largest = float(np.max(np.abs(matrix))) if np.all(np.isfinite(matrix)) else math.nan
    if math.isfinite(determinant) and abs(determinant) > 1e-12 * largest * largest:
        return None
    rows = "; ".join(" ".join(f"{v:.6g}" for v in row) for row in matrix)
    return msg("reason_singular_wcs", matrix=f"[{rows}]", determinant=f"{determinant:.3g}")


def _header_wcs(header: fits.Header) -> WCS | None:
    """The header's celestial WCS, None when it has none, FrameError when it is broken.

    The linear transformation is checked in the header itself: wcslib silently replaces
    an all-zero CD matrix by a unit one (1 degree per pixel).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        warnings.simplefilter("ignore", AstropyWarning)
        try:
            full = WCS(header, relax=True, naxis=None)
            wcs = full.celestial
        except SingularMatrixError as err:
            reason = _singular_reason(_linear_matrix(header, (1, 2)))
            raise FrameError(reason or msg("reason_invalid_wcs", error=err)) from err
        except (ValueError, KeyError, MemoryError, TypeError) as err:
            raise FrameError(msg("reason_invalid_wcs", error=err)) from err
    if not wcs.has_celestial or wcs.naxis != 2:
        return None
    reason = _singular_reason(_linear_matrix(header, (full.wcs.lng + 1, full.wcs.lat + 1)))
    if reason is not None:
        raise FrameError(reason)
    return wcs


def _frame_wcs(path: str, header: fits.Header, index: int, options: IngestOptions) -> tuple[WCS, str]:
    """The frame's WCS and where it comes from (``"header"`` or ``"solved"``)."""
    wcs = _header_wcs(header)
    if wcs is not None and options.plate_solve == "always" and options.wcs_cache_dir is not None:
        try:
            return _solved_wcs(path, header, index, options), "solved"
        except FrameError as err:
            log.warning("%s: re-solving failed (%s); keeping the header WCS", path, err)
    if wcs is not None:
        return wcs, "header"
    if options.plate_solve == "never":
        raise FrameError("no WCS (plate solving disabled)")
    if options.wcs_cache_dir is None:
        raise FrameError("no WCS" if find_solver() else NO_SOLVER)
    return _solved_wcs(path, header, index, options), "solved"


def _solved_wcs(path: str, header: fits.Header, index: int, options: IngestOptions) -> WCS:
    solved = solve_frame(
        path,
        options.wcs_cache_dir or "",
        timeout_s=options.solve_timeout_s,
        hints=hints_from_header(header),
        hdu=index,
    )
    wcs = _header_wcs(fits.Header.fromstring(solved))
    if wcs is None:
        raise FrameError("no WCS and the plate solution has no celestial WCS")
    return wcs


def _validate_wcs(wcs: WCS, height: int, width: int) -> float:
    try:
        reason = _singular_reason(wcs.pixel_scale_matrix)
    except SingularMatrixError:
        reason = msg("reason_singular_wcs", matrix="(rejected by wcslib)", determinant="0")
    except (ValueError, ArithmeticError) as err:
        raise FrameError(msg("reason_invalid_wcs", error=err)) from err
    if reason is not None:
        raise FrameError(reason)
    try:
        scales = proj_plane_pixel_scales(wcs) * 3600.0
        xs = np.array([0.0, width - 1.0, 0.0, width - 1.0, (width - 1) / 2.0])
        ys = np.array([0.0, 0.0, height - 1.0, height - 1.0, (height - 1) / 2.0])
        ra, dec = wcs.all_pix2world(xs, ys, 0)
        back_x, back_y = wcs.all_world2pix(ra, dec, 0)
    except (ValueError, ArithmeticError) as err:
        raise FrameError(msg("reason_invalid_wcs", error=err)) from err
    scale = float(np.mean(scales))
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec)) and np.isfinite(scale) and scale > 0):
        raise FrameError("invalid WCS: non-finite sky coordinates or pixel scale")
    if np.max(np.hypot(back_x - xs, back_y - ys)) > 0.05:
        raise FrameError("invalid WCS: pixel -> sky -> pixel does not round-trip")
    if scale > 3600.0 or scale < 1e-3:
        raise FrameError(f"invalid WCS: implausible pixel scale {scale:.3g} arcsec/px")
    return scale


_EXPOSURE_KEYWORDS = ("EXPTIME", "EXPOSURE")


def _mount_mode(header: fits.Header) -> str:
    """``EQMODE`` (0 alt-az, 1 equatorial) or ``MOUNT`` as text; "" when neither is there (0 is kept)."""
    value = header.get("EQMODE", header.get("MOUNT"))
    return "" if value is None else str(value).strip()


def _exposure(path: str, header: fits.Header) -> tuple[float, str]:
    """Exposure in seconds and, when the header's value is not a number, why it is unknown.

    The first of ``EXPTIME`` and ``EXPOSURE`` that is a finite, non-negative number is
    used. A value such as ``'N/A'`` does not reject the frame: a warning names the file
    and the exposure is recorded as unknown (0 s, with the note).
    """
    notes = []
    for keyword in _EXPOSURE_KEYWORDS:
        if keyword not in header:
            continue
        seconds = _number(header, keyword, math.nan)
        if math.isfinite(seconds) and seconds >= 0:
            return seconds, ""
        try:
            shown = repr(header[keyword])
        except (fits.VerifyError, ValueError):
            shown = "(unparsable card)"
        notes.append((keyword, shown))
    for keyword, shown in notes:
        log.warning(msg("exposure_unknown", path=path, keyword=keyword, value=shown))
    return 0.0, "; ".join(f"{keyword} = {shown} is not a number of seconds" for keyword, shown in notes)


_STATISTICS_SAMPLES = 50_000


def _every_kth_row(plane: np.ndarray, wanted: int) -> np.ndarray:
    """Whole rows of a 2-D plane, every k-th so that about ``wanted`` pixels remain, raveled."""
    step = max(1, plane.size // max(wanted, 1))
    return plane[::step].ravel() if plane.ndim == 2 and step <= plane.shape[0] else plane.ravel()[::step]


def _channel_statistics(data: np.ndarray, layout: str, pattern: str | None) -> dict[str, tuple[float, ...]]:
    """Per output channel: robust background (median), noise, 25th and 90th percentiles.

    The noise is 1.4826 x the median absolute deviation of the differences of neighbouring
    same-colour pixels, divided by sqrt(2) (the values' own MAD when that is 0, e.g. on
    quantised flat data).

    Computed on about 50,000 pixels per channel taken as whole rows spread over the frame
    (every k-th row of each Bayer lattice): the median's standard error is then about
    0.6 % of the noise.
    """
    if layout == "bayer":
        # The sites of one colour are whole 2x2 lattices: slice them instead of masking.
        sites: dict[str, list[np.ndarray]] = {"R": [], "G": [], "B": []}
        for cell, colour in enumerate((pattern or "GRBG").upper()):
            dy, dx = divmod(cell, 2)
            sites[colour].append(data[dy::2, dx::2])
        planes = [
            np.concatenate([_every_kth_row(s, _STATISTICS_SAMPLES // len(sites[c])) for s in sites[c]]) for c in "RGB"
        ]
    elif layout == "chw":
        planes = [_every_kth_row(data[c], _STATISTICS_SAMPLES) for c in range(3)]
    elif layout == "hwc":
        planes = [_every_kth_row(data[..., c], _STATISTICS_SAMPLES) for c in range(3)]
    else:
        planes = [_every_kth_row(data, _STATISTICS_SAMPLES)]
    backgrounds, noises, p25, p90 = [], [], [], []
    for plane in planes:
        sample = plane[np.isfinite(plane)]
        if sample.size == 0:
            raise FrameError(msg("reason_all_nan"))
        low, median, high = (float(v) for v in np.percentile(sample, [25.0, 50.0, 90.0]))
        # Noise from the differences of neighbouring same-colour pixels along the rows: a sky
        # gradient or a drifting level, which widen the spread of the values, do not enter.
        step = np.diff(plane)
        step = step[np.isfinite(step)]
        noise = 1.4826 * float(np.median(np.abs(step - np.median(step)))) / math.sqrt(2.0) if step.size else 0.0
        if not noise > 0:
            sample -= np.float32(median)
            noise = 1.4826 * float(np.median(np.abs(sample, out=sample)))
        backgrounds.append(median)
        noises.append(noise)
        p25.append(low)
        p90.append(high)
    return {"background": tuple(backgrounds), "noise": tuple(noises), "p25": tuple(p25), "p90": tuple(p90)}


def _frame_quality(data: np.ndarray, layout: str, wcs: WCS) -> FrameQuality:
    """The frame's star-based quality, its brightest stars placed on the sky."""
    measures = measure_frame_quality(data, layout)
    stars: tuple[tuple[float, float, float], ...] = ()
    if len(measures.bright):
        ra, dec = wcs.all_pix2world(measures.bright[:, 0], measures.bright[:, 1], 0)
        stars = tuple(
            (round(float(r), 7), round(float(d), 7), round(float(f), 1))
            for r, d, f in zip(ra, dec, measures.bright[:, 2], strict=True)
        )
    return FrameQuality(measures.n_stars, measures.fwhm_px, measures.elongation, measures.noise, stars)


def inspect_frame(path: str, options: IngestOptions | None = None) -> FrameInfo | FrameRejection:
    """Read a frame's header and pixels once and describe it, or say why it is unusable.

    Parameters
    ----------
    path : str
        Absolute path of a FITS file, opened read-only.
    options : IngestOptions, optional
        Bayer defaults, Seestar forcing and plate solving of frames without a WCS.

    Returns
    -------
    FrameInfo or FrameRejection
        Never raises for a bad file: the reason is returned instead.
    """
    options = options or IngestOptions()
    try:
        return _inspect(path, options)
    except FrameError as err:
        return FrameRejection(path, str(err))
    except OSError as err:
        key = "reason_not_fits" if "header" in str(err).lower() or "fits" in str(err).lower() else "reason_unreadable"
        return FrameRejection(path, msg(key, error=err))
    except (
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        EOFError,
        OverflowError,
        MemoryError,
        fits.VerifyError,
        *_DECOMPRESSION_ERRORS,
    ) as err:
        return FrameRejection(path, msg("reason_unreadable", error=f"{type(err).__name__}: {err}"))


def _inspect(path: str, options: IngestOptions) -> FrameInfo:
    fingerprint = file_fingerprint(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        with _open_fits(path) as hdul:
            index = _select_image_hdu(hdul)
            hdu = hdul[index]
            header = hdu.header
            data = np.asarray(hdu.data, dtype=np.float32)
            integer = header.get("BITPIX", -32) > 0
    if header.get(TRUTH_KEYWORD) is True:
        raise FrameError(f"a simulated ground-truth image ({TRUTH_KEYWORD} = T), not a frame")
    primary = header
    layout, pattern = _layout(primary, data.ndim, data.shape, integer, options)
    height, width = (data.shape[1], data.shape[2]) if layout == "chw" else data.shape[:2]
    if height < 8 or width < 8:
        raise FrameError(f"unexpected dimensions {data.shape}: image smaller than 8x8")
    low, high = float(np.min(data)), float(np.max(data))
    if not (np.isfinite(low) and np.isfinite(high)):  # NaN or infinite pixels: look past them
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: reported just below
            finite = data[np.isfinite(data)]
            low, high = (float(finite.min()), float(finite.max())) if finite.size else (np.nan, np.nan)
    if np.isnan(low):
        raise FrameError(msg("reason_all_nan"))
    if low == high:
        raise FrameError(msg("reason_constant", value=f"{low:g}"))
    wcs, wcs_source = _frame_wcs(path, header, index, options)
    scale = _validate_wcs(wcs, height, width)
    statistics = _channel_statistics(data, layout, pattern)
    instrument = str(header.get("INSTRUME", "") or header.get("CREATOR", "") or "")
    if options.force_seestar and "seestar" not in instrument.lower():
        instrument = f"{instrument} (forced seestar)".strip()
    exposure, exposure_note = _exposure(path, header)
    info = FrameInfo(
        path=path,
        hdu=index,
        shape=(int(height), int(width)),
        layout=layout,
        bayer_pattern=pattern,
        wcs_header=wcs.to_header_string(relax=True),
        exposure=exposure,
        exposure_note=exposure_note,
        date_obs=str(header.get("DATE-OBS", "") or ""),
        instrument=instrument,
        mount_mode=_mount_mode(header),
        pixel_scale=scale,
        **statistics,
        wcs_source=wcs_source,
        quality=_frame_quality(data, layout, wcs) if options.measure_quality else None,
    )
    return dataclasses.replace(info.with_sky_geometry(wcs), **dataclasses.asdict(fingerprint))


def read_frame_window(frame: FrameInfo, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Read pixels ``[y0:y1, x0:x1]`` of a frame as float32, scaled (BZERO/BSCALE applied).

    Returns a ``(h, w)`` array for mono and Bayer frames and ``(3, h, w)`` for colour
    cubes. Only the window's rows are read from disk; plain 2-D images are read directly
    (:mod:`.raw_rows`), everything else through astropy.

    Raises
    ------
    FrameError
        The file can no longer be read as it was ingested (deleted, truncated or rewritten
        during the run); the message names it.
    """
    try:
        window = _read_window(frame, y0, y1, x0, x1)
    except (OSError, EOFError, ValueError, *_DECOMPRESSION_ERRORS) as err:
        raise FrameError(
            f"{frame.path} can no longer be read as it was ingested ({type(err).__name__}: {err}); "
            "was it changed during the run? Restore it, or run again to re-ingest it"
        ) from err
    expected = (y1 - y0, x1 - x0)
    if window.shape[-2:] != expected:
        raise FrameError(
            f"{frame.path} gave a {window.shape[-2]}x{window.shape[-1]} window where "
            f"{expected[0]}x{expected[1]} was expected; was it truncated during the run?"
        )
    return window


def _read_window(frame: FrameInfo, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    if frame.layout in ("bayer", "mono"):
        layout = raw_layout(frame.path, frame.hdu)
        if layout is not None and layout.shape == tuple(frame.shape):
            return read_rows(frame.path, layout, y0, y1, x0, x1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        with _open_fits(frame.path) as hdul:
            section = hdul[frame.hdu].section
            # Whole rows are contiguous on disk: reading them and cropping in memory is much
            # faster than a column-cropped section, which is read row by row.
            if frame.layout == "chw":
                window = np.asarray(section[:, y0:y1, :])[:, :, x0:x1]
            elif frame.layout == "hwc":
                window = np.moveaxis(np.asarray(section[y0:y1, :, :])[:, x0:x1, :], -1, 0)
            else:
                window = np.asarray(section[y0:y1, :])[:, x0:x1]
            return np.array(window, dtype=np.float32)
