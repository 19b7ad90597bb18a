"""``simulate_seestar``: a folder of realistic ZWO Seestar S50 frames with their ground truth.

Files written into the output folder:

- ``frame_0000.fits`` ...: raw GRBG frames, int16 with ``BZERO = 32768`` (0..65535 ADU), or
  float32 ``(3, H, W)`` / ``(H, W)`` frames for the ``chw`` / ``mono`` layouts;
- ``truth.fits``: the noiseless sky ``(3, H, W)`` float32 on a north-up TAN grid covering
  the union of the frames: stars (PSF FWHM = median of the frames') + extended emission
  (if any) + the constant *mean* sky level per channel. Frame-to-frame drift of the sky
  level, light-pollution gradients, the small per-frame gradients and vignetting are not
  sky and are not in it: a mosaic may differ from it by a constant per channel;
- ``extended.fits`` (only with a galaxy or nebula): the extended emission alone, same grid;
- ``stars.csv``: ``ra, dec, flux_r, flux_g, flux_b``, one row per star, fluxes in ADU per
  frame (sum over native pixels);
- ``simulation.json``: every parameter needed to check a mosaic against the truth, including
  ``degraded`` (frame index -> ``{"kind", "angle_deg"}``) for the frames taken through
  clouds, trailed or out of focus (:mod:`.degraded`).

The same seed gives the same bytes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from .degraded import sample_degradations
from .extended import ExtendedEmission, make_extended_emission
from .frames import (
    LAYOUTS,
    FrameSpec,
    frame_header,
    observation_date,
    render_expected_signal,
    sample_gradient,
    sample_hot_pixels,
    sample_trail,
    simulate_frame_pixels,
    write_frame,
)
from .outputs import write_extended, write_stars, write_truth
from .render import render_stars
from .sky import (
    SimulationConfig,
    StarField,
    frame_shape,
    make_star_field,
    panel_sequence,
    plan_pointings,
    plan_truth_grid,
)
from .skyglow import sample_frame_skies, sky_is_easy

__all__ = ["SimulationResult", "default_trail_frames", "simulate_seestar"]

log = logging.getLogger(__name__)

_FLUX_KEYS = ("flux_r", "flux_g", "flux_b")
_FRAME_NAME = re.compile(r"^frame_(\d+)\.fits$")


@dataclass(frozen=True)
class SimulationResult:
    """Paths and parameters of a simulated session.

    Attributes
    ----------
    out_dir : Path
        Folder holding every file.
    frames : tuple of Path
        The frames, in acquisition order.
    truth : Path
        ``truth.fits``.
    stars : Path
        ``stars.csv``.
    parameters_path : Path
        ``simulation.json``.
    parameters : dict
        The content of ``simulation.json``.
    extended : Path or None
        ``extended.fits`` when the session has extended emission.
    """

    out_dir: Path
    frames: tuple[Path, ...]
    truth: Path
    stars: Path
    parameters_path: Path
    parameters: dict[str, Any]
    extended: Path | None = None

    @property
    def sky_level(self) -> tuple[float, float, float]:
        """Constant sky level per channel (R, G, B) in ADU."""
        return tuple(self.parameters["sky_level"])

    @property
    def noise_sigma(self) -> np.ndarray:
        """``(n_frames, 3)`` per-pixel background noise of every frame in ADU."""
        return np.asarray(self.parameters["noise_sigma"], dtype=np.float64)

    @property
    def frame_sky_levels(self) -> np.ndarray:
        """``(n_frames, 3)`` mean sky level of every frame (R, G, B) in ADU."""
        return np.asarray(self.parameters["sky"]["levels"], dtype=np.float64)

    def load_truth(self) -> tuple[np.ndarray, WCS]:
        """Return the truth cube ``(3, H, W)`` float32 and its celestial WCS."""
        with fits.open(self.truth, memmap=False) as hdul:
            return np.asarray(hdul[0].data, dtype=np.float32), WCS(hdul[0].header, naxis=2)

    def load_extended(self) -> tuple[np.ndarray, WCS]:
        """Return the extended emission ``(3, H, W)`` float32 on the truth grid and its WCS."""
        if self.extended is None:
            raise ValueError(f"{self.out_dir} has no extended emission (simulate with a galaxy or nebulosity)")
        with fits.open(self.extended, memmap=False) as hdul:
            return np.asarray(hdul[0].data, dtype=np.float32), WCS(hdul[0].header, naxis=2)


def default_trail_frames(n_frames: int, rng: np.random.Generator, every: float = 10.0) -> list[int]:
    """About one frame in ``every`` gets a trail, at least one when there are 5 frames or more."""
    count = max(1 if n_frames >= 5 else 0, int(round(n_frames / every)))
    return sorted(int(i) for i in rng.choice(n_frames, size=count, replace=False)) if count else []


def _trail_frames(
    trails: int | Sequence[int] | None, n_frames: int, rng: np.random.Generator, every: float
) -> list[int]:
    if trails is None:
        return default_trail_frames(n_frames, rng, every)
    if isinstance(trails, (int, np.integer)):
        if not 0 <= trails <= n_frames:
            raise ValueError(f"trails must be between 0 and n_frames={n_frames}, got {trails}")
        return sorted(int(i) for i in rng.choice(n_frames, size=int(trails), replace=False))
    chosen = sorted({int(i) for i in trails})
    if chosen and (chosen[0] < 0 or chosen[-1] >= n_frames):
        raise ValueError(f"trail frame indices must lie in [0, {n_frames - 1}], got {list(trails)}")
    return chosen


def _check_out_dir(out_dir: Path, n_frames: int) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    stale = sorted(
        p.name for p in out_dir.iterdir() if (m := _FRAME_NAME.match(p.name)) and int(m.group(1)) >= n_frames
    )
    if stale:
        raise ValueError(
            f"{out_dir} already holds frames beyond the {n_frames} requested ({', '.join(stale[:3])}...); "
            "use an empty folder so that old frames do not mix with the new session"
        )


@dataclass(frozen=True)
class _Session:
    """Everything drawn for one simulated session, before and after rendering."""

    seed: int
    scale: float
    layout: str
    panels: tuple[int, int]
    shape: tuple[int, int]
    config: SimulationConfig
    hot_fraction: float
    hot: tuple[np.ndarray, np.ndarray]
    trail_frames: list[int]
    stars: StarField
    truth_wcs: WCS
    truth_shape: tuple[int, int]
    specs: tuple[FrameSpec, ...]
    order: str
    sky_summary: dict[str, Any]
    extended: ExtendedEmission | None

    @property
    def truth_fwhm(self) -> float:
        """PSF FWHM of the truth: the median of the frames'."""
        return float(np.median([spec.fwhm_px for spec in self.specs]))

    def to_parameters(self) -> dict[str, Any]:
        """The JSON content of ``simulation.json``."""
        config = self.config
        return {
            "seed": self.seed,
            "scale": self.scale,
            "n_frames": len(self.specs),
            "layout": self.layout,
            "bayer_pattern": "GRBG" if self.layout == "bayer" else None,
            "frame_shape": list(self.shape),
            "panels": list(self.panels),
            "overlap": config.overlap,
            "center": list(config.center),
            "pixel_scale_arcsec": config.pixel_scale_arcsec,
            "focal_length_mm": config.focal_length_mm,
            "pixel_size_um": config.pixel_size_um,
            "exposure_s": config.exposure_s,
            "gain_e_per_adu": config.gain_e_per_adu,
            "read_noise_adu": config.read_noise_adu,
            "channels": ["R", "G", "B"],
            "sky_level": list(config.sky_level),
            "noise_sigma": [_noise_sigma(config, spec.sky_levels(config)) for spec in self.specs],
            "order": self.order,
            "sky": {
                **self.sky_summary,
                "levels": [list(spec.sky_levels(config)) for spec in self.specs],
                "light_pollution": [None if spec.sky is None else spec.sky.light_pollution for spec in self.specs],
            },
            "extended": None if self.extended is None else self.extended.to_dict(),
            "fwhm_px": [spec.fwhm_px for spec in self.specs],
            "pointings": [spec.pointing.to_dict() for spec in self.specs],
            "dates": [observation_date(config, spec.index) for spec in self.specs],
            "gradients": [spec.gradient for spec in self.specs],
            "trail_frames": self.trail_frames,
            "trails": {str(spec.index): spec.trail for spec in self.specs if spec.trail is not None},
            "degraded": {str(spec.index): spec.degradation for spec in self.specs if spec.degradation is not None},
            "hot_pixels": {
                "fraction": self.hot_fraction,
                "positions": self.hot[0].tolist(),
                "amplitudes_adu": self.hot[1].tolist(),
            },
            "stars": {
                "count": len(self.stars),
                "per_sq_deg": config.stars_per_sq_deg,
                "flux_range_adu": list(config.flux_range_adu),
                "power_law_index": config.flux_power_index,
            },
            "truth": {
                "file": "truth.fits",
                "shape": [3, *self.truth_shape],
                "crval": [float(v) for v in self.truth_wcs.wcs.crval],
                "crpix": [float(v) for v in self.truth_wcs.wcs.crpix],
                "pixel_scale_arcsec": config.pixel_scale_arcsec,
                "fwhm_px": self.truth_fwhm,
            },
            "config": dataclasses.asdict(config),
        }


