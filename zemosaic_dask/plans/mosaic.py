"""``MosaicPlan``: everything a run will do, as one JSON-serialisable value (``plan.json``)."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .assembly import AssemblyPlan
from .frames import FrameInfo, FrameRejection
from .grid import OutputGrid
from .layers import LayerPlan

__all__ = ["MODES", "MosaicPlan", "code_version"]

MODES = ("classic", "mosaic-first", "sds")
PLAN_FORMAT = 1
#: Configuration sections that do not change a single output pixel.
NON_PIXEL_CONFIG = ("cluster", "logging", "output")


@functools.cache
def code_version() -> str:
    """The package version and a digest of its sources and packaged data.

    Part of the resume fingerprint: a store written by other code (an upgrade, a local
    edit) is never resumed as if it were this code's.
    """
    from .. import __version__

    package = Path(__file__).resolve().parents[1]
    digest = hashlib.blake2b(digest_size=8)
    for path in sorted(package.rglob("*")):
        if path.suffix in (".py", ".yaml", ".json") and "__pycache__" not in path.parts:
            digest.update(path.relative_to(package).as_posix().encode())
            digest.update(path.read_bytes())
    return f"{__version__}+{digest.hexdigest()}"


@dataclass(frozen=True)
class MosaicPlan:
    """The executed plan of a mosaic.

    Attributes
    ----------
    mode : str
        ``classic``, ``mosaic-first`` or ``sds``: the mode that actually runs.
    mode_reason : str
        Why this mode was chosen (and the fallback reason, if any).
    frames : tuple of FrameInfo
        The usable frames, in input order.
    rejected : tuple of FrameRejection
        Inputs that cannot be used, with their reasons.
    grid : OutputGrid
        The global output grid.
    n_channels : int
        1 for a mono mosaic, 3 for colour.
    config : dict
        The resolved configuration the plan was made with.
    fallback : str or None
        The reason the requested mode was replaced, if it was.
    sections : dict
        Mode-specific plans (batches, groups, assembly plan, ...), each JSON-ready.
    """

    mode: str
    mode_reason: str
    frames: tuple[FrameInfo, ...]
    rejected: tuple[FrameRejection, ...]
    grid: OutputGrid
    n_channels: int
    config: dict[str, Any] = field(default_factory=dict)
    fallback: str | None = None
    sections: dict[str, Any] = field(default_factory=dict)

    @functools.cached_property
    def layers(self) -> tuple[LayerPlan, ...]:
        """The ``layers`` section parsed once: classic master tiles or SDS batch mosaics (empty in Mosaic-First)."""
        return tuple(LayerPlan.from_dict(d) for d in self.sections.get("layers", ()))

    @functools.cached_property
    def assembly(self) -> AssemblyPlan | None:
        """The ``assembly_plan`` section parsed once (ZeMosaic's "Phase 5 plan"); None for an older plan."""
        data = self.sections.get("assembly_plan")
        return AssemblyPlan.from_dict(data) if data else None

    def to_dict(self) -> dict[str, Any]:
        """Return the plan as JSON-ready data."""
        return {
            "format": PLAN_FORMAT,
            "mode": self.mode,
            "mode_reason": self.mode_reason,
            "fallback": self.fallback,
            "n_channels": self.n_channels,
            "grid": self.grid.to_dict(),
            "frames": [f.to_dict() for f in self.frames],
            "rejected": [r.to_dict() for r in self.rejected],
            "config": self.config,
            "sections": self.sections,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MosaicPlan:
        """Rebuild a plan from :meth:`to_dict` output (``plan.json``)."""
        if data.get("format") != PLAN_FORMAT:
            raise ValueError(f"unsupported plan format {data.get('format')!r}; expected {PLAN_FORMAT}")
        return cls(
            mode=data["mode"],
            mode_reason=data.get("mode_reason", ""),
            frames=tuple(FrameInfo.from_dict(f) for f in data["frames"]),
            rejected=tuple(FrameRejection(r["path"], r["reason"]) for r in data.get("rejected", [])),
            grid=OutputGrid.from_dict(data["grid"]),
            n_channels=int(data["n_channels"]),
            config=dict(data.get("config", {})),
            fallback=data.get("fallback"),
            sections=dict(data.get("sections", {})),
        )

    def fingerprint(self) -> str:
        """Digest of what determines the pixels: frames, grid, mode, batches, pixel settings and code.

        Frames enter with their size and content hash (measured at ingest), so a changed
        input pixel changes the fingerprint; their modification time is left out, so a
        touched or copied input still resumes. Where and how the run
        computes (cluster, logging, output options, the assembly plan derived from the
        workers and the SDS execution it decides) is left out, so a run may resume on a different cluster.
        """
        return self._fingerprint

    @functools.cached_property
    def _fingerprint(self) -> str:
        """The digest, computed once per plan (16,000 frames take about 6 s of CPU to serialise)."""
        data = self.to_dict()
        config = {k: v for k, v in data["config"].items() if k not in NON_PIXEL_CONFIG}
        # Derived from the workers (the SDS execution too: fused or stored, the same pixels).
        sections = {k: v for k, v in data["sections"].items() if k not in ("assembly_plan", "sds_execution")}
        payload = {k: v for k, v in data.items() if k not in ("rejected", "mode_reason", "config", "sections")}
        # The content hash decides; a touched or copied input (new mtime, same bytes) still resumes.
        payload["frames"] = [{k: v for k, v in f.items() if k != "mtime_ns"} for f in payload["frames"]]
        payload.update(config=config, sections=sections, code=code_version())
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()
