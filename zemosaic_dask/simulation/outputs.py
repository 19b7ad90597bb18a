"""Writers of the simulator's ground-truth files: ``truth.fits``, ``extended.fits``, ``stars.csv``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from ..io.frames import TRUTH_KEYWORD
from .sky import SimulationConfig, StarField

__all__ = ["grid_header", "write_extended", "write_stars", "write_truth"]


def grid_header(wcs: WCS) -> fits.Header:
    """FITS header of a north-up TAN truth grid with a CD matrix."""
    header = fits.Header()
    header["WCSAXES"] = 2
    header["CTYPE1"] = "RA---TAN"
    header["CTYPE2"] = "DEC--TAN"
    header["CUNIT1"] = "deg"
    header["CUNIT2"] = "deg"
    for axis in range(2):
        header[f"CRVAL{axis + 1}"] = float(wcs.wcs.crval[axis])
        header[f"CRPIX{axis + 1}"] = float(wcs.wcs.crpix[axis])
    for i in range(2):
        for j in range(2):
            header[f"CD{i + 1}_{j + 1}"] = float(wcs.wcs.cd[i, j])
    header["RADESYS"] = "ICRS"
    header["EQUINOX"] = 2000.0
    header["BUNIT"] = ("adu", "ADU per native pixel per exposure")
    header[TRUTH_KEYWORD] = (True, "simulated ground truth, not a frame")
    return header


def write_truth(path: Path, truth: np.ndarray, wcs: WCS, fwhm: float, config: SimulationConfig) -> None:
    """Write the truth cube; ``SKY_R/G/B`` hold the constant (session mean) sky level."""
    header = grid_header(wcs)
    header["FWHM"] = (fwhm, "[px] PSF FWHM of the truth")
    for name, level in zip(("SKY_R", "SKY_G", "SKY_B"), config.sky_level, strict=True):
        header[name] = (level, "[ADU] constant sky level")
    fits.PrimaryHDU(data=truth.astype(np.float32), header=header).writeto(path, overwrite=True)


def write_extended(path: Path, emission: np.ndarray, wcs: WCS) -> None:
    """Write the extended emission alone (no sky, no stars) on the truth grid."""
    header = grid_header(wcs)
    header["CONTENT"] = ("extended emission", "galaxy + nebula, no sky, no stars")
    fits.PrimaryHDU(data=emission.astype(np.float32), header=header).writeto(path, overwrite=True)


def write_stars(path: Path, stars: StarField) -> None:
    """Write ``ra, dec, flux_r, flux_g, flux_b``, one row per star."""
    rows = [
        f"{ra:.10f},{dec:.10f},{r:.6f},{g:.6f},{b:.6f}"
        for ra, dec, (r, g, b) in zip(stars.ra, stars.dec, stars.fluxes, strict=True)
    ]
    path.write_text("ra,dec,flux_r,flux_g,flux_b\n" + "".join(row + "\n" for row in rows), encoding="utf-8")
