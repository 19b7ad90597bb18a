"""Accuracy against the simulated truth, machine description and the Markdown results table."""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

MIB = 2**20


def peer_available(peer: str) -> bool:
    """True when the peer tool can run here."""
    import bench_peers

    if peer == "reproject":
        try:
            import reproject  # noqa: F401
        except ImportError:
            return False
        return True
    if peer == "swarp":
        return bench_peers.swarp_executable() is not None
    return bench_peers.montage_available()


def machine() -> str:
    """CPU model, cores, RAM, OS and the versions that matter, in one line."""
    import dask
    import numba
    import psutil

    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = psutil.virtual_memory().total / 2**30
    return (
        f"{model}, {os.cpu_count()} logical cores, {ram:.0f} GiB RAM, {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
        f"dask {dask.__version__}"
    )


def _union_and_truth(frames_dir: Path, wcs: Any, shape: tuple[int, int]) -> dict[str, Any]:
    from zemosaic_dask.testing import load_stars, union_footprint_mask

    params = json.loads((frames_dir / "simulation.json").read_text())
    frames = sorted(str(p) for p in frames_dir.glob("frame_*.fits"))
    return {
        "union": union_footprint_mask(frames, None, wcs, shape),
        "stars": load_stars(frames_dir / "stars.csv"),
        "fwhm": float(np.median(params["fwhm_px"])),
    }


def add_accuracy(results: list[dict[str, Any]], frames_dir: Path) -> None:
    """Add the median star flux ratio (per channel) and the NaN holes to every finished run."""
    from astropy.io import fits
    from astropy.wcs import WCS

    from zemosaic_dask.testing import measure_star_flux_ratio

    truth = None
    for result in results:
        path = result.get("mosaic")
        if not path or "failed" in result or not Path(path).exists():
            continue
        with fits.open(path) as hdul:
            image = np.asarray(hdul[0].data, dtype=np.float32)
            wcs = WCS(hdul[0].header).celestial
        image = image if image.ndim == 3 else image[None]
        shape = image.shape[-2:]
        if truth is None or truth["shape"] != shape:
            truth = {**_union_and_truth(frames_dir, wcs, shape), "shape": shape}
        coverage = None
        if result.get("coverage"):
            coverage = fits.getdata(result["coverage"]).astype(np.float32)
        finite = np.all(np.isfinite(image), axis=0)
        result["holes"] = int((~finite & truth["union"]).sum())
        result["union_pixels"] = int(truth["union"].sum())
        fwhm = truth["fwhm"]
        try:
            median, ratios = measure_star_flux_ratio(
                image if image.shape[0] == 3 else image[0],
                wcs,
                truth["stars"],
                aperture_px=3 * fwhm,
                annulus=(4 * fwhm, 6 * fwhm),
                coverage=coverage if coverage is not None else finite.astype(np.float32),
                min_snr=20,
                isolation=0.05,
            )
        except ValueError as err:
            result["flux_error"] = str(err)
            continue
        result["flux_ratio"] = [float(v) for v in np.atleast_1d(median)]
        result["flux_stars"] = int(len(ratios))


def canvas_factor(frames_dir: Path, min_canvas_bytes: float) -> tuple[float, int]:
    """Pixel scale (arcsec/px) giving a float32 colour canvas of at least ``min_canvas_bytes``, and its bytes."""
    from zemosaic_dask.io.frames import inspect_frame
    from zemosaic_dask.plans.grid import plan_output_grid

    frames = [inspect_frame(str(p)) for p in sorted(frames_dir.glob("frame_*.fits"))]
    native = float(np.median([f.pixel_scale for f in frames]))
    grid = plan_output_grid(frames, chunk=512)
    native_bytes = 3 * grid.shape[0] * grid.shape[1] * 4
    factor = max(1.0, math.sqrt(min_canvas_bytes / native_bytes) * 1.02)
    scale = native / factor
    grid = plan_output_grid(frames, pixel_scale=scale, chunk=512)
    return scale, 3 * grid.shape[0] * grid.shape[1] * 4


def _fps(result: dict[str, Any]) -> float | None:
    if "seconds" not in result or not result.get("frames"):
        return None
    return result["frames"] / result["seconds"]


