"""Transparency of each frame from the stars it shares with other frames.

Ingest stores the sky position and aperture flux of each frame's brightest stars
(:attr:`FrameQuality.stars`). Stars of different frames closer than a match radius are
the same star; a star's reference flux is the median of its fluxes over the frames that
saw it, and a frame's transparency is the median, over its matched stars, of its flux
over the reference. A frame through a cloud that dims stars by half gets about 0.5,
wherever it points and however it is dithered, because it is only ever compared with
frames that saw the same stars.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.spatial import cKDTree

from .frames import FrameInfo

__all__ = ["MATCH_RADIUS_PX", "MIN_MATCHED_STARS", "MIN_SIGHTINGS", "match_stars", "matched_transparency"]

#: Two stars of different frames within this many pixels are the same star.
MATCH_RADIUS_PX = 2.5
#: A star is a reference when at least this many frames saw it.
MIN_SIGHTINGS = 3
#: A frame's transparency needs at least this many reference stars (NaN otherwise).
MIN_MATCHED_STARS = 3


def _unit_vectors(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    return np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])


def match_stars(ra_deg: np.ndarray, dec_deg: np.ndarray, radius_deg: float) -> np.ndarray:
    """Label each position with the star it belongs to (greedy, in order).

    A position within ``radius_deg`` of a star already seen takes its label (the
    nearest); otherwise it starts a new star. Positions are matched in blocks against one
    KD-tree of the stars known so far, so the cost grows with the number of positions
    times the log of the number of stars, not with the number of frame pairs.

    Returns
    -------
    ndarray of int
        Star label of every position.
    """
    xyz = _unit_vectors(np.asarray(ra_deg, dtype=float), np.asarray(dec_deg, dtype=float))
    chord = 2.0 * math.sin(math.radians(radius_deg) / 2.0)
    labels = np.full(len(xyz), -1, dtype=np.int64)
    references = np.zeros((0, 3))
    for start in range(0, len(xyz), _BLOCK):
        points = xyz[start : start + _BLOCK]
        block = labels[start : start + _BLOCK]
        if len(references):
            distance, nearest = cKDTree(references).query(points, distance_upper_bound=chord)
            found = np.isfinite(distance)
            block[found] = nearest[found]
        new: list[np.ndarray] = []
        for k in np.flatnonzero(block < 0):  # stars first seen in this block
            near = [j for j, ref in enumerate(new) if np.linalg.norm(ref - points[k]) <= chord]
            if not near:
                new.append(points[k])
                near = [len(new) - 1]
            block[k] = len(references) + near[0]
        if new:
            references = np.vstack([references, np.array(new)])
    return labels


#: Positions matched against one KD-tree of the stars known so far.
_BLOCK = 512


def matched_transparency(frames: Sequence[FrameInfo], pixel_scale_arcsec: float) -> np.ndarray:
    """Transparency of every frame (NaN where it cannot be measured).

    Parameters
    ----------
    frames : sequence of FrameInfo
        Frames with their :attr:`FrameInfo.quality` (others get NaN).
    pixel_scale_arcsec : float
        Pixel scale of the session; the match radius is :data:`MATCH_RADIUS_PX` pixels.

    Returns
    -------
    ndarray of float, shape (n_frames,)
        Median ratio of each frame's star fluxes to the same stars' median flux over the
        session; NaN for a frame with fewer than :data:`MIN_MATCHED_STARS` stars seen in
        at least :data:`MIN_SIGHTINGS` frames.
    """
    rows = [
        (i, ra, dec, flux)
        for i, frame in enumerate(frames)
        if frame.quality is not None
        for ra, dec, flux in frame.quality.stars
        if flux > 0 and math.isfinite(flux)
    ]
    out = np.full(len(frames), np.nan)
    if not rows:
        return out
    table = np.array(rows, dtype=float)
    frame_of = table[:, 0].astype(np.int64)
    labels = match_stars(table[:, 1], table[:, 2], MATCH_RADIUS_PX * pixel_scale_arcsec / 3600.0)
    ratios: list[list[float]] = [[] for _ in frames]
    order = np.argsort(labels, kind="stable")
    for members in np.split(order, np.flatnonzero(np.diff(labels[order])) + 1):
        if len(np.unique(frame_of[members])) < MIN_SIGHTINGS:
            continue
        reference = float(np.median(table[members, 3]))
        for m in members:
            ratios[frame_of[m]].append(table[m, 3] / reference)
    for i, values in enumerate(ratios):
        if len(values) >= MIN_MATCHED_STARS:
            out[i] = float(np.median(values))
    return out
