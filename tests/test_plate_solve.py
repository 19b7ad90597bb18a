"""Plate solving of frames without a WCS: hints, solver image, cache, rejections, and a real solve.

The real solve renders a Seestar S50 frame from the Tycho-2 stars held in astrometry.net's
index files around NGC 7000, removes its WCS and asks ``solve-field`` for it. That test
needs ``deploy/plate-solve/install.sh`` and fails, on purpose, when the solver is missing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dask
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from zemosaic_dask.errors import FrameError
from zemosaic_dask.graph.ingest import build_ingest_graph
from zemosaic_dask.io.frames import IngestOptions, inspect_frame
from zemosaic_dask.io.plate_solve import SolveHints, find_solver, hints_from_header, solve_frame, solver_image
from zemosaic_dask.plans import FrameInfo, FrameRejection
from zemosaic_dask.testing import SimulationConfig, simulate_seestar

WCS_KEYS = ("WCSAXES", "CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2")
WCS_KEYS += ("CD1_1", "CD1_2", "CD2_1", "CD2_2", "RADESYS", "EQUINOX")
INSTALL_HINT = "install astrometry.net and its Tycho-2 index files with: sudo bash deploy/plate-solve/install.sh"
ASTROMETRY_DATA = Path("/usr/share/astrometry")
NGC7000 = (314.7, 44.3)  # a Milky Way field that Seestar owners shoot often


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _truth_wcs(shape: tuple[int, int]) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [83.8, -5.4]
    wcs.wcs.crpix = [(shape[1] + 1) / 2, (shape[0] + 1) / 2]
    wcs.wcs.cd = [[-2.4 / 3600, 0.0], [0.0, 2.4 / 3600]]
    return wcs


def _frame_without_wcs(path: Path, shape=(64, 48), **keywords) -> Path:
    """A small raw Seestar frame with pointing and optics keywords but no WCS."""
    rng = np.random.default_rng(1)
    hdu = fits.PrimaryHDU(rng.integers(200, 400, size=shape).astype(np.uint16))
    header = hdu.header
    header.update({"INSTRUME": "Seestar S50", "BAYERPAT": "GRBG", "EXPTIME": 10.0})
    header.update({"RA": 83.8, "DEC": -5.4, "FOCALLEN": 250.0, "XPIXSZ": 2.9, **keywords})
    hdu.writeto(path)
    return path


def _corner_offsets(solved: WCS, truth: WCS, shape: tuple[int, int]) -> np.ndarray:
    """Pixel distance, at the four outer corners, between where the two WCS put the same sky point."""
    height, width = shape
    xs = np.array([-0.5, width - 0.5, -0.5, width - 0.5])
    ys = np.array([-0.5, -0.5, height - 0.5, height - 0.5])
    ra, dec = truth.all_pix2world(xs, ys, 0)
    back_x, back_y = solved.all_world2pix(ra, dec, 0)
    return np.hypot(back_x - xs, back_y - ys)


# --- hints -----------------------------------------------------------------------------------


def test_hints_from_seestar_header_give_position_and_plate_scale():
    header = fits.Header({"RA": 314.7, "DEC": 44.3, "FOCALLEN": 250.0, "XPIXSZ": 2.9})
    hints = hints_from_header(header)
    expected_scale = math.degrees(2.9e-6 / 250e-3) * 3600.0  # small-angle plate scale
    assert hints.ra == pytest.approx(314.7) and hints.dec == pytest.approx(44.3)
    assert hints.pixel_scale == pytest.approx(expected_scale, rel=1e-6)
    args = hints.solver_arguments()
    low, high = float(args[args.index("--scale-low") + 1]), float(args[args.index("--scale-high") + 1])
    assert low < expected_scale < high and high / low < 1.3
    assert args[args.index("--scale-units") + 1] == "arcsecperpix"
    assert float(args[args.index("--ra") + 1]) == pytest.approx(314.7)
    assert float(args[args.index("--radius") + 1]) == hints.radius_deg


def test_hints_from_sexagesimal_keywords_and_missing_ones():
    hints = hints_from_header(fits.Header({"OBJCTRA": "20 58 48", "OBJCTDEC": "+44 18 00"}))
    assert hints.ra == pytest.approx(15.0 * (20 + 58 / 60 + 48 / 3600))
    assert hints.dec == pytest.approx(44.3)
    assert hints.pixel_scale is None
    blind = hints_from_header(fits.Header({"RA": "unknown", "FOCALLEN": 0.0, "XPIXSZ": 2.9}))
    assert blind == SolveHints()
    assert blind.solver_arguments() == []


# --- the image given to the solver ------------------------------------------------------------


def test_solver_image_bins_bayer_cells_removes_hot_pixels_and_keeps_stars():
    height, width = 64, 80
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    sky = np.where((yy + xx) % 2 == 0, 400.0, np.where(yy % 2 == 0, 300.0, 250.0))  # GRBG levels
    cell_sky = 400.0 + 300.0 + 250.0 + 400.0
    star_x, star_y = 40.3, 21.7
    star = 3000.0 * np.exp(-((xx - star_x) ** 2 + (yy - star_y) ** 2) / (2 * 1.4**2))
    raw = sky + star + rng.normal(0.0, 10.0, size=sky.shape)
    raw[50, 13] += 6000.0  # a hot pixel
    image = solver_image(raw.astype(np.float32))
    assert image.shape == (height, width) and image.dtype == np.float32
    cells = image.reshape(height // 2, 2, width // 2, 2)
    assert np.all(cells == cells[:, :1, :, :1])  # one value per 2x2 cell: no Bayer checkerboard
    assert image[50, 13] == pytest.approx(cell_sky, abs=60.0)  # the hot cell holds the sky again
    excess = np.where(image - cell_sky > 300.0, image - cell_sky, 0.0)
    assert excess.max() > 4 * 1500.0  # the star is kept
    cy, cx = np.sum(excess * yy) / excess.sum(), np.sum(excess * xx) / excess.sum()
    assert math.hypot(cx - star_x, cy - star_y) < 0.5


@pytest.mark.parametrize("planes_first", [True, False])
def test_solver_image_of_colour_cube_is_the_binned_luminance(planes_first):
    rng = np.random.default_rng(3)
    cube = rng.normal(100.0, 1.0, size=(3, 32, 40)).astype(np.float32)
    image = solver_image(cube if planes_first else np.moveaxis(cube, 0, -1))
    binned = cube.astype(np.float64).sum(axis=0).reshape(16, 2, 20, 2).sum(axis=(1, 3))
    np.testing.assert_allclose(image[::2, ::2], binned, rtol=1e-5)
    np.testing.assert_array_equal(image[1::2, 1::2], image[::2, ::2])


# --- a stand-in solver: the command line, the cache, timeouts and failures -------------------

FAKE_SOLVER = """#!{python}
import json, os, pathlib, shutil, subprocess, sys, time
args = sys.argv[1:]
with open(os.environ["FAKE_SOLVER_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
mode = os.environ.get("FAKE_SOLVER_MODE", "solve")
image = pathlib.Path(args[0])
out = pathlib.Path(args[args.index("--dir") + 1])
if mode == "solve":
    shutil.copyfile(image, os.environ["FAKE_SOLVER_SEEN"])
    shutil.copyfile(os.environ["FAKE_SOLVER_WCS"], out / (image.stem + ".wcs"))
elif mode == "hang":
    child = subprocess.Popen(["sleep", "120"])
    pathlib.Path(os.environ["FAKE_SOLVER_CHILD"]).write_text(str(child.pid))
    time.sleep(120)
elif mode == "crash":
    print("simulated solver crash: index files not found")
    sys.exit(3)
"""


@pytest.fixture
def fake_solver(tmp_path, monkeypatch):
    """A ``solve-field`` stand-in first on PATH that logs its arguments; returns the log path."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    script = bin_dir / "solve-field"
    script.write_text(FAKE_SOLVER.format(python=sys.executable))
    script.chmod(0o755)
    truth = tmp_path / "truth.wcs"
    _truth_wcs((64, 48)).to_header().tofile(truth)
    log = tmp_path / "solver-calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_SOLVER_LOG", str(log))
    monkeypatch.setenv("FAKE_SOLVER_WCS", str(truth))
    monkeypatch.setenv("FAKE_SOLVER_SEEN", str(tmp_path / "seen.fits"))
    monkeypatch.setenv("FAKE_SOLVER_CHILD", str(tmp_path / "child.pid"))
    assert find_solver() == str(script)
    return log


def _calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_solve_works_on_a_copy_with_hints_and_caches_by_content(fake_solver, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    frame = _frame_without_wcs(inputs / "frame.fits")
    before = _sha256(frame)
    cache = tmp_path / "out" / "wcs-cache"
    header = solve_frame(frame, cache, timeout_s=30.0)
    solved = WCS(fits.Header.fromstring(header))
    assert np.max(_corner_offsets(solved, _truth_wcs((64, 48)), (64, 48))) < 1e-6
    (args,) = _calls(fake_solver)
    given = Path(args[0])
    assert given != frame and inputs not in given.parents and not given.exists()  # a removed temporary copy
    assert fits.getdata(tmp_path / "seen.fits").shape == (64, 48)
    scale = 206.264806 * 2.9 / 250.0
    assert float(args[args.index("--scale-low") + 1]) < scale < float(args[args.index("--scale-high") + 1])
    assert (float(args[args.index("--ra") + 1]), float(args[args.index("--dec") + 1])) == (83.8, -5.4)
    assert args[args.index("--downsample") + 1] == "2" and args[args.index("--new-fits") + 1] == "none"
    assert 0 < int(args[args.index("--cpulimit") + 1]) <= 30
    assert _sha256(frame) == before and sorted(p.name for p in inputs.iterdir()) == ["frame.fits"]
    assert sorted(p.name for p in cache.iterdir()) == [f"{before}.wcs"]
    assert solve_frame(frame, cache, timeout_s=30.0) == header
    assert len(_calls(fake_solver)) == 1  # the second call read the cache
    copy = inputs / "renamed.fits"
    shutil.copyfile(frame, copy)
    assert solve_frame(copy, cache, timeout_s=30.0) == header and len(_calls(fake_solver)) == 1
    (cache / f"{before}.wcs").write_bytes(b"truncated")  # a damaged cache entry is solved again
    assert solve_frame(frame, cache, timeout_s=30.0) == header and len(_calls(fake_solver)) == 2
    assert fits.Header.fromfile(str(cache / f"{before}.wcs"))["CTYPE1"] == "RA---TAN"


def test_ingest_uses_solved_wcs_only_for_frames_without_one(fake_solver, tmp_path):
    frame = _frame_without_wcs(tmp_path / "nowcs.fits")
    with_wcs = tmp_path / "wcs.fits"
    with fits.open(frame) as hdul:
        header = hdul[0].header.copy()
        header.extend(_truth_wcs((64, 48)).to_header(), update=True)
        header["CRVAL1"] = 10.0
        fits.PrimaryHDU(hdul[0].data, header).writeto(with_wcs)
    options = IngestOptions(wcs_cache_dir=str(tmp_path / "wcs-cache"), solve_timeout_s=30.0)
    solved, kept = inspect_frame(str(frame), options), inspect_frame(str(with_wcs), options)
    assert isinstance(solved, FrameInfo) and solved.wcs_source == "solved"
    assert solved.center_world()[0] == pytest.approx(83.8, abs=1e-3)
    assert isinstance(kept, FrameInfo) and kept.wcs_source == "header"
    assert kept.center_world()[0] == pytest.approx(10.0, abs=1e-3)
    assert len(_calls(fake_solver)) == 1
    always = inspect_frame(str(with_wcs), IngestOptions(plate_solve="always", wcs_cache_dir=options.wcs_cache_dir))
    assert always.wcs_source == "solved" and always.center_world()[0] == pytest.approx(83.8, abs=1e-3)


def test_a_hanging_solver_is_killed_with_its_children_at_the_timeout(fake_solver, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_SOLVER_MODE", "hang")
    frame = _frame_without_wcs(tmp_path / "frame.fits")
    started = time.monotonic()
    with pytest.raises(FrameError, match=r"^no WCS and plate solving timed out after 1\.5 s"):
        solve_frame(frame, tmp_path / "cache", timeout_s=1.5)
    assert time.monotonic() - started < 10.0
    child = int((tmp_path / "child.pid").read_text())
    status = Path(f"/proc/{child}/status")
    assert not status.exists() or "State:\tZ" in status.read_text()  # gone, or a zombie awaiting its reaper
    assert list((tmp_path / "cache").iterdir()) == []


def test_solver_failures_become_rejections_and_are_not_cached(fake_solver, tmp_path, monkeypatch):
    frame = _frame_without_wcs(tmp_path / "frame.fits")
    options = IngestOptions(wcs_cache_dir=str(tmp_path / "cache"))
    monkeypatch.setenv("FAKE_SOLVER_MODE", "crash")
    crashed = inspect_frame(str(frame), options)
    assert isinstance(crashed, FrameRejection)
    assert crashed.reason.startswith("no WCS and plate solving failed: solve-field exited with status 3")
    assert "index files not found" in crashed.reason
    monkeypatch.setenv("FAKE_SOLVER_MODE", "nosolution")
    unsolved = inspect_frame(str(frame), options)
    assert unsolved.reason.startswith("no WCS and plate solving failed: no solution found (searched within")
    assert "scale 2.393 arcsec/px" in unsolved.reason
    assert list((tmp_path / "cache").iterdir()) == [] and len(_calls(fake_solver)) == 2


# --- without a solver --------------------------------------------------------------------------


def test_without_a_solver_frames_without_wcs_are_rejected_with_the_reason(tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert find_solver() is None
    frame = _frame_without_wcs(tmp_path / "frame.fits")
    cache = str(tmp_path / "cache")
    assert inspect_frame(str(frame), IngestOptions(wcs_cache_dir=cache)).reason == "no WCS and no plate solver"
    assert inspect_frame(str(frame)).reason == "no WCS and no plate solver"
    never = IngestOptions(plate_solve="never", wcs_cache_dir=cache)
    assert inspect_frame(str(frame), never).reason == "no WCS (plate solving disabled)"
    with pytest.raises(FrameError, match=r"^no WCS and no plate solver$"):
        solve_frame(frame, cache, timeout_s=10.0)


# --- the real solver on real stars ---------------------------------------------------------------


def _require_solver() -> None:
    """Fail (never skip) when astrometry.net is missing: CI installs it."""
    missing = [tool for tool in ("solve-field", "query-starkd") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found on PATH; {INSTALL_HINT}")
    if not list(ASTROMETRY_DATA.glob("index-tycho2-*.fits")):
        pytest.fail(f"no Tycho-2 index files in {ASTROMETRY_DATA}; {INSTALL_HINT}")


def _tycho2_stars(ra: float, dec: float, radius_deg: float, workdir: Path) -> dict[str, np.ndarray]:
    """The Tycho-2 stars (position, V_T magnitude) stored in the installed index files near a position."""
    columns: dict[str, list[np.ndarray]] = {"RA": [], "DEC": [], "MAG_VT": []}
    for index in sorted(ASTROMETRY_DATA.glob("index-tycho2-*.fits")):
        table = workdir / f"{index.stem}.fits"
        command = ["query-starkd", "-r", str(ra), "-d", str(dec), "-R", str(radius_deg), "-T", "-o", str(table)]
        subprocess.run([*command, str(index)], check=True, capture_output=True, timeout=60)
        if table.exists():  # no file when no star of that index lies in the circle
            rows = Table.read(table)
            for name in columns:
                columns[name].append(np.asarray(rows[name], dtype=np.float64))
    ra_all, dec_all, mag = (np.concatenate(columns[name]) for name in ("RA", "DEC", "MAG_VT"))
    # The index files hold overlapping subsets of the catalogue: keep each star once.
    _, first = np.unique(np.round(np.stack([ra_all, dec_all], axis=1) * 36000.0), axis=0, return_index=True)
    ra_all, dec_all, mag = ra_all[first], dec_all[first], mag[first]
    # About what a 50 mm aperture collects in 10 s: V = 10 gives 5000 ADU in the green channel.
    green = np.minimum(5000.0 * 10.0 ** (-0.4 * (mag - 10.0)), 300_000.0)
    return {"ra": ra_all, "dec": dec_all, "flux_r": 0.9 * green, "flux_g": green, "flux_b": 0.75 * green}


@pytest.mark.solver
def test_solves_a_seestar_frame_rendered_from_real_tycho2_stars(tmp_path, monkeypatch):
    _require_solver()
    stars = _tycho2_stars(*NGC7000, 1.0, tmp_path)
    assert len(stars["ra"]) > 100 and np.all(np.isfinite(stars["flux_g"]))
    config = SimulationConfig(center=NGC7000)
    sim = simulate_seestar(tmp_path / "sim", 1, 3, scale=1.0, panels=(1, 1), trails=0, stars=stars, config=config)
    inputs = tmp_path / "in"
    inputs.mkdir()
    frame = inputs / "nowcs.fits"
    with fits.open(sim.frames[0], do_not_scale_image_data=True) as hdul:
        truth = WCS(hdul[0].header, naxis=2)
        header = hdul[0].header.copy()
        for key in WCS_KEYS:
            header.remove(key, ignore_missing=True)
        fits.PrimaryHDU(hdul[0].data, header).writeto(frame)
    assert not WCS(header).has_celestial and "RA" in header and "FOCALLEN" in header
    digest = _sha256(frame)
    cache = tmp_path / "out" / "wcs-cache"
    options = IngestOptions(wcs_cache_dir=str(cache), solve_timeout_s=60.0)

    started = time.perf_counter()
    ((info,),) = dask.compute(*build_ingest_graph([str(frame)], options), scheduler="sync")
    elapsed = time.perf_counter() - started
    assert isinstance(info, FrameInfo), info
    assert info.wcs_source == "solved" and info.shape == (1920, 1080)
    offsets = _corner_offsets(info.wcs, truth, info.shape)
    assert np.max(offsets) < 1.0, f"solved WCS is off by {offsets} px at the corners"
    assert info.pixel_scale == pytest.approx(config.pixel_scale_arcsec, rel=2e-3)
    assert elapsed < options.solve_timeout_s
    assert _sha256(frame) == digest and [p.name for p in inputs.iterdir()] == ["nowcs.fits"]
    assert [p.name for p in cache.iterdir()] == [f"{digest}.wcs"]

    empty = tmp_path / "empty-bin"  # the solver is gone: the re-run reads the cache
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    again = inspect_frame(str(frame), options)
    assert isinstance(again, FrameInfo) and again.wcs_header == info.wcs_header
    fresh = IngestOptions(wcs_cache_dir=str(tmp_path / "other-cache"))
    assert inspect_frame(str(frame), fresh).reason == "no WCS and no plate solver"


def test_plan_solves_frames_without_wcs_as_run_does(fake_solver, tmp_path, monkeypatch, caplog):
    from zemosaic_dask.api import make_plan
    from zemosaic_dask.config import load_config
    from zemosaic_dask.errors import PlanError

    inputs = tmp_path / "in"
    inputs.mkdir()
    for index in range(3):
        _frame_without_wcs(inputs / f"frame_{index}.fits", OBJECT=f"field {index}")
    config = load_config(overrides={"mode": "mosaic-first"})
    cache = tmp_path / "out" / "wcs-cache"
    plan = make_plan([str(inputs)], config, wcs_cache_dir=cache)
    assert [f.wcs_source for f in plan.frames] == ["solved"] * 3 and not plan.rejected
    assert len(list(cache.iterdir())) == 3 and len(_calls(fake_solver)) == 3
    make_plan([str(inputs)], config, wcs_cache_dir=cache)
    assert len(_calls(fake_solver)) == 3  # the second plan (or the run beside it) reads the same cache
    monkeypatch.setenv("FAKE_SOLVER_MODE", "crash")
    with pytest.raises(PlanError, match="no usable input frame"):
        make_plan([str(inputs)], config, wcs_cache_dir=tmp_path / "other-cache")
    reasons = [r.getMessage() for r in caplog.records if "plate solving failed" in r.getMessage()]
    assert len(reasons) == 3 and all("index files not found" in r for r in reasons)
