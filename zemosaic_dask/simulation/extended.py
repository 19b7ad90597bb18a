"""Extended emission of the simulated sky: a large galaxy and a faint nebula.

Both are smooth, so they are sampled at pixel centres (no pixel integration), in ADU per
native pixel per exposure (surface brightness: a finer or coarser grid gets the same values).

- **Galaxy** (:class:`~zemosaic_dask.simulation.sky.GalaxyModel`): in the tangent plane of
  its centre (arcsec, north up), with ``a`` along the major axis (position angle east of
  north) and ``b`` across it, the disk is ``I0 exp(-r / h) taper(r)`` with
  ``r = sqrt(a^2 + (b / q)^2)`` and the bulge a Sersic profile
  ``Ie exp(-b_n ((r_b / r_e) ** (1 / n) - 1))`` with ``r_b = sqrt(a^2 + (b / q_b)^2)``.
- **Nebula**: a Gaussian random field, white noise smoothed over ``correlation_px`` on a
  coarse grid tied to the truth grid, rescaled to ``0 .. fraction * sky_g`` and coloured;
  any grid samples it through the truth grid's pixel coordinates (cubic spline).

Everything needed to redraw the emission on any grid is in ``simulation.json``
(:meth:`ExtendedEmission.from_parameters`, :func:`render_extended`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy.wcs import WCS
from scipy.ndimage import gaussian_filter, map_coordinates

from .measure import _interpolated_map
from .sky import SimulationConfig, mosaic_wcs, rotated_cd, tan_wcs

__all__ = ["ExtendedEmission", "galaxy_axes", "galaxy_radius", "make_extended_emission", "render_extended"]

NEBULA_COLOUR = (1.3, 0.9, 0.8)
_MAP_STEP = 16


def _sersic_b(n: float) -> float:
    """``b_n`` of a Sersic profile (Ciotti & Bertin 1999 expansion)."""
    return 2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n) + 46.0 / (25515.0 * n**2)


def _grid_map(wcs: WCS, shape: tuple[int, int], target: WCS) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in ``target`` of every pixel centre of the ``shape`` grid of ``wcs``."""
    return _interpolated_map(wcs.celestial, target, (0, int(shape[0]), 0, int(shape[1])), step=_MAP_STEP)


