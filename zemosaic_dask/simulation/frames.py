"""One simulated exposure: expected signal, sensor defects, noise and the FITS header.

The expected signal of a pixel is the sky (constant level per channel plus a small
per-frame gradient plane), the light of every star through the pixel-integrated PSF, a
hot pixel's dark signal and a satellite trail. With a realistic sky (see
:mod:`.skyglow`) the level drifts from frame to frame, a light-pollution plane and the
extended emission (:mod:`.extended`) are added, and vignetting multiplies every optical
term (not the hot pixels). Shot noise (Poisson in electrons) and Gaussian read noise are
added, then values are rounded and clipped to 0..65535 ADU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS

from .degraded import CLOUD_FLUX_FACTOR, CLOUD_SKY_FACTOR, DEFOCUS_FACTOR, TRAIL_SAMPLES, trail_offsets
from .render import cutout_radius, sample_star_cutouts, scatter
from .sky import Pointing, SimulationConfig, StarField
from .skyglow import FrameSky, skyglow_planes, vignetting_map

__all__ = [
    "FrameSpec",
    "bayer_channel_map",
    "observation_date",
    "frame_header",
    "render_expected_signal",
    "sample_gradient",
    "sample_hot_pixels",
    "sample_trail",
    "simulate_frame_pixels",
]

LAYOUTS = ("bayer", "chw", "mono")
SATURATION_ADU = 65535.0


def bayer_channel_map(shape: tuple[int, int]) -> np.ndarray:
    """Channel index (0 R, 1 G, 2 B) of every pixel of a GRBG sensor.

    ``(y, x)`` is green when ``y + x`` is even, red when ``y`` is even and ``x`` odd,
    blue when ``y`` is odd and ``x`` even.
    """
    height, width = shape
    y = np.arange(height)[:, None] % 2
    x = np.arange(width)[None, :] % 2
    return np.where((y + x) % 2 == 0, 1, np.where(y == 0, 0, 2)).astype(np.int8)


@dataclass(frozen=True)
class FrameSpec:
    """Everything that makes one frame different from the others.

    ``sky`` is None for the constant sky of ``config.sky_level``. ``degradation`` is None
    for a good frame, else ``{"kind": "clouds" | "trailing" | "defocus", "angle_deg": ...}``
    (see :mod:`.degraded`); ``fwhm_px`` is the seeing, :attr:`psf_fwhm_px` what is rendered.
    """

    pointing: Pointing
    fwhm_px: float
    gradient: dict[str, list[float]]
    trail: dict[str, float] | None
    sky: FrameSky | None = None
    degradation: dict[str, float | str] | None = None

    @property
    def kind(self) -> str:
        """``"good"`` or the kind of degradation."""
        return "good" if self.degradation is None else str(self.degradation["kind"])

    @property
    def psf_fwhm_px(self) -> float:
        """FWHM of the rendered PSF: the seeing, doubled when the frame is out of focus."""
        return self.fwhm_px * (DEFOCUS_FACTOR if self.kind == "defocus" else 1.0)

    @property
    def sky_factor(self) -> float:
        """Sky background relative to a clear frame (brighter through clouds)."""
        return CLOUD_SKY_FACTOR if self.kind == "clouds" else 1.0

    @property
    def flux_factor(self) -> float:
        """Transmission of the sky's light (stars and extended emission)."""
        return CLOUD_FLUX_FACTOR if self.kind == "clouds" else 1.0

    def sky_levels(self, config: SimulationConfig) -> tuple[float, float, float]:
        """Mean sky level of this frame per channel (R, G, B) in ADU."""
        levels = config.sky_level if self.sky is None else self.sky.levels
        return tuple(float(v) * self.sky_factor for v in levels)  # type: ignore[return-value]

    @property
    def index(self) -> int:
        """Position of the frame in the sequence."""
        return self.pointing.index


def sample_gradient(
    shape: tuple[int, int], noise_sigma: tuple[float, ...], config: SimulationConfig, rng: np.random.Generator
) -> dict[str, list[float]]:
    """Draw a zero-mean gradient plane ``gx * (x - xc) + gy * (y - yc)`` per channel.

    ``(xc, yc)`` is the frame centre, so the plane averages to zero over the frame; its
    peak-to-peak amplitude across the frame is a fraction (``gradient_range_sigma``) of each
    channel's noise, in a random direction shared by the channels.
    """
    height, width = shape
    angle = rng.uniform(0.0, 2.0 * math.pi)
    fraction = rng.uniform(*config.gradient_range_sigma)
    c, s = math.cos(angle), math.sin(angle)
    extent = abs(c) * (width - 1) + abs(s) * (height - 1)
    gx = [fraction * sigma * c / extent for sigma in noise_sigma]
    gy = [fraction * sigma * s / extent for sigma in noise_sigma]
    return {"gx": gx, "gy": gy, "xc": (width - 1) / 2.0, "yc": (height - 1) / 2.0, "peak_to_peak_sigma": fraction}


