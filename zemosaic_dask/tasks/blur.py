"""Separable Gaussian blur written against the input's array namespace (numpy or cupy).

The blur treats everything outside the array it is given as zero. A caller that blurs
a large image chunk by chunk extends each chunk by :func:`halo_width` pixels on every side
that has neighbours (a halo read from the neighbouring chunks, or zeros at the image
border), blurs, and keeps the chunk's own pixels: the result is then the same as blurring
the whole image at once, because a pixel only sees inputs within the kernel radius.

Each axis is convolved as a product with one banded (Toeplitz) matrix applied block by
block, so the work is a few matrix products (BLAS on the CPU, cuBLAS on a GPU) and never
needs scipy. Only the pixels that are kept are computed: pass ``halo`` to drop the halo.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import numpy as np

from .namespace import array_namespace

__all__ = ["HaloSpec", "gaussian_blur", "gaussian_kernel", "halo_sides", "halo_width", "normalised_blur"]

#: A halo as one width for every side, or ``(top, bottom, left, right)``.
HaloSpec = int | tuple[int, int, int, int]

#: ``blur(mask)`` at or below this value counts as "no data" in :func:`normalised_blur`.
#: The blurred mask is a sum of non-negative terms, so it is accurate down to tiny values;
#: this only guards the division.
MIN_MASK_WEIGHT = 1e-12


def halo_width(sigma: float, truncate: float = 4.0) -> int:
    """Return the kernel radius in pixels: the halo a chunk needs on each side.

    Parameters
    ----------
    sigma : float
        Standard deviation of the Gaussian in pixels (>= 0).
    truncate : float
        The kernel stops at ``truncate * sigma`` (rounded to the nearest pixel).

    Returns
    -------
    int
        ``int(truncate * sigma + 0.5)``, the same radius as ``scipy.ndimage.gaussian_filter``.
    """
    _check_sigma(sigma, truncate)
    return int(truncate * float(sigma) + 0.5)


def gaussian_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Return the normalised 1-D Gaussian kernel (float64, length ``2 * halo_width + 1``).

    ``sigma == 0`` gives the identity kernel ``[1.0]``.
    """
    return _kernel(float(sigma), float(truncate)).copy()


def gaussian_blur(image: Any, sigma: float, *, truncate: float = 4.0, halo: HaloSpec = 0) -> Any:
    """Blur a 2-D image with a Gaussian, zero outside the array.

    Parameters
    ----------
    image : array
        ``(H, W)`` finite values (numpy or cupy). A NaN would spread over a whole block of
        the result; blur data with holes through :func:`normalised_blur`.
    sigma : float
        Standard deviation in pixels (>= 0; 0 returns a copy).
    truncate : float
        Kernel radius in units of sigma (see :func:`halo_width`).
    halo : int or tuple of int
        Pixels to drop from the result: one width for every side or ``(top, bottom, left,
        right)``. Only the kept pixels are computed.

    Returns
    -------
    array
        ``(H - top - bottom, W - left - right)`` in the input's namespace; float64 for
        float64 input, float32 otherwise.

    Raises
    ------
    ValueError
        For a non-2-D image, a negative or non-finite sigma, or a halo that leaves nothing.
    """
    xp = array_namespace(image)
    if image.ndim != 2:
        raise ValueError(f"gaussian_blur needs a 2-D image, got shape {tuple(image.shape)}; blur each plane")
    top, bottom, left, right = halo_sides(halo, image.shape)
    dtype = xp.float64 if image.dtype == xp.float64 else xp.float32
    data = xp.asarray(image, dtype=dtype)
    kernel = _kernel(float(sigma), float(truncate))
    height, width = data.shape
    rows = _convolve_axis(data, kernel, top, height - bottom, axis=0)
    return _convolve_axis(rows, kernel, left, width - right, axis=1)


