"""Reject "poison" frames before the output grid is sized.

One frame with a bad plate solution is enough to ruin a run: a WCS tens of degrees away
from the rest, or a pixel scale a thousand times too coarse, makes the north-up grid that
covers every frame enormous (or larger than ``grid.max-pixels``, which fails the run).
:func:`screen_frames` compares each frame with the session and returns the frames to
keep plus a :class:`~zemosaic_dask.plans.frames.FrameRejection` with a one-line reason for
each frame it sets aside. It only reads what ingest stored (pixel scale, shape and sky
centre); no WCS is parsed when the centre is present.

Two rules, applied in this order:

* **Pixel scale.** A frame whose scale differs from the session median by more than
  :data:`MAX_SCALE_RATIO` either way is rejected.
* **Position.** Frame centres are linked when they lie within
  ``(1 + LINK_GAP_DIAGONALS)`` median frame diagonals of each other, and the connected
  components of that graph (single linkage, measured on the sphere) are the groups of the
  session. Two frames in different groups have footprints separated by a gap of more
  than about :data:`LINK_GAP_DIAGONALS` frame diagonals, because each footprint lies
  within half its diagonal of its centre (and frame sizes agree once scales do). The
  largest group is the session; a smaller group holding at most
  :data:`MAX_OUTLIER_FRACTION` of the frames (at least one frame) is rejected. A wide
  mosaic is one chain of touching or overlapping frames, so it stays one group however
  many frame widths it spans, and two sets of panels with a small gap between them stay
  linked too. When the largest group is not unique nothing is rejected by position.

With fewer than :data:`MIN_FRAMES_TO_SCREEN` frames there is no majority to compare with
and every frame is kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.spatial import cKDTree

from .frames import FrameInfo, FrameRejection
from .groups import cluster_centres

__all__ = [
    "LINK_GAP_DIAGONALS",
    "MAX_OUTLIER_FRACTION",
    "MAX_SCALE_RATIO",
    "MIN_FRAMES_TO_SCREEN",
    "screen_frames",
]

#: Fewest frames for which a session majority exists: with one frame there is nothing to
#: compare with, with two nothing says which of them is wrong.
MIN_FRAMES_TO_SCREEN = 3

#: Largest accepted ratio between a frame's pixel scale and the session median, either
#: way. Good plate solutions of one optical train agree to well under 1 % (fixed focal
#: length; Seestar sessions mix no binning modes), while a failed solution is off by a
#: large factor (the 1000x of a solution found at the wrong scale). 1.5 leaves ample room
#: for distortion terms and slightly different optics in one session, yet rejects a frame
#: binned 2x into an unbinned session, which the median-scale grid would resample poorly.
MAX_SCALE_RATIO = 1.5

#: Gap, in median frame diagonals, beyond which a frame's footprint is disconnected from
#: another's. Centres are linked within ``1 + LINK_GAP_DIAGONALS`` diagonals. A mosaic's
#: panels overlap or leave at most about one frame of sky uncovered (a missed panel), so 3
#: diagonals never splits a real mosaic, while a bad solution lands degrees away.
LINK_GAP_DIAGONALS = 3.0

#: Largest share of the frames that a detached group may hold and still be rejected (at
#: least one frame always may). A bigger detached group is deliberate data (a second
#: target) rather than a bad solution, and is left to the user.
MAX_OUTLIER_FRACTION = 0.10


def screen_frames(frames: Sequence[FrameInfo]) -> tuple[list[FrameInfo], list[FrameRejection]]:
    """Split frames into those consistent with the session and poison frames with a reason.

    Parameters
    ----------
    frames : sequence of FrameInfo
        The frames that passed ingest, with their sky geometry (:meth:`FrameInfo.with_sky_geometry`).

    Returns
    -------
    kept : list of FrameInfo
        Frames kept, in input order.
    rejected : list of FrameRejection
        One per rejected frame, in input order, naming the measured value and the
        session's value.

    Notes
    -----
    The pixel-scale rule runs first, so that a frame with a wrong scale neither counts in
    the median frame diagonal nor takes part in the position rule. See the module
    docstring and the module constants for the rules and their thresholds.
    """
    frames = list(frames)
    if len(frames) < MIN_FRAMES_TO_SCREEN:
        return frames, []
    reasons: dict[int, str] = {}
    reasons.update(_scale_outliers(frames))
    remaining = [i for i in range(len(frames)) if i not in reasons]
    if len(remaining) >= MIN_FRAMES_TO_SCREEN:
        for local, reason in _position_outliers([frames[i] for i in remaining]).items():
            reasons[remaining[local]] = reason
    kept = [f for i, f in enumerate(frames) if i not in reasons]
    rejected = [FrameRejection(frames[i].path, reasons[i]) for i in sorted(reasons)]
    return kept, rejected


def _scale_outliers(frames: Sequence[FrameInfo]) -> dict[int, str]:
    """Frames whose pixel scale is off the session median by more than :data:`MAX_SCALE_RATIO`."""
    scales = np.array([f.pixel_scale for f in frames], dtype=float)
    valid = np.isfinite(scales) & (scales > 0)
    if not valid.any():
        return {}
    median = float(np.median(scales[valid]))
    reasons: dict[int, str] = {}
    for index, scale in enumerate(scales.tolist()):
        if not (math.isfinite(scale) and scale > 0):
            reasons[index] = (
                f"pixel scale {scale:.4g} arcsec/px is not a positive number, the session median "
                f"is {median:.4g} arcsec/px (bad plate solution?)"
            )
            continue
        ratio = scale / median
        if ratio > MAX_SCALE_RATIO or ratio < 1.0 / MAX_SCALE_RATIO:
            relation = f"{_factor(ratio)}x" if ratio >= 1.0 else f"1/{_factor(1.0 / ratio)} of"
            reasons[index] = (
                f"pixel scale {scale:.4g} arcsec/px is {relation} the session median {median:.4g} arcsec/px "
                f"(bad plate solution?)"
            )
    return reasons


def _position_outliers(frames: Sequence[FrameInfo]) -> dict[int, str]:
    """Frames in small groups detached from the session's main group (see the module docstring)."""
    diagonals = np.array([f.pixel_scale * math.hypot(*f.shape) / 3600.0 for f in frames], dtype=float)
    diagonal = float(np.median(diagonals))
    if not (math.isfinite(diagonal) and diagonal > 0):
        return {}
    link = (1.0 + LINK_GAP_DIAGONALS) * diagonal
    centres = np.array([f.center_world() for f in frames], dtype=float)
    groups = cluster_centres(centres[:, 0], centres[:, 1], link)
    sizes = [len(g) for g in groups]
    largest = max(sizes)
    if sizes.count(largest) > 1:
        return {}
    main = groups[sizes.index(largest)]
    limit = max(1, math.floor(MAX_OUTLIER_FRACTION * len(frames)))
    outliers = [i for g in groups if len(g) <= limit and len(g) < largest for i in g]
    if not outliers:
        return {}
    main_xyz = _unit_vectors(centres[list(main)])
    _, nearest = cKDTree(main_xyz).query(_unit_vectors(centres[outliers]), k=1)
    reasons: dict[int, str] = {}
    for index, closest in zip(outliers, np.atleast_1d(nearest).tolist(), strict=True):
        ra, dec = centres[index]
        chord = np.linalg.norm(main_xyz[closest] - _unit_vectors(centres[[index]])[0])
        distance = math.degrees(2.0 * math.asin(min(1.0, float(chord) / 2.0)))
        reasons[index] = (
            f"sky centre (RA {ra:.4f}, Dec {dec:+.4f} deg) is {distance:.3f} deg from the nearest frame of the "
            f"main group of {largest} frames, beyond the session's linking distance of {link:.3f} deg "
            f"({1.0 + LINK_GAP_DIAGONALS:g} median frame diagonals of {diagonal:.3f} deg) (bad plate solution?)"
        )
    return reasons


def _factor(ratio: float) -> str:
    """A ratio for a message: ``1000`` or ``1.62``."""
    return f"{ratio:.0f}" if ratio >= 10.0 else f"{ratio:.2f}"


def _unit_vectors(radec_deg: np.ndarray) -> np.ndarray:
    """``(N, 3)`` unit vectors of ``(N, 2)`` RA/Dec degrees."""
    ra, dec = np.radians(radec_deg[:, 0]), np.radians(radec_deg[:, 1])
    return np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])
