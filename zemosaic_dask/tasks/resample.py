"""Resampling of a frame (or frame window) at mapped input coordinates.

Three kernels share one contract: a ``(C, H, W)`` float32 image is sampled at input
coordinates ``(x, y)``; outside ``valid_box`` (or where any tap of the kernel is NaN) the
value is NaN and the footprint 0. ``bilinear`` uses the 2x2 neighbours, ``bicubic`` the
4x4 neighbours with Keys' cubic convolution (a = -0.5), ``lanczos3`` the 6x6 neighbours
with the Lanczos window of radius 3 (weights normalised to sum to one on each axis). Taps
beyond the image edge repeat the edge pixel.

A frame covers its whole pixel area, out to its outer pixel *edges*: the default box (and
the box :func:`~zemosaic_dask.units.frame_window.prepare_frame_window` gives) runs from
-0.5 to ``H - 0.5`` (and ``W - 0.5``), so two frames that abut edge to edge leave no crack
between them. A position between the image's outer pixel centre and its edge is first
clamped onto that outer pixel centre (constant extrapolation over the half pixel: the value
there is the edge pixel's, for every method). Windows are read with a margin around every
mapped position (``WINDOW_MARGIN``), so the clamp only ever binds at a true frame edge;
positions inside ``[0, H - 1]`` are sampled exactly as without it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .namespace import array_namespace

__all__ = ["INTERPOLATION_METHODS", "full_pixel_box", "sample", "sample_bicubic", "sample_bilinear", "sample_lanczos3"]

INTERPOLATION_METHODS = ("bilinear", "bicubic", "lanczos3")


def full_pixel_box(height: int, width: int) -> tuple[float, float, float, float]:
    """The box ``(ymin, ymax, xmin, xmax)`` of a ``height`` x ``width`` image's whole pixel area.

    Parameters
    ----------
    height, width : int
        Image size in pixels.

    Returns
    -------
    tuple of float
        ``(-0.5, height - 0.5, -0.5, width - 0.5)``: out to the outer pixel edges.
    """
    return (-0.5, height - 0.5, -0.5, width - 0.5)


def _inside_and_clamped(
    x: Any, y: Any, valid_box: tuple[float, float, float, float] | None, height: int, width: int, xp: Any
) -> tuple[Any, Any, Any]:
    """Positions inside the box, and the positions clamped onto the image's outer pixel centres (0 outside)."""
    ymin, ymax, xmin, xmax = full_pixel_box(height, width) if valid_box is None else valid_box
    inside = xp.isfinite(x) & xp.isfinite(y) & (x >= xmin) & (x <= xmax) & (y >= ymin) & (y <= ymax)
    xs = xp.where(inside, xp.clip(x, 0.0, width - 1.0), 0.0)
    ys = xp.where(inside, xp.clip(y, 0.0, height - 1.0), 0.0)
    return inside, xs, ys


def sample_bilinear(
    image: Any, x: Any, y: Any, valid_box: tuple[float, float, float, float] | None = None
) -> tuple[Any, Any]:
    """Sample a ``(C, H, W)`` image bilinearly at input coordinates ``(x, y)``.

    Parameters
    ----------
    image : array
        ``(C, H, W)`` float32 image (NaN marks missing input pixels).
    x, y : array
        ``(h, w)`` input pixel coordinates (0-based) in the image's frame.
    valid_box : tuple of float, optional
        ``(ymin, ymax, xmin, xmax)`` coordinates inside which the image has data (the
        frame's pixel area, out to its outer pixel edges, in the image's frame); defaults to
        the whole image's area, ``(-0.5, H - 0.5, -0.5, W - 0.5)``.

    Returns
    -------
    values : array
        ``(C, h, w)`` float32, NaN outside the footprint or where an input pixel is NaN.
    footprint : array
        ``(h, w)`` float32 weight, 1 inside the footprint and 0 outside.
    """
    xp = array_namespace(image, x, y)
    channels, height, width = image.shape
    inside, xs, ys = _inside_and_clamped(x, y, valid_box, height, width, xp)
    x0 = xp.clip(xp.floor(xs), 0, max(width - 2, 0)).astype(xp.int64)
    y0 = xp.clip(xp.floor(ys), 0, max(height - 2, 0)).astype(xp.int64)
    x1 = xp.minimum(x0 + 1, width - 1)
    y1 = xp.minimum(y0 + 1, height - 1)
    tx = (xs - x0).astype(xp.float32)
    ty = (ys - y0).astype(xp.float32)
    flat = image.reshape(channels, height * width)
    i00, i01 = y0 * width + x0, y0 * width + x1
    i10, i11 = y1 * width + x0, y1 * width + x1
    values = (
        xp.take(flat, i00.ravel(), axis=1) * ((1 - tx) * (1 - ty)).ravel()
        + xp.take(flat, i01.ravel(), axis=1) * (tx * (1 - ty)).ravel()
        + xp.take(flat, i10.ravel(), axis=1) * ((1 - tx) * ty).ravel()
        + xp.take(flat, i11.ravel(), axis=1) * (tx * ty).ravel()
    ).reshape((channels,) + x.shape)
    values = xp.where(inside[None], values, xp.float32(xp.nan)).astype(xp.float32)
    footprint = (inside & xp.all(xp.isfinite(values), axis=0)).astype(xp.float32)
    return values, footprint


