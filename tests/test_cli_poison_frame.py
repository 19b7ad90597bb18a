"""A frame with a bad plate solution among the inputs is rejected and the run completes."""

import json
import shutil

from astropy.io import fits
from click.testing import CliRunner

from zemosaic_dask.cli import main
from zemosaic_dask.testing import simulate_seestar

FAST = [
    "--mode",
    "mosaic-first",
    "--n-workers",
    "1",
    "--threads-per-worker",
    "2",
    "--dashboard-address",
    ":0",
    "--no-progress",
    "--lang",
    "en",
]


def _run(inputs, out, config):
    done = CliRunner().invoke(main, ["run", str(inputs), "-o", str(out), "--config", str(config), *FAST])
    assert done.exit_code == 0, done.output
    return json.loads((out / "report.json").read_text()), json.loads((out / "plan.json").read_text())


def test_run_rejects_a_frame_moved_60_degrees_and_keeps_the_grid(tmp_path):
    result = simulate_seestar(tmp_path / "sim", 6, 11, scale=0.1)
    clean, poisoned = tmp_path / "clean", tmp_path / "poisoned"
    clean.mkdir()
    poisoned.mkdir()
    for path in result.frames:
        shutil.copy(path, clean / path.name)
        shutil.copy(path, poisoned / path.name)
    poison = poisoned / "poison.fits"
    shutil.copy(result.frames[2], poison)
    dec = fits.getval(poison, "CRVAL2")
    fits.setval(poison, "CRVAL2", value=dec - 60.0)

    config = tmp_path / "threads.yaml"  # one threaded worker: no worker process to start
    config.write_text("zemosaic:\n  cluster:\n    processes: false\n")

    report, plan = _run(poisoned, tmp_path / "out_poisoned", config)
    baseline_report, baseline_plan = _run(clean, tmp_path / "out_clean", config)

    rejected = report["inputs"]["rejected"]
    assert [r["path"] for r in rejected] == [str(poison)]
    reason = rejected[0]["reason"]
    assert "main group of 6 frames" in reason and "bad plate solution" in reason
    assert f"Dec {dec - 60.0:+.4f} deg" in reason
    assert sorted(report["inputs"]["used"]) == sorted(str(poisoned / p.name) for p in result.frames)
    assert plan["grid"] == baseline_plan["grid"]
    assert baseline_report["inputs"]["rejected"] == []
    assert f"Rejected {poison}: {reason}" in (tmp_path / "out_poisoned" / "zemosaic.log").read_text()