def galaxy_axes(galaxy: Mapping[str, Any], wcs: WCS, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (arcsec) along the galaxy's major and minor axes of every pixel centre of a grid.

    The major axis points to the position angle (east of north), the minor axis 90 degrees
    clockwise from it on the sky (west of it). ``galaxy`` is the ``extended.galaxy`` entry
    of ``simulation.json``.
    """
    plane = tan_wcs((galaxy["ra"], galaxy["dec"]), (1.0, 1.0), rotated_cd(1.0, 0.0))
    x, y = _grid_map(wcs, shape, plane)  # arcsec; x grows westward, y northward
    pa = math.radians(galaxy["position_angle_deg"])
    return -x * math.sin(pa) + y * math.cos(pa), x * math.cos(pa) + y * math.sin(pa)


def galaxy_radius(galaxy: Mapping[str, Any], wcs: WCS, shape: tuple[int, int]) -> np.ndarray:
    """Elliptical radius of the disk (``sqrt(a^2 + (b/q)^2)``) in units of its edge radius, per pixel."""
    major, minor = galaxy_axes(galaxy, wcs, shape)
    return np.hypot(major, minor / galaxy["axis_ratio"]) / galaxy["edge_radius_arcsec"]


def _galaxy_image(galaxy: Mapping[str, Any], wcs: WCS, shape: tuple[int, int]) -> np.ndarray:
    major, minor = galaxy_axes(galaxy, wcs, shape)
    r_disk = np.hypot(major, minor / galaxy["axis_ratio"])
    edge, taper = galaxy["edge_radius_arcsec"], galaxy["taper"]
    fade = np.clip((r_disk - edge) / (taper * edge), 0.0, 1.0)
    disk = np.exp(-r_disk / galaxy["disk_scale_length_arcsec"]) * 0.5 * (1.0 + np.cos(math.pi * fade))
    n = galaxy["bulge_sersic_n"]
    r_bulge = np.hypot(major, minor / galaxy["bulge_axis_ratio"]) / galaxy["bulge_effective_radius_arcsec"]
    bulge = np.exp(-_sersic_b(n) * (r_bulge ** (1.0 / n) - 1.0))
    out = np.empty((3, *disk.shape), dtype=np.float64)
    for c in range(3):
        out[c] = galaxy["disk_central_adu"][c] * disk + galaxy["bulge_surface_brightness_adu"][c] * bulge
    return out


@dataclass(frozen=True)
class ExtendedEmission:
    """The galaxy and nebula of a session, as recorded in ``simulation.json``.

    Attributes
    ----------
    galaxy : dict or None
        Centre ``ra, dec`` (deg), ``position_angle_deg`` (major axis, east of north),
        ``axis_ratio``, ``edge_radius_arcsec`` / ``_px``, ``disk_scale_length_arcsec`` / ``_px``,
        ``disk_central_adu`` (R, G, B), ``edge_fraction``, ``taper``, and the bulge's
        ``bulge_sersic_n``, ``bulge_effective_radius_arcsec``, ``bulge_axis_ratio``,
        ``bulge_surface_brightness_adu`` (at the effective radius).
    nebula : dict or None
        ``seed``, ``fraction``, ``amplitude_adu`` (peak, R, G, B), ``correlation_px``,
        ``coarse_step_px``, ``pad`` and ``coarse_shape`` of the field on the truth grid.
    truth_wcs : astropy.wcs.WCS
        The grid the nebula is tied to.
    """

    galaxy: dict[str, Any] | None
    nebula: dict[str, Any] | None
    truth_wcs: WCS
    _field: list[np.ndarray] = field(default_factory=list, repr=False, compare=False)

    def _nebula_field(self) -> np.ndarray:
        if not self._field:
            neb = self.nebula
            assert neb is not None
            rng = np.random.default_rng(int(neb["seed"]))
            white = rng.normal(size=tuple(neb["coarse_shape"]))
            smooth = gaussian_filter(white, neb["correlation_px"] / neb["coarse_step_px"], mode="reflect")
            self._field.append((smooth - smooth.min()) / (smooth.max() - smooth.min()))
        return self._field[0]

    def _nebula_image(self, wcs: WCS, shape: tuple[int, int]) -> np.ndarray:
        neb = self.nebula
        assert neb is not None
        tx, ty = _grid_map(wcs, shape, self.truth_wcs)
        step, pad = neb["coarse_step_px"], neb["pad"]
        coords = np.stack([ty / step + pad, tx / step + pad])
        unit = np.clip(map_coordinates(self._nebula_field(), coords, order=3, mode="nearest"), 0.0, None)
        return np.stack([amplitude * unit for amplitude in neb["amplitude_adu"]])

    def render(self, wcs: WCS, shape: tuple[int, int]) -> np.ndarray:
        """``(3, H, W)`` float64 emission (ADU per native pixel) at the pixel centres of a grid."""
        out = np.zeros((3, int(shape[0]), int(shape[1])), dtype=np.float64)
        if self.galaxy is not None:
            out += _galaxy_image(self.galaxy, wcs, shape)
        if self.nebula is not None:
            out += self._nebula_image(wcs, shape)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The ``extended`` entry of ``simulation.json``."""
        return {"file": "extended.fits", "galaxy": self.galaxy, "nebula": self.nebula}

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> ExtendedEmission | None:
        """Rebuild from the content of ``simulation.json``; None when it has no extended emission."""
        entry = parameters.get("extended")
        if not entry:
            return None
        truth = parameters["truth"]
        wcs = tan_wcs(truth["crval"], truth["crpix"], rotated_cd(truth["pixel_scale_arcsec"], 0.0))
        return cls(entry.get("galaxy"), entry.get("nebula"), wcs)


def _galaxy_geometry(config: SimulationConfig, frame_width_px: int) -> dict[str, Any] | None:
    model = config.galaxy
    if model is None:
        return None
    scale = config.pixel_scale_arcsec
    offset = np.asarray(model.offset_frames, dtype=np.float64) * frame_width_px
    ra, dec = mosaic_wcs(config).all_pix2world([offset], 0)[0]
    edge = model.edge_radius_frames * frame_width_px * scale
    h = edge / math.log(model.disk_central / model.edge_fraction)
    sky_g = config.sky_level[1]
    return {
        "ra": float(ra),
        "dec": float(dec),
        "position_angle_deg": model.position_angle_deg,
        "axis_ratio": model.axis_ratio,
        "edge_radius_arcsec": edge,
        "edge_radius_px": edge / scale,
        "disk_scale_length_arcsec": h,
        "disk_scale_length_px": h / scale,
        "disk_central_adu": [model.disk_central * sky_g * c for c in model.colour],
        "edge_fraction": model.edge_fraction,
        "taper": model.taper,
        "bulge_sersic_n": model.bulge_sersic_n,
        "bulge_effective_radius_arcsec": model.bulge_effective_radius * edge,
        "bulge_axis_ratio": model.bulge_axis_ratio,
        "bulge_surface_brightness_adu": [model.bulge_surface_brightness * sky_g * c for c in model.colour],
        "pixel_scale_arcsec": scale,
    }


def make_extended_emission(
    config: SimulationConfig,
    truth_wcs: WCS,
    truth_shape: tuple[int, int],
    frame_width_px: int,
    rng: np.random.Generator,
) -> ExtendedEmission | None:
    """Draw the session's extended emission; None when ``config`` asks for none.

    The nebula's correlation length is 0.3 frame widths; its coarse grid has a node every
    quarter of that and a margin of three correlation lengths around the truth grid.
    """
    galaxy = _galaxy_geometry(config, frame_width_px)
    nebula = None
    if config.nebulosity > 0:
        correlation = 0.3 * frame_width_px
        step = max(2, int(correlation // 4))
        pad = int(math.ceil(3 * correlation / step))
        nebula = {
            "seed": int(rng.integers(2**31)),
            "fraction": config.nebulosity,
            "amplitude_adu": [config.nebulosity * config.sky_level[1] * c for c in NEBULA_COLOUR],
            "correlation_px": correlation,
            "coarse_step_px": step,
            "pad": pad,
            "coarse_shape": [truth_shape[0] // step + 2 * pad + 2, truth_shape[1] // step + 2 * pad + 2],
        }
    if galaxy is None and nebula is None:
        return None
    return ExtendedEmission(galaxy, nebula, truth_wcs)


def render_extended(parameters: Mapping[str, Any], wcs: WCS, shape: tuple[int, int]) -> np.ndarray:
    """The session's extended emission on any celestial grid, ``(3, H, W)`` float64.

    Parameters
    ----------
    parameters : mapping
        Content of ``simulation.json``.
    wcs : astropy.wcs.WCS
        Celestial WCS of the grid (a mosaic's, for example).
    shape : tuple of int
        ``(height, width)`` of the grid.

    Returns
    -------
    ndarray
        Surface brightness in ADU per native pixel per exposure; zeros when the session has
        no extended emission.
    """
    emission = ExtendedEmission.from_parameters(parameters)
    if emission is None:
        return np.zeros((3, int(shape[0]), int(shape[1])), dtype=np.float64)
    return emission.render(wcs, shape)
