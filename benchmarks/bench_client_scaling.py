"""What a run costs the process that submits it, from 1,000 to 16,000 frames: the CLI as users run it.

Simulates sessions of small frames (``--scale 0.05``: 96 x 54 raw GRBG pixels, the pixel
work negligible, so what grows is the per-frame and per-task work) in two layouts:

- ``deep``: one field, 2 x 2 panels, every frame on it (a season on one target);
- ``wide``: a survey of about 4 frames per panel on a square of panels.

For every (layout, N, mode) it runs ``zemosaic-dask run FOLDER -o OUT --mode MODE`` as a
cold process with default settings and reads ``report.json``: wall time per stage, the
client's CPU seconds per stage (the submitting process with its in-process scheduler: the
part that does not spread over workers), the client's peak RSS and the workers' peaks.
It prints a table and the growth exponent of the client's CPU between successive N
(1 = linear; N log N from 4,000 to 16,000 frames is about 1.15). "Before compute" is the
client's CPU outside the stages that run tasks: start-up, scan, ingest and plan.

    python benchmarks/bench_client_scaling.py                                   # 1000 4000 16000, deep + wide, 3 modes
    python benchmarks/bench_client_scaling.py --frames 250 1000 --layouts deep --modes mosaic-first
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_peers  # noqa: E402
import bench_report  # noqa: E402

DEFAULT_WORK = Path(os.environ.get("ZEMOSAIC_BENCH_CACHE", Path.home() / ".cache" / "zemosaic-dask" / "bench"))
MODES = ("mosaic-first", "classic", "sds")
LAYOUTS = ("deep", "wide")
SCALE = 0.05


def panels(layout: str, n: int) -> tuple[int, int]:
    """The simulated panels of ``layout`` for ``n`` frames."""
    if layout == "deep":
        return 2, 2
    side = max(1, math.ceil(math.sqrt(n / 4)))
    return side, side


def dataset(work: Path, layout: str, n: int, seed: int) -> Path:
    """Simulate (once) the session of ``layout`` with ``n`` frames; return its folder."""
    nx, ny = panels(layout, n)
    folder = work / "datasets" / f"{layout}-{n}f-{nx}x{ny}-seed{seed}"
    if (folder / "simulation.json").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    cli = Path(sys.executable).with_name("zemosaic-dask")
    command = [str(cli), "simulate", str(folder), "--frames", str(n), "--scale", str(SCALE)]
    command += ["--panels", str(nx), str(ny), "--seed", str(seed), "--order", "shuffled"]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    print(f"  simulated {layout} {n} frames in {time.perf_counter() - start:.0f} s", flush=True)
    return folder


def run_cli(folder: Path, out: Path, mode: str) -> dict[str, Any]:
    """One cold ``zemosaic-dask run`` with default settings; its report's cost figures."""
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    cli = Path(sys.executable).with_name("zemosaic-dask")
    log = out.parent / f"{out.name}.log"
    run = bench_peers.run_tree_measured([str(cli), "run", str(folder), "-o", str(out), "--mode", mode], log)
    report_path = out / "report.json"
    if run.returncode != 0 or not report_path.exists():
        return {"failed": f"exit status {run.returncode}", "log": str(log), "wall": run.seconds}
    report = json.loads(report_path.read_text())
    client = report.get("client", {})
    workers = [w.get("peak_rss_mib") or 0.0 for w in report.get("workers", [])]
    return {
        "wall": run.seconds,
        "mode": report.get("mode"),
        "frames_used": len(report["inputs"]["used"]),
        "timings": report.get("timings", {}),
        "client_cpu": client.get("cpu_s", {}),
        "client_rss_mib": client.get("peak_rss_mib"),
        "worker_rss_mib": max(workers) if workers else None,
        "plan_kib": (out / "plan.json").stat().st_size / 1024,
    }


def exponent(n0: int, v0: float, n1: int, v1: float) -> float | None:
    """The growth exponent of ``v`` from ``n0`` to ``n1`` (``v ~ N**e``)."""
    if v0 <= 0 or v1 <= 0:
        return None
    return math.log(v1 / v0) / math.log(n1 / n0)


def markdown(rows: list[dict[str, Any]], note: str) -> str:
    """The results as a Markdown section."""
    lines = [
        f"## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: client cost vs frames (`bench_client_scaling.py`)",
        "",
        f"Machine: {bench_report.machine()}. {note}".strip(),
        "",
        "| layout | N | mode | wall s | client CPU s | before compute s | ingest / plan / stages after | exponent |"
        " client RSS MiB | worker RSS MiB | plan.json KiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['layout']} | {r['n']} | {r['requested']} | {r['failed']} | | | | | | | |")
            continue
        cpu = r["client_cpu"]
        after = sum(v for k, v in cpu.items() if k not in ("total", "scan", "ingest", "plan"))
        before = cpu.get("total", 0.0) - after  # start-up, scan, ingest and plan
        e = r.get("exponent")
        lines.append(
            f"| {r['layout']} | {r['n']} | {r['requested']} ({r['mode']}) | {r['wall']:.1f} | {cpu.get('total', 0):.1f}"
            f" | {before:.1f} | {cpu.get('ingest', 0):.1f} / {cpu.get('plan', 0):.1f} / {after:.1f}"
            f" | {'' if e is None else f'{e:.2f}'} | {r['client_rss_mib']:.0f} | {r['worker_rss_mib'] or 0:.0f}"
            f" | {r['plan_kib']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run the measurements and print (and optionally append) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", nargs="+", type=int, default=[1000, 4000, 16000])
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK / "client-scaling")
    parser.add_argument("--results", type=Path, default=None, help="append the Markdown section to this file")
    parser.add_argument("--note", default="", help="a line to add to the results")
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for layout in args.layouts:
        for n in sorted(args.frames):
            folder = dataset(args.work, layout, n, args.seed)
            for mode in args.modes:
                print(f"{layout} {n} {mode} ...", flush=True)
                row = {"layout": layout, "n": n, "requested": mode}
                row.update(run_cli(folder, args.work / "runs" / f"{layout}-{n}-{mode}", mode))
                previous = [r for r in rows if r["layout"] == layout and r["requested"] == mode and "failed" not in r]
                if previous and "failed" not in row:
                    p = previous[-1]
                    row["exponent"] = exponent(
                        p["n"], p["client_cpu"].get("total", 0), n, row["client_cpu"].get("total", 0)
                    )
                rows.append(row)
                print("  " + json.dumps({k: v for k, v in row.items() if k != "timings"}), flush=True)
    text = markdown(rows, args.note)
    print(text)
    (args.work / "results.json").write_text(json.dumps(rows, indent=1))
    if args.results is not None:
        with open(args.results, "a", encoding="utf-8") as fh:
            fh.write("\n" + text)


if __name__ == "__main__":
    main()
