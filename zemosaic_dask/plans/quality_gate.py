"""The per-frame quality gate: frames through clouds, trailed or out of focus are set aside.

Each frame's measures (taken at ingest, :class:`~zemosaic_dask.plans.frame_quality.FrameQuality`)
are compared with the session:

* **FWHM** above ``max_fwhm_ratio`` x the session median (defocus, bad seeing);
* **elongation** above ``max_elongation`` (absolute: wind, tracking or a trailed frame);
* **transparency** below ``min_transparency`` (clouds, haze, dew: the flux of the stars the
  frame shares with other frames, over their median flux, see :mod:`.transparency`);
* **noise** above ``max_noise_ratio`` x the session median (bright sky, moon, twilight);
* **stars** below ``min_stars_ratio`` x the session median (clouds, fog, a closed dew cap).

A failing frame becomes a :class:`~zemosaic_dask.plans.frames.FrameRejection` naming every
failed bound; files are never deleted or moved.

**Salvage.** Frames are grouped by sky position as the classic master tiles are
(:func:`~zemosaic_dask.plans.groups.plan_master_groups` with ``cluster_panel_threshold``).
A group that would keep fewer than ``min_safe_stack`` frames keeps its best rejected
frames (the smallest excess over their bounds) up to that number, for that group only: the
same defect that is dropped elsewhere is stacked where nothing better covers the sky.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .frames import FrameInfo, FrameRejection
from .groups import GroupingPolicy, plan_master_groups
from .transparency import matched_transparency

__all__ = ["MIN_FRAMES_TO_GATE", "FrameVerdict", "QualityGatePolicy", "QualityGateResult", "gate_frames"]

#: Order of the failed measures in a reason, the most telling first: a trailed frame also
#: has a wide FWHM and a clouded one fewer stars, but elongation and transparency name the cause.
DIAGNOSIS_ORDER = ("elongation", "transparency", "fwhm", "noise", "stars")
#: Fewest measured frames for which session medians mean something.
MIN_FRAMES_TO_GATE = 5


@dataclass(frozen=True)
class QualityGatePolicy:
    """Bounds of the quality gate (``zemosaic.quality``) and the salvage settings.

    Attributes
    ----------
    enabled : bool
        False keeps every frame.
    max_fwhm_ratio, max_noise_ratio : float
        Largest FWHM and noise relative to the session medians.
    max_elongation : float
        Largest median star elongation (major over minor axis).
    min_transparency : float
        Smallest flux of shared stars relative to their session median.
    min_stars_ratio : float
        Smallest number of detected stars relative to the session median.
    salvage : bool
        Keep the best rejected frames of a group left with fewer than ``min_safe_stack``.
    min_safe_stack : int
        ``classic.min-safe-stack``.
    group_threshold_deg : float
        ``classic.cluster-panel-threshold``: frames closer than this are one group.
    """

    enabled: bool = True
    max_fwhm_ratio: float = 1.4
    max_elongation: float = 1.5
    min_transparency: float = 0.6
    max_noise_ratio: float = 1.6
    min_stars_ratio: float = 0.3
    salvage: bool = True
    min_safe_stack: int = 3
    group_threshold_deg: float = 0.03

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class FrameVerdict:
    """The gate's view of one frame.

    ``failed`` names the failed measures (``fwhm``, ``elongation``, ``transparency``,
    ``noise``, ``stars``) in :data:`DIAGNOSIS_ORDER`; ``severity`` is the largest factor by which a
    measure passes its bound (<= 1 for a frame that passes); ``reason`` is the sentence
    shown to the user.
    """

    index: int
    path: str
    failed: tuple[str, ...]
    severity: float
    reason: str
    measures: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class QualityGateResult:
    """Frames kept, frames rejected with their reasons, and what the report shows."""

    kept: tuple[FrameInfo, ...]
    rejected: tuple[FrameRejection, ...]
    verdicts: tuple[FrameVerdict, ...]
    salvaged: tuple[dict[str, Any], ...]
    session: dict[str, float]
    policy: QualityGatePolicy

    def to_dict(self) -> dict[str, Any]:
        """The ``quality_gate`` section of ``plan.json`` and ``report.json``."""
        rejected = {r.path for r in self.rejected}
        return {
            "policy": self.policy.to_dict(),
            "session": {k: None if not math.isfinite(v) else round(v, 4) for k, v in self.session.items()},
            "rejected": [
                {"path": v.path, "failed": list(v.failed), "severity": round(v.severity, 3)}
                for v in self.verdicts
                if v.path in rejected
            ],
            "salvaged": list(self.salvaged),
        }


def _median(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else math.nan


def _measures(frames: Sequence[FrameInfo]) -> dict[str, np.ndarray]:
    def column(name: str) -> np.ndarray:
        return np.array([math.nan if f.quality is None else float(getattr(f.quality, name)) for f in frames])

    scales = np.array([f.pixel_scale for f in frames], dtype=float)
    scale = _median(scales[scales > 0]) if np.any(scales > 0) else 1.0
    return {
        "fwhm": column("fwhm_px"),
        "elongation": column("elongation"),
        "noise": column("noise"),
        "stars": column("n_stars"),
        "transparency": matched_transparency(frames, scale),
    }


def _verdicts(
    paths: Sequence[str], measures: dict[str, np.ndarray], session: dict[str, float], p: QualityGatePolicy
) -> list[FrameVerdict]:
    """One verdict per frame: each test's excess over its bound (> 1 fails)."""
    tests = {  # name: (excess over the bound, sentence)
        "fwhm": (
            measures["fwhm"] / (p.max_fwhm_ratio * session["fwhm"]),
            "FWHM {v:.2f} px is {r:.2f}x the session median {m:.2f} px (limit {b:g}x; out of focus?)",
        ),
        "elongation": (
            measures["elongation"] / p.max_elongation,
            "star elongation {v:.2f} (limit {b:g}; trailed by wind or tracking?)",
        ),
        "transparency": (
            p.min_transparency / measures["transparency"],
            "transparency {v:.2f}: stars at {v:.0%} of their session flux (limit {b:g}; clouds?)",
        ),
        "noise": (
            measures["noise"] / (p.max_noise_ratio * session["noise"]),
            "background noise {v:.4g} is {r:.2f}x the session median {m:.4g} (limit {b:g}x; bright sky?)",
        ),
        "stars": (
            p.min_stars_ratio * session["stars"] / np.maximum(measures["stars"], 0.5),
            "{v:.0f} stars detected, {r:.2f}x the session median {m:.0f} (limit {b:g}x; clouds or fog?)",
        ),
    }
    bounds = {
        "fwhm": p.max_fwhm_ratio,
        "elongation": p.max_elongation,
        "transparency": p.min_transparency,
        "noise": p.max_noise_ratio,
        "stars": p.min_stars_ratio,
    }
    verdicts = []
    for i in range(len(measures["fwhm"])):
        excess = {name: float(values[i]) for name, (values, _) in tests.items() if math.isfinite(values[i])}
        failed = tuple(n for n in DIAGNOSIS_ORDER if excess.get(n, 0.0) > 1.0)
        sentences = []
        for name in failed:
            value, median = float(measures[name][i]), session.get(name, math.nan)
            ratio = value / median if median else math.nan
            sentences.append(tests[name][1].format(v=value, r=ratio, m=median, b=bounds[name]))
        reason = "quality gate: " + "; ".join(sentences) if failed else ""
        row = {name: float(measures[name][i]) for name in measures}
        verdicts.append(FrameVerdict(i, paths[i], failed, max(excess.values(), default=0.0), reason, row))
    return verdicts


