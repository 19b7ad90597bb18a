"""Per-frame coefficients handed to the stacking units: normalisation, weights, background, noise."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..graph.mosaic_first import FrameCoefficientTable
from ..plans.mosaic import MosaicPlan
from ..tasks.normalisation import FrameStatistics, normalisation_coefficients
from ..tasks.stacking import StackOptions
from ..tasks.weighting import frame_weights

__all__ = ["frame_coefficients", "frame_noise_and_sky"]


def frame_coefficients(plan: MosaicPlan, stack: StackOptions, planes: Any = None) -> FrameCoefficientTable | None:
    """Per-frame coefficients of every frame, or None when none applies.

    Whole-frame normalisation and weighting coefficients (the reference frame of
    ``linear_fit`` / ``sky_mean`` is the first frame of the plan), the background model's
    ``planes`` (:func:`~zemosaic_dask.execute.background.solve_frame_backgrounds`) and the
    frames' noise when the rejection clips against it.
    """
    noise = sky = shot = None
    if stack.rejection == "noise_clip":
        noise, sky, shot = frame_noise_and_sky(plan, planes)
    if stack.normalisation == "none" and stack.weighting == "none":
        if planes is None and noise is None:
            return None
        return FrameCoefficientTable(planes=planes, noise=noise, sky=sky, shot=shot)
    stats = [FrameStatistics(p25=f.p25, p90=f.p90, sky=f.background, sigma=f.noise) for f in plan.frames]
    channels = plan.n_channels

    def table(array: Any) -> tuple[tuple[float, ...], ...]:
        return tuple(tuple(float(v) for v in np.resize(row, channels)) for row in np.asarray(array))

    gains = offsets = weights = None
    if stack.normalisation != "none":
        gain_array, offset_array = normalisation_coefficients(stats, stack.normalisation, reference_index=0)
        gains, offsets = table(gain_array), table(offset_array)
    if stack.weighting != "none":
        weights = table(frame_weights(stats, stack.weighting))
    return FrameCoefficientTable(gains, offsets, weights, planes=planes, noise=noise, sky=sky, shot=shot)


def frame_noise_and_sky(plan: MosaicPlan, planes: Any = None) -> tuple[tuple, tuple, tuple]:
    """Each frame's expected pixel noise, its sky level once its background model is removed, and its shot level.

    The noise is the frame's measured background noise (ingest) times its gain; the sky is
    its measured background through the gain, minus the model's offset at the frame
    centre; the shot level is the measured background through the gain (the sky whose
    photon noise the noise mostly is: emission above the sky adds noise in proportion),
    per channel. A frame without a positive measured background gets a shot level of 0
    (no shot term).
    """
    channels = plan.n_channels
    noise, sky, shot = [], [], []
    for index, frame in enumerate(plan.frames):
        level = np.resize(np.asarray(frame.background or (0.0,), dtype=np.float64), channels)
        sigma = np.resize(np.asarray(frame.noise or (0.0,), dtype=np.float64), channels)
        raw = np.where(level > 0, level, 0.0)
        if planes is not None:
            model = np.asarray(planes[index], dtype=np.float64)
            gain = np.resize(model[:, 3], channels) if model.shape[1] > 3 else 1.0
            level = gain * level - np.resize(model[:, 0], channels)
            sigma = sigma * gain
            raw = raw * np.abs(gain)
        noise.append(tuple(float(v) for v in sigma))
        sky.append(tuple(float(v) for v in level))
        shot.append(tuple(float(v) for v in raw))
    return tuple(noise), tuple(sky), tuple(shot)
