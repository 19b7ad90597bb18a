"""Synthetic frame descriptions and sky layouts shared by the planning tests (no files)."""

from __future__ import annotations

import math

import numpy as np
from astropy.wcs import WCS

from zemosaic_dask.plans import FrameInfo


def make_frame(
    ra: float,
    dec: float,
    *,
    name: str = "f",
    shape: tuple[int, int] = (120, 80),
    scale: float = 2.4,
    rot: float = 0.0,
    date_obs: str = "",
    instrument: str = "Seestar S50",
) -> FrameInfo:
    """A FrameInfo with a TAN WCS centred on (ra, dec)."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra % 360.0, dec]
    w.wcs.crpix = [(shape[1] + 1) / 2, (shape[0] + 1) / 2]
    s, t = scale / 3600.0, math.radians(rot)
    w.wcs.cd = [[-s * math.cos(t), s * math.sin(t)], [s * math.sin(t), s * math.cos(t)]]
    return FrameInfo(
        path=f"/data/{name}.fits",
        hdu=0,
        shape=shape,
        layout="bayer",
        bayer_pattern="GRBG",
        wcs_header=w.to_header_string(),
        date_obs=date_obs,
        instrument=instrument,
        pixel_scale=scale,
    )


def angular_separation(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    """Great-circle distance in degrees (haversine, independent of the planners' code)."""
    p1, p2 = math.radians(dec1), math.radians(dec2)
    dl = math.radians(ra2 - ra1)
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return math.degrees(2 * math.asin(min(1.0, math.sqrt(h))))


def offset_position(ra: float, dec: float, east_deg: float, north_deg: float) -> tuple[float, float]:
    """Small-offset position east/north of (ra, dec) (adequate away from the pole)."""
    return (ra + east_deg / math.cos(math.radians(dec))) % 360.0, dec + north_deg


def brute_force_components(ra: np.ndarray, dec: np.ndarray, threshold: float) -> set[frozenset[int]]:
    """Connected components by pairwise haversine distances and a plain union-find."""
    n = len(ra)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            if angular_separation(ra[i], dec[i], ra[j], dec[j]) < threshold:
                parent[find(i)] = find(j)
    comps: dict[int, set[int]] = {}
    for i in range(n):
        comps.setdefault(find(i), set()).add(i)
    return {frozenset(c) for c in comps.values()}
