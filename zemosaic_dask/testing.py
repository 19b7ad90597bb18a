"""Test and benchmark helpers: the synthetic Seestar generator and accuracy measurements.

Re-exports :mod:`zemosaic_dask.simulation` so that tests write
``from zemosaic_dask.testing import simulate_seestar, measure_star_flux_ratio``.
"""

import pickle
import tracemalloc

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
    "held_bytes",
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


def held_bytes(payload: bytes) -> int:
    """Bytes Python holds for what ``payload`` unpickles to (allocations traced and still alive).

    Parameters
    ----------
    payload : bytes
        A pickle.

    Returns
    -------
    int
        The traced memory the unpickled objects hold.
    """
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = pickle.loads(payload)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    del kept
    return held
