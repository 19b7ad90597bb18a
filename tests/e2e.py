"""Shared helpers of the end-to-end tests: simulated data, runs and truth comparisons."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from zemosaic_dask.api import run_mosaic
from zemosaic_dask.clusters import ClusterOptions
from zemosaic_dask.config import load_config
from zemosaic_dask.testing import (
    background_residual,
    load_stars,
    measure_star_flux_ratio,
    render_stars,
    star_mask,
    union_footprint_mask,
)

SYNC = ClusterOptions(kind="synchronous")
THREADS = ClusterOptions(kind="local", processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0")
PROCESSES = ClusterOptions(kind="local", processes=True, n_workers=2, threads_per_worker=1, dashboard_address=":0")


@dataclass
class Mosaic:
    """A finished run's products, loaded for checks."""

    out: Path
    image: np.ndarray
    coverage: np.ndarray
    wcs: WCS
    report: dict

    @classmethod
    def load(cls, out: Path) -> Mosaic:
        with fits.open(out / "mosaic.fits") as hdul:
            image = hdul[0].data.astype(np.float32)
            wcs = WCS(hdul[0].header).celestial
        coverage = fits.getdata(out / "mosaic_coverage.fits").astype(np.float32)
        report = json.loads((out / "report.json").read_text())
        return cls(out, image, coverage, wcs, report)


def run(frames, out: Path, cluster=SYNC, **overrides) -> Mosaic:
    config = load_config(overrides=overrides)
    run_mosaic(frames, out, config=config, cluster=cluster, show_progress=False, console_log=False)
    return Mosaic.load(out)


@dataclass
class Truth:
    """The simulated truth rendered onto a mosaic's own grid."""

    image: np.ndarray
    stars_mask: np.ndarray
    union: np.ndarray
    noise: np.ndarray
    fwhm: float
    stars: np.ndarray


def truth_on(mosaic: Mosaic, sim: Path) -> Truth:
    params = json.loads((sim / "simulation.json").read_text())
    stars = load_stars(sim / "stars.csv")
    fwhm = float(np.median(params["fwhm_px"]))
    fluxes = np.column_stack([stars["flux_r"], stars["flux_g"], stars["flux_b"]])
    shape = mosaic.image.shape[-2:]
    image = render_stars(stars["ra"], stars["dec"], fluxes, mosaic.wcs, shape, fwhm, background=params["sky_level"])
    frames = sorted(str(p) for p in sim.glob("frame_*.fits"))
    union = union_footprint_mask(frames, None, mosaic.wcs, shape)
    noise = np.median(np.asarray(params["noise_sigma"]), axis=0)
    return Truth(image, star_mask(image, params["sky_level"]), union, noise, fwhm, stars)


def star_flux_ratios(mosaic: Mosaic, truth: Truth) -> tuple[np.ndarray, np.ndarray]:
    """Median measured/true star flux per channel and the per-star ratios (isolated stars, SNR >= 20)."""
    median, ratios = measure_star_flux_ratio(
        mosaic.image,
        mosaic.wcs,
        truth.stars,
        aperture_px=3 * truth.fwhm,
        annulus=(4 * truth.fwhm, 6 * truth.fwhm),
        coverage=mosaic.coverage,
        min_snr=20,
        isolation=0.05,
    )
    assert len(ratios) >= 10, f"too few stars measured ({len(ratios)}) for a meaningful flux check"
    return np.asarray(median), np.asarray(ratios)


def flux_ratio(mosaic: Mosaic, truth: Truth) -> np.ndarray:
    return star_flux_ratios(mosaic, truth)[0]


def residual_rms(mosaic: Mosaic, truth: Truth) -> float:
    return background_residual(mosaic.image, truth.image, mosaic.coverage, truth.noise, star_mask=truth.stars_mask)


def holes(mosaic: Mosaic, truth: Truth) -> int:
    return int((~np.all(np.isfinite(mosaic.image), axis=0) & truth.union).sum())


def trail_pixels(sim, mosaic):
    """The mosaic pixels on the simulated trails' lines."""
    return _trail_lines(sim, mosaic, offsets=(0.0,))


def trail_wing_pixels(sim, mosaic, near=2.5, far=4.5):
    """The mosaic pixels on lines ``near`` to ``far`` frame pixels either side of each trail."""
    distances = np.linspace(near, far, 5)
    return _trail_lines(sim, mosaic, offsets=tuple(np.concatenate([distances, -distances])))


def _trail_lines(sim, mosaic, offsets):
    """Mosaic pixels on the lines parallel to each trail at the given offsets (frame pixels)."""
    params = json.loads((sim / "simulation.json").read_text())
    points = []
    for index, trail in params["trails"].items():
        header = fits.getheader(sim / f"frame_{int(index):04d}.fits")
        wcs = WCS(header).celestial
        t = np.linspace(-400, 400, 4000)
        angle = np.radians(trail["angle_deg"])
        height, width = header["NAXIS2"], header["NAXIS1"]
        for offset in offsets:  # along the normal (-sin, cos) of the trail's direction (cos, sin)
            x = trail["x0"] + t * np.cos(angle) - offset * np.sin(angle)
            y = trail["y0"] + t * np.sin(angle) + offset * np.cos(angle)
            inside = (x > 3) & (x < width - 4) & (y > 3) & (y < height - 4)
            ra, dec = wcs.all_pix2world(x[inside], y[inside], 0)
            points.append(np.column_stack(mosaic.wcs.all_world2pix(ra, dec, 0)))
    xy = np.round(np.concatenate(points)).astype(int)
    return np.unique(xy[:, ::-1], axis=0)


def hot_pixels(sim, mosaic):
    params = json.loads((sim / "simulation.json").read_text())
    points = []
    for path in sorted(sim.glob("frame_*.fits")):
        wcs = WCS(fits.getheader(path)).celestial
        yx = np.asarray(params["hot_pixels"]["positions"], dtype=float)
        ra, dec = wcs.all_pix2world(yx[:, 1], yx[:, 0], 0)
        points.append(np.column_stack(mosaic.wcs.all_world2pix(ra, dec, 0)))
    xy = np.round(np.concatenate(points)).astype(int)
    return np.unique(xy[:, ::-1], axis=0)


def excess(mosaic, truth, yx):
    """Mean excess over the truth at the given pixels, in units of the stack's expected noise."""
    keep = ~truth.stars_mask[yx[:, 0], yx[:, 1]] & (mosaic.coverage[yx[:, 0], yx[:, 1]] >= 3)
    yx = yx[keep]
    residual = (mosaic.image - truth.image)[:, yx[:, 0], yx[:, 1]]
    expected = truth.noise[:, None] / np.sqrt(mosaic.coverage[yx[:, 0], yx[:, 1]])[None]
    return float(np.nanmean(residual / expected))
