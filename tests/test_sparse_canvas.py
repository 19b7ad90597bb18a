"""A sparse canvas: frames far apart on one wide grid. Empty regions are never scheduled."""

from __future__ import annotations

import json

import numpy as np
from astropy.io import fits
from e2e import SYNC, run

from zemosaic_dask.io import inspect_frame
from zemosaic_dask.plans.grid import OutputGrid
from zemosaic_dask.plans.regions import assign_frames_to_regions
from zemosaic_dask.testing import simulate_seestar


def test_an_sds_batch_spread_over_a_wide_canvas_combines_only_the_regions_its_frames_reach(tmp_path):
    sim = simulate_seestar(tmp_path / "sim", 4, seed=5, scale=0.15, panels=(2, 2), layout="mono", trails=[])
    # Move the frames to the corners of a ~1.5 x 1.5 degree field: one SDS batch whose bounding
    # box spans the whole canvas but whose frames cover a few per cent of it.
    for path, (dra, ddec) in zip(sim.frames, [(0, 0), (1.8, 0), (0, 1.5), (1.8, 1.5)], strict=True):
        with fits.open(path, mode="update") as hdul:
            hdul[0].header["CRVAL1"] += dra
            hdul[0].header["CRVAL2"] += ddec
    overrides = {"sds.min-batch-size": 2, "sds.target-batch-size": 4, "quality.enabled": False}
    sds = run(sim.frames, tmp_path / "sds", SYNC, mode="sds", **overrides)
    assert sds.report["mode"] == "sds" and sds.report["layers"] == 1

    grid = OutputGrid.from_dict(json.loads((tmp_path / "sds" / "plan.json").read_text())["grid"])
    reached = assign_frames_to_regions(grid, [inspect_frame(str(p)) for p in sim.frames])
    ny, nx = grid.n_regions
    assert len(reached) < ny * nx / 4  # a sparse canvas indeed
    assert sds.report["regions"]["total"] == len(reached)  # one combination per region with data, no more

    # Nothing is lost: every pixel the frames cover has data, exactly where Mosaic-First puts it.
    first = run(sim.frames, tmp_path / "mf", SYNC, mode="mosaic-first", **overrides)
    assert np.array_equal(np.isfinite(sds.image), np.isfinite(first.image))
    assert np.array_equal(sds.coverage > 0, first.coverage > 0)
    assert 0.005 < np.isfinite(first.image).mean() < 0.2