def _salvage(
    frames: Sequence[FrameInfo], verdicts: Sequence[FrameVerdict], p: QualityGatePolicy
) -> tuple[set[int], list[dict[str, Any]]]:
    """Rejected frames kept because their group would otherwise hold fewer than ``min_safe_stack``."""
    groups = plan_master_groups(frames, GroupingPolicy.from_values(p.group_threshold_deg, 0, 1), split_oversized=False)
    rescued: set[int] = set()
    records = []
    for group_id, members in enumerate(groups.groups):
        bad = sorted((i for i in members if verdicts[i].failed), key=lambda i: (verdicts[i].severity, i))
        good = len(members) - len(bad)
        if not bad or good >= p.min_safe_stack:
            continue
        chosen = bad[: p.min_safe_stack - good]
        rescued.update(chosen)
        records.append(
            {
                "group": group_id,
                "frames_in_group": len(members),
                "passed": good,
                "paths": [frames[i].path for i in chosen],
                "failed": [list(verdicts[i].failed) for i in chosen],
            }
        )
    return rescued, records


def gate_frames(frames: Sequence[FrameInfo], policy: QualityGatePolicy) -> QualityGateResult:
    """Split frames into those that pass the quality gate (or are salvaged) and rejections.

    Parameters
    ----------
    frames : sequence of FrameInfo
        The frames that passed ingest and the sanity screen, with their ``quality``.
    policy : QualityGatePolicy
        Bounds, switch and salvage settings.

    Returns
    -------
    QualityGateResult
        ``kept`` in input order; one ``FrameRejection`` per rejected frame, naming every
        failed bound with the measured and session values. Nothing is rejected when the
        gate is disabled or fewer than :data:`MIN_FRAMES_TO_GATE` frames were measured.
    """
    frames = list(frames)
    measured = sum(f.quality is not None for f in frames)
    if not policy.enabled or measured < MIN_FRAMES_TO_GATE:
        return QualityGateResult(tuple(frames), (), (), (), {}, policy)
    measures = _measures(frames)
    session = {name: _median(values) for name, values in measures.items()}
    verdicts = _verdicts([f.path for f in frames], measures, session, policy)
    rescued, records = _salvage(frames, verdicts, policy) if policy.salvage else (set(), [])
    kept = tuple(f for i, f in enumerate(frames) if not verdicts[i].failed or i in rescued)
    rejected = tuple(
        FrameRejection(frames[v.index].path, v.reason) for v in verdicts if v.failed and v.index not in rescued
    )
    failing = tuple(v for v in verdicts if v.failed)
    return QualityGateResult(kept, rejected, failing, tuple(records), session, policy)
