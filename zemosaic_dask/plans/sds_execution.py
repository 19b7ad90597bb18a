"""How an SDS plan's batches run: fused region by region, or written as batch mosaics first.

SDS stacks each batch's frames, then combines the batch stacks across batches with a
rejection. Written as whole batch mosaics (``layers/<id>`` stores), then read back and
combined, the batch level cost a 160-frame run 24.9 s of building and 10.7 s of combining
where Mosaic-First stacked the same frames in 14.7 s (2 cores, same run). Fused, one task per output region
resamples the region's frames, stacks each batch's there, and combines the batch stacks at
once; nothing is written in between, and a region is resumed as a whole. Both give the same
pixels (each batch stack of a region is the one its batch mosaic would hold there).

The batch mosaics must be stored when a later stage reads them whole: the inter-layer
calibration (``calibration.intertile``) and the two-pass renormalisation
(``two-pass.enabled``); and when a region is reached by more batches than one task combines
(``assembly.layer-fan-in``: a tree of group stores) or than the assembly plan's chunk bytes
hold as stacks of the region. They are also stored when fewer regions hold data than half
the units the assembly plan runs at once (a small deep field on many workers): fused, more
than half the workers would idle, while the batch mosaics' units spread over all of them.
(From the 160-frame run's CPU costs per region, 0.7 s fused against 0.79 s of batch units
and 0.34 s of combination stored, the two are even near half; not measured on a large
cluster.) The decision is the plan's ``sds_execution`` section.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .frames import FrameInfo
from .grid import OutputGrid
from .layers import LayerPlan
from .regions import assign_frames_to_regions

__all__ = ["SdsExecution", "SdsExecutionPolicy", "layers_by_region", "plan_sds_execution"]

#: Bytes per value of a batch stack held in memory (float32 image channels and coverage).
BYTES_PER_VALUE = 4


@dataclass(frozen=True)
class SdsExecutionPolicy:
    """What decides the SDS execution (from ``sds.store-batches``, ``calibration``, ``two-pass``, ``assembly``)."""

    store_batches: bool = False
    intertile: bool = False
    two_pass: bool = False
    fan_in: int = 64


@dataclass(frozen=True)
class SdsExecution:
    """The plan's ``sds_execution`` section.

    Attributes
    ----------
    fused : bool
        One task per region stacks and combines its batches; False: batch mosaics are stored.
    reason : str
        Why.
    max_batches : int
        Most batches reaching one region of the grid.
    region_bytes : int
        Memory of the batch stacks of that region, held at once by a fused task.
    regions : int
        Regions of the grid that batches reach: the fused tasks.
    """

    fused: bool
    reason: str
    max_batches: int = 0
    region_bytes: int = 0
    regions: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary."""
        return {
            "fused": self.fused,
            "reason": self.reason,
            "max_batches": self.max_batches,
            "region_bytes": self.region_bytes,
            "regions": self.regions,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> SdsExecution:
        """Build from :meth:`to_dict` output; a plan without the section stores its batches."""
        if not data:
            return cls(False, "plan without an sds_execution section")
        return cls(
            bool(data["fused"]),
            str(data.get("reason", "")),
            int(data.get("max_batches", 0)),
            int(data.get("region_bytes", 0)),
            int(data.get("regions", 0)),
        )


def layers_by_region(
    grid: OutputGrid, frames: Sequence[FrameInfo], layers: Sequence[LayerPlan]
) -> dict[tuple[int, int], list[int]]:
    """Positions (in ``layers``) of the layers whose distinct frames reach each region, sorted.

    Only regions reached by a layer appear. The combination of the layers runs on exactly
    these regions, with these layers.
    """
    reached = assign_frames_to_regions(grid, frames)
    layers_of_frame: dict[int, list[int]] = {}
    for position, layer in enumerate(layers):
        for index in layer.distinct:
            layers_of_frame.setdefault(index, []).append(position)
    out = {}
    for key in sorted(reached):
        positions = sorted({p for index in reached[key] for p in layers_of_frame.get(index, ())})
        if positions:
            out[key] = positions
    return out


def plan_sds_execution(
    grid: OutputGrid,
    frames: Sequence[FrameInfo],
    layers: Sequence[LayerPlan],
    n_channels: int,
    policy: SdsExecutionPolicy,
    *,
    max_chunk_bytes: int,
    units_in_flight: int = 1,
) -> SdsExecution:
    """Decide whether the SDS batches run fused region by region (see the module's text).

    Parameters
    ----------
    grid : OutputGrid
        The output grid (its regions are the fused tasks).
    frames : sequence of FrameInfo
        The plan's frames.
    layers : sequence of LayerPlan
        The SDS batches.
    n_channels : int
        Channels of the mosaic.
    policy : SdsExecutionPolicy
        The settings that decide.
    max_chunk_bytes : int
        The assembly plan's bytes of one CPU unit: the batch stacks of a region must fit.
    units_in_flight : int
        Units the assembly plan runs at once: the fused tasks (one per region holding data)
        must be at least half as many.

    Returns
    -------
    SdsExecution
    """
    reached = layers_by_region(grid, frames, layers)
    depth = max((len(p) for p in reached.values()), default=0)
    region_bytes = depth * (n_channels + 1) * grid.chunk * grid.chunk * BYTES_PER_VALUE

    def stored(reason: str) -> SdsExecution:
        return SdsExecution(False, reason, depth, region_bytes, len(reached))

    if policy.store_batches:
        return stored("sds.store-batches is true")
    if policy.intertile:
        return stored("calibration.intertile fits each batch mosaic whole: they are stored")
    if policy.two_pass:
        return stored("two-pass.enabled rescales each batch mosaic whole: they are stored")
    if policy.fan_in > 0 and depth > policy.fan_in:
        return stored(f"{depth} batches reach one region, more than assembly.layer-fan-in {policy.fan_in}")
    if region_bytes > max_chunk_bytes:
        return stored(
            f"the {depth} batch stacks of a region take {region_bytes / 2**20:.0f} MiB, more than the assembly "
            f"plan's {max_chunk_bytes / 2**20:.0f} MiB per unit"
        )
    if 2 * len(reached) < units_in_flight:
        return stored(
            f"{len(reached)} region(s) hold data, fewer than half the {units_in_flight} units the assembly plan "
            "runs at once: the batch mosaics' units spread over the workers"
        )
    reason = f"at most {depth} batches per region ({region_bytes / 2**20:.0f} MiB of stacks): stacked and combined"
    return SdsExecution(True, reason + f" in one task per region ({len(reached)})", depth, region_bytes, len(reached))
