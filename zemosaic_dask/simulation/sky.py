"""The simulated sky and how the telescope looks at it.

Everything here is pure numpy/astropy arithmetic driven by explicit random generators:
the star field (power-law fluxes, colours), the multi-panel mosaic pointings with
dithers and alt-az field rotation, the frames' TAN WCS and the north-up truth grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS

__all__ = [
    "FRAME_ORDERS",
    "GalaxyModel",
    "Pointing",
    "SimulationConfig",
    "StarField",
    "frame_shape",
    "make_star_field",
    "panel_sequence",
    "plan_pointings",
    "plan_truth_grid",
    "tan_wcs",
]

ARCSEC_PER_RADIAN = 180.0 / math.pi * 3600.0
FRAME_ORDERS = ("interleaved", "panel", "shuffled")


@dataclass(frozen=True)
class GalaxyModel:
    """A large M31-like galaxy: Sersic bulge plus an inclined, exponential disk.

    Sizes are in units of the frame's short side (its width, 1080 px at scale 1) so that the
    galaxy keeps its place in a mosaic of any frame scale; surface brightnesses are fractions
    of the green channel's mean sky level, multiplied per channel by ``colour`` (R, G, B).
    The disk ``I0 exp(-r / h)`` runs from ``disk_central`` at the centre to ``edge_fraction``
    at the elliptical radius ``edge_radius_frames`` (which fixes ``h``), then fades to zero
    with a cosine taper over ``taper`` edge radii. ``position_angle_deg`` is the major
    axis' angle east of north; ``offset_frames`` moves the centre from the session centre
    (mosaic pixels x, y of a north-up grid, in frame widths).
    """

    offset_frames: tuple[float, float] = (0.0, 0.0)
    position_angle_deg: float = 35.0
    axis_ratio: float = 0.35
    edge_radius_frames: float = 1.1
    disk_central: float = 0.75
    edge_fraction: float = 0.015
    taper: float = 0.25
    bulge_sersic_n: float = 2.0
    bulge_effective_radius: float = 0.06
    bulge_surface_brightness: float = 0.3
    bulge_axis_ratio: float = 0.8
    colour: tuple[float, float, float] = (1.15, 1.0, 0.8)

    def __post_init__(self) -> None:
        if not 0.05 <= self.axis_ratio <= 1.0:
            raise ValueError(f"GalaxyModel.axis_ratio must lie in [0.05, 1], got {self.axis_ratio}")
        if not 0.0 < self.edge_fraction < self.disk_central:
            raise ValueError(
                f"GalaxyModel needs 0 < edge_fraction < disk_central, got {self.edge_fraction}, {self.disk_central}"
            )
        if self.edge_radius_frames <= 0 or self.bulge_effective_radius <= 0 or self.bulge_sersic_n <= 0:
            raise ValueError("GalaxyModel radii and the Sersic index must be > 0")


@dataclass(frozen=True)
class SimulationConfig:
    """Physical and observing parameters of a simulated Seestar S50 session.

    The defaults describe a ZWO Seestar S50 (250 mm focal length, 2.9 um pixels, 10 s
    sub-exposures on an alt-az mount) under a moderately bright sky. Levels and fluxes are
    in ADU per exposure; ``flux_range_adu`` bounds the brightest channel of a star (the
    upper bound keeps the peak pixel far below 65535 at the sharpest seeing);
    ``dither_px`` is the dither half-width for a full-size frame (scaled with the frame,
    plus 1.5 px); ``overlap`` is the fraction of a frame side shared by adjacent panels;
    the field rotation drifts over ``rotation_span_deg`` through the session with
    ``rotation_jitter_deg`` of scatter; ``gradient_range_sigma`` bounds the peak-to-peak
    amplitude of each frame's sky gradient in units of the per-pixel noise.

    The sky below is off by default (the "easy" sky: constant levels, tiny gradients);
    :meth:`realistic` turns it on. ``sky_drift_range`` bounds the peak-to-peak fraction of
    a smooth session trend of the sky level, ``sky_jitter`` is the rms frame-to-frame
    fraction on top, ``sky_drift_colour`` the per-channel exponent excess (a channel's level
    goes as ``factor ** (1 + colour)``); ``light_pollution_range`` bounds the peak-to-peak
    fraction of the sky level of a gradient fixed to the detector, rising toward
    ``light_pollution_angle_deg`` (detector frame, 270 = toward row 0, the bottom) with
    ``light_pollution_scatter_deg`` of scatter and ``light_pollution_colour`` per channel;
    ``vignetting`` is the fractional falloff at the frame corners (quadratic in radius);
    ``galaxy`` adds extended emission (:class:`GalaxyModel`); ``nebulosity`` is the peak
    fraction of the green sky level of a smooth random nebula; on average one frame in
    ``trail_every_frames`` gets a satellite trail.
    """

    center: tuple[float, float] = (150.0, 35.0)
    focal_length_mm: float = 250.0
    pixel_size_um: float = 2.9
    exposure_s: float = 10.0
    sky_level: tuple[float, float, float] = (300.0, 400.0, 250.0)
    gain_e_per_adu: float = 1.0
    read_noise_adu: float = 3.0
    fwhm_range_px: tuple[float, float] = (2.8, 3.8)
    stars_per_sq_deg: float = 3000.0
    flux_range_adu: tuple[float, float] = (100.0, 300_000.0)
    flux_power_index: float = 0.7
    overlap: float = 0.3
    dither_px: float = 6.0
    rotation_span_deg: float = 5.0
    rotation_jitter_deg: float = 0.3
    gradient_range_sigma: tuple[float, float] = (0.3, 0.5)
    hot_pixel_range_adu: tuple[float, float] = (2000.0, 8000.0)
    trail_peak_range_adu: tuple[float, float] = (200.0, 800.0)
    trail_fwhm_range_px: tuple[float, float] = (2.0, 4.0)
    truth_margin_px: int = 8
    start_time: str = "2024-03-15T21:00:00"
    sky_drift_range: tuple[float, float] = (0.0, 0.0)
    sky_jitter: float = 0.0
    sky_drift_colour: tuple[float, float, float] = (0.0, 0.0, 0.0)
    light_pollution_range: tuple[float, float] = (0.0, 0.0)
    light_pollution_angle_deg: float = 270.0
    light_pollution_scatter_deg: float = 0.0
    light_pollution_colour: tuple[float, float, float] = (1.0, 1.0, 1.0)
    vignetting: float = 0.0
    galaxy: GalaxyModel | None = None
    nebulosity: float = 0.0
    trail_every_frames: float = 10.0

    def __post_init__(self) -> None:
        low, high = self.sky_drift_range
        if not 0.0 <= low <= high < 1.0 or not 0.0 <= self.sky_jitter < 0.2:
            raise ValueError(
                f"sky_drift_range must satisfy 0 <= low <= high < 1 and sky_jitter 0..0.2, got "
                f"{self.sky_drift_range}, {self.sky_jitter} (realistic: (0.08, 0.22), 0.015)"
            )
        low, high = self.light_pollution_range
        if not 0.0 <= low <= high < 1.0:
            raise ValueError(
                f"light_pollution_range must satisfy 0 <= low <= high < 1, got {self.light_pollution_range}"
            )
        if not 0.0 <= self.vignetting < 0.5:
            raise ValueError(f"vignetting is the corner falloff fraction in [0, 0.5), got {self.vignetting} (try 0.03)")
        if not 0.0 <= self.nebulosity < 1.0:
            raise ValueError(f"nebulosity is a fraction of the sky level in [0, 1), got {self.nebulosity} (try 0.03)")
        if self.trail_every_frames <= 0:
            raise ValueError(f"trail_every_frames must be > 0, got {self.trail_every_frames} (default 10)")

    @classmethod
    def realistic(
        cls, *, galaxy: bool = True, nebulosity: float = 0.03, vignetting: float = 0.0, **overrides: object
    ) -> SimulationConfig:
        """The sky of a real Seestar night: drifting level, strong detector-fixed gradients.

        Parameters
        ----------
        galaxy : bool
            Add the default :class:`GalaxyModel` (centred in the mosaic).
        nebulosity : float
            Peak fraction of the green sky level of a smooth random nebula; 0 for none.
        vignetting : float
            Corner falloff fraction of a radial vignetting; off (0) by default because the
            pipeline does not flat-field, set 0.03 for a Seestar-like optic.
        **overrides
            Any other :class:`SimulationConfig` field.

        Returns
        -------
        SimulationConfig
            Sky level drifting 8-22 % over the session (smooth trend) with 1.5 % rms jitter,
            slightly redder when brighter; a light-pollution gradient of 10-35 % of the sky
            toward the detector bottom (3 degrees of scatter, orange); satellite trails of
            560-1,020 ADU peak in about 6 frames out of 40.
        """
        values: dict[str, object] = {
            "sky_drift_range": (0.08, 0.22),
            "sky_jitter": 0.015,
            "sky_drift_colour": (0.15, 0.0, -0.1),
            "light_pollution_range": (0.10, 0.35),
            "light_pollution_angle_deg": 270.0,
            "light_pollution_scatter_deg": 3.0,
            "light_pollution_colour": (1.15, 1.0, 0.8),
            "vignetting": vignetting,
            "galaxy": GalaxyModel() if galaxy else None,
            "nebulosity": nebulosity,
            "trail_peak_range_adu": (560.0, 1020.0),
            "trail_every_frames": 40.0 / 6.0,
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def pixel_scale_arcsec(self) -> float:
        """Plate scale in arcseconds per pixel from focal length and pixel size."""
        return self.pixel_size_um * 1e-3 / self.focal_length_mm * ARCSEC_PER_RADIAN

    def noise_sigma(self) -> tuple[float, float, float]:
        """Per-pixel background noise in ADU per channel: sky shot noise, read noise, rounding."""
        gain = self.gain_e_per_adu
        return tuple(math.sqrt(level / gain + self.read_noise_adu**2 + 1.0 / 12.0) for level in self.sky_level)


def frame_shape(scale: float) -> tuple[int, int]:
    """Return the ``(height, width)`` of a Seestar frame at ``scale``, each rounded to an even number."""
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be a positive finite number, got {scale!r} (use 1.0 for full 1920x1080 frames)")
    height, width = (2 * int(round(1920 * scale / 2.0)), 2 * int(round(1080 * scale / 2.0)))
    if min(height, width) < 16:
        raise ValueError(f"scale {scale} gives {height}x{width} frames; use scale >= {16 / 1080:.3f} (16 px or more)")
    return height, width


def tan_wcs(crval: tuple[float, float], crpix: tuple[float, float], cd: np.ndarray) -> WCS:
    """Return a celestial TAN WCS with a CD matrix (``crpix`` is FITS 1-based)."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [float(crval[0]), float(crval[1])]
    wcs.wcs.crpix = [float(crpix[0]), float(crpix[1])]
    wcs.wcs.cd = np.asarray(cd, dtype=np.float64)
    wcs.wcs.radesys = "ICRS"
    wcs.wcs.equinox = 2000.0
    return wcs


