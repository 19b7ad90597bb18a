"""The alt-az cleanup decision: mount modes read from EQMODE / MOUNT, auto, true, false."""

from __future__ import annotations

import dataclasses

import pytest
from plan_sky import make_frame

from zemosaic_dask.plans.altaz import AltazDecision, AltazPolicy, mount_kind, plan_altaz_cleanup


@pytest.mark.parametrize(
    ("value", "kind"),
    [("0", "altaz"), ("0.0", "altaz"), ("ALTAZ", "altaz"), ("1", "equatorial"), ("EQ", "equatorial"), ("", "unknown")],
)
def test_mount_kind(value, kind):
    assert mount_kind(value) == kind


def _frames(*modes: str):
    return [dataclasses.replace(make_frame(10.0, 20.0, name=f"f{i}"), mount_mode=m) for i, m in enumerate(modes)]


def test_auto_cleans_when_a_frame_is_alt_az_and_says_how_many():
    decision = plan_altaz_cleanup(_frames("0", "1", ""), AltazPolicy("auto"))
    assert decision.enabled
    assert "1 of 3" in decision.reason
    assert decision.mounts == {"altaz": 1, "equatorial": 1, "unknown": 1}


def test_auto_leaves_equatorial_and_unknown_mounts_alone():
    assert not plan_altaz_cleanup(_frames("1", "1"), AltazPolicy("auto")).enabled
    assert not plan_altaz_cleanup(_frames("", ""), AltazPolicy("auto")).enabled


def test_true_and_false_decide_alone_and_the_decision_round_trips():
    assert plan_altaz_cleanup(_frames("1"), AltazPolicy(True)).enabled
    off = plan_altaz_cleanup(_frames("0"), AltazPolicy(False))
    assert not off.enabled and "false" in off.reason
    assert AltazDecision.from_dict(off.to_dict()) == off
