"""Fused CPU kernels (numba): map, sample and accumulate one frame window onto a region.

One call handles one frame and one output region without any dense temporary: the
output-to-input pixel mapping is interpolated from the coarse node grid inside the loop
(the same float64 arithmetic as :func:`~zemosaic_dask.tasks.mapping.interpolate_pixel_map`),
the prepared ``(C, h, w)`` window is sampled (the same float32 arithmetic as
:mod:`~zemosaic_dask.tasks.resample`, positions clamped onto the window's outer pixel
centres as there), and the result is either accumulated into the
running sums of a weighted mean or written into one slice of a ``(K, C, h, w)`` stack.

Kernels are compiled with ``nogil=True`` and no internal parallelism: Dask runs one task
per thread and the threads of a worker then run kernels concurrently. ``fastmath`` stays
off so that the arithmetic is the reference's, operation for operation.

Use :mod:`zemosaic_dask.tasks.accumulate` rather than these functions directly: it checks
shapes and dtypes and dispatches on the array namespace.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["METHOD_CODES", "accumulate_window_cpu", "sample_window_cpu"]

#: Integer code of each interpolation method inside the kernels.
METHOD_CODES = {"bilinear": 0, "bicubic": 1, "lanczos3": 2}

_OPTIONS = {"cache": True, "nogil": True, "fastmath": False}
_MAX_TAPS = 6


@njit(**_OPTIONS)
def _axis_nodes(length, step, n_nodes):
    """Lower node index, upper node index and fraction of every pixel of one region axis."""
    lower = np.empty(length, dtype=np.int64)
    upper = np.empty(length, dtype=np.int64)
    frac = np.empty(length, dtype=np.float64)
    last = max(n_nodes - 2, 0)
    for p in range(length):
        i0 = min(p // step, last)
        i1 = min(i0 + 1, n_nodes - 1)
        p0 = float(min(i0 * step, length - 1))
        p1 = float(min(i1 * step, length - 1))
        lower[p] = i0
        upper[p] = i1
        frac[p] = (p - p0) / max(p1 - p0, 1.0)
    return lower, upper, frac


@njit(inline="always", **_OPTIONS)
def _map_at(nodes, r0, r1, ty, c0, c1, tx):
    """Bilinear interpolation of a node array, in the operation order of the dense map."""
    top = nodes[r0, c0] * (1 - tx) + nodes[r0, c1] * tx
    bottom = nodes[r1, c0] * (1 - tx) + nodes[r1, c1] * tx
    return top * (1 - ty) + bottom * ty


@njit(inline="always", **_OPTIONS)
def _keys(d):
    a = -0.5
    d = abs(d)
    if d <= 1.0:
        return ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0
    if d < 2.0:
        return ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a
    return 0.0


@njit(**_OPTIONS)
def _lanczos3(d):
    d = abs(d)
    if d < 1e-12:
        return 1.0
    if d < 3.0:
        return 3.0 * math.sin(math.pi * d) * math.sin(math.pi * d / 3.0) / (math.pi * math.pi * d * d)
    return 0.0


@njit(inline="always", **_OPTIONS)
def _tap_weights(t, method, raw, out):
    """Fill ``out`` with the float32 tap weights of fraction ``t``; return the first offset and tap count."""
    if method == 1:
        for k in range(4):
            out[k] = np.float32(_keys(t - (k - 1)))
        return -1, 4
    total = 0.0
    for k in range(6):
        raw[k] = _lanczos3(t - (k - 2))
        total += raw[k]
    for k in range(6):
        out[k] = np.float32(raw[k] / total)
    return -2, 6


@njit(inline="always", **_OPTIONS)
def _inside(xw, yw, ymin, ymax, xmin, xmax):
    # NaN (an unmappable position) fails every comparison: no separate finiteness test needed.
    return xmin <= xw <= xmax and ymin <= yw <= ymax


@njit(inline="always", **_OPTIONS)
def _bilinear_scratch(width):
    """Per-row work arrays of :func:`_bilinear_row`: first tap index, 4 weights, inside flags."""
    return (
        np.empty(width, dtype=np.int64),
        np.empty((4, width), dtype=np.float32),
        np.empty(width, dtype=np.bool_),
    )


@njit(inline="always", **_OPTIONS)
def _bilinear_row(image, flat, xrow, yrow, bounds, scratch, rows_out, ok):
    """Bilinear samples of one output row into ``rows_out`` (C, w).

    ``ok`` marks the pixels inside the box whose every channel is finite; returns True
    when any is. Outside the box ``rows_out`` holds meaningless values and
    ``scratch[2]`` (inside flags) is False: callers that keep samples mask them.

    Written as separate branch-free passes over the row (tap positions and weights, then
    one gather per channel) so that the compiler vectorises them; the arithmetic per
    pixel is :func:`~zemosaic_dask.tasks.resample.sample`'s.
    """
    channels, height, width = image.shape
    ymin, ymax, xmin, xmax = bounds
    first, weights, inside_at = scratch
    w00, w01, w10, w11 = weights[0], weights[1], weights[2], weights[3]
    count = xrow.shape[0]
    one = np.float32(1.0)
    zero = np.float32(0.0)
    x_last = float(max(width - 2, 0))
    y_last = float(max(height - 2, 0))
    x_end = width - 1.0
    y_end = height - 1.0
    step_x = 1 if width > 1 else 0
    step_y = width if height > 1 else 0
    any_inside = False
    for col in range(count):
        xw, yw = xrow[col], yrow[col]
        # NaN (an unmappable position) fails every comparison: no separate finiteness test needed.
        inside = (xmin <= xw) & (xw <= xmax) & (ymin <= yw) & (yw <= ymax)
        ok[col] = inside
        inside_at[col] = inside
        any_inside |= inside
        # Between the outer pixel centre and the frame edge: the edge pixel (the reference's clip).
        xc = min(max(xw, 0.0), x_end)
        yc = min(max(yw, 0.0), y_end)
        # floor(clamp(v)) equals the reference's clamp(floor(v)) for the integer bounds used.
        x0 = int(math.floor(min(xc, x_last))) if inside else 0
        y0 = int(math.floor(min(yc, y_last))) if inside else 0
        tx = np.float32(xc - x0) if inside else zero
        ty = np.float32(yc - y0) if inside else zero
        first[col] = y0 * width + x0
        w00[col] = (one - tx) * (one - ty)
        w01[col] = tx * (one - ty)
        w10[col] = (one - tx) * ty
        w11[col] = tx * ty
    if not any_inside:
        return False
    plane = height * width
    any_ok = False
    for c in range(channels):
        base = c * plane
        out = rows_out[c]
        for col in range(count):
            i = base + first[col]
            v = flat[i] * w00[col] + flat[i + step_x] * w01[col] + flat[i + step_y] * w10[col]
            v = v + flat[i + step_y + step_x] * w11[col]
            out[col] = v
            ok[col] &= math.isfinite(v)
    for col in range(count):
        any_ok |= ok[col]
    return any_ok


@njit(inline="always", **_OPTIONS)
def _separable_pixel(flat, channels, height, width, xw, yw, method, taps, out):
    """Bicubic or Lanczos-3 samples of every channel at ``(xw, yw)`` (inside the box); True when all finite."""
    scratch, wx, wy, cols, rows = taps
    # Between the outer pixel centre and the frame edge: the edge pixel (the reference's clip).
    xw = min(max(xw, 0.0), width - 1.0)
    yw = min(max(yw, 0.0), height - 1.0)
    bx = math.floor(xw)
    by = math.floor(yw)
    first, count = _tap_weights(xw - bx, method, scratch, wx)
    _tap_weights(yw - by, method, scratch, wy)
    ibx = int(bx)
    iby = int(by)
    for k in range(count):
        cols[k] = np.uint64(min(max(ibx + first + k, 0), width - 1))
        rows[k] = np.uint64(min(max(iby + first + k, 0), height - 1) * width)
    plane = np.uint64(height * width)
    ok = True
    for c in range(channels):
        base = np.uint64(c) * plane
        value = np.float32(0.0)
        for i in range(count):
            start = base + rows[i]
            row_sum = np.float32(0.0)
            for j in range(count):
                row_sum += flat[start + cols[j]] * wx[j]
            value += row_sum * wy[i]
        out[c] = value
        ok = ok and math.isfinite(value)
    return ok


@njit(inline="always", **_OPTIONS)
def _tap_scratch():
    """Work arrays of the separable kernels: float64 raw weights, x and y weights, column and row offsets."""
    return (
        np.empty(_MAX_TAPS, dtype=np.float64),
        np.empty(_MAX_TAPS, dtype=np.float32),
        np.empty(_MAX_TAPS, dtype=np.float32),
        np.empty(_MAX_TAPS, dtype=np.uint64),
        np.empty(_MAX_TAPS, dtype=np.uint64),
    )


@njit(inline="always", **_OPTIONS)
def _map_row(node_x, node_y, r, rows, cols, origin_y, origin_x, xrow, yrow):
    """Window coordinates of every pixel of output row ``r`` (a loop the compiler can vectorise)."""
    r0s, r1s, tys = rows
    c0s, c1s, txs = cols
    r0, r1, ty = r0s[r], r1s[r], tys[r]
    for col in range(xrow.shape[0]):
        c0, c1, tx = c0s[col], c1s[col], txs[col]
        xrow[col] = _map_at(node_x, r0, r1, ty, c0, c1, tx) - origin_x
        yrow[col] = _map_at(node_y, r0, r1, ty, c0, c1, tx) - origin_y


@njit(inline="always", **_OPTIONS)
def _sample_row(image, flat, xrow, yrow, bounds, method, taps, values, rows_out, ok, scratch):
    """Sample the pixels of one output row inside the box into ``rows_out`` (C, w).

    ``ok`` marks the pixels whose every channel is finite; returns True when any is.
    """
    if method != 0:
        return _separable_row(image, flat, xrow, yrow, bounds, method, taps, values, rows_out, ok)
    return _bilinear_row(image, flat, xrow, yrow, bounds, scratch, rows_out, ok)


@njit(**_OPTIONS)
def _separable_row(image, flat, xrow, yrow, bounds, method, taps, values, rows_out, ok):
    """:func:`_sample_row` for bicubic and Lanczos-3 (one call per row keeps the pixel loop tight)."""
    channels, height, width = image.shape
    ymin, ymax, xmin, xmax = bounds
    any_ok = False
    for col in range(xrow.shape[0]):
        xw, yw = xrow[col], yrow[col]
        good = False
        if _inside(xw, yw, ymin, ymax, xmin, xmax):
            good = _separable_pixel(flat, channels, height, width, xw, yw, method, taps, values)
            for c in range(channels):
                rows_out[c, col] = values[c]
        ok[col] = good
        any_ok = any_ok or good
    return any_ok


@njit(**_OPTIONS)
def accumulate_window_cpu(
    node_x: np.ndarray,
    node_y: np.ndarray,
    step: int,
    image: np.ndarray,
    origin_y: float,
    origin_x: float,
    box: np.ndarray,
    method: int,
    gains: np.ndarray,
    offsets: np.ndarray,
    weights: np.ndarray,
    sum_wv: np.ndarray,
    sum_w: np.ndarray,
    coverage: np.ndarray,
    coverage_max: bool,
) -> int:
    """Add one frame window's weighted samples to a region's running sums (in place).

    ``sum_wv[c] += w_c * v_c`` and ``sum_w[c] += w_c`` where ``v_c = gains[c] * sample + offsets[c]``
    is finite and ``w_c = footprint * weights[c] > 0``; ``coverage`` receives the footprint
    where any channel has data (added, or maximised when ``coverage_max``). Returns the
    number of output pixels the frame reached.
    """
    channels = image.shape[0]
    height, width = sum_w.shape[1], sum_w.shape[2]
    ny, nx = node_x.shape
    values = np.empty(channels, dtype=np.float32)
    taps = _tap_scratch()
    scratch = _bilinear_scratch(width)
    xrow = np.empty(width, dtype=np.float64)
    yrow = np.empty(width, dtype=np.float64)
    samples = np.empty((channels, width), dtype=np.float32)
    ok = np.zeros(width, dtype=np.bool_)
    has_data = np.zeros(width, dtype=np.bool_)
    rows = _axis_nodes(height, step, ny)
    cols = _axis_nodes(width, step, nx)
    flat = image.reshape(image.size)
    # Scalars, not array loads, inside the loops: the compiler cannot prove that ``box``
    # does not alias the arrays written there, and would reload it at every pixel.
    bounds = (box[0], box[1], box[2], box[3])
    reached = 0
    for r in range(height):
        _map_row(node_x, node_y, r, rows, cols, origin_y, origin_x, xrow, yrow)
        if not _sample_row(image, flat, xrow, yrow, bounds, method, taps, values, samples, ok, scratch):
            continue
        has_data[:] = False
        for c in range(channels):
            gain, offset, weight = gains[c], offsets[c], weights[c]
            use = weight > 0
            row = samples[c]
            wv_row = sum_wv[c, r]
            w_row = sum_w[c, r]
            # Branch-free so that it vectorises: excluded pixels add zero.
            for col in range(width):
                v = gain * row[col] + offset
                finite = ok[col] & math.isfinite(v)
                has_data[col] |= finite
                add = finite & use
                wv_row[col] += weight * v if add else 0.0
                w_row[col] += weight if add else 0.0
        cover = coverage[r]
        if coverage_max:
            for col in range(width):
                cover[col] = max(cover[col], 1.0) if has_data[col] else cover[col]
        else:
            for col in range(width):
                cover[col] += 1.0 if has_data[col] else 0.0
        for col in range(width):
            reached += has_data[col]
    return reached


@njit(**_OPTIONS)
def sample_window_cpu(
    node_x: np.ndarray,
    node_y: np.ndarray,
    step: int,
    image: np.ndarray,
    origin_y: float,
    origin_x: float,
    box: np.ndarray,
    method: int,
    values_out: np.ndarray,
    footprint_out: np.ndarray,
) -> int:
    """Write one frame window's samples ``(C, h, w)`` and footprint ``(h, w)`` (NaN / 0 outside).

    Returns the number of output pixels inside the footprint.
    """
    channels = image.shape[0]
    height, width = footprint_out.shape
    ny, nx = node_x.shape
    values = np.empty(channels, dtype=np.float32)
    taps = _tap_scratch()
    scratch = _bilinear_scratch(width)
    nan = np.float32(np.nan)
    xrow = np.empty(width, dtype=np.float64)
    yrow = np.empty(width, dtype=np.float64)
    ok = np.zeros(width, dtype=np.bool_)
    rows = _axis_nodes(height, step, ny)
    cols = _axis_nodes(width, step, nx)
    flat = image.reshape(image.size)
    ymin, ymax, xmin, xmax = box[0], box[1], box[2], box[3]
    reached = 0
    for r in range(height):
        _map_row(node_x, node_y, r, rows, cols, origin_y, origin_x, xrow, yrow)
        values_out[:, r, :] = nan
        _sample_row(
            image, flat, xrow, yrow, (ymin, ymax, xmin, xmax), method, taps, values, values_out[:, r], ok, scratch
        )
        if method == 0:  # the bilinear row writes every pixel: put NaN back outside the box
            inside = scratch[2]
            for c in range(channels):
                for col in range(width):
                    values_out[c, r, col] = values_out[c, r, col] if inside[col] else nan
        for col in range(width):
            footprint_out[r, col] = 1.0 if ok[col] else 0.0
            reached += 1 if ok[col] else 0
    return reached
