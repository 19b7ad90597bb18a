"""Faults and bad input at the command line, on real files and real processes.

Every expected failure is one line on stderr with exit status 2 (no traceback); a changed
input is never served from an old store; one run per output folder; the dashboard and
every listening socket stay on loopback; Ctrl-C keeps a resumable state.
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from astropy.io import fits

PLAN_RUN = ["--n-workers", "1", "--threads-per-worker", "2", "--no-progress"]
FAST = [*PLAN_RUN, "--chunk", "128"]
THREADS = {"DASK_ZEMOSAIC__CLUSTER__PROCESSES": "false"}


def _argv(*args):
    return [sys.executable, "-m", "zemosaic_dask.cli", *map(str, args)]


def _env(**extra):
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}


def cli(*args, env=None, **kwargs):
    return subprocess.run(_argv(*args), capture_output=True, text=True, timeout=300, env=env or _env(), **kwargs)


def _one_line_error(done, *needles):
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(("error: ", "Error: ")), done.stderr[-2000:]  # ours, or click's usage error
    for needle in needles:
        assert needle in line, line
    return line


@pytest.fixture
def frames(seestar_set, tmp_path):
    """Six frames copied into their own folder (tests may change them)."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for path in seestar_set[1][:6]:
        shutil.copy(path, folder)
    return folder


def _run(folder, out, *extra, env=None):
    return cli("run", folder, "-o", out, "--mode", "mosaic-first", *FAST, *extra, env=env or _env(**THREADS))


