"""Screening of poison frames: a bad plate solution is rejected, a real mosaic never is."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest
from plan_sky import angular_separation, make_frame, offset_position

from zemosaic_dask.plans import FrameInfo, plan_output_grid
from zemosaic_dask.plans.frame_sanity import LINK_GAP_DIAGONALS, MAX_SCALE_RATIO, screen_frames

SCALE = 2.39  # Seestar S50 arcsec/px
SMALL = (480, 270)  # a Seestar frame at scale 0.25
FULL = (1920, 1080)  # a full Seestar frame


def _frame(ra: float, dec: float, name: str, *, shape=SMALL, scale=SCALE) -> FrameInfo:
    """A frame as ingest returns it: the WCS plus the sky centre and border computed from it."""
    return make_frame(ra, dec, name=name, shape=shape, scale=scale).with_sky_geometry()


def _extent_deg(shape: tuple[int, int], scale: float = SCALE) -> tuple[float, float]:
    """``(height, width)`` of a frame on the sky, in degrees."""
    return shape[0] * scale / 3600.0, shape[1] * scale / 3600.0


def _panel_session(
    ra: float,
    dec: float,
    panels: tuple[int, int],
    per_panel: int,
    *,
    shape=SMALL,
    overlap: float = 0.3,
    seed: int = 0,
    prefix: str = "f",
) -> list[FrameInfo]:
    """``nx x ny`` panels overlapping by ``overlap``, ``per_panel`` dithered frames each."""
    rng = np.random.default_rng(seed)
    height, width = _extent_deg(shape)
    dither = 10 * SCALE / 3600.0
    frames = []
    for iy in range(panels[1]):
        for ix in range(panels[0]):
            east = (ix - (panels[0] - 1) / 2) * (1 - overlap) * width
            north = (iy - (panels[1] - 1) / 2) * (1 - overlap) * height
            for k in range(per_panel):
                de, dn = rng.uniform(-dither, dither, 2)
                r, d = offset_position(ra, dec, east + de, north + dn)
                frames.append(_frame(r, d, f"{prefix}{ix}{iy}_{k:02d}", shape=shape))
    return frames


def _moved(frame: FrameInfo, ra: float, dec: float, name: str) -> FrameInfo:
    """A copy of ``frame`` whose WCS points at (ra, dec): a bad plate solution."""
    return _frame(ra, dec, name, shape=frame.shape, scale=frame.pixel_scale)


def _reported_distance(reason: str) -> float:
    return float(re.search(r"is ([0-9.]+) deg from the nearest frame", reason).group(1))


@pytest.mark.parametrize(("ra", "dec"), [(150.0, 20.0), (359.98, -10.0), (40.0, 75.0)])
def test_frame_moved_60_degrees_is_rejected_and_the_session_kept(ra, dec):
    session = _panel_session(ra, dec, (2, 2), 10)
    first = session[0]
    ra0, dec0 = first.center_world()
    poison = _moved(first, ra0, dec0 - 60.0, "poison")
    frames = [*session[:17], poison, *session[17:]]

    kept, rejected = screen_frames(frames)

    assert kept == session  # the other 40, unchanged and in order
    assert [r.path for r in rejected] == [poison.path]
    reason = rejected[0].reason
    assert "\n" not in reason and "bad plate solution" in reason and "main group of 40 frames" in reason
    nearest = min(angular_separation(*poison.center_world(), *f.center_world()) for f in session)
    assert nearest > 59.0
    assert _reported_distance(reason) == pytest.approx(nearest, abs=1e-3)
    # The session value: 4 median diagonals of a 480x270 frame at 2.39 "/px.
    diagonal = SCALE * math.hypot(*SMALL) / 3600.0
    assert f"linking distance of {(1 + LINK_GAP_DIAGONALS) * diagonal:.3f} deg" in reason
    # What it protects: the grid without the poison frame is the size of the panels.
    assert max(plan_output_grid(kept, chunk=128).shape) < 1200
    assert max(plan_output_grid(frames, chunk=128).shape) > 50_000


def test_frame_with_a_1000x_coarser_scale_is_rejected():
    session = _panel_session(150.0, 20.0, (2, 2), 10)
    ra0, dec0 = session[5].center_world()
    coarse = _frame(ra0, dec0, "coarse", scale=SCALE * 1000)
    fine = _frame(ra0, dec0, "fine", scale=SCALE / 1000)

    kept, rejected = screen_frames([coarse, *session, fine])

    assert kept == session
    assert [r.path for r in rejected] == [coarse.path, fine.path]
    assert rejected[0].reason == (
        "pixel scale 2390 arcsec/px is 1000x the session median 2.39 arcsec/px (bad plate solution?)"
    )
    assert rejected[1].reason == (
        "pixel scale 0.00239 arcsec/px is 1/1000 of the session median 2.39 arcsec/px (bad plate solution?)"
    )


def test_scale_threshold_is_a_ratio_either_way():
    session = _panel_session(150.0, 20.0, (2, 1), 5)
    ra0, dec0 = session[0].center_world()
    inside = [_frame(ra0, dec0, f"in{i}", scale=SCALE * r) for i, r in enumerate((1.05 / MAX_SCALE_RATIO, 1.4))]
    outside = [_frame(ra0, dec0, f"out{i}", scale=SCALE * r) for i, r in enumerate((0.95 / MAX_SCALE_RATIO, 1.6))]

    kept, rejected = screen_frames([*session, *inside, *outside])

    assert kept == [*session, *inside]
    assert [r.path for r in rejected] == [f.path for f in outside]
    assert "1.60x the session median" in rejected[1].reason


def test_wide_mosaic_of_6x6_panels_over_degrees_is_kept():
    session = _panel_session(83.0, -5.0, (6, 6), 2, shape=FULL, overlap=0.2)
    corners = [f.center_world() for f in (session[0], session[-1])]
    assert angular_separation(*corners[0], *corners[1]) > 5.0  # spread over many frame widths

    kept, rejected = screen_frames(session)

    assert kept == session and rejected == []


def test_small_panel_group_behind_a_gap_of_under_one_frame_is_kept():
    """Three frames past a gap of 0.9 frame height: not a bad solution, a missed panel row.

    Their centres are 1.9 frame heights (1.66 diagonals) from the main group: a rule that
    linked only overlapping frames, or one on the spread of the main group, would reject them.
    """
    main = _panel_session(83.0, -5.0, (6, 6), 1, shape=FULL, overlap=0.2)
    height, _ = _extent_deg(FULL)
    top = max(f.center_world()[1] for f in main)
    ra0 = main[-1].center_world()[0]
    detached = [_frame(ra0 + 0.01 * k, top + 1.9 * height, f"extra{k}", shape=FULL) for k in range(3)]
    frames = [*main, *detached]

    kept, rejected = screen_frames(frames)

    assert kept == frames and rejected == []


def test_touching_panel_groups_are_kept():
    left = _panel_session(10.0, 40.0, (3, 3), 4, prefix="a")
    right = _panel_session(10.0, 40.0, (1, 1), 2, prefix="b", seed=1)
    _, width = _extent_deg(SMALL)
    right = [_moved(f, *offset_position(*f.center_world(), 2.4 * width, 0.0), f.path) for f in right]
    frames = [*left, *right]

    kept, rejected = screen_frames(frames)

    assert kept == frames and rejected == []


def test_detached_group_is_rejected_only_while_it_is_a_small_minority():
    session = _panel_session(150.0, 20.0, (2, 2), 10)  # 40 frames: up to 4 may be rejected together
    ra0, dec0 = session[0].center_world()
    far = [_frame(ra0 + 0.001 * k, dec0 - 30.0, f"far{k}") for k in range(6)]

    kept, rejected = screen_frames([*session, *far[:4]])
    assert kept == session and [r.path for r in rejected] == [f.path for f in far[:4]]

    kept, rejected = screen_frames([*session, *far[:5]])  # 5 of 45: a second target, not an accident
    assert len(kept) == 45 and rejected == []


def test_without_a_single_largest_group_nothing_is_rejected():
    a = _panel_session(150.0, 20.0, (1, 1), 2, prefix="a")
    b = _panel_session(200.0, 20.0, (1, 1), 2, prefix="b")
    lone = _frame(250.0, 20.0, "lone")
    scattered = [_frame(150.0 + k, 20.0, f"s{k}") for k in range(20)]  # isolated single fields

    for frames in ([*a, *b], [*a, lone, *b], scattered):
        kept, rejected = screen_frames(frames)
        assert kept == frames and rejected == []


def test_session_around_the_pole_is_kept_and_a_far_frame_rejected():
    ring = [_frame(30.0 * k, 89.9, f"p{k}") for k in range(12)]
    poison = _frame(0.0, 29.9, "poison")

    kept, rejected = screen_frames([*ring, poison])

    assert kept == ring and [r.path for r in rejected] == [poison.path]
    assert _reported_distance(rejected[0].reason) == pytest.approx(60.0, abs=0.01)


@pytest.mark.parametrize("n", [1, 2])
def test_one_or_two_frames_are_never_screened(n):
    good = _frame(150.0, 20.0, "good")
    bad = [_frame(150.0, -40.0, "far"), _frame(150.0, 20.0, "coarse", scale=SCALE * 1000)]
    for other in bad:
        frames = [good, other][:n]
        kept, rejected = screen_frames(frames)
        assert kept == frames and rejected == []


def test_three_frames_reject_the_odd_one():
    a, b = _frame(150.0, 20.0, "a"), _frame(150.05, 20.05, "b")
    far = _frame(150.0, -40.0, "far")

    kept, rejected = screen_frames([a, far, b])

    assert kept == [a, b] and [r.path for r in rejected] == [far.path]


def test_stored_sky_centre_is_used_without_parsing_the_wcs():
    """Screening reads the centre ingest stored; the WCS header is not consulted for it."""
    session = _panel_session(150.0, 20.0, (2, 1), 5)
    elsewhere = make_frame(150.0, -40.0, shape=SMALL, scale=SCALE).wcs_header
    frames = [dataclasses.replace(f, wcs_header=elsewhere) if i == 3 else f for i, f in enumerate(session)]
    assert screen_frames(frames) == (frames, [])
    # Without stored geometry the centre comes from the WCS, which now points elsewhere.
    bare = [dataclasses.replace(f, sky_center=(), sky_border=()) for f in frames]
    kept, rejected = screen_frames(bare)
    assert [r.path for r in rejected] == [frames[3].path] and len(kept) == 9
