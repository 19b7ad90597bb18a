"""Compiled CPU stacking kernels (numba): kappa-sigma clipping, the weighted mean, per pixel.

The array-operation version (:func:`zemosaic_dask.tasks.rejection.reject_kappa_sigma`)
iterates over the whole stack and stops once a pass rejects nothing anywhere. A pixel's
passes depend only on its own samples, and a pass that rejects nothing at a pixel
rejects nothing there again, so iterating each pixel until it stops gives the same keep
mask. This kernel does that with the pixel's kept samples in a small buffer, summing in
float32 in the reference's order (sample index ascending), so the masks are equal.

:func:`weighted_mean_cpu` is :func:`zemosaic_dask.tasks.rejection.weighted_mean` with the
same float32 sums in the same order, without its sample-sized temporaries.

:func:`prepare_samples_cpu` is the opening of :func:`zemosaic_dask.tasks.stacking.stack_samples`
(the normalised working copy, the valid and has-data masks) in one pass.

:func:`bin_mean_cpu` and :func:`cell_clip_pass_cpu` serve the sky measurement of
:func:`zemosaic_dask.tasks.sky_blocks.measure_sky_cells`: the ``factor x factor`` block
means of a frame, summed as numpy's ``reshape(...).mean(axis=(2, 4))`` sums them, and one
clipping pass of the cell means, with the float64 sums of ``numpy.bincount``.

Compiled with ``nogil=True`` and without ``fastmath`` (see
:mod:`zemosaic_dask.tasks.kernels_cpu`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = [
    "bin_mean_cpu",
    "cell_clip_pass_cpu",
    "coverage_cpu",
    "kappa_sigma_keep_cpu",
    "prepare_samples_cpu",
    "weighted_mean_cpu",
]

_OPTIONS = {"cache": True, "nogil": True, "fastmath": False}


@njit(**_OPTIONS)
def _median(buffer, keep, count, scratch):
    """Median of the kept entries of ``buffer`` (mean of the two middle ones), float32."""
    n = 0
    for k in range(count):
        if keep[k]:
            scratch[n] = buffer[k]
            n += 1
    if n <= INSERTION_MEDIAN_MAX:
        return _insertion_median(scratch, n, scratch[n:])
    return _select_median(scratch, n, scratch[n:])


@njit(**_OPTIONS)
def kappa_sigma_keep_cpu(values, keep, kappa_low, kappa_high, max_iterations, min_samples, deep_limit, out):
    """Write into ``out`` the keep mask after kappa-sigma clipping of every pixel.

    ``values`` is ``(K, P)`` float32 and ``keep`` / ``out`` are ``(K, P)`` bool (P pixels
    of all channels). ``kappa_low``, ``kappa_high`` and ``deep_limit`` (the reference's
    ``CENTRE_MARGIN * max(kappa)``) are float32, as in the reference's arithmetic. Rules
    (see the reference): sample sigma (ddof=1); centre on the mean where
    ``(n - 1) / sqrt(n) > deep_limit``,
    else on the median; no rejection below ``min_samples``; a pass that would empty the
    pixel is not applied.
    """
    count, pixels = values.shape
    zero = np.float32(0.0)
    one = np.float32(1.0)
    buffer = np.empty(count, dtype=np.float32)
    kept = np.empty(count, dtype=np.bool_)
    scratch = np.empty(2 * count + 2, dtype=np.float32)
    for p in range(pixels):
        n = 0
        for k in range(count):
            buffer[k] = values[k, p]
            kept[k] = keep[k, p]
            n += 1 if kept[k] else 0
        for _ in range(max_iterations):
            if n == 0 or n < min_samples:  # nothing to clip, or too few samples to judge
                break
            total = zero
            for k in range(count):
                total += buffer[k] if kept[k] else zero
            size = np.float32(max(n, 1))
            mean = total / size
            squares = zero
            for k in range(count):
                deviation = (buffer[k] if kept[k] else mean) - mean
                squares += deviation * deviation
            sigma = np.float32(math.sqrt(squares / size))
            sigma = sigma * np.float32(math.sqrt(size / max(size - one, one)))
            deep = (size - one) / np.float32(math.sqrt(max(size, one))) > deep_limit
            centre = mean if deep else _median(buffer, kept, count, scratch)
            low = centre - kappa_low * sigma
            high = centre + kappa_high * sigma
            rejected = 0
            for k in range(count):
                if kept[k] and (buffer[k] < low or buffer[k] > high):
                    rejected += 1
            if rejected == 0 or rejected == n:  # nothing to do, or the pass would empty the pixel
                break
            for k in range(count):
                if kept[k] and (buffer[k] < low or buffer[k] > high):
                    kept[k] = False
            n -= rejected
        for k in range(count):
            out[k, p] = kept[k]


@njit(**_OPTIONS)
def weighted_mean_cpu(values, weights, keep, out):
    """Write into ``out`` ``(C, P)`` the weighted mean of the kept samples, NaN where no weight.

    ``values`` and ``keep`` are ``(K, C, P)``; ``weights`` is ``(K, 1, P)`` or ``(K, C, P)``.
    """
    count, channels, pixels = values.shape
    shared = weights.shape[1] == 1
    zero = np.float32(0.0)
    nan = np.float32(np.nan)
    numerator = np.zeros(pixels, dtype=np.float32)
    denominator = np.zeros(pixels, dtype=np.float32)
    for c in range(channels):
        numerator[:] = zero
        denominator[:] = zero
        wc = 0 if shared else c
        for k in range(count):
            row_values = values[k, c]
            row_weights = weights[k, wc]
            row_keep = keep[k, c]
            for p in range(pixels):
                kept = row_keep[p]
                numerator[p] += (row_values[p] if kept else zero) * row_weights[p]
                denominator[p] += row_weights[p] if kept else zero
        for p in range(pixels):
            out[c, p] = numerator[p] / denominator[p] if denominator[p] > zero else nan


#: Kappa-sigma's per-pixel median (only below its deep limit, where the centre is the
#: mean) sorts up to this many samples by insertion and selects in linear time above.
#: The noise clip sorts whole rows instead (:data:`.kernels_noise_clip.ROW_SORT_MAX`).
INSERTION_MEDIAN_MAX = 32


@njit(**_OPTIONS)
def prepare_samples_cpu(samples, footprint, gain, offset, quality, normalise, values, valid, has_data):
    """Write the working copy of the samples and their masks, as ``stack_samples`` opens.

    ``samples`` ``(K, C, H, W)`` float32, ``footprint`` ``(K, H, W)`` float32, ``gain``,
    ``offset`` and ``quality`` ``(K, C)`` float32 (``quality`` may be ``(0, 0)``: no
    frame weights). Writes ``values`` (``gain * x + offset`` when ``normalise``, rounded
    after each operation as numpy does; NaN where not valid), ``valid`` (finite, footprint
    > 0 and quality > 0) and ``has_data`` ``(K, H, W)`` (footprint > 0 and finite in some
    channel, whatever the quality).
    """
    count, channels, height, width = samples.shape
    weighted = quality.shape[0] > 0
    nan = np.float32(np.nan)
    for k in range(count):
        for y in range(height):
            for x in range(width):
                has_data[k, y, x] = False
        for c in range(channels):
            g, o = gain[k, c], offset[k, c]
            usable = not weighted or quality[k, c] > 0
            for y in range(height):
                for x in range(width):
                    value = samples[k, c, y, x]
                    if normalise:
                        value = value * g
                        value = value + o
                    finite = math.isfinite(value)
                    inside = footprint[k, y, x] > 0
                    ok = finite and inside and usable
                    has_data[k, y, x] = has_data[k, y, x] or (finite and inside)
                    valid[k, c, y, x] = ok
                    values[k, c, y, x] = value if ok else nan


@njit(**_OPTIONS)
def coverage_cpu(footprint, has_data, coverage, n_frames):
    """Write the sum of the footprints of the samples with data and their count, per pixel.

    ``footprint`` ``(K, H, W)`` float32, ``has_data`` ``(K, H, W)`` bool; ``coverage``
    ``(H, W)`` float32 and ``n_frames`` ``(H, W)`` int32 are written. The float32 sum runs
    over the samples in order, as numpy's sum over the first axis of
    ``where(has_data, footprint, 0)`` does, with no sample-sized temporary.
    """
    count, height, width = footprint.shape
    zero = np.float32(0.0)
    for y in range(height):
        for x in range(width):
            coverage[y, x] = zero
            n_frames[y, x] = 0
    for k in range(count):
        for y in range(height):
            row_weight, row_data = footprint[k, y], has_data[k, y]
            row_cover, row_count = coverage[y], n_frames[y]
            for x in range(width):
                data = row_data[x]
                row_cover[x] += row_weight[x] if data else zero
                row_count[x] += 1 if data else 0


@njit(**_OPTIONS)
def _insertion_median(buffer, n, scratch):
    """Median of the first ``n`` entries of ``buffer`` by insertion sort into ``scratch``."""
    for i in range(n):
        value = buffer[i]
        j = i
        while j > 0 and scratch[j - 1] > value:
            scratch[j] = scratch[j - 1]
            j -= 1
        scratch[j] = value
    return (scratch[(n - 1) // 2] + scratch[n // 2]) * np.float32(0.5)


@njit(**_OPTIONS)
def _select_median(buffer, n, scratch):
    """Median of the first ``n`` entries of ``buffer`` by quickselect in ``scratch`` (linear time)."""
    for i in range(n):
        scratch[i] = buffer[i]
    k = (n - 1) // 2
    left, right = 0, n - 1
    while right > left:
        first, middle, last = scratch[left], scratch[(left + right) // 2], scratch[right]
        pivot = max(min(first, middle), min(max(first, middle), last))  # median of the three
        i, j = left, right
        while i <= j:
            while scratch[i] < pivot:
                i += 1
            while scratch[j] > pivot:
                j -= 1
            if i <= j:
                scratch[i], scratch[j] = scratch[j], scratch[i]
                i += 1
                j -= 1
        if k <= j:
            right = j
        elif k >= i:
            left = i
        else:
            break
    low = scratch[k]
    if n % 2 == 1:
        return (low + low) * np.float32(0.5)
    high = scratch[k + 1]  # every entry right of k is >= low: the next order statistic is their minimum
    for i in range(k + 2, n):
        high = min(high, scratch[i])
    return (low + high) * np.float32(0.5)


@njit(**_OPTIONS)
def bin_mean_cpu(data, factor, out):
    """Write into ``out`` the means of the ``factor x factor`` blocks of ``data``, float32.

    ``data`` is ``(C, H, W)`` float32 and ``out`` ``(C, H // factor, W // factor)``
    float32 (rows and columns beyond the last whole block are ignored). Each block is
    summed row by row, every row from its first pixel on, then the row sums in order
    from the first, and the total divided by ``factor**2``: the order in which numpy 2
    reduces ``data.reshape(C, h, factor, w, factor).mean(axis=(2, 4))``, so the means
    are equal to the bit.
    """
    channels, height, width = out.shape
    scale = np.float32(factor * factor)
    total = np.empty(width, dtype=np.float32)
    for c in range(channels):
        for y in range(height):
            for i in range(factor):
                row = data[c, y * factor + i]
                for x in range(width):
                    first = x * factor
                    block_row = row[first]
                    for j in range(1, factor):
                        block_row += row[first + j]
                    if i == 0:
                        total[x] = block_row
                    else:
                        total[x] += block_row
            for x in range(width):
                out[c, y, x] = total[x] / scale


@njit(**_OPTIONS)
def cell_clip_pass_cpu(values, lookup, mean, low, high, totals, sums):
    """One clipping pass of cell means: replace ``mean`` by the mean of the pixels within the limits.

    ``values`` ``(N,)`` float32 pixels, ``lookup`` ``(N,)`` their cell index into
    ``mean``, ``totals`` and ``sums`` (float64, one entry per cell; the latter two are
    scratch). A pixel counts when ``low <= value - mean[cell] <= high`` (float64); the new
    mean of a cell is the sum of its counted pixels over their number, NaN where none.
    The sums run in pixel order in float64, as ``numpy.bincount`` with weights sums.
    """
    zero = 0.0
    totals[:] = zero
    sums[:] = zero
    for p in range(values.shape[0]):
        cell = lookup[p]
        value = np.float64(values[p])
        residual = value - mean[cell]
        weight = 1.0 if (residual >= low and residual <= high) else zero
        totals[cell] += weight
        sums[cell] += value * weight
    for cell in range(mean.shape[0]):
        mean[cell] = sums[cell] / max(totals[cell], 1.0) if totals[cell] > zero else np.nan
