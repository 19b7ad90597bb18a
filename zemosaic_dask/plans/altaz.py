"""Whether a plan cleans the alt-az edge wedges, and why (ZeMosaic's "Alt-Az cleanup").

An alt-az mount (a Seestar's default mode) turns the field between frames, so the edges of
a mosaic are ragged wedges covered by few frames. The cleanup is decided here, from the
frames' mount mode (``EQMODE``: 0 alt-az, 1 equatorial) and the ``zemosaic.altaz.cleanup``
setting, and recorded in ``plan.json`` (``sections.altaz``); execution only reads it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .frames import FrameInfo

__all__ = ["AltazDecision", "AltazPolicy", "mount_kind", "plan_altaz_cleanup"]

#: Mount-mode spellings, lower-cased (``EQMODE`` values and ``MOUNT`` names).
ALTAZ_NAMES = frozenset({"0", "altaz", "alt-az", "alt_az", "alt/az", "azimuthal"})
EQUATORIAL_NAMES = frozenset({"1", "eq", "equatorial", "gem", "german equatorial"})


@dataclass(frozen=True)
class AltazPolicy:
    """The ``zemosaic.altaz.cleanup`` setting: ``"auto"``, True or False."""

    cleanup: str | bool = False


@dataclass(frozen=True)
class AltazDecision:
    """Whether the run cleans the alt-az edges, the reason, and the frames' mount modes."""

    enabled: bool
    reason: str
    mounts: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        """The decision as ``plan.json`` holds it."""
        return {"enabled": self.enabled, "reason": self.reason, "mounts": dict(self.mounts)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AltazDecision:
        """Read a decision written by :meth:`to_dict`."""
        return cls(bool(data["enabled"]), str(data["reason"]), {str(k): int(v) for k, v in data["mounts"].items()})


def mount_kind(mount_mode: str) -> str:
    """``"altaz"``, ``"equatorial"`` or ``"unknown"`` for a frame's ``EQMODE`` / ``MOUNT`` value."""
    value = str(mount_mode).strip().lower()
    if value.endswith(".0"):  # EQMODE written as a float
        value = value[:-2]
    if value in ALTAZ_NAMES:
        return "altaz"
    if value in EQUATORIAL_NAMES:
        return "equatorial"
    return "unknown"


def plan_altaz_cleanup(frames: Sequence[FrameInfo], policy: AltazPolicy) -> AltazDecision:
    """Decide the alt-az edge cleanup of a plan's frames.

    Parameters
    ----------
    frames : sequence of FrameInfo
        The plan's frames (their ``mount_mode``).
    policy : AltazPolicy
        ``cleanup`` True or False decides alone; ``"auto"`` cleans when any frame was taken
        on an alt-az mount (its field turns against the others, so the edges are ragged).

    Returns
    -------
    AltazDecision
    """
    counts = Counter(mount_kind(f.mount_mode) for f in frames)
    mounts = {kind: counts.get(kind, 0) for kind in ("altaz", "equatorial", "unknown")}
    if policy.cleanup is True:
        return AltazDecision(True, "zemosaic.altaz.cleanup is true", mounts)
    if policy.cleanup is False:
        return AltazDecision(False, "zemosaic.altaz.cleanup is false", mounts)
    if mounts["altaz"]:
        reason = f"auto: {mounts['altaz']} of {len(frames)} frame(s) have EQMODE alt-az"
        return AltazDecision(True, reason, mounts)
    return AltazDecision(False, "auto: no frame has EQMODE alt-az", mounts)