def keys_cubic_weight(distance: Any, xp: Any) -> Any:
    """Keys' cubic convolution weight (a = -0.5) at ``distance`` (array, any sign)."""
    a = -0.5
    d = xp.abs(distance)
    near = ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0
    far = ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a
    return xp.where(d <= 1.0, near, xp.where(d < 2.0, far, 0.0))


def lanczos3_weight(distance: Any, xp: Any) -> Any:
    """Lanczos window of radius 3, ``sinc(d) sinc(d / 3)``, at ``distance`` (unnormalised)."""
    d = xp.abs(distance)
    tiny = d < 1e-12
    safe = xp.where(tiny, 1.0, d)
    value = 3.0 * xp.sin(math.pi * safe) * xp.sin(math.pi * safe / 3.0) / (math.pi * math.pi * safe * safe)
    return xp.where(tiny, 1.0, xp.where(d < 3.0, value, 0.0))


def _axis_weights(t: Any, offsets: range, weight: Callable[[Any, Any], Any], normalise: bool, xp: Any) -> list[Any]:
    """Weights of the taps ``floor + offset`` for fractional positions ``t`` in [0, 1)."""
    weights = [weight(t - offset, xp) for offset in offsets]
    if normalise:
        total = weights[0]
        for w in weights[1:]:
            total = total + w
        weights = [w / total for w in weights]
    return weights


def _sample_separable(
    image: Any,
    x: Any,
    y: Any,
    valid_box: tuple[float, float, float, float] | None,
    offsets: range,
    weight: Callable[[Any, Any], Any],
    normalise: bool,
) -> tuple[Any, Any]:
    xp = array_namespace(image, x, y)
    channels, height, width = image.shape
    inside, xs, ys = _inside_and_clamped(x, y, valid_box, height, width, xp)
    bx = xp.floor(xs)
    by = xp.floor(ys)
    wx = [w.astype(xp.float32).ravel() for w in _axis_weights(xs - bx, offsets, weight, normalise, xp)]
    wy = [w.astype(xp.float32).ravel() for w in _axis_weights(ys - by, offsets, weight, normalise, xp)]
    bx = bx.astype(xp.int64)
    by = by.astype(xp.int64)
    cols = [xp.clip(bx + offset, 0, width - 1).ravel() for offset in offsets]
    flat = image.reshape(channels, height * width)
    values = None
    for i, offset in enumerate(offsets):
        rows = xp.clip(by + offset, 0, height - 1).ravel() * width
        row_sum = None
        for j in range(len(offsets)):
            term = xp.take(flat, rows + cols[j], axis=1) * wx[j]
            row_sum = term if row_sum is None else row_sum + term
        term = row_sum * wy[i]
        values = term if values is None else values + term
    values = values.reshape((channels,) + tuple(x.shape))
    values = xp.where(inside[None], values, xp.float32(xp.nan)).astype(xp.float32)
    footprint = (inside & xp.all(xp.isfinite(values), axis=0)).astype(xp.float32)
    return values, footprint


def sample_bicubic(
    image: Any, x: Any, y: Any, valid_box: tuple[float, float, float, float] | None = None
) -> tuple[Any, Any]:
    """Sample a ``(C, H, W)`` image with Keys' bicubic convolution (a = -0.5).

    Same parameters and returns as :func:`sample_bilinear`; the 4x4 neighbours of each
    position are used (taps beyond the image edge repeat the edge pixel).
    """
    return _sample_separable(image, x, y, valid_box, range(-1, 3), keys_cubic_weight, normalise=False)


def sample_lanczos3(
    image: Any, x: Any, y: Any, valid_box: tuple[float, float, float, float] | None = None
) -> tuple[Any, Any]:
    """Sample a ``(C, H, W)`` image with a Lanczos-3 kernel (weights normalised per axis).

    Same parameters and returns as :func:`sample_bilinear`; the 6x6 neighbours of each
    position are used (taps beyond the image edge repeat the edge pixel).
    """
    return _sample_separable(image, x, y, valid_box, range(-2, 4), lanczos3_weight, normalise=True)


_SAMPLERS = {"bilinear": sample_bilinear, "bicubic": sample_bicubic, "lanczos3": sample_lanczos3}


def sample(
    image: Any,
    x: Any,
    y: Any,
    valid_box: tuple[float, float, float, float] | None = None,
    method: str = "bilinear",
) -> tuple[Any, Any]:
    """Sample a ``(C, H, W)`` image at ``(x, y)`` with the named interpolation.

    Parameters
    ----------
    image, x, y, valid_box
        As for :func:`sample_bilinear`.
    method : str
        ``bilinear`` | ``bicubic`` | ``lanczos3`` (config key ``mapping.interpolation``).

    Returns
    -------
    values, footprint : array
        As for :func:`sample_bilinear`.

    Raises
    ------
    ValueError
        For an unknown method.
    """
    sampler = _SAMPLERS.get(method)
    if sampler is None:
        raise ValueError(
            f"interpolation must be one of {', '.join(INTERPOLATION_METHODS)}, got {method!r} "
            "(set zemosaic.mapping.interpolation)"
        )
    return sampler(image, x, y, valid_box)