def _mib(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return "/".join(f"{v / MIB:.0f}" for v in value) if value else "-"
    return f"{value / MIB:.0f}"


def _name(result: dict[str, Any]) -> str:
    if result.get("tool") == "zemosaic-dask":
        kind = "mean" if result["rejection"] == "none" else result["rejection"]
        if result.get("memory_limit"):
            kind += ", limit = canvas/4"
        return f"zemosaic-dask mosaic-first ({kind})"
    if result.get("peer"):
        channels = result.get("channels", "")
        return f"{result['peer']} ({'G only' if channels == 'g' else 'R,G,B'})"
    return result.get("label", "?")


def _row(result: dict[str, Any], peers: dict[str, float]) -> str:
    name = _name(result)
    if "failed" in result or "skipped" in result:
        return f"| {name} | {result.get('failed') or result.get('skipped')} |" + " |" * 9
    fps = _fps(result)
    ratios = []
    for peer in ("reproject", "swarp", "montage"):
        base = peers.get(peer)
        comparable = result.get("tool") == "zemosaic-dask" and not result.get("canvas_bytes")
        ratios.append(f"{fps / base:.1f}" if fps and base and comparable else "-")
    flux = "/".join(f"{v:.4f}" for v in result.get("flux_ratio", [])) or result.get("flux_error", "-")[:40]
    memory = (
        f"client {_mib(result.get('client_peak_rss'))}, workers {_mib(result.get('worker_peak_rss'))}"
        if result.get("tool") == "zemosaic-dask"
        else f"python {_mib(result.get('python_peak_rss'))}, tool {_mib(result.get('tool_peak_rss') or None)}"
    )
    holes = f"{result['holes']} / {result['union_pixels']}" if "holes" in result else "-"
    map_error = result.get("max_map_error_px")
    return (
        f"| {name} | {result.get('frames', '-')} | {result.get('threads', '-')} | {result['seconds']:.1f} "
        f"| {fps:.2f} | {' | '.join(ratios)} | {memory} | {flux} | {holes} | "
        f"{'-' if map_error is None else f'{map_error:.4f}'} |"
    )


def markdown(results: list[dict[str, Any]], args: Any, started: str) -> str:
    """The results as a Markdown section (machine, options, one table per data set, notes)."""
    lines = [
        f"## {started}",
        "",
        f"Machine: {machine()}.",
        "",
        f"Options: frames {args.frames}, workers {args.workers}, rejections {args.rejections}, "
        f"peers {args.peers or 'none'} ({'green channel' if args.peer_channels == 'g' else 'R,G,B'}), "
        f"frame scale {args.scale:g}, seed {args.seed}.",
        "",
        "| Run | Frames | Cores | Seconds | Frames/s | x reproject | x SWarp | x Montage | Peak RSS MiB | "
        "Star flux ratio (R/G/B or G) | NaN holes / union px | Max map error px |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        if result.get("tool") in ("gpu", "profile") or result.get("label") in ("gpu-kernel", "profile"):
            continue
        groups.setdefault(str(result.get("dataset", "")), []).append(result)
    for group in groups.values():
        peers = {r["peer"]: _fps(r) for r in group if r.get("peer") and _fps(r)}
        lines += [_row(result, peers) for result in group]
    for result in results:
        if result.get("canvas_bytes") and "failed" not in result:
            lines += [
                "",
                f'Canvas vs memory: {result["frames"]} frames on a {result["pixel_scale"]:.3f}"/px grid '
                f"{tuple(result.get('grid_shape', ()))}: canvas {result['canvas_bytes'] / 2**30:.2f} GiB "
                "(float32 R,G,B), worker "
                f"limit {result['memory_limit'] / MIB:.0f} MiB, completed in {result['seconds']:.1f} s, worker "
                f"peaks {_mib(result.get('worker_peak_rss'))} MiB.",
            ]
        if result.get("tool") == "profile" and "failed" not in result:
            total = result["total_seconds"]
            split = ", ".join(f"{name} {value:.1f} s ({value / total:.0%})" for name, value in result["stages"].items())
            lines += [
                "",
                f"Stage split of the streaming mean, one thread, {result['frames']} frames, {result['pairs']} "
                f"(region, frame) pairs, {total:.1f} s: {split}; kernel {result['kernel_ns_per_pixel']} ns per "
                "accumulated output pixel (3 channels).",
            ]
        if result.get("tool") == "gpu" and "failed" not in result:
            lines += ["", "GPU: " + ", ".join(f"{k} {v}" for k, v in result.items() if k not in ("label",))]
    lines += [
        "",
        "Seconds: zemosaic-dask from scan to written products on a warm LocalCluster (workers x 1 thread); "
        "peers: their resampling and co-addition only (reading, hot-pixel fixing and demosaicing of their inputs "
        "excluded). Peak RSS: zemosaic-dask client (with the scheduler) and each worker; peers: the Python "
        "process holding the inputs and the external tool.",
        "",
    ]
    return "\n".join(lines)