def sample_hot_pixels(
    shape: tuple[int, int], fraction: float, config: SimulationConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(K, 2)`` distinct ``(y, x)`` sensor positions and their dark signal in ADU."""
    if not 0.0 <= fraction < 0.1:
        raise ValueError(f"hot_pixels is a fraction of the sensor in [0, 0.1), got {fraction!r} (default 1e-4)")
    height, width = shape
    count = int(round(fraction * height * width))
    flat = np.sort(rng.choice(height * width, size=count, replace=False)) if count else np.zeros(0, dtype=np.int64)
    positions = np.stack([flat // width, flat % width], axis=1).astype(np.int64)
    amplitudes = rng.uniform(*config.hot_pixel_range_adu, size=count)
    return positions, amplitudes


def sample_trail(shape: tuple[int, int], config: SimulationConfig, rng: np.random.Generator) -> dict[str, float]:
    """A straight trail crossing the frame through a point of its central half."""
    height, width = shape
    return {
        "angle_deg": float(rng.uniform(0.0, 180.0)),
        "x0": float(rng.uniform(0.25, 0.75) * (width - 1)),
        "y0": float(rng.uniform(0.25, 0.75) * (height - 1)),
        "peak_adu": float(rng.uniform(*config.trail_peak_range_adu)),
        "fwhm_px": float(rng.uniform(*config.trail_fwhm_range_px)),
    }


def _trail_image(shape: tuple[int, int], trail: dict[str, float]) -> np.ndarray:
    height, width = shape
    theta = math.radians(trail["angle_deg"])
    y = np.arange(height, dtype=np.float64)[:, None] - trail["y0"]
    x = np.arange(width, dtype=np.float64)[None, :] - trail["x0"]
    distance = -x * math.sin(theta) + y * math.cos(theta)
    sigma = trail["fwhm_px"] / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    return trail["peak_adu"] * np.exp(-0.5 * (distance / sigma) ** 2)


def _gradient_plane(shape: tuple[int, int], gradient: dict[str, list[float]], channel: int) -> np.ndarray:
    height, width = shape
    x = np.arange(width, dtype=np.float64)[None, :] - gradient["xc"]
    y = np.arange(height, dtype=np.float64)[:, None] - gradient["yc"]
    return gradient["gx"][channel] * x + gradient["gy"][channel] * y


def render_expected_signal(
    stars: StarField,
    wcs: WCS,
    shape: tuple[int, int],
    spec: FrameSpec,
    config: SimulationConfig,
    layout: str,
    hot_pixels: tuple[np.ndarray, np.ndarray],
    extended: np.ndarray | None = None,
) -> np.ndarray:
    """Noiseless expected ADU of a frame: ``(H, W)`` for bayer/mono, ``(3, H, W)`` for chw.

    ``extended`` is the ``(3, H, W)`` extended emission on the frame's pixels, if any.
    """
    height, width = shape
    realistic = spec.sky is not None and spec.sky.light_pollution is not None
    glow = skyglow_planes(shape, spec.sky) * spec.sky_factor if realistic else None
    if extended is not None:
        extended = extended * spec.flux_factor
        glow = extended if glow is None else glow + extended
    vignette = spec.sky.vignetting if spec.sky is not None else 0.0
    x, y = wcs.all_world2pix(stars.ra, stars.dec, 0)
    reach = cutout_radius(spec.psf_fwhm_px)
    near = (x > -reach) & (x < width - 1 + reach) & (y > -reach) & (y < height - 1 + reach)
    index, weight, fluxes = _star_cutouts(x[near], y[near], stars.fluxes[near] * spec.flux_factor, shape, spec)
    extra = _trail_image(shape, spec.trail) if spec.trail is not None else 0.0
    positions, amplitudes = hot_pixels
    if layout == "bayer":
        channel_of = bayer_channel_map(shape)
        per_pixel_flux = fluxes[np.arange(len(fluxes))[:, None], channel_of.ravel()[np.maximum(index, 0)]]
        signal = scatter(index, weight * per_pixel_flux, shape)
        levels = np.asarray(spec.sky_levels(config))[channel_of] if not realistic else 0.0
        planes = np.stack([_gradient_plane(shape, spec.gradient, c) for c in range(3)])
        if glow is not None:
            planes += glow
        signal += levels + np.take_along_axis(planes, channel_of[None].astype(np.int64), axis=0)[0] + extra
        if vignette:
            signal *= vignetting_map(shape, vignette)
        signal[positions[:, 0], positions[:, 1]] += amplitudes
        return signal
    channels = (1,) if layout == "mono" else (0, 1, 2)
    out = np.empty((len(channels), height, width), dtype=np.float64)
    for k, channel in enumerate(channels):
        out[k] = scatter(index, weight * fluxes[:, channel][:, None], shape)
        level = spec.sky_levels(config)[channel] if not realistic else 0.0
        out[k] += level + _gradient_plane(shape, spec.gradient, channel) + extra
        if glow is not None:
            out[k] += glow[channel]
        if vignette:
            out[k] *= vignetting_map(shape, vignette)
        out[k][positions[:, 0], positions[:, 1]] += amplitudes
    return out[0] if layout == "mono" else out


def _star_cutouts(
    x: np.ndarray, y: np.ndarray, fluxes: np.ndarray, shape: tuple[int, int], spec: FrameSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut-outs of every star through the frame's PSF, with the flux of each cut-out.

    A trailed frame draws each star as :data:`~.degraded.TRAIL_SAMPLES` copies of a
    ``1 / TRAIL_SAMPLES`` flux along its trail.
    """
    if spec.kind != "trailing":
        index, weight = sample_star_cutouts(x, y, shape, spec.psf_fwhm_px)
        return index, weight, fluxes
    dx, dy = trail_offsets(spec.psf_fwhm_px, float(spec.degradation["angle_deg"]))  # type: ignore[index]
    xs = (x[None, :] + dx[:, None]).ravel()
    ys = (y[None, :] + dy[:, None]).ravel()
    index, weight = sample_star_cutouts(xs, ys, shape, spec.psf_fwhm_px)
    return index, weight / TRAIL_SAMPLES, np.tile(fluxes, (TRAIL_SAMPLES, 1))


def simulate_frame_pixels(expected: np.ndarray, config: SimulationConfig, rng: np.random.Generator) -> np.ndarray:
    """Add shot and read noise to an expected image and quantise to 0..65535 ADU (float64)."""
    gain = config.gain_e_per_adu
    electrons = rng.poisson(np.clip(expected, 0.0, None) * gain)
    adu = electrons / gain + rng.normal(0.0, config.read_noise_adu, size=expected.shape)
    return np.clip(np.rint(adu), 0.0, SATURATION_ADU)


def observation_date(config: SimulationConfig, index: int) -> str:
    """``DATE-OBS`` of frame ``index``: ``config.start_time`` plus ``index`` exposures."""
    start = datetime.fromisoformat(config.start_time)
    return (start + timedelta(seconds=config.exposure_s * index)).strftime("%Y-%m-%dT%H:%M:%S.%f")


def frame_header(spec: FrameSpec, wcs: WCS, config: SimulationConfig, layout: str) -> fits.Header:
    """Seestar-like header: acquisition keywords, pointing hints and the TAN WCS with a CD matrix."""
    header = fits.Header()
    header["EXPTIME"] = (config.exposure_s, "[s] exposure time")
    date_obs = observation_date(config, spec.index)
    header["DATE-OBS"] = (date_obs, "UTC start of exposure")
    header["MJD-OBS"] = (Time(date_obs, format="isot", scale="utc").mjd, "MJD of DATE-OBS")
    header["INSTRUME"] = ("Seestar S50", "instrument")
    header["CREATOR"] = ("zemosaic-dask simulator", "software that made this file")
    header["IMAGETYP"] = ("Light", "frame type")
    header["OBJECT"] = ("Simulated field", "target")
    if layout == "bayer":
        header["BAYERPAT"] = ("GRBG", "Bayer pattern of pixel (0, 0)")
        header["XBAYROFF"] = (0, "Bayer x offset")
        header["YBAYROFF"] = (0, "Bayer y offset")
    header["FOCALLEN"] = (config.focal_length_mm, "[mm] focal length")
    header["XPIXSZ"] = (config.pixel_size_um, "[um] pixel width")
    header["YPIXSZ"] = (config.pixel_size_um, "[um] pixel height")
    header["XBINNING"] = (1, "binning")
    header["YBINNING"] = (1, "binning")
    header["EGAIN"] = (config.gain_e_per_adu, "[e/ADU] gain")
    header["EQMODE"] = (0, "mount mode: 0 alt-az, 1 equatorial")
    header["RA"] = (spec.pointing.ra, "[deg] pointing hint")
    header["DEC"] = (spec.pointing.dec, "[deg] pointing hint")
    header["WCSAXES"] = 2
    header["CTYPE1"] = "RA---TAN"
    header["CTYPE2"] = "DEC--TAN"
    header["CUNIT1"] = "deg"
    header["CUNIT2"] = "deg"
    header["CRVAL1"] = float(wcs.wcs.crval[0])
    header["CRVAL2"] = float(wcs.wcs.crval[1])
    header["CRPIX1"] = float(wcs.wcs.crpix[0])
    header["CRPIX2"] = float(wcs.wcs.crpix[1])
    cd = wcs.wcs.cd
    for i in range(2):
        for j in range(2):
            header[f"CD{i + 1}_{j + 1}"] = float(cd[i, j])
    header["RADESYS"] = "ICRS"
    header["EQUINOX"] = 2000.0
    header["FWHM"] = (spec.psf_fwhm_px, "[px] simulated PSF FWHM")
    return header


def write_frame(path: str, pixels: np.ndarray, header: fits.Header, layout: str) -> None:
    """Write a frame: uint16 Bayer data as int16 + BZERO 32768, other layouts as float32."""
    data = pixels.astype(np.uint16) if layout == "bayer" else pixels.astype(np.float32)
    fits.PrimaryHDU(data=data, header=header).writeto(path, overwrite=True)
