"""Mosaic quality as users get it: zemosaic-dask's modes through the CLI and the peers at their best.

Usage (see benchmarks/README.md)::

    python benchmarks/bench_quality.py                                        # 40 full-size frames, mono + bayer
    python benchmarks/bench_quality.py --frames 24 --scale 0.25 --layouts mono  # a quick smoke run
    python benchmarks/bench_quality.py --modes sds --peers swarp-clipped --no-galaxy --order shuffled

For every simulated session (``SimulationConfig.realistic``: drifting sky, detector-fixed
light-pollution gradients, bright satellite trails, optionally a galaxy halo larger than a
frame) it runs ``zemosaic-dask run FRAMES... -o OUT --mode M`` as a cold subprocess with
default settings, then the peers on the same frames onto zemosaic-dask's output grid, and
measures every mosaic against the truth with :mod:`zemosaic_dask.simulation`. Results are
printed and written as Markdown and JSON, with a preview PNG of every mosaic beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_mosaic  # noqa: E402
import bench_peers  # noqa: E402
import bench_report  # noqa: E402

DEFAULT_WORK = Path(os.environ.get("ZEMOSAIC_BENCH_CACHE", Path.home() / ".cache" / "zemosaic-dask" / "bench"))
MODES = ("classic", "mosaic-first", "sds", "auto", "sds-stored")
#: Runs that are a mode with a setting: ``sds-stored`` writes every batch mosaic, then combines them.
VARIANTS = {"sds-stored": ("sds", "zemosaic:\n  sds:\n    store-batches: true\n")}
LAYOUTS = ("mono", "bayer")
ORDERS = ("interleaved", "panel", "shuffled")
# Each peer at the settings named: SWarp's best (clipped mean of background-subtracted frames,
# its default Lanczos-3), SWarp's plain Lanczos-3 average (the speed reference), Montage and
# reproject with their background matching.
PEERS: dict[str, dict[str, Any]] = {
    "swarp-clipped": {
        "peer": "swarp",
        "swarp_options": {"COMBINE_TYPE": "CLIPPED", "SUBTRACT_BACK": "Y", "RESAMPLING_TYPE": "LANCZOS3"},
    },
    "swarp-average": {
        "peer": "swarp",
        "swarp_options": {"COMBINE_TYPE": "AVERAGE", "SUBTRACT_BACK": "N", "RESAMPLING_TYPE": "LANCZOS3"},
    },
    "montage-bgmatch": {"peer": "montage", "background_match": True},
    "reproject-bgmatch": {"peer": "reproject", "match_background": True},
}
SPEED_REFERENCES = {"swarp-average": "x SWarp avg", "reproject-bgmatch": "x reproject"}
MIB = 2**20


#: Block side of the second seam and flatness figures (the first use the helpers' 32 px).
LARGE_BLOCK = 128


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40, help="frames per session (40; 160 supported)")
    parser.add_argument("--scale", type=float, default=1.0, help="frame size factor (1 = 1080x1920; 0.25 smoke)")
    parser.add_argument("--layouts", "--layout", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    parser.add_argument("--galaxy", action=argparse.BooleanOptionalAction, default=True, help="galaxy halo on/off")
    parser.add_argument("--order", choices=ORDERS, default="interleaved", help="acquisition order of the panels")
    parser.add_argument(
        "--panels", nargs=2, type=int, default=(5, 2), metavar=("NX", "NY"), help="mosaic panels (5 2: 4 frames each)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="zemosaic-dask modes")
    parser.add_argument("--peers", nargs="+", default=list(PEERS), help=f"{' '.join(PEERS)}, or none")
    parser.add_argument("--peer-channels", choices=("g", "rgb"), default="g", help="channels the peers resample")
    parser.add_argument("--workers", type=int, default=None, help="zemosaic-dask run --n-workers (CLI default)")
    parser.add_argument("--threads", type=int, default=None, help="zemosaic-dask run --threads-per-worker")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK / "quality", help="data sets and run outputs")
    parser.add_argument("--results", type=Path, default=HERE / "quality_results.md", help="Markdown results file")
    parser.add_argument(
        "--floor",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run zemosaic-dask's modes on a flat-sky twin of each session: the noise floor of seam and flatness",
    )
    parser.add_argument("--note", default="", help="a line to add to the results (e.g. the commit measured)")
    args = parser.parse_args(argv)
    args.peers = [] if args.peers == ["none"] else args.peers
    unknown = set(args.peers) - set(PEERS)
    if unknown:
        parser.error(f"unknown peer(s) {sorted(unknown)}; choose among {', '.join(PEERS)} or none")
    return args


# ---------------------------------------------------------------- data sets


@dataclass(frozen=True)
class Session:
    """The parameters of one simulated session; its name keys the cache."""

    layout: str
    frames: int
    seed: int
    scale: float
    galaxy: bool
    order: str
    panels: tuple[int, int] = (5, 2)
    flat_sky: bool = False

    @property
    def name(self) -> str:
        sky = "galaxy" if self.galaxy else "nogalaxy"
        nx, ny = self.panels
        size = f"{self.frames}f-{nx}x{ny}-seed{self.seed}-scale{self.scale:g}"
        kind = "flatsky" if self.flat_sky else "realistic"
        return f"{kind}-{self.layout}-{size}-{self.order}-{sky}"

    def flat_twin(self) -> Session:
        """The same session (seed, layout, stars, trails, galaxy) under a sky with no drift and no gradient."""
        return replace(self, flat_sky=True)


# A sky that needs no background model: the floor of the seam and flatness figures.
FLAT_SKY = {"sky_drift_range": (0.0, 0.0), "sky_jitter": 0.0, "light_pollution_range": (0.0, 0.0)}


def ensure_dataset(work: Path, session: Session) -> Path:
    """Simulate the session into ``work/datasets/<name>`` unless a complete copy is there."""
    from zemosaic_dask.simulation import SimulationConfig, simulate_seestar

    folder = work / "datasets" / session.name
    if (folder / "simulation.json").exists() and len(list(folder.glob("frame_*.fits"))) == session.frames:
        return folder
    print(f"simulating {session.name} ...", flush=True)
    start = time.perf_counter()
    simulate_seestar(
        folder,
        session.frames,
        session.seed,
        session.scale,
        layout=session.layout,
        order=session.order,
        panels=session.panels,
        config=SimulationConfig.realistic(galaxy=session.galaxy, **(FLAT_SKY if session.flat_sky else {})),
    )
    print(f"  simulated in {time.perf_counter() - start:.0f} s", flush=True)
    return folder


def frame_files(folder: Path) -> list[Path]:
    """The frames alone (truth.fits and extended.fits sit beside them and must not be ingested)."""
    return sorted(folder.glob("frame_*.fits"))


def warm_page_cache(frames: list[Path]) -> None:
    """Read every frame once so that each timed run finds them in the page cache alike."""
    for path in frames:
        with open(path, "rb") as handle:
            while handle.read(1 << 24):
                pass


def predict_auto(frames: list[Path]) -> str:
    """The mode ``--mode auto`` resolves to on these frames with the user's configuration."""
    from zemosaic_dask.config import load_config
    from zemosaic_dask.io.frames import inspect_frame
    from zemosaic_dask.plans.frames import FrameInfo
    from zemosaic_dask.plans.modes import select_mode

    config = load_config()
    infos = [info for info in (inspect_frame(str(p)) for p in frames) if isinstance(info, FrameInfo)]
    mode, _ = select_mode("auto", infos, sds_enabled=config.sds.enabled, force_seestar=config.ingest.force_seestar)
    return mode


