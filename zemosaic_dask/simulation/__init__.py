"""Synthetic ZWO Seestar S50 sessions with ground truth, and accuracy measurements against it.

Numpy, scipy and astropy only: usable from tests and benchmarks without dask.
"""

from .measure import (
    STAR_COLUMNS,
    background_residual,
    footprint_count,
    load_stars,
    measure_star_flux_ratio,
    star_mask,
    union_footprint_mask,
)
from .render import render_stars
from .seestar import SimulationResult, simulate_seestar
from .sky import SimulationConfig, frame_shape

__all__ = [
    "STAR_COLUMNS",
    "SimulationConfig",
    "SimulationResult",
    "background_residual",
    "footprint_count",
    "frame_shape",
    "load_stars",
    "measure_star_flux_ratio",
    "render_stars",
    "simulate_seestar",
    "star_mask",
    "union_footprint_mask",
]
