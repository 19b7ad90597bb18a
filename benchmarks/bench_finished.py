"""Extra cost of the finished products (display and aesthetic images) on a run's final store.

Takes the ``mosaic.zarr`` of a finished run (e.g. ``zemosaic-dask run`` of 40 full-size
simulated frames) and writes its products on a LocalCluster of ``--workers`` single-threaded
worker processes, without and then with the finished products, into fresh folders; prints
the wall time of each and checks that ``mosaic.fits`` is the same bytes both times. Prints
the aesthetic image's sky flatness (robust rms of 64 px block medians) against the linear
mosaic's, in units of the pixel noise.

    python benchmarks/bench_finished.py RUN_OUTPUT [--workers 2] [--repeat 2]
"""

from __future__ import annotations

import argparse
import filecmp
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from zemosaic_dask.io.finished_products import FinishingOptions
from zemosaic_dask.io.products import write_mosaic_products
from zemosaic_dask.io.store import MosaicStore
from zemosaic_dask.plans.grid import OutputGrid


def sky_flatness(image: np.ndarray, block: int = 64) -> list[float]:
    """Robust rms of the block medians of each channel, over the robust pixel noise (MAD of differences)."""
    out = []
    for channel in image.reshape(-1, *image.shape[-2:]):
        h, w = (s - s % block for s in channel.shape)
        blocks = channel[:h, :w].reshape(h // block, block, w // block, block)
        medians = np.nanmedian(blocks, axis=(1, 3)).ravel()
        medians = medians[np.isfinite(medians)]
        noise = 1.4826 * np.nanmedian(np.abs(np.diff(channel, axis=1))) / np.sqrt(2)
        out.append(float(1.4826 * np.median(np.abs(medians - np.median(medians))) / noise))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    import zarr
    from distributed import Client, LocalCluster

    url = str(args.run / "mosaic.zarr")
    grid = OutputGrid.from_dict(dict(zarr.open_group(url, mode="r", zarr_format=3).attrs["grid"]))
    store = MosaicStore(url)
    both = FinishingOptions(write_display=True, write_aesthetic=True)
    work = Path(tempfile.mkdtemp(prefix="bench-finished-"))
    times: dict[str, list[float]] = {"plain": [], "finished": []}
    with (
        LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        client.run(lambda: __import__("zemosaic_dask.io.products"))
        for i in range(args.repeat):
            for name, finishing in (("plain", None), ("finished", both)):
                out = work / f"{name}-{i}"
                out.mkdir()
                start = time.perf_counter()
                summary = write_mosaic_products(out, store, grid, client=client, finishing=finishing)
                times[name].append(round(time.perf_counter() - start, 2))
    assert filecmp.cmp(work / "plain-0" / "mosaic.fits", work / "finished-0" / "mosaic.fits", shallow=False)
    linear = fits.getdata(work / "plain-0" / "mosaic.fits")
    aesthetic = fits.getdata(work / "finished-0" / "mosaic_aesthetic.fits")
    result = {
        "shape": list(grid.shape),
        "workers": args.workers,
        "seconds": times,
        "flatness_linear": sky_flatness(linear),
        "flatness_aesthetic": sky_flatness(aesthetic),
        "finished": summary["finished"],
        "folder": str(work),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
