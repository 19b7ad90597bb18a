"""Per-frame quality weights and the radial (feathering) weight of a frame.

:func:`frame_weights` works on host statistics (one value per frame and channel);
:func:`radial_weight` runs in the namespace of its coordinates (numpy or cupy).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError
from .namespace import array_namespace
from .normalisation import FrameStatistics

__all__ = ["frame_weights", "radial_weight"]

logger = logging.getLogger(__name__)

_METHODS = ("none", "noise_variance")


def frame_weights(stats: Sequence[FrameStatistics], method: str) -> np.ndarray:
    """Per-frame, per-channel quality weights.

    Parameters
    ----------
    stats : sequence of FrameStatistics
        One per frame, all with the same number of channels.
    method : str
        ``none``: every weight 1. ``noise_variance``: ``1 / sigma**2`` normalised so the
        largest weight of each channel is 1. A channel in which some frame has no usable
        sigma (not finite or <= 0) falls back to equal weights, with a warning.

    Returns
    -------
    numpy.ndarray
        ``(K, C)`` float32.

    Raises
    ------
    ConfigError
        For an unknown method.
    """
    if method not in _METHODS:
        raise ConfigError(
            f"weighting must be one of {', '.join(_METHODS)}, got {method!r} (set zemosaic.stack.weighting)"
        )
    count = len(stats)
    channels = stats[0].n_channels if count else 0
    if any(item.n_channels != channels for item in stats):
        raise ValueError(f"every frame must have {channels} channels, got {[item.n_channels for item in stats]}")
    weights = np.ones((count, channels), dtype=np.float32)
    if method == "none" or count == 0:
        return weights
    for channel in range(channels):
        sigmas = [item.sigma[channel] for item in stats]
        unusable = [index for index, sigma in enumerate(sigmas) if not (math.isfinite(sigma) and sigma > 0)]
        if unusable:
            logger.warning(
                "channel %d: frames %s have no usable noise estimate (sigma not finite or <= 0); "
                "weighting that channel equally",
                channel,
                unusable,
            )
            continue
        inverse_variance = 1.0 / np.square(np.asarray(sigmas, dtype=np.float64))
        weights[:, channel] = inverse_variance / inverse_variance.max()
    return weights


def radial_weight(x_in: Any, y_in: Any, width: int, height: int, power: float, floor: float) -> Any:
    """Radial weight of a frame at input-pixel coordinates.

    ``w = max(cos(pi/2 * r) ** power, floor)`` with ``r`` the elliptical radius from the
    frame centre, 1 on the frame's border (``r = sqrt(((x - cx) / (width/2))**2 +
    ((y - cy) / (height/2))**2)``, ``cx = (width - 1) / 2``, clamped to 1), so frames
    fade towards their edges and blend without seams.

    Parameters
    ----------
    x_in, y_in : array
        Input-pixel coordinates (0-based) of the points to weigh, any shape; NaN where a
        point does not map into the frame.
    width, height : int
        Frame size in pixels.
    power : float
        Falloff exponent (>= 0; 0 gives uniform weights).
    floor : float
        Smallest weight, in [0, 1].

    Returns
    -------
    array
        float32 weights of the coordinates' shape, 0 where a coordinate is not finite.

    Raises
    ------
    ConfigError
        When ``power`` or ``floor`` is out of range.
    """
    if not (math.isfinite(power) and power >= 0):
        raise ConfigError(f"radial weight power must be a finite number >= 0, got {power!r}")
    if not 0 <= floor <= 1:
        raise ConfigError(f"radial weight floor must be in [0, 1], got {floor!r}")
    if width < 1 or height < 1:
        raise ValueError(f"frame size must be positive, got width={width}, height={height}")
    xp = array_namespace(x_in, y_in)
    x = xp.asarray(x_in, dtype=xp.float32)
    y = xp.asarray(y_in, dtype=xp.float32)
    finite = xp.isfinite(x) & xp.isfinite(y)
    dx = (x - (width - 1) / 2) / (width / 2)
    dy = (y - (height - 1) / 2) / (height / 2)
    radius = xp.clip(xp.sqrt(dx * dx + dy * dy), 0.0, 1.0)
    falloff = xp.clip(xp.cos(radius * (math.pi / 2)), 0.0, 1.0) ** power
    weight = xp.clip(falloff, floor, 1.0)
    return xp.where(finite, weight, xp.zeros_like(weight))
