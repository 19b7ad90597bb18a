"""Peer reprojection tools run over the benchmark's frames: reproject, SWarp, Montage.

Every peer gets the same inputs, built with zemosaic-dask's own reader and cleaning:
each raw frame is read whole (:func:`zemosaic_dask.io.frames.read_frame_window`), its hot
pixels are fixed and it is demosaiced (:func:`zemosaic_dask.units.frame_window.prepare_window`),
exactly as zemosaic-dask prepares the windows it resamples. Peers then resample the chosen
channels (green only by default) onto zemosaic-dask's output grid with bilinear
interpolation and an unweighted mean. Preparing the inputs is timed apart from the
peer's own work, and only the latter enters frames/s.

Each peer runs in its own process (see ``bench_mosaic.py``) so that its peak memory is
its own.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

CHANNELS = {"g": (1,), "rgb": (0, 1, 2)}
SWARP_NAMES = ("swarp", "SWarp")
MONTAGE_TOOLS = ("mImgtbl", "mProjExec", "mAdd")
MONTAGE_BACKGROUND_TOOLS = ("mOverlaps", "mDiffExec", "mFitExec", "mBgModel", "mBgExec")


def run_measured(command: list[str], cwd: Path) -> int:
    """Run an external tool to completion; return its peak RSS in bytes (sampled every 20 ms)."""
    import psutil

    with open(cwd / "tool.log", "a") as log:
        process = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        watched = psutil.Process(process.pid)
        peak = 0
        while process.poll() is None:
            try:
                peak = max(peak, watched.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.02)
        process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} failed with exit status {process.returncode}; see {cwd / 'tool.log'}")
    text = (cwd / "tool.log").read_text()
    if 'stat="ERROR"' in text:
        raise RuntimeError(f"{command[0]} reported an error: {text.strip().splitlines()[-1]}")
    return peak


@dataclass(frozen=True)
class TreeRun:
    """A command run to completion: exit status, wall seconds, peak RSS of its process tree."""

    returncode: int
    seconds: float
    peak_rss: int
    peak_rss_largest: int


def run_tree_measured(command: list[str], log_path: Path, *, interval: float = 0.05) -> TreeRun:
    """Run ``command`` (output to ``log_path``), timing it from start to exit and sampling its memory.

    Every ``interval`` seconds the RSS of the process and of all its descendants (e.g. the
    worker processes a ``LocalCluster`` starts) is read with psutil: ``peak_rss`` is the
    largest sum over the tree, ``peak_rss_largest`` the largest single process. Sampling
    misses peaks shorter than the interval.
    """
    import psutil

    with open(log_path, "w") as log:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        root = psutil.Process(process.pid)
        peak = largest = 0
        while process.poll() is None:
            sizes = []
            for member in (root, *_descendants(root)):
                try:
                    sizes.append(member.memory_info().rss)
                except psutil.Error:  # exited between listing and reading
                    continue
            peak, largest = max(peak, sum(sizes)), max(largest, max(sizes, default=0))
            time.sleep(interval)
        process.wait()
        seconds = time.perf_counter() - start
    return TreeRun(process.returncode, seconds, peak, largest)


def _descendants(root: Any) -> list[Any]:
    import psutil

    try:
        return root.children(recursive=True)
    except psutil.Error:
        return []


def swarp_executable() -> str | None:
    """Path of SWarp (Debian installs it as ``SWarp``), or None."""
    for name in SWARP_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def montage_available(*, background_match: bool = False) -> bool:
    """True when the Montage tools the benchmark uses (and those of background matching) are on the PATH."""
    tools = MONTAGE_TOOLS + (MONTAGE_BACKGROUND_TOOLS if background_match else ())
    return all(shutil.which(tool) for tool in tools)


def prepared_frames(frames_dir: Path, channels: tuple[int, ...]) -> Iterator[tuple[WCS, np.ndarray]]:
    """Read, clean and demosaic every frame; yield ``(celestial WCS, (len(channels), H, W) float32)``."""
    from zemosaic_dask.io.frames import inspect_frame, read_frame_window
    from zemosaic_dask.plans.frames import FrameInfo
    from zemosaic_dask.units.frame_window import FrameWindowOptions, prepare_window

    for path in sorted(frames_dir.glob("frame_*.fits")):
        frame = inspect_frame(str(path))
        if not isinstance(frame, FrameInfo):
            raise RuntimeError(f"{path} was rejected by ingest: {frame.reason}")
        height, width = frame.shape
        raw = read_frame_window(frame, 0, height, 0, width)
        image, _ = prepare_window(raw, frame, FrameWindowOptions(n_channels=3))
        yield WCS(frame.wcs_header, relax=True).celestial, np.ascontiguousarray(image[list(channels)])


def _grid(grid_fits: Path) -> tuple[WCS, tuple[int, int]]:
    header = fits.getheader(grid_fits)
    wcs = WCS(header).celestial
    return wcs, (int(header["NAXIS2"]), int(header["NAXIS1"]))


def _grid_header(wcs: WCS, shape: tuple[int, int]) -> fits.Header:
    header = wcs.to_header()
    header.insert(0, ("NAXIS2", shape[0]))
    header.insert(0, ("NAXIS1", shape[1]))
    header.insert(0, ("NAXIS", 2))
    header.insert(0, ("BITPIX", -32))
    header.insert(0, ("SIMPLE", True))
    return header


def _header_text(wcs: WCS, shape: tuple[int, int]) -> str:
    """The grid's header as newline-separated cards (SWarp ``.head`` and Montage template format)."""
    cards = _grid_header(wcs, shape).tostring(sep="\n", endcard=True, padding=False).splitlines()
    return "\n".join(card.rstrip() for card in cards) + "\n"


