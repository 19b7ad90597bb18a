"""The alt-az edge cleanup stage: after the assembly (and the SDS mask, the two-pass), in every mode.

The plan's ``altaz`` section says whether it runs and why. When it does, the field's
typical coverage is gathered from every region (when the fractional threshold needs it),
then every region masks its low-coverage edge pixels (see
:mod:`zemosaic_dask.tasks.altaz_edges`). When it does not, the store is not touched.
"""

from __future__ import annotations

import logging
from typing import Any

from ..config.policies import StageOptions
from ..graph.altaz import build_altaz_clean_graph, build_altaz_histogram_graph
from ..io.store import MosaicStore
from ..messages import msg
from ..plans.altaz import AltazDecision, plan_altaz_cleanup
from ..plans.mosaic import MosaicPlan
from ..tasks.altaz_edges import coverage_threshold, median_coverage, merge_histograms
from ..units.altaz_region import AltazJob
from .compute import compute
from .routing import assembly_plan_of, units_in_flight

__all__ = ["altaz_decision_of", "clean_altaz_edges"]

log = logging.getLogger(__name__)


def altaz_decision_of(plan: MosaicPlan, options: StageOptions) -> AltazDecision:
    """The plan's cleanup decision; decided now from its frames for a plan saved without one."""
    section = plan.sections.get("altaz")
    if section is not None:
        return AltazDecision.from_dict(section)
    return plan_altaz_cleanup(plan.frames, options.altaz_policy)


def clean_altaz_edges(
    plan: MosaicPlan, options: StageOptions, store: MosaicStore, handle: Any, *, show_progress: bool
) -> dict[str, Any]:
    """Mask the alt-az edge wedges of the final store when the plan says so.

    Returns
    -------
    dict
        The ``altaz`` section of ``report.json``: the decision and its reason, and when the
        cleanup ran the typical coverage, the threshold used and the pixels covered, masked
        (count and fraction of the covered) and faded (kept with an alpha below 255).
    """
    decision = altaz_decision_of(plan, options)
    report: dict[str, Any] = {"enabled": decision.enabled, "reason": decision.reason}
    if not decision.enabled:
        log.info(msg("altaz_skipped", reason=decision.reason))
        return report
    cleanup = options.altaz
    jobs = [AltazJob(store, region, plan.grid.shape, cleanup) for region in plan.grid.regions()]
    in_flight = units_in_flight(assembly_plan_of(plan))
    typical = 0.0
    if cleanup.min_coverage_fraction > 0:
        parts = compute(handle, build_altaz_histogram_graph(jobs), label="alt-az coverage", show_progress=False)
        typical = median_coverage(merge_histograms(parts))
    threshold = coverage_threshold(cleanup, typical)
    summaries = compute(
        handle,
        build_altaz_clean_graph(jobs, threshold),
        label="alt-az cleanup",
        show_progress=show_progress,
        max_in_flight=in_flight,
    )
    covered = sum(s["covered"] for s in summaries)
    masked = sum(s["masked"] for s in summaries)
    fraction = masked / covered if covered else 0.0
    report.update(
        {
            "typical_coverage": typical,
            "threshold": threshold,
            "covered_pixels": covered,
            "masked_pixels": masked,
            "masked_fraction": round(fraction, 6),
            "faded_pixels": sum(s["faded"] for s in summaries),
        }
    )
    log.info(msg("altaz_cleaned", percent=100.0 * fraction, pixels=masked, threshold=threshold))
    return report
