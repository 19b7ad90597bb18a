"""zemosaic-dask: deep, seamless, photometrically linear mosaics as a Dask task graph."""

from .errors import ConfigError, FrameError, PlanError, ResumeError, ZeMosaicError

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "FrameError",
    "PlanError",
    "ResumeError",
    "ZeMosaicError",
    "__version__",
]