def _write_cube(path: Path, planes: list[np.ndarray], wcs: WCS) -> None:
    data = np.stack(planes).astype(np.float32)
    fits.PrimaryHDU(data if len(planes) > 1 else data[0], header=wcs.to_header()).writeto(path, overwrite=True)


def run_reproject(
    frames_dir: Path, grid_fits: Path, out_fits: Path, channels: str, *, match_background: bool = False
) -> dict[str, Any]:
    """``reproject_and_coadd`` (bilinear, mean) of the prepared frames; one call per channel.

    ``match_background=True`` lets reproject solve one additive offset per frame from the
    overlaps before the mean (its ``match_background`` option).
    """
    from reproject import reproject_interp
    from reproject.mosaicking import reproject_and_coadd

    start = time.perf_counter()
    frames = list(prepared_frames(frames_dir, CHANNELS[channels]))
    prep = time.perf_counter() - start
    wcs, shape = _grid(grid_fits)
    start = time.perf_counter()
    planes = []
    for k in range(len(CHANNELS[channels])):
        array, footprint = reproject_and_coadd(
            [(image[k], frame_wcs) for frame_wcs, image in frames],
            wcs,
            shape_out=shape,
            reproject_function=reproject_interp,
            combine_function="mean",
            match_background=match_background,
            order="bilinear",
            blank_pixel_value=np.nan,
        )
        planes.append(np.where(footprint > 0, array, np.nan))
    seconds = time.perf_counter() - start
    _write_cube(out_fits, planes, wcs)
    return {"seconds": seconds, "prep_seconds": prep, "threads": 1, "frames": len(frames)}


def _write_channel_inputs(frames_dir: Path, channels: tuple[int, ...], work: Path, prefix: str) -> dict[int, list]:
    """Write every prepared frame as one FITS per channel into ``work/<prefix><channel>/``."""
    paths: dict[int, list[Path]] = {channel: [] for channel in channels}
    for channel in channels:
        (work / f"{prefix}{channel}").mkdir(parents=True, exist_ok=True)
    for index, (frame_wcs, planes) in enumerate(prepared_frames(frames_dir, channels)):
        for k, channel in enumerate(channels):
            path = work / f"{prefix}{channel}" / f"frame_{index:04d}.fits"
            fits.PrimaryHDU(planes[k], header=frame_wcs.to_header()).writeto(path, overwrite=True)
            paths[channel].append(path)
    return paths