def rotated_cd(pixel_scale_arcsec: float, rotation_deg: float) -> np.ndarray:
    """CD matrix of an east-left, north-up grid rotated by ``rotation_deg`` on the sky."""
    scale = pixel_scale_arcsec / 3600.0
    c, s = math.cos(math.radians(rotation_deg)), math.sin(math.radians(rotation_deg))
    return np.array([[c, -s], [s, c]]) @ np.diag([-scale, scale])


@dataclass(frozen=True)
class Pointing:
    """Where one frame looks: panel, centre, dither (mosaic pixels) and field rotation."""

    index: int
    panel: int
    ra: float
    dec: float
    dither_px: tuple[float, float]
    rotation_deg: float

    def wcs(self, shape: tuple[int, int], pixel_scale_arcsec: float) -> WCS:
        """TAN WCS of a frame of ``shape`` centred on this pointing."""
        height, width = shape
        crpix = ((width + 1) / 2.0, (height + 1) / 2.0)
        return tan_wcs((self.ra, self.dec), crpix, rotated_cd(pixel_scale_arcsec, self.rotation_deg))

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable description."""
        return {
            "index": self.index,
            "panel": self.panel,
            "ra": self.ra,
            "dec": self.dec,
            "dither_px": list(self.dither_px),
            "rotation_deg": self.rotation_deg,
        }


def mosaic_wcs(config: SimulationConfig) -> WCS:
    """North-up TAN projection of the session, 0-based pixel (0, 0) on the mosaic centre."""
    return tan_wcs(config.center, (1.0, 1.0), rotated_cd(config.pixel_scale_arcsec, 0.0))


def panel_sequence(n_frames: int, n_panels: int, order: str, rng: np.random.Generator | None = None) -> list[int]:
    """Panel of every frame in acquisition order.

    Parameters
    ----------
    n_frames, n_panels : int
        Number of frames and of panels.
    order : {"interleaved", "panel", "shuffled"}
        ``interleaved``: frame ``i`` on panel ``i % n_panels``; ``panel``: every frame of
        panel 0, then panel 1, ... (``i * n_panels // n_frames``, counts differ by one at
        most); ``shuffled``: the interleaved assignment in a random order drawn from ``rng``.
    rng : numpy.random.Generator, optional
        Needed for ``shuffled``.
    """
    if order not in FRAME_ORDERS:
        raise ValueError(f"order must be one of {', '.join(FRAME_ORDERS)}, got {order!r}")
    interleaved = [i % n_panels for i in range(n_frames)]
    if order == "interleaved":
        return interleaved
    if order == "panel":
        return [i * n_panels // n_frames for i in range(n_frames)]
    if rng is None:
        raise ValueError("order='shuffled' needs a random generator")
    return [interleaved[int(k)] for k in rng.permutation(n_frames)]


def plan_pointings(
    n_frames: int,
    shape: tuple[int, int],
    panels: tuple[int, int],
    config: SimulationConfig,
    rng: np.random.Generator,
    panel_of: list[int] | None = None,
) -> list[Pointing]:
    """Put frames on an ``nx x ny`` panel grid with dithers and drifting rotation.

    Panels overlap by ``config.overlap`` of a frame side; frame ``i`` goes to panel
    ``panel_of[i]`` (row-major, x fastest), by default ``i % (nx * ny)`` (see
    :func:`panel_sequence`).
    """
    nx, ny = (int(panels[0]), int(panels[1]))
    if nx < 1 or ny < 1:
        raise ValueError(f"panels must be two integers >= 1, got {panels!r} (for example panels=(2, 2))")
    if panel_of is None:
        panel_of = panel_sequence(n_frames, nx * ny, "interleaved")
    height, width = shape
    step_x, step_y = ((1.0 - config.overlap) * width, (1.0 - config.overlap) * height)
    dither = config.dither_px * max(height, width) / 1920.0 + 1.5
    projection = mosaic_wcs(config)
    pointings = []
    for index in range(n_frames):
        panel = int(panel_of[index])
        iy, ix = divmod(panel, nx)
        dx, dy = rng.uniform(-dither, dither, size=2)
        u = (ix - (nx - 1) / 2.0) * step_x + dx
        v = (iy - (ny - 1) / 2.0) * step_y + dy
        ra, dec = projection.all_pix2world([[u, v]], 0)[0]
        progress = index / (n_frames - 1) if n_frames > 1 else 0.5
        rotation = config.rotation_span_deg * (progress - 0.5) + rng.normal(0.0, config.rotation_jitter_deg)
        pointings.append(Pointing(index, panel, float(ra), float(dec), (float(dx), float(dy)), float(rotation)))
    return pointings


def plan_truth_grid(
    pointings: list[Pointing], shape: tuple[int, int], config: SimulationConfig
) -> tuple[WCS, tuple[int, int]]:
    """North-up TAN grid (frame pixel scale) covering the union of the frames plus a margin."""
    height, width = shape
    projection = mosaic_wcs(config)
    corners_x = np.array([-0.5, width - 0.5, width - 0.5, -0.5])
    corners_y = np.array([-0.5, -0.5, height - 0.5, height - 0.5])
    us, vs = [], []
    for pointing in pointings:
        ra, dec = pointing.wcs(shape, config.pixel_scale_arcsec).all_pix2world(corners_x, corners_y, 0)
        u, v = projection.all_world2pix(ra, dec, 0)
        us.append(u)
        vs.append(v)
    u_all, v_all = np.concatenate(us), np.concatenate(vs)
    margin = config.truth_margin_px
    x0, x1 = math.floor(u_all.min()) - margin, math.ceil(u_all.max()) + margin
    y0, y1 = math.floor(v_all.min()) - margin, math.ceil(v_all.max()) + margin
    wcs = tan_wcs(config.center, (1.0 - x0, 1.0 - y0), rotated_cd(config.pixel_scale_arcsec, 0.0))
    return wcs, (y1 - y0 + 1, x1 - x0 + 1)


@dataclass(frozen=True)
class StarField:
    """Stars of the simulated sky: positions in degrees, fluxes in ADU per frame per channel."""

    ra: np.ndarray
    dec: np.ndarray
    fluxes: np.ndarray  # (N, 3): R, G, B

    def __len__(self) -> int:
        return int(self.ra.size)


def _power_law_fluxes(n: int, config: SimulationConfig, rng: np.random.Generator) -> np.ndarray:
    """Truncated Pareto fluxes: N(>F) ~ F**-index between the configured limits."""
    low, high = config.flux_range_adu
    alpha = config.flux_power_index
    u = rng.uniform(0.0, 1.0, size=n)
    return low * (1.0 - u * (1.0 - (low / high) ** alpha)) ** (-1.0 / alpha)


def make_star_field(
    truth_wcs: WCS, truth_shape: tuple[int, int], config: SimulationConfig, rng: np.random.Generator
) -> StarField:
    """Scatter stars uniformly over the truth grid and a rim one PSF cut-out wide.

    The brightest channel of every star carries the power-law flux; the other channels
    follow a colour drawn from a temperature-like variable (blue to red stars).
    """
    height, width = truth_shape
    rim = 12.0
    area_px = (width + 2 * rim) * (height + 2 * rim)
    area_deg2 = area_px * (config.pixel_scale_arcsec / 3600.0) ** 2
    n = int(rng.poisson(config.stars_per_sq_deg * area_deg2))
    x = rng.uniform(-rim - 0.5, width - 0.5 + rim, size=n)
    y = rng.uniform(-rim - 0.5, height - 0.5 + rim, size=n)
    ra, dec = truth_wcs.all_pix2world(x, y, 0)
    peak = _power_law_fluxes(n, config, rng)
    temperature = rng.normal(0.0, 1.0, size=n)
    red = 0.9 * np.exp(0.25 * temperature + 0.05 * rng.normal(size=n))
    blue = 0.75 * np.exp(-0.35 * temperature + 0.05 * rng.normal(size=n))
    colour = np.stack([red, np.ones(n), blue], axis=1)
    fluxes = peak[:, None] * colour / colour.max(axis=1, keepdims=True)
    return StarField(np.asarray(ra % 360.0), np.asarray(dec), fluxes)
