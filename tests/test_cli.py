"""The command line, through the real installed entry point."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from astropy.io import fits

EXE = shutil.which("zemosaic-dask") or str(Path(sys.executable).with_name("zemosaic-dask"))


def cli(*args, check=True, env=None):
    done = subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, timeout=600, env=env)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_run_writes_the_output_contract(seestar_set, tmp_path):
    folder, frames = seestar_set
    out = tmp_path / "out"
    done = cli(
        "run",
        *frames[:10],
        "-o",
        out,
        "--mode",
        "mosaic-first",
        "--n-workers",
        "1",
        "--threads-per-worker",
        "2",
        "--dashboard-address",
        ":0",
    )
    assert "Dashboard: http" in done.stderr and "mode: mosaic-first" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            ".zemosaic.lock",
            "background_frames.csv",
            "mosaic.fits",
            "mosaic_coverage.fits",
            "preview.png",
            "mosaic.zarr",
            "plan.json",
            "report.json",
            "zemosaic.log",
        ]
    )
    with fits.open(out / "mosaic.fits") as hdul:
        assert hdul[0].data.dtype == np.dtype(">f4") and hdul[0].data.shape[0] == 3
        assert hdul[0].header["CTYPE1"] == "RA---TAN" and hdul["ALPHA"].data.dtype == np.uint8
        data, alpha = hdul[0].data, hdul["ALPHA"].data
        coverage = fits.getdata(out / "mosaic_coverage.fits")
        assert np.isnan(data[:, coverage == 0]).all() and np.isfinite(data[:, coverage > 0]).all()
        assert ((alpha == 255) == (coverage > 0)).all()
    report = json.loads((out / "report.json").read_text())
    for key in ("inputs", "mode", "fallback", "timings", "assembly_plan", "dashboard"):
        assert key in report, key
    assert report["products"]["fits"] == "written" and report["products"]["parallel"] is True  # written by the worker
    assert "Mosaic written to" in (out / "zemosaic.log").read_text()
    from PIL import Image

    with Image.open(out / "preview.png") as image:
        assert image.mode == "RGBA" and max(image.size) <= 3200


def test_plan_json_lists_batches_and_run_executes_the_saved_plan(seestar_set, tmp_path):
    folder, frames = seestar_set
    done = cli(
        "plan",
        *frames[:16],
        "--mode",
        "classic",
        "--json",
        "-o",
        tmp_path / "plan.json",
        "--preview",
        tmp_path / "plan.png",
    )
    view = json.loads(done.stdout)
    assert view["mode"] == "classic" and view["assembly_plan"]["use_gpu"] is False
    assert {"id", "frames", "distinct_frames", "original_count", "final_count", "coverage_fraction", "salvage"} <= set(
        view["batches"][0]
    )
    assert sum(b["distinct_frames"] for b in view["batches"]) == 16
    assert (tmp_path / "plan.png").stat().st_size > 1000
    cli(
        "run",
        "--plan",
        tmp_path / "plan.json",
        "-o",
        tmp_path / "out",
        "--dashboard-address",
        ":0",
        "--n-workers",
        "1",
        "--no-progress",
    )
    executed = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert executed == json.loads((tmp_path / "plan.json").read_text())


def test_bad_config_key_fails_fast_naming_it(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("zemosaic:\n  sds:\n    min-batch-sise: 3\n")
    done = cli("run", tmp_path, "-o", tmp_path / "out", "--config", config, check=False)
    assert done.returncode == 2
    assert "min-batch-sise" in done.stderr and "did you mean zemosaic.sds.min-batch-size" in done.stderr
    assert not (tmp_path / "out").exists()  # nothing started


def test_config_and_simulate_and_french_messages(tmp_path):
    done = cli("config", "--json")
    entries = {e["key"]: e for e in json.loads(done.stdout)}
    assert entries["zemosaic.sds.min-batch-size"]["value"] == 5
    assert entries["zemosaic.sds.min-batch-size"]["source"] == "default"
    cli("simulate", tmp_path / "sim", "--frames", "3", "--seed", "2", "--scale", "0.1")
    assert len(list((tmp_path / "sim").glob("frame_*.fits"))) == 3
    done = cli(
        "run",
        tmp_path / "sim" / "frame_0000.fits",
        tmp_path / "missing.fits",
        "-o",
        tmp_path / "out",
        "--lang",
        "fr",
        "--mode",
        "mosaic-first",
        "--n-workers",
        "1",
        "--dashboard-address",
        ":0",
        "--no-progress",
    )
    log = (tmp_path / "out" / "zemosaic.log").read_text()
    assert "Mosaïque écrite" in log or "écrite" in log


def test_altaz_cleanup_flag_reaches_the_plan(seestar_set):
    _, frames = seestar_set
    view = json.loads(cli("plan", *frames[:4], "--json", "--altaz-cleanup", "auto").stdout)
    assert view["altaz"]["enabled"] is True and view["altaz"]["mounts"]["altaz"] == 4
    text = cli("plan", *frames[:4]).stdout
    assert "alt-az edge cleanup: off (zemosaic.altaz.cleanup is false)" in text