def _noise_sigma(config: SimulationConfig, levels: Sequence[float]) -> list[float]:
    """Per-pixel background noise (ADU) at a frame's mean sky level, as ``config.noise_sigma``."""
    gain, read = config.gain_e_per_adu, config.read_noise_adu
    return [math.sqrt(level / gain + read**2 + 1.0 / 12.0) for level in levels]


def _star_field(stars: Mapping[str, Any] | np.ndarray) -> StarField:
    try:
        ra, dec = (np.atleast_1d(np.asarray(stars[k], dtype=np.float64)) for k in ("ra", "dec"))
        fluxes = np.stack([np.atleast_1d(np.asarray(stars[k], dtype=np.float64)) for k in _FLUX_KEYS], axis=1)
    except (KeyError, ValueError) as err:
        raise ValueError(f"stars needs columns ra, dec, {', '.join(_FLUX_KEYS)} of equal length: {err}") from err
    if not (ra.shape == dec.shape == fluxes.shape[:1]):
        raise ValueError(f"stars columns differ in length: ra {ra.shape}, dec {dec.shape}, fluxes {fluxes.shape}")
    return StarField(ra, dec, fluxes)


def simulate_seestar(
    out_dir: str | os.PathLike[str],
    n_frames: int,
    seed: int,
    scale: float = 1.0,
    *,
    panels: tuple[int, int] = (2, 2),
    trails: int | Sequence[int] | None = None,
    hot_pixels: float = 1e-4,
    layout: str = "bayer",
    stars: Mapping[str, Any] | np.ndarray | None = None,
    config: SimulationConfig | None = None,
    order: str = "interleaved",
    degraded: float = 0.0,
) -> SimulationResult:
    """Write a simulated Seestar S50 mosaic session and its ground truth into ``out_dir``.

    Parameters
    ----------
    out_dir : path-like
        Output folder (created if needed).
    n_frames : int
        Number of frames, >= 1.
    seed : int
        Seed of every random draw; the same seed gives byte-identical files.
    scale : float
        Frame size factor: frames are ``(round_even(1920 s), round_even(1080 s))``. The
        pixel scale (~2.39"/px) and PSF FWHM (2.8-3.8 px) do not change, the field shrinks.
    panels : tuple of int
        ``(nx, ny)`` mosaic panels, overlapping by ``config.overlap`` (30 %) of a frame.
    trails : int or sequence of int, optional
        Number of frames with a satellite trail, or their indices. Default: one frame in
        ``config.trail_every_frames`` (10; 6.7 in the realistic preset), at least one when
        ``n_frames >= 5``.
    hot_pixels : float
        Fraction of sensor pixels that are hot (same positions in every frame); 0 for none.
    layout : {"bayer", "chw", "mono"}
        Raw GRBG int16 frames, debayered float32 ``(3, H, W)`` cubes, or float32 mono frames
        of the green channel.
    stars : structured array or mapping, optional
        A catalogue (``ra, dec, flux_r, flux_g, flux_b``, as :func:`load_stars` returns)
        used instead of the random star field.
    config : SimulationConfig, optional
        Physical parameters (sky levels, noise, star density, ...);
        :meth:`SimulationConfig.realistic` gives a real night's sky.
    order : {"interleaved", "panel", "shuffled"}
        Acquisition order of the panels (see :func:`~.sky.panel_sequence`): frame ``i`` on
        panel ``i % n_panels``, every frame of one panel before the next, or a seeded random
        order. Files are numbered in acquisition order in every case.
    degraded : float
        Share of frames taken through clouds, trailed or out of focus (the three in turn,
        see :mod:`.degraded`), for example 0.15; 0 for none.

    Returns
    -------
    SimulationResult
    """
    config = config or SimulationConfig()
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if int(n_frames) < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    n_frames = int(n_frames)
    out = Path(out_dir)
    _check_out_dir(out, n_frames)
    shape = frame_shape(scale)
    seeds = np.random.SeedSequence(int(seed))
    streams = [np.random.default_rng(s) for s in seeds.spawn(4 + n_frames)]
    layout_rng, star_rng, hot_rng, trail_rng = streams[:4]
    # Drawn after the streams above, so that the default sky keeps its bytes.
    sky_rng, order_rng, extended_rng = (np.random.default_rng(s) for s in seeds.spawn(3))
    degradations = sample_degradations(n_frames, degraded, np.random.default_rng(seeds.spawn(1)[0]))
    n_panels = int(panels[0]) * int(panels[1])
    panel_of = panel_sequence(n_frames, max(n_panels, 1), order, order_rng)
    pointings = plan_pointings(n_frames, shape, panels, config, layout_rng, panel_of)
    fwhms = layout_rng.uniform(*config.fwhm_range_px, size=n_frames)
    truth_wcs, truth_shape = plan_truth_grid(pointings, shape, config)
    field = make_star_field(truth_wcs, truth_shape, config, star_rng) if stars is None else _star_field(stars)
    hot = sample_hot_pixels(shape, hot_pixels, config, hot_rng)
    trail_frames = _trail_frames(trails, n_frames, trail_rng, config.trail_every_frames)
    skies, sky_summary = sample_frame_skies(n_frames, shape, config, sky_rng)
    extended = make_extended_emission(config, truth_wcs, truth_shape, shape[1], extended_rng)
    sigma = config.noise_sigma()
    log.info(
        "simulating %d %s frames of %dx%d px with %d stars into %s (%s order, %s sky%s)",
        n_frames,
        layout,
        shape[1],
        shape[0],
        len(field),
        out,
        order,
        sky_summary["model"],
        ", extended emission" if extended is not None else "",
    )
    easy = sky_is_easy(config)
    paths, specs = [], []
    for pointing, fwhm, sky, rng in zip(pointings, fwhms, skies, streams[4:], strict=True):
        spec = FrameSpec(
            pointing=pointing,
            fwhm_px=float(fwhm),
            gradient=sample_gradient(shape, sigma, config, rng),
            trail=sample_trail(shape, config, rng) if pointing.index in trail_frames else None,
            sky=None if easy else sky,
            degradation=degradations.get(pointing.index),
        )
        wcs = pointing.wcs(shape, config.pixel_scale_arcsec)
        emission = extended.render(wcs, shape) if extended is not None else None
        expected = render_expected_signal(field, wcs, shape, spec, config, layout, hot, emission)
        pixels = simulate_frame_pixels(expected, config, rng)
        path = out / f"frame_{pointing.index:04d}.fits"
        write_frame(str(path), pixels, frame_header(spec, wcs, config, layout), layout)
        paths.append(path)
        specs.append(spec)
    session = _Session(
        int(seed),
        float(scale),
        layout,
        (int(panels[0]), int(panels[1])),
        shape,
        config,
        float(hot_pixels),
        hot,
        trail_frames,
        field,
        truth_wcs,
        truth_shape,
        tuple(specs),
        order,
        sky_summary,
        extended,
    )
    extended_path = _write_truth_files(out, session)
    parameters = session.to_parameters()
    parameters_path = out / "simulation.json"
    parameters_path.write_text(json.dumps(parameters, indent=1) + "\n", encoding="utf-8")
    return SimulationResult(
        out, tuple(paths), out / "truth.fits", out / "stars.csv", parameters_path, parameters, extended_path
    )


def _write_truth_files(out: Path, session: _Session) -> Path | None:
    """Write ``truth.fits``, ``stars.csv`` and, with extended emission, ``extended.fits``."""
    field, config, fwhm = session.stars, session.config, session.truth_fwhm
    wcs, shape = session.truth_wcs, session.truth_shape
    extended_path = None
    if session.extended is None:
        truth = render_stars(field.ra, field.dec, field.fluxes, wcs, shape, fwhm, config.sky_level)
    else:
        emission = session.extended.render(wcs, shape)
        stars = render_stars(field.ra, field.dec, field.fluxes, wcs, shape, fwhm).astype(np.float64)
        truth = stars + emission + np.asarray(config.sky_level, dtype=np.float64)[:, None, None]
        extended_path = out / "extended.fits"
        write_extended(extended_path, emission, wcs)
    write_truth(out / "truth.fits", truth, wcs, fwhm, config)
    write_stars(out / "stars.csv", field)
    return extended_path
