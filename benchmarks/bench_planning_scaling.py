"""How planning time grows with the number of frames, step by step, in every mode.

Builds synthetic :class:`~zemosaic_dask.plans.FrameInfo` lists (a TAN WCS per frame and
the sky geometry ingest stores, no files) in two layouts:

- ``deep``: one field, every frame a full-size Seestar frame (1080 x 1920, 2.4"/px)
  dithered within +-0.15 deg and rotated by up to 30 deg (alt-az field rotation);
- ``wide``: a survey grid of pointings 0.8 frame apart, 1 to 7 frames per pointing
  (dithered by 0.005 deg), quarter-size frames (270 x 480) so that 16,000 frames still
  fit one TAN grid.

Each (layout, N, mode) runs in a fresh child process that times the planning steps the
mode goes through (the steps of ``plans.sections.plan_mode_sections`` plus screening, the
output grid, the regions Mosaic-First reads and the frame overlaps the background model
fits) and reports its peak RSS. A child that runs past ``--timeout`` reports the steps it
finished and ``timeout`` for the rest.

    python benchmarks/bench_planning_scaling.py                       # 250 1000 4000 16000, both layouts
    python benchmarks/bench_planning_scaling.py --frames 250 1000 --layouts deep --modes classic
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from astropy.wcs import WCS

from zemosaic_dask.plans import FrameInfo

MODES = ("mosaic-first", "classic", "sds")
LAYOUTS = ("deep", "wide")
DEEP_SHAPE, WIDE_SHAPE, SCALE = (1080, 1920), (270, 480), 2.4


def _frame(index: int, ra: float, dec: float, rot: float, shape: tuple[int, int], date: str) -> FrameInfo:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra % 360.0, dec]
    w.wcs.crpix = [(shape[1] + 1) / 2, (shape[0] + 1) / 2]
    s, t = SCALE / 3600.0, math.radians(rot)
    w.wcs.cd = [[-s * math.cos(t), s * math.sin(t)], [s * math.sin(t), s * math.cos(t)]]
    frame = FrameInfo(
        path=f"/data/f{index:06d}.fits",
        hdu=0,
        shape=shape,
        layout="bayer",
        bayer_pattern="GRBG",
        wcs_header=w.to_header_string(),
        date_obs=date,
        instrument="Seestar S50",
        pixel_scale=SCALE,
    )
    return frame.with_sky_geometry(w)


def _date(k: int) -> str:
    return f"2025-01-01T{(k // 360) % 24:02d}:{(k // 6) % 60:02d}:{(k * 10) % 60:02d}"


def deep_frames(n: int, seed: int = 0) -> list[FrameInfo]:
    """``n`` full-size frames on one field (dithers within +-0.15 deg, rotation up to 30 deg)."""
    rng = np.random.default_rng(seed)
    dec0 = 41.0
    offsets = rng.uniform(-0.15, 0.15, size=(n, 2))
    rotations = rng.uniform(0.0, 30.0, size=n)
    return [
        _frame(k, 10.0 + dx / math.cos(math.radians(dec0)), dec0 + dy, rot, DEEP_SHAPE, _date(k))
        for k, ((dx, dy), rot) in enumerate(zip(offsets, rotations, strict=True))
    ]


def wide_frames(n: int, seed: int = 0) -> list[FrameInfo]:
    """``n`` quarter-size frames on a square survey grid, 1 to 7 frames per pointing."""
    rng = np.random.default_rng(seed)
    per_pointing = rng.integers(1, 8, size=n)
    n_pointings = int(np.searchsorted(np.cumsum(per_pointing), n)) + 1
    side = math.ceil(math.sqrt(n_pointings))
    height_deg, width_deg = (v * SCALE / 3600.0 for v in WIDE_SHAPE)
    dec0 = 20.0
    frames: list[FrameInfo] = []
    for p in range(n_pointings):
        row, col = divmod(p, side)
        east, north = (col - side / 2) * 0.8 * width_deg, (row - side / 2) * 0.8 * height_deg
        for _ in range(int(per_pointing[p])):
            if len(frames) == n:
                break
            dx, dy = rng.normal(0.0, 0.005, size=2)
            dec = dec0 + north + dy
            ra = 150.0 + (east + dx) / math.cos(math.radians(dec))
            frames.append(_frame(len(frames), ra, dec, 0.0, WIDE_SHAPE, _date(len(frames))))
    return frames


def _steps(mode: str) -> list[tuple[str, Callable[[dict[str, Any]], Any]]]:
    """The planning steps of ``mode``, each a function of a shared state dictionary."""
    from zemosaic_dask.config import default_config
    from zemosaic_dask.config.policies import assembly_targets, batch_policy, grouping_policy, sds_policy
    from zemosaic_dask.plans import (
        plan_master_groups,
        plan_output_grid,
        plan_sds_batches,
        plan_tile_batches,
    )
    from zemosaic_dask.plans.assembly import plan_assembly
    from zemosaic_dask.plans.frame_sanity import screen_frames
    from zemosaic_dask.plans.grid import frame_pixel_boxes
    from zemosaic_dask.plans.layers import layers_from_batches, layers_from_sds
    from zemosaic_dask.plans.pair_graph import select_overlapping_pairs
    from zemosaic_dask.plans.regions import assign_frames_to_regions
    from zemosaic_dask.plans.sds_mask import plan_layer_counts
    from zemosaic_dask.plans.sections import resources_from_workers

    config = default_config()

    def screen(st: dict[str, Any]) -> None:
        st["frames"], _ = screen_frames(st["frames"])

    def grid(st: dict[str, Any]) -> None:
        g = config.grid
        st["grid"] = plan_output_grid(
            st["frames"], padding_px=g.padding_px, chunk=g.chunk, max_pixels=int(g.max_pixels)
        )

    def frame_overlaps(st: dict[str, Any]) -> None:
        # What the background model fits: each frame's strongest overlaps by a cell, the graph kept connected.
        boxes = frame_pixel_boxes(st["grid"], st["frames"])
        cell, k = config.background.block_px, config.calibration.pair_neighbours
        st["pairs"] = len(select_overlapping_pairs(boxes, k=k, min_overlap_px=cell))

    def regions(st: dict[str, Any]) -> None:
        st["regions"] = len(assign_frames_to_regions(st["grid"], st["frames"]))

    def groups(st: dict[str, Any]) -> None:
        policy = grouping_policy(config)
        st["batch_policy"] = batch_policy(config)
        st["groups"] = plan_master_groups(st["frames"], policy, split_oversized=not st["batch_policy"].overlap_frac > 0)

    def batches(st: dict[str, Any]) -> None:
        st["batches"] = plan_tile_batches(st["frames"], st["groups"], st["batch_policy"], st["groups"].cap)

    def tile_layers(st: dict[str, Any]) -> None:
        st["layers"] = layers_from_batches(
            st["frames"], st["grid"], st["groups"], st["batches"], tile_chunk=st["grid"].chunk
        )

    def sds(st: dict[str, Any]) -> None:
        policy = sds_policy(config)
        st["sds"] = plan_sds_batches(st["frames"], st["grid"], policy)

    def sds_layers(st: dict[str, Any]) -> None:
        st["layers"] = layers_from_sds(st["frames"], st["grid"], st["sds"])

    def sds_mask(st: dict[str, Any]) -> None:
        plan_layer_counts(st["sds"], st["frames"], st["grid"])

    def assembly(st: dict[str, Any]) -> None:
        resources = resources_from_workers([], fallback_threads=16, fallback_memory=64 << 30)
        plan_assembly(resources, st["grid"], assembly_targets(config, 3))

    common = [("screen", screen), ("grid", grid)]
    specific = {
        "mosaic-first": [("regions", regions)],
        "classic": [("groups", groups), ("batches", batches), ("layers", tile_layers)],
        "sds": [("sds batches", sds), ("layers", sds_layers), ("sds mask", sds_mask)],
    }[mode]
    return common + specific + [("assembly", assembly), ("frame overlaps", frame_overlaps)]


def run_child(frames_file: str, mode: str, skip: str) -> None:
    """Time each step of ``mode`` on the pickled frames; print one JSON line per step."""
    with open(frames_file, "rb") as fh:
        state: dict[str, Any] = {"frames": pickle.load(fh)}
    for name, step in _steps(mode):
        if name in skip.split(","):
            continue
        start = time.perf_counter()
        step(state)
        print(json.dumps({"step": name, "seconds": time.perf_counter() - start}), flush=True)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"step": "peak_rss_mib", "seconds": peak_mib}), flush=True)


def measure(frames_file: str, mode: str, timeout: float, skip: str) -> tuple[dict[str, float], bool]:
    """Run one child; return its step times (and peak RSS) and whether it timed out."""
    command = [sys.executable, __file__, "--child", frames_file, mode, skip]
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen(command, stdout=out, text=True)
        try:
            process.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            timed_out = True
        out.seek(0)
        results = {}
        for line in out.read().splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                results[row["step"]] = row["seconds"]
    if process.returncode not in (0, None) and not timed_out:
        raise RuntimeError(f"{mode} child failed with status {process.returncode}")
    return results, timed_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[250, 1000, 4000, 16000])
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per (layout, N, mode) child")
    parser.add_argument("--skip", nargs="*", default=[], help="steps to leave out, e.g. 'frame overlaps'")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--child", nargs=3, metavar=("FRAMES", "MODE", "SKIP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(*args.child)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for layout in args.layouts:
            for n in args.frames:
                start = time.perf_counter()
                frames = (deep_frames if layout == "deep" else wide_frames)(n)
                frames_file = str(Path(tmp) / f"{layout}-{n}.pkl")
                with open(frames_file, "wb") as fh:
                    pickle.dump(frames, fh)
                print(f"# {layout} N={n}: frames built in {time.perf_counter() - start:.1f} s", flush=True)
                for mode in args.modes:
                    steps, timed_out = measure(frames_file, mode, args.timeout, ",".join(args.skip))
                    peak = steps.pop("peak_rss_mib", None)
                    total = sum(steps.values())
                    row = {"layout": layout, "frames": n, "mode": mode, "steps": steps, "total": total}
                    row.update(peak_rss_mib=peak, timed_out=timed_out)
                    rows.append(row)
                    cells = ", ".join(f"{k} {v:.3f}" for k, v in steps.items())
                    status = f" TIMEOUT after {args.timeout:.0f} s" if timed_out else ""
                    peak_text = f"{peak:.0f} MiB" if peak is not None else "-"
                    print(
                        f"{layout:5s} {n:6d} {mode:12s} total {total:8.3f} s  peak {peak_text}  [{cells}]{status}",
                        flush=True,
                    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
