"""Cost of the per-frame quality measures at ingest, and detection rates of the quality gate.

Simulates nights with 15 % degraded frames (clouds, trailing, defocus in turn), ingests
every frame (timing ``inspect_frame`` with and without the quality measures, and the
``sep`` measurement alone on full-size Seestar frames), runs the gate and prints how many
degraded frames it rejects and how many good frames it wrongly rejects.

    .venv/bin/python benchmarks/bench_quality_gate.py [--scale 1.0] [--frames 40] [--seeds 1 2 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from zemosaic_dask.config import default_config
from zemosaic_dask.config.policies import quality_gate_policy
from zemosaic_dask.io.frames import IngestOptions, inspect_frame
from zemosaic_dask.plans.quality_gate import gate_frames
from zemosaic_dask.simulation import simulate_seestar
from zemosaic_dask.tasks.star_quality import measure_frame_quality


def _session(out: Path, seed: int, scale: float, n_frames: int, layout: str) -> dict:
    result = simulate_seestar(out, n_frames, seed, scale=scale, layout=layout, degraded=0.15)
    kinds = {int(k): v["kind"] for k, v in result.parameters["degraded"].items()}
    started = time.perf_counter()
    frames = [inspect_frame(str(p)) for p in result.frames]
    with_quality = (time.perf_counter() - started) / n_frames
    started = time.perf_counter()
    for p in result.frames:
        inspect_frame(str(p), IngestOptions(measure_quality=False))
    without = (time.perf_counter() - started) / n_frames
    measure = []
    for p in result.frames[:10]:
        data = np.asarray(fits.getdata(p), dtype=np.float32)
        started = time.perf_counter()
        measure_frame_quality(data, "bayer" if layout == "bayer" else layout)
        measure.append(time.perf_counter() - started)
    started = time.perf_counter()
    gate = gate_frames(frames, quality_gate_policy(default_config()))
    gate_s = time.perf_counter() - started
    failed = {v.index for v in gate.verdicts}
    return {
        "caught": sum(i in failed for i in kinds),
        "degraded": len(kinds),
        "false": sum(i not in kinds for i in failed),
        "good": n_frames - len(kinds),
        "ingest_ms": 1000 * with_quality,
        "ingest_plain_ms": 1000 * without,
        "measure_ms": 1000 * float(np.median(measure)),
        "gate_ms_per_frame": 1000 * gate_s / n_frames,
        "shape": list(frames[0].shape),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--layout", default="bayer", choices=["bayer", "chw", "mono"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            row = _session(Path(tmp) / f"s{seed}", seed, args.scale, args.frames, args.layout)
            print(
                f"seed {seed} {args.layout} {row['shape'][1]}x{row['shape'][0]}: "
                f"rejected {row['caught']}/{row['degraded']} "
                f"degraded, {row['false']}/{row['good']} good; sep measures {row['measure_ms']:.1f} ms/frame, "
                f"ingest {row['ingest_ms']:.1f} ms/frame ({row['ingest_plain_ms']:.1f} without), "
                f"gate {row['gate_ms_per_frame']:.2f} ms/frame"
            )


if __name__ == "__main__":
    main()
