"""The night sky's own light as one frame sees it: drifting level, gradient, vignetting.

- **Drift**: the sky level of frame ``i`` is ``sky_level[c] * f_i ** (1 + colour[c])``, where
  ``f_i`` is a smooth session trend (a random quadratic in the acquisition time, scaled to a
  peak-to-peak fraction drawn from ``config.sky_drift_range``) plus Gaussian jitter of rms
  ``config.sky_jitter``; each channel's levels are then scaled so that their mean over the
  frames is exactly ``sky_level[c]`` (the level the truth holds).
- **Light pollution**: a plane fixed to the detector, zero mean over the frame, whose
  peak-to-peak amplitude across the frame is ``fraction * level_i[c] * lp_colour[c]``,
  rising toward the detector direction ``angle`` (drawn around
  ``config.light_pollution_angle_deg``). The frames' field rotation turns it on the sky.
- **Vignetting**: every optical signal (sky, stars, extended emission, trails; not hot
  pixels) is multiplied by ``1 - V * (r / r_corner) ** 2`` about the frame centre.

All of it is drawn from a generator that the default (easy) sky does not touch, so the
default frames stay byte-identical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .sky import SimulationConfig

__all__ = ["FrameSky", "sample_frame_skies", "sky_is_easy", "skyglow_planes", "vignetting_map"]


@dataclass(frozen=True)
class FrameSky:
    """The sky of one frame: mean level per channel, light-pollution plane and vignetting."""

    levels: tuple[float, float, float]
    light_pollution: dict[str, Any] | None
    vignetting: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description."""
        return {"levels": list(self.levels), "light_pollution": self.light_pollution, "vignetting": self.vignetting}


def sky_is_easy(config: SimulationConfig) -> bool:
    """True when ``config`` asks for none of drift, light pollution and vignetting."""
    return (
        config.sky_drift_range[1] == 0.0
        and config.sky_jitter == 0.0
        and config.light_pollution_range[1] == 0.0
        and config.vignetting == 0.0
    )


def _drift_factors(n_frames: int, config: SimulationConfig, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Relative sky level of every frame (mean 1) and the trend's parameters."""
    t = np.arange(n_frames) / (n_frames - 1) if n_frames > 1 else np.zeros(1)
    a, b = rng.uniform(-1.0, 1.0, size=2)
    amplitude = float(rng.uniform(*config.sky_drift_range))
    fine = np.linspace(0.0, 1.0, 1001)
    span = float(np.ptp(a * fine + b * fine**2)) or 1.0
    trend = amplitude * (a * t + b * t**2) / span
    jitter = rng.normal(0.0, config.sky_jitter, size=n_frames) if config.sky_jitter > 0 else np.zeros(n_frames)
    factors = 1.0 + trend - trend.mean() + jitter
    factors = factors / factors.mean()
    return factors, {"trend_linear": float(a), "trend_quadratic": float(b), "trend_peak_to_peak": amplitude}


def _light_pollution(
    shape: tuple[int, int], levels: np.ndarray, fraction: float, angle_deg: float, config: SimulationConfig
) -> dict[str, Any]:
    height, width = shape
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    extent = abs(c) * (width - 1) + abs(s) * (height - 1)
    colours = config.light_pollution_colour
    ptp = [fraction * float(level) * colour for level, colour in zip(levels, colours, strict=True)]
    return {
        "angle_deg": angle_deg,
        "peak_to_peak_fraction": fraction,
        "peak_to_peak_adu": ptp,
        "gx": [p * c / extent for p in ptp],
        "gy": [p * s / extent for p in ptp],
        "xc": (width - 1) / 2.0,
        "yc": (height - 1) / 2.0,
    }


def sample_frame_skies(
    n_frames: int, shape: tuple[int, int], config: SimulationConfig, rng: np.random.Generator
) -> tuple[list[FrameSky], dict[str, Any]]:
    """Draw the sky of every frame (acquisition order) and describe the draw.

    Returns
    -------
    skies : list of FrameSky
        One per frame.
    summary : dict
        The session-level parameters (drift trend, light-pollution amplitude and direction).
    """
    base = np.asarray(config.sky_level, dtype=np.float64)
    if sky_is_easy(config):
        easy = FrameSky(tuple(float(v) for v in config.sky_level), None, 0.0)
        return [easy] * n_frames, {"model": "constant"}
    factors, drift = _drift_factors(n_frames, config, rng)
    exponent = 1.0 + np.asarray(config.sky_drift_colour, dtype=np.float64)
    levels = factors[:, None] ** exponent[None, :]
    levels = levels / levels.mean(axis=0, keepdims=True) * base[None, :]
    lp_fraction = float(rng.uniform(*config.light_pollution_range))
    angles = config.light_pollution_angle_deg + rng.normal(0.0, config.light_pollution_scatter_deg, n_frames)
    wobble = 1.0 + 0.05 * rng.normal(size=n_frames)
    skies = []
    for i in range(n_frames):
        lp = None
        if lp_fraction > 0:
            lp = _light_pollution(shape, levels[i], lp_fraction * float(wobble[i]), float(angles[i]), config)
        skies.append(FrameSky(tuple(float(v) for v in levels[i]), lp, float(config.vignetting)))
    summary = {
        "model": "drifting",
        "drift": drift,
        "relative_level": [float(f) for f in factors],
        "light_pollution_fraction": lp_fraction,
        "light_pollution_angle_deg": config.light_pollution_angle_deg,
        "light_pollution_scatter_deg": config.light_pollution_scatter_deg,
        "light_pollution_colour": list(config.light_pollution_colour),
        "vignetting": config.vignetting,
    }
    return skies, summary


def skyglow_planes(shape: tuple[int, int], sky: FrameSky) -> np.ndarray:
    """``(3, H, W)`` sky of a frame per channel: level plus light-pollution plane (no vignetting)."""
    height, width = shape
    out = np.empty((3, height, width), dtype=np.float64)
    lp = sky.light_pollution
    for channel in range(3):
        out[channel] = sky.levels[channel]
        if lp is not None:
            x = np.arange(width, dtype=np.float64)[None, :] - lp["xc"]
            y = np.arange(height, dtype=np.float64)[:, None] - lp["yc"]
            out[channel] += lp["gx"][channel] * x + lp["gy"][channel] * y
    return out


def vignetting_map(shape: tuple[int, int], falloff: float) -> np.ndarray:
    """``(H, W)`` optical throughput ``1 - falloff * (r / r_corner) ** 2`` about the frame centre."""
    height, width = shape
    y = np.arange(height, dtype=np.float64)[:, None] - (height - 1) / 2.0
    x = np.arange(width, dtype=np.float64)[None, :] - (width - 1) / 2.0
    corner2 = ((height - 1) / 2.0) ** 2 + ((width - 1) / 2.0) ** 2
    return 1.0 - falloff * (x**2 + y**2) / corner2
