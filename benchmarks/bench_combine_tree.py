"""The final combination of a deep SDS run: one task per region against a tree of layer groups.

Takes a finished run (for example ``bench_client_scaling.py --frames 16000 --layouts deep --modes sds``,
whose run folder holds 2,560 SDS batch layers on one region) and combines its layers again, as the
run's plan says (its stacking options, its noise model from the frames), into two new stores: with
``assembly.layer-fan-in`` 0 (every region in one task) and with the plan's fan-in (64 by default),
each on a fresh LocalCluster of two one-thread worker processes. Prints both wall times, the workers'
peak RSS, and how far the tree's pixels are from the single combination, in units of the noise of
the mean (frame noise / sqrt(coverage)).

    python benchmarks/bench_combine_tree.py RUN_FOLDER [--fan-in 64]

The layers are read through the run's own stores; nothing in the run folder is written.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from distributed import Client, LocalCluster

from zemosaic_dask.cli_flags import read_plan
from zemosaic_dask.config.policies import stage_options_of_plan
from zemosaic_dask.execute.coefficients import frame_noise_and_sky
from zemosaic_dask.execute.layer_stores import LayerStores, combine_jobs, combine_trees, layer_inputs
from zemosaic_dask.graph.layers import build_combine_graph
from zemosaic_dask.io.store import MosaicStore, open_mosaic_store


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def combine(run: Path, fan_in: int, out_url: str) -> tuple[float, list[float], dict]:
    """Combine the run's layers into ``out_url`` with ``fan_in``; wall seconds, worker peaks, the tree."""
    plan = read_plan(str(run / "plan.json"))
    options = stage_options_of_plan(plan)
    url = str(run / "mosaic.zarr")
    # The run's layer stores as they are (opened without the fingerprint check: this code may differ).
    stores = [LayerStores(layer, None, MosaicStore(url, f"layers/{layer.id}")) for layer in plan.layers]
    noise, sky, shot = (tuple(np.median(np.asarray(t), axis=0).tolist()) for t in frame_noise_and_sky(plan, None))
    out, _ = open_mosaic_store(out_url, plan.grid, plan.n_channels, fingerprint="bench")
    jobs = combine_jobs(
        plan, stores, layer_inputs(stores, None), out, options.layer_combine, noise=noise, sky=sky, shot=shot
    )
    trees = combine_trees(jobs, fan_in, grid=plan.grid, n_channels=plan.n_channels, fingerprint="bench")
    graph = build_combine_graph(trees, "sds-combine")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            start = time.perf_counter()
            client.gather(client.compute(graph, optimize_graph=False))
            seconds = time.perf_counter() - start
            peaks = sorted(client.run(_peak_rss_mib).values())
    shape = {"layers": [len(j.layers) for j in jobs], "levels": max(len(t) for t in trees)}
    shape["group_tasks"] = sum(len(level) for t in trees for level in t[:-1])
    return seconds, peaks, shape


def compare(run: Path, flat_url: str, tree_url: str) -> list[dict]:
    """Per channel: the tree's difference from the single combination in noise-of-the-mean units."""
    plan = json.loads((run / "plan.json").read_text())
    noise = np.median([f["noise"] for f in plan["frames"]], axis=0)
    flat, tree = zarr.open_group(flat_url, mode="r"), zarr.open_group(tree_url, mode="r")
    coverage = np.asarray(flat["coverage"][...])
    if not np.array_equal(coverage, np.asarray(tree["coverage"][...])):
        raise SystemExit("the tree's coverage differs from the single combination's")
    covered = coverage > 0
    difference = (np.asarray(tree["mosaic"][...]) - np.asarray(flat["mosaic"][...]))[:, covered]
    sigma = np.resize(noise, difference.shape[0])[:, None] / np.sqrt(coverage[covered])[None]
    z = difference / sigma
    return [
        {
            "rms": float(np.sqrt(np.nanmean(z[c] ** 2))),
            "max": float(np.nanmax(np.abs(z[c]))),
            "mean": float(np.nanmean(z[c])),
        }
        for c in range(z.shape[0])
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished SDS run folder (plan.json, mosaic.zarr)")
    parser.add_argument("--fan-in", type=int, default=None, help="default: the plan's assembly.layer-fan-in")
    args = parser.parse_args()
    fan_in = args.fan_in
    if fan_in is None:
        fan_in = stage_options_of_plan(read_plan(str(args.run / "plan.json"))).layer_fan_in
    work = Path(tempfile.mkdtemp(prefix="bench-combine-tree-"))
    try:
        flat_url, tree_url = str(work / "flat.zarr"), str(work / "tree.zarr")
        flat = combine(args.run, 0, flat_url)
        tree = combine(args.run, fan_in, tree_url)
        print(f"layers per region: {flat[2]['layers']}")
        print(f"one task per region: {flat[0]:.1f} s, worker peak RSS {flat[1]} MiB")
        print(
            f"tree (fan-in {fan_in}, {tree[2]['group_tasks']} group tasks, {tree[2]['levels']} levels): "
            f"{tree[0]:.1f} s, worker peak RSS {tree[1]} MiB ({flat[0] / tree[0]:.1f}x)"
        )
        for c, figures in enumerate(compare(args.run, flat_url, tree_url)):
            print(
                f"channel {c}: tree - single, in noise of the mean: rms {figures['rms']:.3f}, "
                f"max |.| {figures['max']:.2f}, mean {figures['mean']:+.4f}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
