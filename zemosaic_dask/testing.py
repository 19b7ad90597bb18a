"""Test and benchmark helpers: the synthetic Seestar generator and accuracy measurements.

Re-exports :mod:`zemosaic_dask.simulation` so that tests write
``from zemosaic_dask.testing import simulate_seestar, measure_star_flux_ratio``.
"""

from .simulation import (
    STAR_COLUMNS,
    SimulationConfig,
    SimulationResult,
    background_residual,
    footprint_count,
    frame_shape,
    load_stars,
    measure_star_flux_ratio,
    render_stars,
    simulate_seestar,
    star_mask,
    union_footprint_mask,
)

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
