"""Degraded exposures of a simulated night: clouds, trailing (wind, tracking) and defocus.

A real Seestar session holds frames taken through passing clouds, frames smeared by wind
or a tracking hiccup, and frames out of focus. :func:`sample_degradations` picks which
frames of a session are degraded and how; the renderer (:mod:`.frames`) applies the
effect with the factors below:

- ``clouds``: star (and extended emission) fluxes x :data:`CLOUD_FLUX_FACTOR`, sky
  background x :data:`CLOUD_SKY_FACTOR` (moonlight or city light scattered by the cloud);
- ``trailing``: every star smeared along a random direction over
  :data:`TRAIL_LENGTH_FWHM` PSF FWHMs (an elongated PSF);
- ``defocus``: PSF FWHM x :data:`DEFOCUS_FACTOR`.

The choice is recorded in ``simulation.json`` (``degraded``: frame index -> kind), so
that tests can check a quality gate against it.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "CLOUD_FLUX_FACTOR",
    "CLOUD_SKY_FACTOR",
    "DEFOCUS_FACTOR",
    "DEGRADATIONS",
    "TRAIL_LENGTH_FWHM",
    "sample_degradations",
    "trail_offsets",
]

DEGRADATIONS = ("clouds", "trailing", "defocus")
#: Transmission of a cloud for starlight.
CLOUD_FLUX_FACTOR = 0.5
#: Sky background through a cloud, relative to the clear sky.
CLOUD_SKY_FACTOR = 1.5
#: Length of a trailed star, in FWHM of the frame's PSF.
TRAIL_LENGTH_FWHM = 3.0
#: Point-source copies spread along a trail: spaced by 3/8 FWHM, the trail is smooth.
TRAIL_SAMPLES = 9
#: PSF FWHM of a defocused frame relative to the focused PSF.
DEFOCUS_FACTOR = 2.0


def sample_degradations(n_frames: int, fraction: float, rng: np.random.Generator) -> dict[int, dict[str, float | str]]:
    """Choose the degraded frames of a session and their defect.

    Parameters
    ----------
    n_frames : int
        Frames in the session.
    fraction : float
        Share of degraded frames in ``[0, 1]``; ``round(fraction * n_frames)`` frames are
        degraded, the three kinds in turn (so each kind gets a third of them).
    rng : numpy.random.Generator
        Source of the draws.

    Returns
    -------
    dict
        Frame index -> ``{"kind": ..., "angle_deg": ...}`` (the angle is the direction of
        the trail; drawn for every kind so that the draws do not depend on the kinds).
    """
    if not (0.0 <= float(fraction) <= 1.0):
        raise ValueError(f"degraded must be a fraction of the frames in [0, 1], got {fraction!r} (e.g. 0.15)")
    count = int(round(float(fraction) * n_frames))
    if count == 0:
        return {}
    chosen = rng.choice(n_frames, size=count, replace=False)
    angles = rng.uniform(0.0, 180.0, size=count)
    out: dict[int, dict[str, float | str]] = {}
    for k, (index, angle) in enumerate(zip(chosen.tolist(), angles.tolist(), strict=True)):
        out[int(index)] = {"kind": DEGRADATIONS[k % len(DEGRADATIONS)], "angle_deg": float(angle)}
    return dict(sorted(out.items()))


def trail_offsets(fwhm_px: float, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """``(dx, dy)`` offsets of the point-source copies that draw one trailed star.

    The copies are evenly spread over a segment of ``TRAIL_LENGTH_FWHM * fwhm_px`` pixels
    centred on the star, so the star's centroid does not move.
    """
    length = TRAIL_LENGTH_FWHM * float(fwhm_px)
    t = np.linspace(-0.5, 0.5, TRAIL_SAMPLES) * length
    theta = math.radians(float(angle_deg))
    return t * math.cos(theta), t * math.sin(theta)