# ---------------------------------------------------------------- runs


def run_zemosaic(frames: list[Path], out: Path, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """``zemosaic-dask run FRAMES -o OUT --mode MODE`` in a cold process: wall time, memory, report.json."""
    cli = Path(sys.executable).with_name("zemosaic-dask")
    run_mode, settings = VARIANTS.get(mode, (mode, None))
    command = [str(cli), "run", *map(str, frames), "-o", str(out), "--mode", run_mode]
    out.parent.mkdir(parents=True, exist_ok=True)
    if settings is not None:
        config = out.parent / f"{mode}.yaml"
        config.write_text(settings)
        command += ["--config", str(config)]
    if args.workers is not None:
        command += ["--n-workers", str(args.workers)]
    if args.threads is not None:
        command += ["--threads-per-worker", str(args.threads)]
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.parent / f"{out.name}.log"
    run = bench_peers.run_tree_measured(command, log)
    result: dict[str, Any] = {
        "label": mode,
        "tool": "zemosaic-dask",
        "requested_mode": mode,
        "channels": "",
        "wall_seconds": run.seconds,
        "tree_peak_rss": run.peak_rss,
        "largest_process_rss": run.peak_rss_largest,
        "log": str(log),
    }
    report_path = out / "report.json"
    if run.returncode != 0 or not report_path.exists():
        result["failed"] = f"exit status {run.returncode}"
        result["log_tail"] = log.read_text(errors="replace")[-2000:]
        return result
    report = json.loads(report_path.read_text())
    peaks = [w.get("peak_rss_mib") for w in report.get("workers", []) if w.get("peak_rss_mib") is not None]
    result.update(
        mode=report.get("mode"),
        fallback=report.get("fallback"),
        timings=report.get("timings", {}),
        report_seconds=report.get("seconds"),
        worker_peak_rss=max(peaks) * MIB if peaks else None,
        workers=len(report.get("workers", [])),
        mosaic=str(out / "mosaic.fits"),
        coverage=str(out / "mosaic_coverage.fits"),
        preview=str(out / "preview.png"),
    )
    return result


def run_peer(name: str, frames_dir: Path, grid_fits: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One peer in its own process (``bench_mosaic.run_child`` -> ``bench_peers.run_peer``)."""
    variant = PEERS[name]
    if not _peer_available(name):
        return {"label": name, "tool": variant["peer"], "skipped": "not installed"}
    threads = args.workers * (args.threads or 1) if args.workers else (os.cpu_count() or 1)
    extra = {}
    if variant["peer"] == "swarp":
        # CLIPPED rejects a sample beyond CLIP_SIGMA * sqrt(variance + |median| / gain): without the gain
        # (GAIN_DEFAULT 0 when the header has none) that is infinite and nothing is ever clipped.
        gain = json.loads((frames_dir / "simulation.json").read_text())["gain_e_per_adu"]
        extra["swarp_options"] = {"GAIN_DEFAULT": str(gain), **variant["swarp_options"]}
    spec = {
        "kind": "peer",
        **variant,
        **extra,
        "label": name,
        "frames_dir": str(frames_dir),
        "grid_fits": grid_fits,
        "out": str(work / f"{name}.fits"),
        "channels": args.peer_channels,
        "threads": threads,
    }
    result = bench_mosaic.run_child(spec, work)
    result.update(label=name, tool=variant["peer"], channels=args.peer_channels)
    if "mosaic" in result:
        result["preview"] = None  # rendered from the FITS by write_peer_preview
    return result


def _peer_available(name: str) -> bool:
    variant = PEERS[name]
    if variant["peer"] == "montage":
        return bench_peers.montage_available(background_match=bool(variant.get("background_match")))
    return bench_report.peer_available(variant["peer"])


# ---------------------------------------------------------------- measurements


@dataclass
class GridTruth:
    """The truth brought onto one output grid, shared by every mosaic on that grid."""

    wcs: Any
    shape: tuple[int, int]
    count: np.ndarray  # frames covering each pixel (footprints shrunk by 1.5 px)
    union: np.ndarray
    star_mask: np.ndarray
    extended: np.ndarray | None
    stars: np.ndarray
    fwhm: float
    native_scale: float
    parameters: dict[str, Any]


def truth_on_grid(frames_dir: Path, wcs: Any, shape: tuple[int, int]) -> GridTruth:
    """Footprint count, star mask and extended emission of the session on a mosaic's grid."""
    from zemosaic_dask.simulation import footprint_count, load_stars, render_extended, render_stars, star_mask

    parameters = json.loads((frames_dir / "simulation.json").read_text())
    stars = load_stars(frames_dir / "stars.csv")
    fwhm = float(np.median(parameters["fwhm_px"]))
    native = float(parameters["pixel_scale_arcsec"])
    count = footprint_count([str(p) for p in frame_files(frames_dir)], None, wcs, shape)
    fluxes = np.stack([stars["flux_r"], stars["flux_g"], stars["flux_b"]], axis=1)
    light = render_stars(stars["ra"], stars["dec"], fluxes, wcs, shape, fwhm, flux_pixel_scale=native)
    extended = render_extended(parameters, wcs, shape) if parameters.get("extended") else None
    return GridTruth(wcs, shape, count, count > 0, star_mask(light, 0.0), extended, stars, fwhm, native, parameters)


def load_mosaic(path: str) -> tuple[np.ndarray, Any]:
    """A mosaic as ``(C, H, W)`` float32 with NaN where empty, and its celestial WCS."""
    from astropy.io import fits
    from astropy.wcs import WCS

    with fits.open(path) as hdul:
        image = np.asarray(hdul[0].data, dtype=np.float32)
        wcs = WCS(hdul[0].header).celestial
    return (image if image.ndim == 3 else image[None]), wcs


def _attempt(metrics: dict[str, Any], name: str, compute: Any) -> None:
    """Store ``compute()`` under ``name``; a helper that cannot measure raises ValueError: keep its reason."""
    try:
        metrics[name] = compute()
    except ValueError as err:
        metrics[f"{name}_error"] = str(err)


def measure(result: dict[str, Any], truth: GridTruth, image: np.ndarray) -> dict[str, Any]:
    """Every quality figure of one mosaic (see benchmarks/README.md for their meaning)."""
    from zemosaic_dask import simulation as sim

    channels = image.shape[0]
    extended = None if truth.extended is None else (truth.extended[1:2] if channels == 1 else truth.extended)
    sky = image - extended if extended is not None else image
    count, mask = truth.count, truth.star_mask
    metrics: dict[str, Any] = {"channels": channels}
    _attempt(metrics, "pixel_sigma", lambda: sim.pixel_sigma(sky, star_mask=mask).tolist())
    _attempt(metrics, "seam_sigma", lambda: sim.seam_step(image, count, star_mask=mask, extended=extended))
    _attempt(
        metrics, "flatness_sigma", lambda: sim.background_flatness(image, count, star_mask=mask, extended=extended)
    )
    # The mosaic-wide gradient the flatness figure leaves out (the truth's sky has none).
    _attempt(metrics, "tilt_sigma", lambda: sim.background_tilt(image, count, star_mask=mask, extended=extended))
    # The same figures on 128-px blocks: at 32 px both are dominated by the blocks' own noise
    # (demosaiced, resampled pixels are correlated), which a 4x larger block cuts 4x, while a
    # real seam or bend stays.
    _attempt(
        metrics,
        "seam_sigma_128",
        lambda: sim.seam_step(image, count, star_mask=mask, extended=extended, block=LARGE_BLOCK),
    )
    _attempt(
        metrics,
        "flatness_sigma_128",
        lambda: sim.background_flatness(image, count, star_mask=mask, extended=extended, block=LARGE_BLOCK),
    )
    if channels == 3:  # the green channel alone, as the peers resample it
        green = None if extended is None else extended[1:2]
        _attempt(metrics, "seam_sigma_g", lambda: sim.seam_step(image[1:2], count, star_mask=mask, extended=green))
        _attempt(
            metrics,
            "flatness_sigma_g",
            lambda: sim.background_flatness(image[1:2], count, star_mask=mask, extended=green),
        )
        _attempt(
            metrics, "tilt_sigma_g", lambda: sim.background_tilt(image[1:2], count, star_mask=mask, extended=green)
        )
    coverage = None
    if result.get("coverage") and Path(result["coverage"]).exists():
        from astropy.io import fits

        coverage = fits.getdata(result["coverage"]).astype(np.float32)
    metrics["holes_fraction"] = sim.holes_in_union(image, truth.union, coverage).fraction
    _attempt(metrics, "stars", lambda: _star_fluxes(image, truth))
    _attempt(metrics, "trails", lambda: _trails(sky, truth))  # the galaxy removed: its profile is no trail
    if extended is not None and truth.parameters["extended"].get("galaxy"):
        _attempt(
            metrics,
            "extended_recovery",
            lambda: sim.extended_flux_recovery(image, truth.wcs, count, truth.parameters, extended, star_mask=mask),
        )
    return metrics


def _star_fluxes(image: np.ndarray, truth: GridTruth) -> dict[str, Any]:
    """Median and MAD of measured / true flux per channel, and the R/G, B/G colour ratios per star."""
    from zemosaic_dask.simulation import measure_star_flux_ratio

    finite = np.all(np.isfinite(image), axis=0)
    median, ratios = measure_star_flux_ratio(
        image if image.shape[0] == 3 else image[0],
        truth.wcs,
        truth.stars,
        aperture_px=3 * truth.fwhm,
        annulus=(4 * truth.fwhm, 6 * truth.fwhm),
        coverage=truth.count * finite,
        min_snr=20,
        isolation=0.05,
        flux_pixel_scale=truth.native_scale,
    )
    out = {
        "n": len(ratios),
        "median": [float(v) for v in np.atleast_1d(median)],
        "mad": [float(v) for v in np.median(np.abs(ratios - median), axis=0)],
    }
    if ratios.shape[1] == 3:
        out["colour_rg"] = float(np.median(ratios[:, 0] / ratios[:, 1]))
        out["colour_bg"] = float(np.median(ratios[:, 2] / ratios[:, 1]))
    return out


def _trails(image: np.ndarray, truth: GridTruth) -> dict[str, Any]:
    """Every trail's ridge where >= 3 frames cover it; the worst ridge, 20-px stretch and wing in pixel sigma."""
    from zemosaic_dask.simulation import trail_ridges

    ridges = trail_ridges(image, truth.wcs, truth.count, truth.parameters, star_mask=truth.star_mask, min_coverage=3)
    seen = [r for r in ridges if r.n_points > 0]
    return {
        "total": len(ridges),
        "measured": len(seen),
        "max_abs_sigma": max((r.worst_sigma for r in seen), default=None),
        "max_abs_segment_sigma": max((r.worst_segment_sigma for r in seen), default=None),
        "max_abs_wing_sigma": max((r.worst_wing_sigma for r in seen), default=None),
        "ridges": [
            {
                "frame": r.frame,
                "points": r.n_points,
                "adu": list(r.ridge_adu),
                "sigma": list(r.ridge_sigma),
                "segment_adu": list(r.segment_adu),
                "segment_sigma": list(r.segment_sigma),
                "wing_adu": list(r.wing_adu),
                "wing_sigma": list(r.wing_sigma),
            }
            for r in ridges
        ],
    }


def measure_all(results: list[dict[str, Any]], frames_dir: Path) -> None:
    """Add ``metrics`` to every result that produced a mosaic (truth rendered once per grid)."""
    grids: dict[str, GridTruth] = {}
    for result in results:
        if not result.get("mosaic") or not Path(result["mosaic"]).exists():
            continue
        image, wcs = load_mosaic(result["mosaic"])
        key = wcs.to_header_string() + str(image.shape[1:])
        if key not in grids:
            grids[key] = truth_on_grid(frames_dir, wcs, image.shape[1:])
        print(f"  measuring {result['label']} ...", flush=True)
        result["metrics"] = measure(result, grids[key], image)


# ---------------------------------------------------------------- previews


def write_peer_preview(mosaic: str, path: Path, max_side: int = 3200) -> None:
    """The asinh preview zemosaic-dask writes (same stretch, NaN transparent) of a peer's FITS mosaic."""
    from zemosaic_dask.io.products import write_preview_png

    image, _ = load_mosaic(mosaic)
    factor = max(1, -(-max(image.shape[1:]) // max_side))
    channels, height, width = image.shape
    pad = ((0, 0), (0, -height % factor), (0, -width % factor))
    blocks = np.pad(image, pad, constant_values=np.nan).reshape(
        channels, (height + pad[1][1]) // factor, factor, (width + pad[2][1]) // factor, factor
    )
    finite = np.isfinite(blocks)
    with np.errstate(invalid="ignore", divide="ignore"):
        small = np.where(finite, blocks, 0).sum(axis=(2, 4)) / finite.sum(axis=(2, 4))
    write_preview_png(path, small.astype(np.float32))


def collect_previews(results: list[dict[str, Any]], session: Session, folder: Path) -> None:
    """Copy zemosaic-dask's preview.png and render the peers' into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for result in results:
        if not result.get("mosaic") or not Path(result["mosaic"]).exists():
            continue
        target = folder / f"{session.name}-{result['label']}.png"
        if result.get("preview") and Path(result["preview"]).exists():
            shutil.copyfile(result["preview"], target)
        else:
            write_peer_preview(result["mosaic"], target)
        result["preview_copy"] = str(target)


# ---------------------------------------------------------------- tables


def _fmt(value: Any, spec: str = ".2f") -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return "/".join(format(v, spec) for v in value)
    return format(value, spec)


def _seconds(result: dict[str, Any]) -> float | None:
    """Ours: the CLI's wall clock; a peer: its tool's own seconds (input preparation left out)."""
    return result.get("wall_seconds") if result.get("tool") == "zemosaic-dask" else result.get("seconds")


def _peak(result: dict[str, Any]) -> float | None:
    if result.get("tool") == "zemosaic-dask":
        return result.get("tree_peak_rss")
    values = [result.get(k) for k in ("tool_peak_rss", "python_peak_rss") if result.get(k)]
    return max(values) if values else None


def _name(result: dict[str, Any]) -> str:
    if result.get("tool") != "zemosaic-dask":
        return f"{result['label']} ({result.get('channels', 'g')})"
    ran = result.get("mode")
    name = f"zemosaic-dask {result['requested_mode']}"
    if result.get("same_as"):
        return f"{name} (= {result['same_as']})"
    if ran and ran != VARIANTS.get(result["requested_mode"], (result["requested_mode"],))[0]:
        name += f" -> {ran}"
    return name + (f" (fallback: {result['fallback']})" if result.get("fallback") else "")


def speed_table(results: list[dict[str, Any]]) -> list[str]:
    """Wall time, ratios to the speed references, peak memory."""
    references = {r["label"]: _seconds(r) for r in results if r.get("label") in SPEED_REFERENCES}
    columns = ["Run", "Seconds", *SPEED_REFERENCES.values(), "Peak RSS MiB", "Worker peak MiB", "Note"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in results:
        note = r.get("skipped") or r.get("failed") or ""
        seconds = _seconds(r)
        ratios = []
        for label in SPEED_REFERENCES:
            ref = references.get(label)
            ours = r.get("tool") == "zemosaic-dask" and seconds and ref
            ratios.append(f"{seconds / ref:.2f}" if ours else "-")
        if r.get("tool") != "zemosaic-dask" and "prep_seconds" in r:
            note = note or f"+{r['prep_seconds']:.1f} s input prep, {r.get('wall_seconds', 0):.1f} s process"
        worker = r.get("worker_peak_rss")
        peak = _peak(r)
        cells = [_name(r), _fmt(seconds, ".1f"), *ratios, _fmt(peak and peak / MIB, ".0f")]
        cells += [_fmt(worker and worker / MIB, ".0f"), note]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def quality_table(results: list[dict[str, Any]]) -> list[str]:
    """Seams, flatness, noise, star photometry, trails, holes, extended flux."""
    columns = ["Run", "Seam σ worst (G)", "Flatness σ worst (G)", "Tilt σ worst (G)", "Flat-sky floor seam / flatness"]
    columns += [f"Seam / flatness σ, {LARGE_BLOCK}-px blocks"]
    columns += ["Pixel σ ADU", "Star flux median", "Star flux MAD"]
    columns += ["R/G, B/G"]
    columns += ["Trails measured", "Max abs ridge σ", "Worst 20-px stretch σ", "Max wing σ (1-6 px)"]
    columns += ["Holes %", "Galaxy inner/middle/outer"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in results:
        m = r.get("metrics")
        if m is None:
            continue
        stars, trails = m.get("stars") or {}, m.get("trails") or {}
        ext = m.get("extended_recovery")
        colour = f"{stars['colour_rg']:.3f}, {stars['colour_bg']:.3f}" if "colour_rg" in stars else "-"
        cells = [
            _name(r),
            _fmt(m.get("seam_sigma")) + (f" (G {m['seam_sigma_g']:.2f})" if "seam_sigma_g" in m else ""),
            _fmt(m.get("flatness_sigma")) + (f" (G {m['flatness_sigma_g']:.2f})" if "flatness_sigma_g" in m else ""),
            _fmt(m.get("tilt_sigma")) + (f" (G {m['tilt_sigma_g']:.2f})" if "tilt_sigma_g" in m else ""),
            _floor(r.get("floor")),
            f"{_fmt(m.get('seam_sigma_128'))} / {_fmt(m.get('flatness_sigma_128'))}",
            _fmt(m.get("pixel_sigma"), ".1f"),
            _fmt(stars.get("median"), ".3f") + (f" (n={stars['n']})" if stars else ""),
            _fmt(stars.get("mad"), ".3f"),
            colour,
            f"{trails['measured']}/{trails['total']}" if trails else "-",
            _fmt(trails.get("max_abs_sigma")),
            _fmt(trails.get("max_abs_segment_sigma")),
            _fmt(trails.get("max_abs_wing_sigma")),
            f"{100 * m['holes_fraction']:.3f}",
            "/".join(f"{ext[k]:.2f}" for k in ("inner", "middle", "outer")) if ext else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _floor(floor: dict[str, Any] | None) -> str:
    if not floor:
        return "-"
    cell = f"{_fmt(floor.get('seam_sigma'))} / {_fmt(floor.get('flatness_sigma'))}"
    if "seam_sigma_g" in floor:
        cell += f" (G {_fmt(floor.get('seam_sigma_g'))} / {_fmt(floor.get('flatness_sigma_g'))})"
    return cell


def stage_table(results: list[dict[str, Any]]) -> list[str]:
    """report.json's stage timings of each zemosaic-dask run."""
    ours = [r for r in results if r.get("timings")]
    if not ours:
        return []
    stages: list[str] = []
    for r in ours:
        stages += [s for s in r["timings"] if s not in stages]
    columns = ["Run", *stages, "report s", "wall s"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in ours:
        cells = [_name(r), *(_fmt(r["timings"].get(s), ".1f") for s in stages)]
        cells += [_fmt(r.get("report_seconds"), ".1f"), _fmt(r.get("wall_seconds"), ".1f")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def package_origin() -> str:
    """Where ``zemosaic_dask`` is imported from, with its git commit when that folder is a checkout."""
    import subprocess

    import zemosaic_dask

    root = Path(zemosaic_dask.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "zemosaic_dask"], capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"`{root}` (not a git checkout)"
    return f"`{root}` at {commit}" + (" with uncommitted changes to zemosaic_dask/" if dirty else "")


def markdown(sessions: list[dict[str, Any]], args: argparse.Namespace, started: str) -> str:
    """The whole results file."""
    workers = f"--n-workers {args.workers}" if args.workers else "CLI default workers"
    threads = f"--threads-per-worker {args.threads}" if args.threads else "CLI default threads"
    lines = [
        f"# Quality benchmark, {started}",
        "",
        f"Machine: {bench_report.machine()}.",
        "",
        f"zemosaic-dask measured: {package_origin()}." + (f" {args.note}" if args.note else ""),
        "",
        f"`benchmarks/bench_quality.py`: {args.frames} frames at scale {args.scale:g}, seed {args.seed}, "
        f"{args.order} order, galaxy {'on' if args.galaxy else 'off'}; zemosaic-dask with default settings "
        f"({workers}, {threads}). Peers resample the {'green channel only' if args.peer_channels == 'g' else 'R, G, B'}"
        " of the frames zemosaic-dask's reader prepares, onto zemosaic-dask's grid. Seconds: zemosaic-dask's is the "
        "CLI process from start to exit; a peer's is its tool's own time (input preparation and interpreter start "
        "left out), so the ratios `x SWarp avg` and `x reproject` (ours / theirs, < 1 = faster) are conservative.",
        "",
    ]
    for entry in sessions:
        lines += [f"## {entry['session']}", "", *speed_table(entry["runs"]), ""]
        lines += [*quality_table(entry["runs"]), ""]
        stages = stage_table(entry["runs"])
        lines += ["Stage timings of zemosaic-dask (report.json, seconds):", "", *stages, ""] if stages else []
        previews = [Path(r["preview_copy"]).name for r in entry["runs"] if r.get("preview_copy")]
        if previews:
            folder = Path(entry["runs"][0].get("preview_copy") or previews[0]).parent.name
            lines += [f"Previews in `{folder}/`: " + ", ".join(f"`{p}`" for p in previews), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def run_session(session: Session, args: argparse.Namespace, work: Path, previews: Path) -> list[dict[str, Any]]:
    """Every requested mode and peer on one simulated session, measured."""
    frames_dir = ensure_dataset(args.work, session)
    frames = frame_files(frames_dir)
    warm_page_cache(frames)
    run_dir = work / session.name
    modes = [m for m in args.modes if m != "auto"]
    results: list[dict[str, Any]] = []
    for mode in modes:
        print(f"running zemosaic-dask --mode {mode} on {session.name} ...", flush=True)
        results.append(run_zemosaic(frames, run_dir / mode, mode, args))
        print(f"  {_outcome(results[-1])}", flush=True)
    if "auto" in args.modes:
        resolved = predict_auto(frames)
        same = next((r for r in results if r.get("mode") == resolved and r["requested_mode"] == resolved), None)
        if same is not None:
            results.append({**same, "label": "auto", "requested_mode": "auto", "same_as": resolved})
        else:
            print(f"running zemosaic-dask --mode auto (-> {resolved}) on {session.name} ...", flush=True)
            results.append(run_zemosaic(frames, run_dir / "auto", "auto", args))
    grid = next((r["mosaic"] for r in results if r.get("mosaic")), None)
    for name in args.peers:
        if grid is None:
            results.append({"label": name, "tool": PEERS[name]["peer"], "skipped": "no zemosaic-dask grid"})
            continue
        print(f"running {name} on {session.name} ...", flush=True)
        results.append(run_peer(name, frames_dir, grid, run_dir, args))
        print(f"  {_outcome(results[-1])}", flush=True)
    measure_all([r for r in results if not r.get("same_as")], frames_dir)
    for r in results:
        if r.get("same_as"):
            r["metrics"] = next(s for s in results if s["label"] == r["same_as"]).get("metrics")
    collect_previews([r for r in results if not r.get("same_as")], session, previews)
    if args.floor and modes:
        attach_floor(results, session.flat_twin(), modes, args, work)
    return results


FLOOR_KEYS = ("seam_sigma", "seam_sigma_g", "flatness_sigma", "flatness_sigma_g")


def attach_floor(
    results: list[dict[str, Any]], twin: Session, modes: list[str], args: argparse.Namespace, work: Path
) -> None:
    """Run ``modes`` on the flat-sky twin and attach its seam and flatness to each mode's result.

    The twin has the same stars, trails, galaxy and noise but a sky with nothing to correct, so
    its figures are what the resampled, demosaiced noise alone gives: the floor under which no
    background model can go with this pipeline's noise correlation.
    """
    frames_dir = ensure_dataset(args.work, twin)
    frames = frame_files(frames_dir)
    twins = []
    for mode in modes:
        print(f"running zemosaic-dask --mode {mode} on {twin.name} (floor) ...", flush=True)
        twins.append(run_zemosaic(frames, work / twin.name / mode, mode, args))
    measure_all(twins, frames_dir)
    for twin_result in twins:
        floor = {k: v for k, v in (twin_result.get("metrics") or {}).items() if k in FLOOR_KEYS}
        for r in results:
            if r.get("tool", "zemosaic-dask") == "zemosaic-dask" and r.get("mode") == twin_result.get("mode"):
                r["floor"] = floor


def _outcome(result: dict[str, Any]) -> str:
    if result.get("failed") or result.get("skipped"):
        return str(result.get("failed") or result.get("skipped"))
    return f"{_seconds(result):.1f} s"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print and write the results."""
    args = parse_args(argv)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    work = args.work / "runs" / time.strftime("%Y%m%d-%H%M%S")
    previews = args.results.parent / f"{args.results.stem}_previews"
    sessions = []
    for layout in args.layouts:
        session = Session(layout, args.frames, args.seed, args.scale, args.galaxy, args.order, tuple(args.panels))
        runs = run_session(session, args, work, previews)
        sessions.append({"session": session.name, "runs": runs})
        table = markdown(sessions, args, started)
        args.results.write_text(table + "\n", encoding="utf-8")  # rewritten after each session: nothing is lost
        payload = {"started": started, "options": vars(args), "work": str(work), "sessions": sessions}
        args.results.with_suffix(".json").write_text(json.dumps(payload, indent=1, default=str))
    print(table)
    print(f"written to {args.results}, {args.results.with_suffix('.json')} and {previews}/")
    return 1 if any("failed" in r for s in sessions for r in s["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