def normalised_blur(values: Any, mask: Any, sigma: float, *, truncate: float = 4.0, halo: HaloSpec = 0) -> Any:
    """Blur ``values`` over ``mask`` only: ``blur(values * mask) / blur(mask)``.

    Pixels outside the mask do not pull the result towards zero, so the blur does not
    darken near the edge of the data.

    Parameters
    ----------
    values : array
        ``(H, W)`` values; anything where the mask is 0 (NaN included) is ignored.
    mask : array
        ``(H, W)`` boolean or non-negative weights.
    sigma, truncate, halo
        As for :func:`gaussian_blur`.

    Returns
    -------
    array
        float32 (float64 for float64 values) without the halo; NaN where ``blur(mask)``
        is at most :data:`MIN_MASK_WEIGHT` (no masked pixel within the kernel radius).
    """
    xp = array_namespace(values, mask)
    dtype = xp.float64 if values.dtype == xp.float64 else xp.float32
    weight = xp.asarray(mask, dtype=dtype)
    if values.shape != weight.shape:
        raise ValueError(f"values {tuple(values.shape)} and mask {tuple(weight.shape)} must have the same shape")
    weighted = xp.where(weight > 0, xp.asarray(values, dtype=dtype) * weight, xp.asarray(0, dtype=dtype))
    numerator = gaussian_blur(weighted, sigma, truncate=truncate, halo=halo)
    denominator = gaussian_blur(weight, sigma, truncate=truncate, halo=halo)
    covered = denominator > MIN_MASK_WEIGHT
    safe = xp.where(covered, denominator, xp.asarray(1, dtype=dtype))
    return xp.where(covered, numerator / safe, xp.asarray(xp.nan, dtype=dtype))


def _check_sigma(sigma: float, truncate: float) -> None:
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a finite number >= 0 pixels, got {sigma!r}")
    if not (math.isfinite(truncate) and truncate > 0):
        raise ValueError(f"truncate must be a finite number > 0, got {truncate!r}")


@cache
def _kernel(sigma: float, truncate: float) -> np.ndarray:
    radius = halo_width(sigma, truncate)
    if sigma == 0 or radius == 0:
        kernel = np.ones(1)
    else:
        offsets = np.arange(-radius, radius + 1, dtype=np.float64)
        kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
        kernel /= kernel.sum()
    kernel.setflags(write=False)
    return kernel


@cache
def _band(kernel_bytes: bytes, block: int) -> np.ndarray:
    """Banded matrix ``B[i, j] = kernel[j - i]`` (0 outside the band), shape ``(block, block + 2r)``."""
    kernel = np.frombuffer(kernel_bytes, dtype=np.float64)
    taps = kernel.size
    band = np.zeros((block, block + taps - 1))
    for i in range(block):
        band[i, i : i + taps] = kernel
    band.setflags(write=False)
    return band


def _block_rows(radius: int) -> int:
    """Output rows per matrix product: about the kernel width, within [64, 512]."""
    return max(64, min(512, 2 * radius))


def _convolve_axis(data: Any, kernel: np.ndarray, start: int, stop: int, axis: int) -> Any:
    """Indices ``start:stop`` along ``axis`` of the zero-padded convolution of ``data`` (2-D)."""
    xp = array_namespace(data)
    taps = kernel.size
    radius = (taps - 1) // 2
    if taps == 1:
        kept = data[start:stop] if axis == 0 else data[:, start:stop]
        return kept * xp.asarray(kernel[0], dtype=data.dtype)
    length = data.shape[axis]
    block = _block_rows(radius)
    band = xp.asarray(_band(kernel.tobytes(), block), dtype=data.dtype)
    pieces = []
    for first in range(start, stop, block):
        last = min(first + block, stop)
        lo, hi = first - radius, last + radius
        src_lo, src_hi = max(lo, 0), min(hi, length)
        matrix = band[: last - first, src_lo - lo : src_hi - lo]
        if axis == 0:
            pieces.append(matrix @ data[src_lo:src_hi])
        else:
            pieces.append(data[:, src_lo:src_hi] @ matrix.T)
    return pieces[0] if len(pieces) == 1 else xp.concatenate(pieces, axis=axis)


def halo_sides(halo: HaloSpec, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Return ``(top, bottom, left, right)`` of a halo around a ``shape`` chunk, validated.

    Raises
    ------
    ValueError
        For a negative or non-integer width, or a halo that leaves no pixel.
    """
    sides = (halo,) * 4 if isinstance(halo, int | np.integer) else tuple(halo)
    if len(sides) != 4 or any(int(s) != s or s < 0 for s in sides):
        raise ValueError(f"halo must be an int >= 0 or (top, bottom, left, right) of ints >= 0, got {halo!r}")
    top, bottom, left, right = (int(s) for s in sides)
    height, width = shape
    if top + bottom >= height or left + right >= width:
        raise ValueError(
            f"halo {(top, bottom, left, right)} leaves no pixel of a {height}x{width} chunk; "
            "extend the chunk by the halo before blurring"
        )
    return top, bottom, left, right
