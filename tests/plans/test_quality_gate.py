"""The per-frame quality gate on simulated nights with clouded, trailed and defocused frames."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from zemosaic_dask.config import default_config
from zemosaic_dask.config.policies import quality_gate_policy
from zemosaic_dask.io.frames import IngestOptions, inspect_frame
from zemosaic_dask.plans.frames import FrameInfo
from zemosaic_dask.plans.quality_gate import QualityGatePolicy, gate_frames
from zemosaic_dask.plans.transparency import match_stars
from zemosaic_dask.simulation import simulate_seestar

#: The measure that must reject each kind of simulated defect first (its worst excess).
EXPECTED_REASON = {"clouds": "transparency", "trailing": "elongation", "defocus": "fwhm"}
SESSIONS = {"bayer-2x2": (11, "bayer", (2, 2)), "chw-3x1": (12, "chw", (3, 1))}


@pytest.fixture(scope="module", params=sorted(SESSIONS))
def night(request, tmp_path_factory):
    seed, layout, panels = SESSIONS[request.param]
    out = tmp_path_factory.mktemp(request.param)
    result = simulate_seestar(out, 40, seed, scale=0.25, layout=layout, panels=panels, degraded=0.15)
    frames = [inspect_frame(str(p)) for p in result.frames]
    assert all(isinstance(f, FrameInfo) for f in frames)
    kinds = {int(k): v["kind"] for k, v in result.parameters["degraded"].items()}
    panel_of = [p["panel"] for p in result.parameters["pointings"]]
    return frames, kinds, panel_of


def test_gate_rejects_degraded_frames_for_the_right_reason(night):
    frames, kinds, _ = night
    result = gate_frames(frames, quality_gate_policy(default_config()))
    failed = {v.index: v.failed for v in result.verdicts}
    caught = [i for i in kinds if i in failed]
    false_alarms = [i for i in failed if i not in kinds]
    assert len(caught) >= 0.95 * len(kinds)
    assert len(false_alarms) < 0.02 * (len(frames) - len(kinds))
    for index in caught:
        assert failed[index][0] == EXPECTED_REASON[kinds[index]], (index, kinds[index], failed[index])
    rejected = {r.path: r.reason for r in result.rejected}
    assert set(rejected) == {frames[i].path for i in caught}
    assert all(reason.startswith("quality gate: ") for reason in rejected.values())
    assert [f.path for f in result.kept] == [f.path for i, f in enumerate(frames) if i not in caught]


def test_gate_disabled_keeps_every_frame(night):
    frames, kinds, _ = night
    assert kinds
    result = gate_frames(frames, QualityGatePolicy(enabled=False))
    assert result.kept == tuple(frames)
    assert result.rejected == ()


def test_frames_without_measures_are_never_rejected(night):
    frames, _, _ = night
    bare = [dataclasses.replace(f, quality=None) for f in frames]
    result = gate_frames(bare, QualityGatePolicy())
    assert result.kept == tuple(bare) and not result.rejected


def test_salvage_keeps_a_rejected_frame_where_its_group_is_too_thin(night):
    frames, kinds, panel_of = night
    # A trailed or defocused frame, and one frame of the same defect on another panel.
    kind, salvaged = next((k, i) for i, k in kinds.items() if k in ("trailing", "defocus"))
    twin = next(i for i, k in kinds.items() if k == kind and panel_of[i] != panel_of[salvaged])
    panel = panel_of[salvaged]
    companion = next(i for i in range(len(frames)) if panel_of[i] == panel and i not in kinds)
    chosen = [i for i in range(len(frames)) if panel_of[i] != panel] + [salvaged, companion]
    subset = [frames[i] for i in sorted(chosen)]
    policy = quality_gate_policy(default_config())
    result = gate_frames(subset, policy)
    kept = {f.path for f in result.kept}
    assert frames[salvaged].path in kept
    assert frames[twin].path not in kept
    assert frames[twin].path in {r.path for r in result.rejected}
    (record,) = [s for s in result.salvaged if frames[salvaged].path in s["paths"]]
    assert record["passed"] == 1 and record["frames_in_group"] == 2
    assert EXPECTED_REASON[kind] in record["failed"][0]
    report = result.to_dict()
    assert frames[salvaged].path not in {r["path"] for r in report["rejected"]}
    assert frames[twin].path in {r["path"] for r in report["rejected"]}
    # Without salvage the same frame is dropped.
    strict = gate_frames(subset, dataclasses.replace(policy, salvage=False))
    assert frames[salvaged].path not in {f.path for f in strict.kept}


def test_frame_quality_round_trips_through_plan_json(night):
    frames, _, _ = night
    frame = frames[0]
    assert frame.quality is not None and frame.quality.n_stars > 0 and len(frame.quality.stars) >= 3
    data = json.loads(json.dumps(frame.to_dict()))
    assert FrameInfo.from_dict(data) == frame
    del data["quality"]  # a plan written before the gate existed
    assert FrameInfo.from_dict(data).quality is None


def test_ingest_without_measures(night, tmp_path):
    frames, _, _ = night
    bare = inspect_frame(frames[0].path, IngestOptions(measure_quality=False))
    assert bare.quality is None
    assert dataclasses.replace(frames[0], quality=None) == bare


def test_match_stars_labels_the_same_star_across_frames():
    rng = np.random.default_rng(0)
    stars = np.column_stack([rng.uniform(10.0, 10.5, 50), rng.uniform(40.0, 40.5, 50)])
    radius = 2e-4
    frames = [stars + rng.normal(0.0, radius / 10, stars.shape) for _ in range(4)]
    positions = np.vstack([f[rng.permutation(50)[:40]] if k else f for k, f in enumerate(frames)])
    labels = match_stars(positions[:, 0], positions[:, 1], radius)
    truth = np.argmin(
        np.abs(positions[:, None, 0] - stars[None, :, 0]) + np.abs(positions[:, None, 1] - stars[None, :, 1]), axis=1
    )
    assert len(np.unique(labels)) == 50
    for label in np.unique(labels):
        assert len(np.unique(truth[labels == label])) == 1
