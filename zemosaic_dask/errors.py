"""Exception hierarchy of zemosaic-dask.

Every exception inherits :class:`ZeMosaicError` and, where it makes sense, the builtin
it refines, so callers may catch either.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "FrameError",
    "GpuUnavailableError",
    "OutputBusyError",
    "OutputError",
    "PlanError",
    "ResumeError",
    "ZeMosaicError",
]


class ZeMosaicError(Exception):
    """Base class of every error raised by zemosaic-dask."""


class ConfigError(ZeMosaicError, ValueError):
    """A configuration key or value is invalid; the message names the key and the fix."""


class PlanError(ZeMosaicError, ValueError):
    """No valid plan can be built; ``reason`` says why in a short, stable phrase."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class FrameError(ZeMosaicError, ValueError):
    """An input frame cannot be used; it becomes a rejection with this reason."""


class GpuUnavailableError(ZeMosaicError, RuntimeError):
    """A GPU was requested but cupy or a device is not available."""


class ResumeError(ZeMosaicError, RuntimeError):
    """An output folder holds state from a different run and cannot be resumed."""


class OutputError(ZeMosaicError, OSError):
    """The output folder cannot be used (not a folder, not writable, holds a foreign file)."""


class OutputBusyError(OutputError):
    """Another run holds the output folder's lock; the message names the holder."""
