"""zemosaic-dask: deep, seamless, photometrically linear mosaics as a Dask task graph.

The package itself stays light (``zemosaic_dask.plans`` and ``zemosaic_dask.tasks`` import
neither dask nor cupy); the entry points below are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import ConfigError, FrameError, GpuUnavailableError, PlanError, ResumeError, ZeMosaicError

__version__ = "0.1.0"

_LAZY = {
    "MosaicPlan": "zemosaic_dask.plans.mosaic",
    "RunResult": "zemosaic_dask.api",
    "ZeMosaicConfig": "zemosaic_dask.config",
    "load_config": "zemosaic_dask.config",
    "make_plan": "zemosaic_dask.api",
    "run_mosaic": "zemosaic_dask.api",
    "simulate_seestar": "zemosaic_dask.testing",
}

__all__ = [
    "ConfigError",
    "FrameError",
    "GpuUnavailableError",
    "MosaicPlan",
    "PlanError",
    "ResumeError",
    "RunResult",
    "ZeMosaicConfig",
    "ZeMosaicError",
    "__version__",
    "load_config",
    "make_plan",
    "run_mosaic",
    "simulate_seestar",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zemosaic_dask' has no attribute {name!r}")
