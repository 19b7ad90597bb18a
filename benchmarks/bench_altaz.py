"""Cost of the alt-az edge cleanup stage on simulated Seestar frames (alt-az, rotated).

Usage::

    python benchmarks/bench_altaz.py                       # 40 full-size frames, 2 workers x 1 thread
    python benchmarks/bench_altaz.py --frames 40 --mode sds --no-append

Runs the same mosaic with ``zemosaic.altaz.cleanup`` false then true (each a fresh
LocalCluster, the second into its own output folder), prints the stage's seconds, the
whole run's seconds and what was masked, and appends a Markdown table to
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_report  # noqa: E402
from bench_mosaic import DEFAULT_CACHE, ensure_dataset  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--scale", type=float, default=1.0, help="frame size factor (1 = 1080x1920 Seestar)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", default="mosaic-first", help="zemosaic mode to run")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster workers (1 thread each)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="folder of the simulated data sets")
    parser.add_argument("--work", type=Path, default=None, help="folder for outputs (default: <cache>/runs-altaz)")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md", help="Markdown file to append to")
    parser.add_argument("--no-append", action="store_true", help="print the table without appending it")
    return parser.parse_args(argv)


def run_once(frames: Path, out: Path, cleanup: bool, args: argparse.Namespace) -> dict[str, Any]:
    """One run with the cleanup on or off; its timings and its ``altaz`` report."""
    from zemosaic_dask.api import run_mosaic
    from zemosaic_dask.clusters import ClusterOptions
    from zemosaic_dask.config import load_config

    config = load_config(overrides={"mode": args.mode, "altaz.cleanup": cleanup})
    cluster = ClusterOptions(
        kind="local", n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    started = time.perf_counter()
    result = run_mosaic([str(frames)], out, config=config, cluster=cluster, restart=True, show_progress=False)
    seconds = time.perf_counter() - started
    report = result.report
    return {"seconds": seconds, "timings": report["timings"], "altaz": report["altaz"], "grid": result.plan.grid}


def markdown(off: dict[str, Any], on: dict[str, Any], args: argparse.Namespace) -> str:
    """The results as a Markdown section."""
    a = on["altaz"]
    height, width = on["grid"].shape
    stage = on["timings"].get("altaz-cleanup", 0.0)
    return "\n".join(
        [
            "",
            "## Alt-az edge cleanup (`bench_altaz.py`)",
            "",
            f"Machine: {bench_report.machine()}.",
            f"{args.frames} simulated frames (scale {args.scale:g}, seed {args.seed}), mode {args.mode}, "
            f"{args.workers} workers x 1 thread, grid {width}x{height} px, chunk {on['grid'].chunk}.",
            "",
            "| cleanup | run (s) | alt-az stage (s) | stage / run | masked px | masked fraction | faded px |",
            "|---|---|---|---|---|---|---|",
            f"| false | {off['seconds']:.1f} | {off['timings'].get('altaz-cleanup', 0.0):.3f} | - | 0 | 0 | 0 |",
            f"| true | {on['seconds']:.1f} | {stage:.2f} | {100 * stage / on['seconds']:.1f} % | "
            f"{a['masked_pixels']} | {a['masked_fraction']:.4f} | {a['faded_pixels']} |",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print (and append) the table."""
    args = parse_args(argv)
    frames = ensure_dataset(args.cache, args.frames, args.seed, args.scale)
    work = args.work or args.cache / "runs-altaz"
    off = run_once(frames, work / "off", False, args)
    on = run_once(frames, work / "on", True, args)
    table = markdown(off, on, args)
    print(table)
    if not args.no_append:
        with args.results.open("a", encoding="utf-8") as handle:
            handle.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
