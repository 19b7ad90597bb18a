"""A satellite trail's wings go with its rejected core, in every mode (the stack's growth, end to end)."""

import json

import pytest
from e2e import SYNC, excess, run, trail_pixels, trail_wing_pixels, truth_on


@pytest.fixture(scope="module")
def wing_runs(seestar_set, tmp_path_factory):
    _, frames = seestar_set
    base = tmp_path_factory.mktemp("trail-wings")
    return {
        (mode, radius): run(frames, base / f"{mode}-{radius}", SYNC, mode=mode, **{"stack.grow-radius": radius})
        for mode in ("mosaic-first", "classic", "sds")
        for radius in (3, 0)
    }


@pytest.mark.parametrize("mode", ["mosaic-first", "classic", "sds"])
def test_trail_wings_are_rejected_with_the_core(wing_runs, seestar_set, mode):
    """2.5-4.5 px either side of the trails (three, 200-780 ADU peak, among 32 frames): without
    growth the kept wings lift the mosaic by about 0.2 of the stack's expected noise on average
    over those thousands of pixels (the check can fail); with the default growth they are gone."""
    sim = seestar_set[0]
    grown, plain = wing_runs[mode, 3], wing_runs[mode, 0]
    truth = truth_on(grown, sim)
    wings = trail_wing_pixels(sim, grown)
    assert len(wings) > 1000
    assert excess(plain, truth, wings) > 0.12
    assert abs(excess(grown, truth, wings)) < 0.07
    assert abs(excess(grown, truth, trail_pixels(sim, grown))) < 0.5  # the core stays rejected
    for radius, mosaic in ((3, grown), (0, plain)):  # the plan records what ran
        assert json.loads((mosaic.out / "plan.json").read_text())["config"]["stack"]["grow-radius"] == radius
