"""Compiled CPU stacking kernels (numba): kappa-sigma clipping and the weighted mean, per pixel.

The array-operation version (:func:`zemosaic_dask.tasks.rejection.reject_kappa_sigma`)
iterates over the whole stack and stops once a pass rejects nothing anywhere. A pixel's
passes depend only on its own samples, and a pass that rejects nothing at a pixel
rejects nothing there again, so iterating each pixel until it stops gives the same keep
mask. This kernel does that with the pixel's kept samples in a small buffer, summing in
float32 in the reference's order (sample index ascending), so the masks are equal.

:func:`weighted_mean_cpu` is :func:`zemosaic_dask.tasks.rejection.weighted_mean` with the
same float32 sums in the same order, without its sample-sized temporaries.

Compiled with ``nogil=True`` and without ``fastmath`` (see
:mod:`zemosaic_dask.tasks.kernels_cpu`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["kappa_sigma_keep_cpu", "weighted_mean_cpu"]

_OPTIONS = {"cache": True, "nogil": True, "fastmath": False}


@njit(**_OPTIONS)
def _median(buffer, keep, count, scratch):
    """Median of the kept entries of ``buffer`` (mean of the two middle ones), float32."""
    n = 0
    for k in range(count):
        if keep[k]:
            scratch[n] = buffer[k]
            n += 1
    ordered = np.sort(scratch[:n])
    return (ordered[(n - 1) // 2] + ordered[n // 2]) * np.float32(0.5)


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
    scratch = np.empty(count, dtype=np.float32)
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
