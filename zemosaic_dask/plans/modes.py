"""Choosing the mode a run executes (``auto`` resolves here, once)."""

from __future__ import annotations

from collections.abc import Sequence

from .frames import FrameInfo, is_seestar

__all__ = ["REQUESTABLE_MODES", "select_mode"]

REQUESTABLE_MODES = ("auto", "classic", "mosaic-first", "sds")


def select_mode(
    requested: str, frames: Sequence[FrameInfo], *, sds_enabled: bool, force_seestar: bool = False
) -> tuple[str, str]:
    """Resolve the requested mode into the mode to run, with the reason.

    ``auto`` gives ``sds`` for Seestar data when SDS is enabled, else ``classic``. An
    explicit ``sds`` forces SDS on any data.
    """
    if requested not in REQUESTABLE_MODES:
        raise ValueError(f"mode must be one of {', '.join(REQUESTABLE_MODES)}, got {requested!r}")
    if requested != "auto":
        return requested, f"requested {requested}"
    seestar = force_seestar or (bool(frames) and all(is_seestar(f) for f in frames))
    if seestar and sds_enabled:
        return "sds", "auto: Seestar frames and SDS enabled"
    if not seestar:
        return "classic", "auto: not every frame comes from a Seestar"
    return "classic", "auto: classic pipeline by configuration"
