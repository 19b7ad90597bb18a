"""Synthetic ZWO Seestar S50 sessions with ground truth, and accuracy measurements against it.

Numpy, scipy and astropy only: usable from tests and benchmarks without dask.
"""

from .extended import ExtendedEmission, galaxy_radius, render_extended
from .measure import (
    STAR_COLUMNS,
    background_residual,
    footprint_count,
    load_stars,
    measure_star_flux_ratio,
    star_mask,
    union_footprint_mask,
)
from .quality import (
    HoleCount,
    TrailRidge,
    background_flatness,
    background_tilt,
    extended_flux_recovery,
    holes_in_union,
    pixel_sigma,
    seam_step,
    sky_blocks,
    trail_ridges,
)
from .render import render_stars
from .seestar import SimulationResult, simulate_seestar
from .sky import FRAME_ORDERS, GalaxyModel, SimulationConfig, frame_shape

__all__ = [
    "FRAME_ORDERS",
    "STAR_COLUMNS",
    "ExtendedEmission",
    "GalaxyModel",
    "HoleCount",
    "SimulationConfig",
    "SimulationResult",
    "TrailRidge",
    "background_flatness",
    "background_tilt",
    "background_residual",
    "extended_flux_recovery",
    "footprint_count",
    "frame_shape",
    "galaxy_radius",
    "holes_in_union",
    "load_stars",
    "measure_star_flux_ratio",
    "pixel_sigma",
    "render_extended",
    "render_stars",
    "seam_step",
    "simulate_seestar",
    "sky_blocks",
    "star_mask",
    "trail_ridges",
    "union_footprint_mask",
]
