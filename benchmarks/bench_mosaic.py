"""Benchmark zemosaic-dask's Mosaic-First against reproject, SWarp and Montage on simulated Seestar frames.

Usage (see benchmarks/README.md)::

    python benchmarks/bench_mosaic.py                       # 40 full-size frames, 2 workers x 1 thread
    python benchmarks/bench_mosaic.py --frames 40 80 160 --workers 1 2 --peers none
    python benchmarks/bench_mosaic.py --canvas-vs-memory    # worker memory limit = canvas bytes / 4
    python benchmarks/bench_mosaic.py --gpu                 # kernel frames/s and memory bandwidth (cupy)
    python benchmarks/bench_mosaic.py --profile             # time per stage of the streaming mean

Every measured run is a fresh child process (a new LocalCluster for zemosaic-dask), so
each peak RSS belongs to that run alone. Results are printed and appended as a Markdown
table to benchmarks/RESULTS.md, with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_report  # noqa: E402

DEFAULT_CACHE = Path(os.environ.get("ZEMOSAIC_BENCH_CACHE", Path.home() / ".cache" / "zemosaic-dask" / "bench"))
PEERS = ("reproject", "swarp", "montage")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[40], help="frame counts (e.g. 40 80 160)")
    parser.add_argument("--workers", type=int, nargs="+", default=[2], help="worker counts (1 thread each)")
    parser.add_argument("--rejections", nargs="+", default=["none", "kappa_sigma"], help="stack.rejection values")
    parser.add_argument("--peers", nargs="+", default=list(PEERS), help="reproject swarp montage, or none")
    parser.add_argument("--peer-channels", choices=("g", "rgb"), default="g", help="channels the peers resample")
    parser.add_argument("--scale", type=float, default=1.0, help="frame size factor (1 = 1080x1920 Seestar)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="folder of the simulated data sets")
    parser.add_argument("--work", type=Path, default=None, help="folder for outputs (default: <cache>/runs)")
    parser.add_argument("--canvas-vs-memory", action="store_true", help="also run with memory limit = canvas / 4")
    parser.add_argument("--canvas-frames", type=int, default=8, help="frames of the canvas-vs-memory run")
    parser.add_argument("--canvas-min-limit-mb", type=float, default=512.0, help="smallest worker limit it may set")
    parser.add_argument("--gpu", action="store_true", help="benchmark the CUDA kernel (needs cupy)")
    parser.add_argument("--profile", action="store_true", help="time each stage of the mean path on one thread")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md", help="Markdown file to append to")
    parser.add_argument("--no-append", action="store_true", help="print the table without appending it")
    parser.add_argument("--child", nargs=2, metavar=("SPEC", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.peers = [] if args.peers == ["none"] else args.peers
    unknown = set(args.peers) - set(PEERS)
    if unknown:
        parser.error(f"unknown peer(s) {sorted(unknown)}; choose among {', '.join(PEERS)} or none")
    return args


def ensure_dataset(cache: Path, frames: int, seed: int, scale: float) -> Path:
    """Simulate the data set with ``zemosaic-dask simulate`` unless it is cached."""
    folder = cache / f"seestar-{frames}f-seed{seed}-scale{scale:g}"
    if (folder / "simulation.json").exists() and len(list(folder.glob("frame_*.fits"))) == frames:
        return folder
    cli = Path(sys.executable).with_name("zemosaic-dask")
    command = [str(cli), "simulate", "--frames", str(frames), "--seed", str(seed), "--scale", str(scale), str(folder)]
    print(f"simulating {frames} frames into {folder} ...", flush=True)
    subprocess.run(command, check=True)
    return folder


def run_child(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """Run one measurement in a fresh process; add its wall time and peak RSS (with its children)."""
    work.mkdir(parents=True, exist_ok=True)
    spec_path, result_path = work / f"{spec['label']}.spec.json", work / f"{spec['label']}.result.json"
    spec_path.write_text(json.dumps(spec, default=str))
    result_path.unlink(missing_ok=True)
    start = time.perf_counter()
    with open(work / f"{spec['label']}.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path), str(result_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if process.returncode != 0 or not result_path.exists():
        tail = (work / f"{spec['label']}.log").read_text()[-2000:]
        failure = {"label": spec["label"], "failed": f"exit status {process.returncode}", "log_tail": tail}
        return {**failure, "dataset": Path(spec.get("frames_dir", "")).name}
    result = json.loads(result_path.read_text())
    result.update(label=spec["label"], wall_seconds=wall, tree_peak_rss=usage.ru_maxrss * 1024)
    return result


def child_main(spec_path: str, result_path: str) -> None:
    """Entry point of a measurement process."""
    spec = json.loads(Path(spec_path).read_text())
    if spec["kind"] == "zemosaic":
        import bench_zemosaic

        result = bench_zemosaic.run(spec)
    elif spec["kind"] == "profile":
        import bench_profile

        result = bench_profile.run(spec)
    elif spec["kind"] == "gpu":
        import bench_gpu

        result = bench_gpu.run(spec)
    else:
        import bench_peers

        result = bench_peers.run_peer(spec)
    Path(result_path).write_text(json.dumps(result, default=float))


def _zemosaic_spec(frames_dir: Path, out: Path, rejection: str, workers: int, **extra: Any) -> dict[str, Any]:
    label = f"zemosaic-{frames_dir.name}-{rejection}-w{workers}" + "".join(f"-{k}" for k in extra.get("tags", ()))
    return {
        "kind": "zemosaic",
        "label": label,
        "frames_dir": str(frames_dir),
        "out": str(out / label),
        "rejection": rejection,
        "workers": workers,
        **extra,
    }


def run_frames(args: argparse.Namespace, frames: int, work: Path) -> list[dict[str, Any]]:
    """All zemosaic-dask configurations and the peers for one data set."""
    frames_dir = ensure_dataset(args.cache, frames, args.seed, args.scale)
    results = []
    for workers in args.workers:
        for rejection in args.rejections:
            spec = _zemosaic_spec(frames_dir, work, rejection, workers)
            print(f"running {spec['label']} ...", flush=True)
            results.append(run_child(spec, work))
    reference = next((r for r in results if "mosaic" in r), None)
    if reference is None:
        print("no zemosaic-dask run succeeded; skipping the peers", flush=True)
        return results
    for peer in args.peers:
        if not bench_report.peer_available(peer):
            results.append(
                {
                    "label": f"{peer}-{frames_dir.name}",
                    "peer": peer,
                    "skipped": "not installed",
                    "dataset": frames_dir.name,
                }
            )
            continue
        label = f"{peer}-{frames_dir.name}"
        spec = {
            "kind": "peer",
            "peer": peer,
            "label": label,
            "frames_dir": str(frames_dir),
            "grid_fits": reference["mosaic"],
            "out": str(work / f"{label}.fits"),
            "channels": args.peer_channels,
            "threads": max(args.workers),
        }
        print(f"running {label} ...", flush=True)
        results.append(run_child(spec, work))
    bench_report.add_accuracy(results, frames_dir)
    return results


def run_canvas_vs_memory(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """Mean run with a finer grid whose float32 canvas is at least 4x the worker memory limit."""
    frames_dir = ensure_dataset(args.cache, args.canvas_frames, args.seed, args.scale)
    pixel_scale, canvas_bytes = bench_report.canvas_factor(frames_dir, args.canvas_min_limit_mb * 2**20 * 4)
    limit = int(canvas_bytes // 4)
    spec = _zemosaic_spec(
        frames_dir,
        work,
        "none",
        2,
        memory_limit=limit,
        pixel_scale=pixel_scale,
        tags=("canvas-vs-memory",),
    )
    print(f"running {spec['label']}: canvas {canvas_bytes / 2**30:.2f} GiB, worker limit {limit / 2**20:.0f} MiB")
    result = run_child(spec, work)
    result.update(canvas_bytes=canvas_bytes, memory_limit=limit, pixel_scale=pixel_scale)
    result["dataset"] = f"{result.get('dataset', '')} canvas-vs-memory"
    return [result]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print and record the results."""
    args = parse_args(argv)
    if args.child:
        child_main(*args.child)
        return 0
    work = args.work or args.cache / "runs" / time.strftime("%Y%m%d-%H%M%S")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results: list[dict[str, Any]] = []
    for frames in args.frames:
        results += run_frames(args, frames, work)
    if args.canvas_vs_memory:
        results += run_canvas_vs_memory(args, work)
    if args.profile:
        frames_dir = ensure_dataset(args.cache, args.frames[0], args.seed, args.scale)
        print("profiling the stages of the streaming mean on one thread ...", flush=True)
        results.append(run_child({"kind": "profile", "label": "profile", "frames_dir": str(frames_dir)}, work))
    if args.gpu:
        frames_dir = ensure_dataset(args.cache, args.frames[0], args.seed, args.scale)
        results.append(run_child({"kind": "gpu", "label": "gpu-kernel", "frames_dir": str(frames_dir)}, work))
    (work / "results.json").write_text(json.dumps(results, indent=1, default=str))
    table = bench_report.markdown(results, args, started)
    print(table)
    if not args.no_append:
        with open(args.results, "a", encoding="utf-8") as handle:
            handle.write("\n" + table)
        print(f"appended to {args.results}")
    return 1 if any("failed" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
