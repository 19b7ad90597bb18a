"""Whole-frame statistics and per-frame normalisation coefficients.

Normalisation must be the same in every region a frame touches, or each region would
normalise it differently and the mosaic would show seams. So the coefficients are
computed once per frame from statistics of the whole frame (:func:`frame_statistics`,
run where the frame is loaded, numpy or cupy) and then passed to every stacking task
(:func:`normalisation_coefficients` works on host values).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from .namespace import array_namespace

__all__ = ["FrameStatistics", "frame_statistics", "normalisation_coefficients"]

logger = logging.getLogger(__name__)

#: Clipping limit (in robust sigma) and largest number of passes for the sky estimate.
SKY_CLIP_SIGMA = 3.0
SKY_CLIP_PASSES = 5
_MAD_TO_SIGMA = 1.4826
_METHODS = ("none", "linear_fit", "sky_mean")


@dataclass(frozen=True)
class FrameStatistics:
    """Per-channel statistics of one whole frame (Python floats, NaN for an empty channel).

    Attributes
    ----------
    p25, p90 : tuple of float
        25th and 90th percentiles of the finite pixels.
    sky : tuple of float
        Median of the pixels left after iterative 3-sigma clipping (the sky level).
    sigma : tuple of float
        1.4826 x MAD of those pixels (their standard deviation where the MAD is 0):
        the background noise.
    """

    p25: tuple[float, ...]
    p90: tuple[float, ...]
    sky: tuple[float, ...]
    sigma: tuple[float, ...]

    @property
    def n_channels(self) -> int:
        """Number of channels."""
        return len(self.p25)


def frame_statistics(image_chw: Any) -> FrameStatistics:
    """Compute the statistics of a whole ``(C, H, W)`` frame, ignoring NaN pixels.

    Parameters
    ----------
    image_chw : array
        ``(C, H, W)`` (or ``(H, W)`` for one channel) numpy or cupy array.

    Returns
    -------
    FrameStatistics
        Host values; the work runs in the image's namespace.
    """
    xp = array_namespace(image_chw)
    image = image_chw if image_chw.ndim == 3 else image_chw[None]
    p25: list[float] = []
    p90: list[float] = []
    sky: list[float] = []
    sigma: list[float] = []
    for channel in range(image.shape[0]):
        plane = xp.asarray(image[channel], dtype=xp.float32).ravel()
        pixels = plane[xp.isfinite(plane)]
        if pixels.size == 0:
            for collected in (p25, p90, sky, sigma):
                collected.append(math.nan)
            continue
        p25.append(float(xp.percentile(pixels, 25.0)))
        p90.append(float(xp.percentile(pixels, 90.0)))
        level, noise = _clipped_sky(xp, pixels)
        sky.append(level)
        sigma.append(noise)
    return FrameStatistics(p25=tuple(p25), p90=tuple(p90), sky=tuple(sky), sigma=tuple(sigma))


def _clipped_sky(xp: Any, pixels: Any) -> tuple[float, float]:
    """Median and robust sigma after iterative clipping at ``SKY_CLIP_SIGMA``."""
    sample = pixels
    for _ in range(SKY_CLIP_PASSES):
        centre = xp.median(sample)
        spread = xp.median(xp.abs(sample - centre)) * _MAD_TO_SIGMA
        if not float(spread) > 0:
            break
        inside = sample[xp.abs(sample - centre) <= SKY_CLIP_SIGMA * spread]
        if inside.size == sample.size or inside.size == 0:
            break
        sample = inside
    centre = xp.median(sample)
    spread = float(xp.median(xp.abs(sample - centre))) * _MAD_TO_SIGMA
    if not spread > 0:
        spread = float(xp.std(sample))
    return float(centre), spread


def normalisation_coefficients(
    stats: Sequence[FrameStatistics], method: str, reference_index: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame ``gain * x + offset`` coefficients matching each frame to a reference.

    Parameters
    ----------
    stats : sequence of FrameStatistics
        One per frame, all with the same number of channels.
    method : str
        ``none`` (gain 1, offset 0); ``linear_fit`` (per channel, the frame's P25 and P90
        are mapped onto the reference's: ``gain = (ref.p90 - ref.p25) / (p90 - p25)``,
        ``offset = ref.p25 - gain * p25``); ``sky_mean`` (gain 1, ``offset = ref.sky - sky``).
    reference_index : int
        Index of the reference frame in ``stats``.

    Returns
    -------
    gains, offsets : numpy.ndarray
        ``(K, C)`` float32. A frame channel whose statistics cannot give a coefficient
        (empty channel, or P90 == P25 for ``linear_fit``) keeps gain 1 and gets the
        offset that matches its P25 (its sky for ``sky_mean``), or 0 if that is not
        finite either; a warning names it.

    Raises
    ------
    ConfigError
        For an unknown method or a reference index out of range.
    """
    if method not in _METHODS:
        raise ConfigError(
            f"normalisation must be one of {', '.join(_METHODS)}, got {method!r} (set zemosaic.stack.normalisation)"
        )
    count = len(stats)
    channels = stats[0].n_channels if count else 0
    if any(item.n_channels != channels for item in stats):
        raise ValueError(f"every frame must have {channels} channels, got {[item.n_channels for item in stats]}")
    gains = np.ones((count, channels), dtype=np.float32)
    offsets = np.zeros((count, channels), dtype=np.float32)
    if method == "none" or count == 0:
        return gains, offsets
    if not -count <= reference_index < count:
        raise ConfigError(f"reference_index must index one of the {count} frames, got {reference_index}")
    reference = stats[reference_index]
    for index, item in enumerate(stats):
        for channel in range(channels):
            gain, offset = _channel_coefficients(reference, item, channel, method)
            if gain is None:
                logger.warning(
                    "frame %d channel %d: %s normalisation needs finite statistics with p90 > p25 "
                    "(p25=%s, p90=%s, sky=%s); keeping gain 1",
                    index,
                    channel,
                    method,
                    item.p25[channel],
                    item.p90[channel],
                    item.sky[channel],
                )
                gain = 1.0
            gains[index, channel] = gain
            offsets[index, channel] = offset
    return gains, offsets


def _channel_coefficients(
    reference: FrameStatistics, item: FrameStatistics, channel: int, method: str
) -> tuple[float | None, float]:
    """Gain and offset of one channel; gain None when it cannot be computed."""
    if method == "sky_mean":
        offset = reference.sky[channel] - item.sky[channel]
        return (1.0, offset) if math.isfinite(offset) else (None, 0.0)
    span = item.p90[channel] - item.p25[channel]
    reference_span = reference.p90[channel] - reference.p25[channel]
    fallback = reference.p25[channel] - item.p25[channel]
    fallback = fallback if math.isfinite(fallback) else 0.0
    if not (math.isfinite(span) and math.isfinite(reference_span) and span > 0 and reference_span > 0):
        return None, fallback
    gain = reference_span / span
    return gain, reference.p25[channel] - gain * item.p25[channel]
