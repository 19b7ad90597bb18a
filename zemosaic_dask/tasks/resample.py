"""Resampling of a frame (or frame window) at mapped input coordinates."""

from __future__ import annotations

from typing import Any

from .namespace import array_namespace

__all__ = ["sample_bilinear"]


def sample_bilinear(image: Any, x: Any, y: Any, valid_box: tuple[float, float, float, float] | None = None) -> tuple[Any, Any]:
    """Sample a ``(C, H, W)`` image bilinearly at input coordinates ``(x, y)``.

    Parameters
    ----------
    image : array
        ``(C, H, W)`` float32 image (NaN marks missing input pixels).
    x, y : array
        ``(h, w)`` input pixel coordinates (0-based) in the image's frame.
    valid_box : tuple of float, optional
        ``(ymin, ymax, xmin, xmax)`` coordinates inside which the image has data (the
        frame's pixel centres, in the image's frame); defaults to the whole image.

    Returns
    -------
    values : array
        ``(C, h, w)`` float32, NaN outside the footprint or where an input pixel is NaN.
    footprint : array
        ``(h, w)`` float32 weight, 1 inside the footprint and 0 outside.
    """
    xp = array_namespace(image, x, y)
    channels, height, width = image.shape
    if valid_box is None:
        valid_box = (0.0, height - 1.0, 0.0, width - 1.0)
    ymin, ymax, xmin, xmax = valid_box
    with_finite = xp.isfinite(x) & xp.isfinite(y)
    inside = with_finite & (x >= xmin) & (x <= xmax) & (y >= ymin) & (y <= ymax)
    xs = xp.where(inside, x, 0.0)
    ys = xp.where(inside, y, 0.0)
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
