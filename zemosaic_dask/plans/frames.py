"""Plain values describing the inputs: one :class:`FrameInfo` per usable frame.

These are produced by ingest (:mod:`zemosaic_dask.io`) and consumed by every planner.
They hold no pixel data and round-trip through JSON.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import pickle
import weakref
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.wcs import WCS

from .frame_quality import FrameQuality

__all__ = ["FrameInfo", "FrameRejection", "frame_wcs", "is_seestar"]

SEESTAR_TOKENS = ("seestar", "s50", "s30")
#: Points per edge of the sky border stored by ingest (:meth:`FrameInfo.with_sky_geometry`).
SKY_BORDER_POINTS = 8


@dataclass(frozen=True)
class FrameRejection:
    """An input that cannot be used, with the reason shown to the user."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        """Return a JSON-serialisable dictionary."""
        return {"path": self.path, "reason": self.reason}


@dataclass(frozen=True)
class FrameInfo:
    """Everything the planners need to know about one usable input frame.

    Attributes
    ----------
    path : str
        Absolute path of the FITS file (opened read-only, never modified).
    hdu : int
        Index of the image HDU holding the data.
    shape : tuple of int
        ``(height, width)`` of the celestial image in pixels.
    layout : str
        ``"mono"``, ``"bayer"``, ``"chw"`` or ``"hwc"``: how the pixels are stored.
    bayer_pattern : str or None
        ``"GRBG"``, ``"RGGB"``, ``"BGGR"`` or ``"GBRG"`` for a Bayer frame, else None.
    wcs_header : str
        The celestial WCS as a FITS header string.
    exposure : float
        Exposure time in seconds (0 when unknown).
    date_obs : str
        ``DATE-OBS`` as written in the header ("" when unknown).
    instrument : str
        ``INSTRUME`` (or ``CREATOR`` when INSTRUME is absent).
    mount_mode : str
        ``EQMODE`` or an equivalent keyword ("" when unknown).
    pixel_scale : float
        Pixel scale in arcseconds per pixel.
    background : tuple of float
        Robust background level per output channel, in ADU.
    noise : tuple of float
        Robust per-pixel noise sigma per output channel, in ADU.
    p25, p90 : tuple of float
        25th and 90th percentiles per output channel (for ``linear_fit`` normalisation).
    wcs_source : str
        ``"header"`` or ``"solved"`` (plate-solved into a sidecar cache).
    sky_center, sky_border : tuple
        RA/Dec (degrees) of the frame centre and of points along its border, stored by
        ingest (:meth:`with_sky_geometry`).
    exposure_note : str
        Why :attr:`exposure` is unknown when the header's exposure is not a number (such
        as ``EXPTIME = 'N/A'``); "" otherwise.
    size : int
        Size of the file in bytes when it was ingested (0 when not recorded, as in plans
        written before it was).
    mtime_ns : int
        Modification time of the file (``os.stat().st_mtime_ns``) when it was ingested.
    content_hash : str
        BLAKE2b (16-byte digest, hex) of the file's bytes ("" when not recorded).
    quality : FrameQuality or None
        Stars, FWHM, elongation and noise measured at ingest for the quality gate (None
        when not measured, as in plans written before it was).
    """

    path: str
    hdu: int
    shape: tuple[int, int]
    layout: str
    bayer_pattern: str | None
    wcs_header: str
    exposure: float = 0.0
    date_obs: str = ""
    instrument: str = ""
    mount_mode: str = ""
    pixel_scale: float = 0.0
    background: tuple[float, ...] = ()
    noise: tuple[float, ...] = ()
    wcs_source: str = "header"
    p25: tuple[float, ...] = ()
    p90: tuple[float, ...] = ()
    sky_center: tuple[float, ...] = ()
    sky_border: tuple[tuple[float, float], ...] = ()
    exposure_note: str = ""
    size: int = 0
    mtime_ns: int = 0
    content_hash: str = ""
    quality: FrameQuality | None = None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickle as a digest and one compressed blob of the fields.

        Every task that reads a frame carries its record, and the scheduler keeps each task's
        arguments while the task lives. A process that already holds an equal record (found
        by the digest) reuses it without unpacking the blob: the in-process scheduler of the
        embedded cluster shares the client's records, and a worker keeps one record per frame
        however many of its tasks name it. The blob (the WCS header is 60 % of a record)
        is a single compressed bytes object, so a record that is reused costs no small
        allocations.
        """
        blob = zlib.compress(pickle.dumps([getattr(self, f.name) for f in dataclasses.fields(self)], protocol=5), 1)
        digest = self.__dict__.get("_digest")
        if digest is None:
            digest = hashlib.blake2b(blob, digest_size=16).digest()
            object.__setattr__(self, "_digest", digest)
        _RECORDS.setdefault(digest, self)
        return _unpickle_frame, (digest, blob)

    @property
    def n_channels(self) -> int:
        """Number of output channels (1 for mono, 3 for colour)."""
        return 1 if self.layout == "mono" else 3

    @property
    def wcs(self) -> WCS:
        """The frame's celestial WCS (cached per header string)."""
        return frame_wcs(self.wcs_header)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary."""
        data = dataclasses.asdict(self)
        data["shape"] = list(self.shape)
        data["background"] = list(self.background)
        data["noise"] = list(self.noise)
        data["p25"] = list(self.p25)
        data["p90"] = list(self.p90)
        data["quality"] = None if self.quality is None else self.quality.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrameInfo:
        """Build a frame description from :meth:`to_dict` output."""
        values = dict(data)
        values["shape"] = tuple(int(v) for v in values["shape"])
        values["background"] = tuple(float(v) for v in values.get("background", ()))
        values["noise"] = tuple(float(v) for v in values.get("noise", ()))
        values["p25"] = tuple(float(v) for v in values.get("p25", ()))
        values["p90"] = tuple(float(v) for v in values.get("p90", ()))
        values["sky_center"] = tuple(float(v) for v in values.get("sky_center", ()))
        values["sky_border"] = tuple((float(ra), float(dec)) for ra, dec in values.get("sky_border", ()))
        values["size"] = int(values.get("size", 0))
        values["mtime_ns"] = int(values.get("mtime_ns", 0))
        quality = values.get("quality")
        values["quality"] = None if quality is None else FrameQuality.from_dict(quality)
        return cls(**values)

    def with_sky_geometry(self, wcs: WCS | None = None) -> FrameInfo:
        """Return a copy carrying its sky centre and border, so that planners need not parse the WCS.

        Ingest calls this on the worker that read the frame, passing the WCS it already
        holds (by default :attr:`wcs_header` is parsed); :meth:`center_world` and
        :meth:`footprint_world` (with the default 8 points per edge) then return the
        stored values.
        """
        border = self._border_from_wcs(SKY_BORDER_POINTS, wcs)
        return dataclasses.replace(
            self,
            sky_center=self._center_from_wcs(wcs),
            sky_border=tuple((float(ra), float(dec)) for ra, dec in border),
        )

    def footprint_world(self, points_per_edge: int = SKY_BORDER_POINTS) -> np.ndarray:
        """Return ``(N, 2)`` RA/Dec degrees sampled along the frame's border (``N = 4 * points_per_edge``)."""
        if self.sky_border and points_per_edge == SKY_BORDER_POINTS:
            return np.array(self.sky_border, dtype=float)
        return self._border_from_wcs(points_per_edge)

    def center_world(self) -> tuple[float, float]:
        """Return the RA/Dec (degrees) of the frame centre."""
        if self.sky_center:
            return self.sky_center[0], self.sky_center[1]
        return self._center_from_wcs()

    def _border_from_wcs(self, points_per_edge: int, wcs: WCS | None = None) -> np.ndarray:
        height, width = self.shape
        t = np.linspace(0.0, 1.0, points_per_edge, endpoint=False)
        x0, x1 = -0.5, width - 0.5
        y0, y1 = -0.5, height - 0.5
        xs = np.concatenate([x0 + t * (x1 - x0), np.full_like(t, x1), x1 - t * (x1 - x0), np.full_like(t, x0)])
        ys = np.concatenate([np.full_like(t, y0), y0 + t * (y1 - y0), np.full_like(t, y1), y1 - t * (y1 - y0)])
        ra, dec = (self.wcs if wcs is None else wcs).all_pix2world(xs, ys, 0)
        return np.column_stack([ra, dec])

    def _center_from_wcs(self, wcs: WCS | None = None) -> tuple[float, float]:
        height, width = self.shape
        ra, dec = (self.wcs if wcs is None else wcs).all_pix2world([(width - 1) / 2.0], [(height - 1) / 2.0], 0)
        return float(ra[0]), float(dec[0])


@functools.lru_cache(maxsize=4096)
def frame_wcs(header_string: str) -> WCS:
    """Parse a WCS header string once; WCS objects are reused, never mutated."""
    return WCS(header_string, relax=True)


def is_seestar(frame: FrameInfo) -> bool:
    """Return True when the frame comes from a ZWO Seestar (S50 or S30)."""
    text = frame.instrument.lower()
    return any(token in text for token in SEESTAR_TOKENS)


#: The records this process holds, by the digest :meth:`FrameInfo.__reduce__` pickles with them.
_RECORDS: weakref.WeakValueDictionary[bytes, FrameInfo] = weakref.WeakValueDictionary()


def _unpickle_frame(digest: bytes, blob: bytes) -> FrameInfo:
    """Rebuild a :class:`FrameInfo` pickled by its ``__reduce__``, or reuse the equal one this process holds."""
    found = _RECORDS.get(digest)
    if found is not None:
        return found
    record = FrameInfo(*pickle.loads(zlib.decompress(blob)))
    object.__setattr__(record, "_digest", digest)
    return _RECORDS.setdefault(digest, record)
