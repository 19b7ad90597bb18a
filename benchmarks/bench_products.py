"""Writing the products (mosaic.fits, mosaic_coverage.fits, preview.png) from a Zarr store: serial vs workers.

Builds a synthetic colour store per size (noise around a sky level, NaN in an uncovered
strip and in chunk rows never written, as a sparse survey has), then writes its products
twice, each in a fresh child process: in the client alone (``run_in_turn``) and on a
LocalCluster of ``--workers`` single-threaded worker processes. Prints wall time, the
client's peak RSS (``ru_maxrss``, scheduler included) and the workers' peak RSS, and checks
that both runs wrote the same bytes.

    python benchmarks/bench_products.py [--mpx 60 240] [--workers 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import filecmp
import json
import math
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from zemosaic_dask.execute.product_tasks import band_runner
from zemosaic_dask.io.products import write_mosaic_products
from zemosaic_dask.io.store import MosaicStore, open_mosaic_store
from zemosaic_dask.plans.grid import OutputGrid

CHUNK = 512


def _grid(megapixels: float) -> OutputGrid:
    width = int(math.sqrt(megapixels * 1e6 * 16 / 9))
    height = int(megapixels * 1e6 / width)
    return OutputGrid(
        crval=(10.0, 41.0), pixel_scale=2.4, crpix=(width / 2, height / 2), shape=(height, width), chunk=CHUNK
    )


def build_store(folder: Path, megapixels: float) -> tuple[MosaicStore, OutputGrid]:
    """A colour store of about ``megapixels``; one chunk row in eight is never written."""
    grid = _grid(megapixels)
    store, _ = open_mosaic_store(str(folder / "mosaic.zarr"), grid, 3, fingerprint="bench")
    rng = np.random.default_rng(0)
    ny, nx = grid.n_regions
    for iy in range(ny):
        if iy % 8 == 5:
            continue
        for ix in range(nx):
            region = grid.region(iy, ix)
            h, w = region.y1 - region.y0, region.x1 - region.x0
            image = rng.standard_normal((3, h, w), dtype=np.float32) * np.float32(20) + np.float32(300)
            if ix == 0:
                image[:, :, : w // 3] = np.nan
            coverage = np.where(np.isfinite(image[0]), np.float32(4), np.float32(0))
            alpha = np.where(coverage > 0, 255, 0).astype(np.uint8)
            store.write_region(region, image, coverage, alpha)
    return store, grid


def child(mode: str, store_url: str, out: str, workers: int) -> dict:
    """Write the products once (in this process) and return the measures."""
    import zarr

    group = zarr.open_group(store_url, mode="r", zarr_format=3)
    grid = OutputGrid.from_dict(dict(group.attrs["grid"]))
    store = MosaicStore(store_url)
    if mode == "serial":
        start, cpu = time.perf_counter(), time.process_time()
        write_mosaic_products(out, store, grid)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        workers_rss: list[float] = []
    else:
        from distributed import Client, LocalCluster

        with (
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
            Client(cluster) as client,
        ):
            client.run(lambda: __import__("zemosaic_dask.io.products"))  # warm imports, as a run's workers are
            start, cpu = time.perf_counter(), time.process_time()
            write_mosaic_products(out, store, grid, run_bands=band_runner(client))
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
            workers_rss = [round(v / 1024) for v in peaks.values()]
    return {
        "seconds": round(seconds, 1),
        "client_cpu_s": round(cpu, 1),
        "client_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "workers_rss_mib": workers_rss,
    }


def measure(megapixels: float, workers: int, workdir: Path) -> list[dict]:
    folder = workdir / f"store-{megapixels:g}mpx"
    if not (folder / "mosaic.zarr").exists():
        started = time.perf_counter()
        build_store(folder, megapixels)
        print(f"built a {megapixels:g} Mpx store in {time.perf_counter() - started:.1f} s", flush=True)
    rows = []
    outputs = {}
    for mode in ("serial", "workers"):
        out = workdir / f"out-{megapixels:g}-{mode}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        command = [sys.executable, __file__, "--child", mode, str(folder / "mosaic.zarr"), str(out), str(workers)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        size = (out / "mosaic.fits").stat().st_size
        rows.append({"mpx": megapixels, "mode": mode, "fits_gib": round(size / 2**30, 2), **result})
        outputs[mode] = out
    same = all(
        filecmp.cmp(outputs["serial"] / name, outputs["workers"] / name, shallow=False)
        for name in ("mosaic.fits", "mosaic_coverage.fits", "preview.png")
    )
    for row in rows:
        row["identical"] = same
    for out in outputs.values():
        shutil.rmtree(out)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mpx", type=float, nargs="+", default=[60, 240])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--child", nargs=4, metavar=("MODE", "STORE", "OUT", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, store_url, out, workers = args.child
        print(json.dumps(child(mode, store_url, out, int(workers))))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-products-"))
    print(
        "| Mpx | writer | seconds | client CPU s | mosaic.fits GiB | client peak RSS MiB | worker peak RSS MiB "
        "| identical bytes |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for megapixels in args.mpx:
        for row in measure(megapixels, args.workers, workdir):
            writer = "client alone" if row["mode"] == "serial" else f"{args.workers} workers"
            workers_rss = "/".join(map(str, row["workers_rss_mib"])) or "-"
            print(
                f"| {row['mpx']:g} | {writer} | {row['seconds']} | {row['client_cpu_s']} | {row['fits_gib']} "
                f"| {row['client_rss_mib']} "
                f"| {workers_rss} | {row['identical']} |",
                flush=True,
            )
    if args.workdir is None:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