def test_worker_counts_below_one_are_refused_naming_the_flag(frames, tmp_path):
    for flag in ("--n-workers", "--threads-per-worker"):
        done = cli("run", frames, "-o", tmp_path / "out", flag, "0")
        assert done.returncode == 2 and flag in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_changed_input_pixel_is_never_served_from_the_old_store(frames, tmp_path):
    out = tmp_path / "out"
    assert _run(frames, out).returncode == 0
    before = fits.getdata(out / "mosaic.fits")
    plan_before = (out / "plan.json").read_text()
    # A patch of pixels changed in place: size, header and mtime unchanged.
    target = sorted(frames.glob("*.fits"))[2]
    stat = target.stat()
    with fits.open(target) as hdul:
        offset = hdul[0].fileinfo()["datLoc"]
        height, width = hdul[0].data.shape[-2:]
        itemsize = hdul[0].data.dtype.itemsize
    with open(target, "r+b") as handle:
        for row in range(height // 2, height // 2 + 16):
            handle.seek(offset + (row * width + width // 2) * itemsize)
            handle.write(bytes(handle.read(16 * itemsize))[::-1])  # 16 pixels reversed byte-wise
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert target.stat().st_size == stat.st_size
    refused = _run(frames, out)
    _one_line_error(refused, "different inputs or settings", "--restart")
    # The refused run leaves the folder describing the earlier mosaic.
    assert (out / "plan.json").read_text() == plan_before
    np.testing.assert_array_equal(fits.getdata(out / "mosaic.fits"), before)
    restarted = _run(frames, out, "--restart")
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    assert json.loads((out / "report.json").read_text())["regions"]["reused"] == 0
    elsewhere = tmp_path / "fresh"
    assert _run(frames, elsewhere).returncode == 0
    np.testing.assert_array_equal(fits.getdata(out / "mosaic.fits"), fits.getdata(elsewhere / "mosaic.fits"))


@pytest.mark.parametrize("mode", ["classic", "sds"])
def test_restart_discards_every_previous_state(frames, tmp_path, mode):
    out = tmp_path / "out"
    base = ["--mode", mode, "--sds" if mode == "sds" else "--no-sds"]
    first = cli("run", frames, "-o", out, *base, *FAST, env=_env(**THREADS))
    assert first.returncode == 0, first.stderr[-2000:]
    refused = cli("run", frames, "-o", out, *base, *FAST, "--kappa", "2.5", env=_env(**THREADS))
    _one_line_error(refused, "different inputs or settings")
    again = cli("run", frames, "-o", out, *base, *FAST, "--kappa", "2.5", "--restart", env=_env(**THREADS))
    assert again.returncode == 0, again.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["mode"] == mode and report["fallback"] is None and report["regions"]["reused"] == 0


def test_two_runs_into_one_folder_one_proceeds_the_other_names_the_holder(frames, tmp_path):
    out = tmp_path / "out"
    first = subprocess.Popen(
        _argv("run", frames, "-o", out, "--mode", "mosaic-first", *FAST),
        env=_env(**THREADS),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lock = out / ".zemosaic.lock"
    deadline = time.monotonic() + 60
    while not (lock.exists() and lock.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)
    second = _run(frames, out)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    _one_line_error(second, "is in use by", f"pid {first.pid}")
    with fits.open(out / "mosaic.fits") as hdul:  # the run that proceeded wrote a complete file
        assert np.isfinite(hdul[0].data).any()


def test_a_stale_lock_from_a_killed_run_is_taken_over(frames, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from zemosaic_dask.io.lock import output_lock\n"
            f"with output_lock({str(out)!r}):\n    print('held', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    busy = _run(frames, out)
    _one_line_error(busy, f"pid {holder.pid}")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    done = _run(frames, out)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "taking over the lock" in (out / "zemosaic.log").read_text()


def _listening(pid):
    try:
        tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    found = []
    for process in tree:
        try:
            found += [c.laddr for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        except psutil.NoSuchProcess:
            continue
    return found


def test_a_default_run_listens_on_loopback_only(frames, tmp_path):
    out = tmp_path / "out"
    process = subprocess.Popen(
        _argv("run", frames, "-o", out, "--mode", "mosaic-first", "--n-workers", "2", "--no-progress"),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = set()
    while process.poll() is None:
        seen.update((a.ip, a.port) for a in _listening(process.pid))
        time.sleep(0.05)
    assert process.returncode == 0, process.stderr.read()[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert len(report["workers"]) == 2  # worker processes were there to be watched
    assert seen, "no listening socket was observed"
    outside = [(ip, port) for ip, port in seen if not ipaddress.ip_address(ip).is_loopback]
    assert not outside, outside
    assert report["dashboard"].startswith("http://127.0.0.1:")


def test_bad_output_folders_are_one_line_errors(frames, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    _one_line_error(_run(frames, a_file), str(a_file), "is a file")
    _one_line_error(_run(frames, a_file / "out"), "a parent of it is a file")
    zarr_file = tmp_path / "zarrfile"
    zarr_file.mkdir()
    (zarr_file / "mosaic.zarr").write_text("not a store")
    _one_line_error(_run(frames, zarr_file), "mosaic.zarr is a file")
    assert (zarr_file / "mosaic.zarr").read_text() == "not a store"


def _make_read_only(folder):
    """Make ``folder`` unwritable, also for root (immutable attribute); return the undo."""
    if os.geteuid() != 0:
        os.chmod(folder, 0o555)
        return lambda: os.chmod(folder, 0o755)
    subprocess.run(["chattr", "+i", str(folder)], check=True)
    return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_read_only_output_folder_is_a_one_line_error(frames, tmp_path):
    read_only = tmp_path / "out"
    read_only.mkdir()
    undo = _make_read_only(read_only)
    try:
        done = _run(frames, read_only)
        _one_line_error(done, str(read_only), "not writable")
        assert list(read_only.iterdir()) == []
    finally:
        undo()


def test_a_full_disk_is_a_one_line_error_and_leaves_no_complete_looking_product(frames, tmp_path):
    out = tmp_path / "out"
    size = 256 * 1024  # every store chunk fits; the mosaic's FITS file does not

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    done = subprocess.run(
        _argv("run", frames, "-o", out, "--mode", "mosaic-first", *FAST),
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(**THREADS),
        preexec_fn=limit,
    )
    _one_line_error(done, "File too large")
    assert not (out / "mosaic.fits").exists() and not (out / "report.json").exists()
    assert not list(out.glob(".*.partial"))
    assert _run(frames, out).returncode == 0  # and the state left behind resumes


def test_ctrl_c_stops_cleanly_and_the_run_resumes(seestar_set, tmp_path):
    frames = seestar_set[0]
    out = tmp_path / "out"
    process = subprocess.Popen(
        _argv("run", frames, "-o", out, "--mode", "mosaic-first", "--n-workers", "1", "--no-progress"),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    log = out / "zemosaic.log"
    while time.monotonic() < deadline and not (log.exists() and "mosaic: " in log.read_text()):
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted" in err and "resume" in err
    assert not (out / "report.json").exists()
    done = cli("run", frames, "-o", out, "--mode", "mosaic-first", "--n-workers", "1", "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]


def test_bad_plan_files_are_one_line_errors(frames, tmp_path):
    plan = tmp_path / "plan.json"
    made = cli("plan", frames, "-o", plan, "--mode", "mosaic-first")
    assert made.returncode == 0, made.stderr[-2000:]
    good = json.loads(plan.read_text())
    broken = tmp_path / "broken.json"
    broken.write_text(plan.read_text()[:200])
    _one_line_error(cli("run", "--plan", broken, "-o", tmp_path / "a", *PLAN_RUN), "broken.json", "not a plan.json")
    incomplete = tmp_path / "incomplete.json"
    incomplete.write_text(json.dumps({k: v for k, v in good.items() if k != "grid"}))
    _one_line_error(cli("run", "--plan", incomplete, "-o", tmp_path / "b", *PLAN_RUN), "not a complete plan", "grid")
    # A frame deleted, another truncated after the plan was made.
    victims = sorted(frames.glob("*.fits"))
    victims[0].unlink()
    with open(victims[1], "r+b") as handle:
        handle.truncate(victims[1].stat().st_size // 2)
    line = _one_line_error(cli("run", "--plan", plan, "-o", tmp_path / "c", *PLAN_RUN), "2 frame(s)")
    assert victims[0].name in line and victims[1].name in line


def test_a_missing_input_path_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "frames"
    _one_line_error(cli("run", missing, "-o", tmp_path / "out", *FAST), str(missing))


def test_inputs_next_to_products_compressed_files_links_and_odd_exposures(frames, tmp_path):
    paths = sorted(frames.glob("*.fits"))
    # A gzip copy replaces one frame, another frame has EXPTIME = 'N/A', and a link points nowhere.
    raw = paths[0].read_bytes()
    (frames / (paths[0].name + ".gz")).write_bytes(gzip.compress(raw))
    paths[0].unlink()
    with fits.open(paths[1], mode="update") as hdul:
        hdul[0].header["EXPTIME"] = "N/A"
    (frames / "gone.fits").symlink_to(tmp_path / "nowhere.fits")
    for out in (frames / "run1", frames):  # inside the input folder, then the input folder itself
        for attempt in range(2):
            done = _run(frames, out)
            assert done.returncode == 0, done.stderr[-2000:]
            report = json.loads((out / "report.json").read_text())
            used = sorted(Path(p).name for p in report["inputs"]["used"])
            assert used == sorted([paths[0].name + ".gz", *(p.name for p in paths[1:])]), (out, attempt, used)
            rejected = {Path(r["path"]).name: r["reason"] for r in report["inputs"]["rejected"]}
            assert list(rejected) == ["gone.fits"] and "link" in rejected["gone.fits"]
    plan = json.loads((frames / "plan.json").read_text())
    odd = next(f for f in plan["frames"] if f["path"].endswith(paths[1].name))
    assert odd["exposure"] == 0.0 and "N/A" in odd["exposure_note"]


def test_plan_shows_its_log_lines_and_rejections(frames, tmp_path):
    (frames / "notes.fits").write_text("not a FITS file")
    done = cli("plan", frames, "--log-level", "INFO")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "INFO" in done.stderr and "notes.fits" in done.stderr and "rejected" in done.stdout


def test_a_saved_plan_runs_with_its_own_settings(frames, tmp_path):
    plan = tmp_path / "plan.json"
    settings = ["--mode", "mosaic-first", "--rejection", "kappa_sigma", "--kappa", "1.5", "--chunk", "128"]
    assert cli("plan", frames, "-o", plan, *settings).returncode == 0
    run_flags = PLAN_RUN
    refused = cli("run", "--plan", plan, "-o", tmp_path / "x", *run_flags, "--kappa", "3")
    assert refused.returncode == 2 and "--kappa cannot be combined with --plan" in refused.stderr
    # Settings from the environment do not reach a saved plan's execution either.
    other = _env(**THREADS, DASK_ZEMOSAIC__STACK__KAPPA_LOW="4", DASK_ZEMOSAIC__STACK__KAPPA_HIGH="4")
    planned = cli("run", "--plan", plan, "-o", tmp_path / "planned", *run_flags, env=other)
    assert planned.returncode == 0, planned.stderr[-2000:]
    direct = cli("run", frames, "-o", tmp_path / "direct", *settings, *run_flags, env=_env(**THREADS))
    assert direct.returncode == 0, direct.stderr[-2000:]
    executed = json.loads((tmp_path / "planned" / "plan.json").read_text())
    assert executed["config"]["stack"]["kappa-low"] == 1.5
    np.testing.assert_array_equal(
        fits.getdata(tmp_path / "planned" / "mosaic.fits"), fits.getdata(tmp_path / "direct" / "mosaic.fits")
    )


def test_flags_accept_what_the_schema_accepts(frames, tmp_path):
    plan = tmp_path / "plan.json"
    done = cli("plan", frames, "-o", plan, "--rejection", "winsorized", "--mode", "MosaicFirst", "--combine", "average")
    assert done.returncode == 0, done.stderr[-2000:]
    config = json.loads(plan.read_text())["config"]
    assert config["stack"]["rejection"] == "winsorized_sigma_clip" and config["mode"] == "mosaic-first"
    assert config["stack"]["combine"] == "mean"
    bad = cli("plan", frames, "--rejection", "bogus")
    assert bad.returncode == 2 and "zemosaic.stack.rejection must be one of" in bad.stderr


ENTRY = textwrap.dedent(
    """
    import atexit, sys

    class Teardown:
        def __del__(self):
            print("TEARDOWN", flush=True)

    keep = Teardown()  # a module global: freed only by the interpreter's teardown
    atexit.register(print, "EXIT-HANDLER", flush=True)
    from zemosaic_dask import cli

    which, sys.argv = sys.argv[1], ["zemosaic-dask", *sys.argv[2:]]
    getattr(cli, which)()
    """
)


@pytest.mark.parametrize(("args", "status"), [(["--version"], 0), (["run"], 2), (["nonsense"], 2)])
def test_the_console_script_runs_the_exit_handlers_and_skips_the_teardown(args, status):
    """``entry`` keeps the command's output, status and exit handlers; only Python's teardown goes."""
    done = subprocess.run([sys.executable, "-c", ENTRY, "entry", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == status, done.stderr[-2000:]
    assert "EXIT-HANDLER" in done.stdout and "TEARDOWN" not in done.stdout
    assert ("zemosaic-dask" in done.stdout) if status == 0 else ("Usage" in done.stderr)
    plain = subprocess.run([sys.executable, "-c", ENTRY, "main", *args], capture_output=True, text=True, timeout=120)
    assert plain.returncode == status and "EXIT-HANDLER" in plain.stdout
    assert "TEARDOWN" in plain.stdout  # what the teardown would have run


def test_the_console_script_is_entry():
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "zemosaic-dask"]
    assert script.value == "zemosaic_dask.cli:entry"