def run_swarp(
    frames_dir: Path,
    grid_fits: Path,
    out_fits: Path,
    channels: str,
    threads: int,
    *,
    options: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """SWarp (bilinear resampling, plain average, no background subtraction, no flux scaling).

    ``options`` overrides any of those settings by SWarp keyword, e.g.
    ``{"COMBINE_TYPE": "CLIPPED", "SUBTRACT_BACK": "Y"}``.
    """
    executable = swarp_executable()
    if executable is None:
        raise RuntimeError("SWarp is not installed (apt-get install swarp)")
    start = time.perf_counter()
    wcs, shape = _grid(grid_fits)
    planes = []
    with tempfile.TemporaryDirectory(prefix="bench-swarp-") as tmp:
        work = Path(tmp)
        inputs = _write_channel_inputs(frames_dir, CHANNELS[channels], work, "in")
        prep = time.perf_counter() - start
        seconds, tool_peak = 0.0, 0
        for channel, paths in inputs.items():
            out = work / f"coadd{channel}.fits"
            out.with_suffix(".head").write_text(_header_text(wcs, shape))
            settings = {
                "IMAGEOUT_NAME": str(out),
                "WEIGHTOUT_NAME": str(work / f"coadd{channel}.weight.fits"),
                "RESAMPLING_TYPE": "BILINEAR",
                "OVERSAMPLING": "1",
                "COMBINE_TYPE": "AVERAGE",
                "WEIGHT_TYPE": "NONE",
                "SUBTRACT_BACK": "N",
                "FSCALASTRO_TYPE": "NONE",
                "BLANK_BADPIXELS": "Y",
                "INTERPOLATE": "N",
                "CELESTIAL_TYPE": "NATIVE",
                "RESAMPLE_DIR": str(work),
                "VMEM_DIR": str(work),
                "DELETE_TMPFILES": "Y",
                "WRITE_XML": "N",
                "NTHREADS": str(threads),
                "VERBOSE_TYPE": "QUIET",
                **(options or {}),
            }
            command = [executable, *map(str, paths), "-c", "/dev/null"]
            for key, value in settings.items():
                command += [f"-{key}", str(value)]
            begin = time.perf_counter()
            tool_peak = max(tool_peak, run_measured(command, work))
            seconds += time.perf_counter() - begin
            data = fits.getdata(out).astype(np.float32)
            weight = fits.getdata(work / f"coadd{channel}.weight.fits")
            planes.append(np.where(weight > 0, data, np.nan))
    _write_cube(out_fits, planes, wcs)
    frames = len(inputs[CHANNELS[channels][0]])
    return {"seconds": seconds, "prep_seconds": prep, "threads": threads, "frames": frames, "tool_peak_rss": tool_peak}


def run_montage(
    frames_dir: Path, grid_fits: Path, out_fits: Path, channels: str, *, background_match: bool = False
) -> dict[str, Any]:
    """Montage: ``mProjExec`` (plane-to-plane projection of TAN frames) then ``mAdd -a mean``.

    ``background_match=True`` inserts Montage's background rectification between the two:
    ``mOverlaps``, ``mDiffExec``, ``mFitExec`` (a plane fitted to every overlap's difference),
    ``mBgModel`` (one plane per frame solved from those fits) and ``mBgExec`` (planes removed);
    ``mAdd`` then adds the corrected frames.
    """
    if not montage_available(background_match=background_match):
        raise RuntimeError("Montage is not installed (apt-get install montage)")
    start = time.perf_counter()
    wcs, shape = _grid(grid_fits)
    planes = []
    with tempfile.TemporaryDirectory(prefix="bench-montage-") as tmp:
        work = Path(tmp)
        template = work / "template.hdr"
        template.write_text(_header_text(wcs, shape))
        inputs = _write_channel_inputs(frames_dir, CHANNELS[channels], work, "raw")
        prep = time.perf_counter() - start
        seconds, tool_peak = 0.0, 0
        for channel in inputs:
            raw, proj = work / f"raw{channel}", work / f"proj{channel}"
            proj.mkdir()
            out = work / f"mosaic{channel}.fits"
            # Paths relative to ``work`` (the tools' working folder): mImgtbl writes the folder it
            # is given into every file name, and an absolute name would override ``-p``.
            added = _montage_background_steps(channel) if background_match else []
            steps = (
                ["mImgtbl", raw.name, f"raw{channel}.tbl"],
                ["mProjExec", "-p", raw.name, f"raw{channel}.tbl", template.name, proj.name, f"stats{channel}.tbl"],
                ["mImgtbl", proj.name, f"proj{channel}.tbl"],
                *added,
                ["mAdd", "-e", "-p", f"corr{channel}" if background_match else proj.name, "-a", "mean",
                 f"proj{channel}.tbl", template.name, out.name],
            )  # fmt: skip
            for folder in ("diff", "corr") if background_match else ():
                (work / f"{folder}{channel}").mkdir()
            begin = time.perf_counter()
            for step in steps:
                tool_peak = max(tool_peak, run_measured(step, work))
                (work / "tool.log").unlink()
            seconds += time.perf_counter() - begin
            planes.append(_montage_plane(out, shape))
    _write_cube(out_fits, planes, wcs)
    frames = len(inputs[CHANNELS[channels][0]])
    return {"seconds": seconds, "prep_seconds": prep, "threads": 1, "frames": frames, "tool_peak_rss": tool_peak}


def _montage_background_steps(channel: int) -> list[list[str]]:
    """Montage's background matching of one channel's projected frames (paths relative to the work folder)."""
    proj, diff, corr = (f"{name}{channel}" for name in ("proj", "diff", "corr"))
    images, diffs = f"proj{channel}.tbl", f"diffs{channel}.tbl"
    fitted, corrections = f"fits{channel}.tbl", f"corrections{channel}.tbl"
    return [
        ["mOverlaps", images, diffs],
        ["mDiffExec", "-p", proj, diffs, "template.hdr", diff],
        ["mFitExec", diffs, fitted, diff],
        ["mBgModel", images, fitted, corrections],
        ["mBgExec", "-p", proj, images, corrections, corr],
    ]


def _montage_plane(path: Path, shape: tuple[int, int]) -> np.ndarray:
    data = fits.getdata(path).astype(np.float32)
    if data.shape != shape:
        raise RuntimeError(f"Montage wrote a {data.shape} mosaic, expected the template's {shape}")
    area = path.with_name(path.stem + "_area.fits")
    if area.exists():
        data = np.where(fits.getdata(area) > 0, data, np.nan)
    return data


def run_peer(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one peer from a benchmark spec (in a child process) and add its peak memory.

    Optional spec keys select a peer's variant: ``swarp_options`` (SWarp keyword overrides),
    ``background_match`` (Montage) and ``match_background`` (reproject).
    """
    import resource

    frames_dir, grid_fits, out = Path(spec["frames_dir"]), Path(spec["grid_fits"]), Path(spec["out"])
    peer = spec["peer"]
    if peer == "reproject":
        result = run_reproject(
            frames_dir, grid_fits, out, spec["channels"], match_background=bool(spec.get("match_background"))
        )
    elif peer == "swarp":
        options = spec.get("swarp_options")
        result = run_swarp(frames_dir, grid_fits, out, spec["channels"], int(spec["threads"]), options=options)
    elif peer == "montage":
        result = run_montage(
            frames_dir, grid_fits, out, spec["channels"], background_match=bool(spec.get("background_match"))
        )
    else:
        raise ValueError(f"unknown peer {peer!r}")
    result.update(
        tool=peer,
        peer=peer,
        channels=spec["channels"],
        mosaic=str(out),
        dataset=frames_dir.name,
        python_peak_rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    )
    return result
