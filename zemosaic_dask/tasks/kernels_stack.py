"""Compiled CPU stacking kernels (numba): kappa-sigma and noise clipping, the weighted mean, per pixel.

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

:func:`noise_clip_keep_cpu` is
:func:`zemosaic_dask.tasks.noise_rejection._reject_noise_clip_arrays` per pixel, with the
same float32 operations in the same order (the reference stops each pixel on its own).

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
    "kappa_sigma_keep_cpu",
    "noise_clip_keep_cpu",
    "prepare_samples_cpu",
    "weighted_mean_cpu",
]

_OPTIONS = {"cache": True, "nogil": True, "fastmath": False}
#: The row-wise kernels divide by zero for pixels whose result they then ignore: IEEE
#: division (inf or NaN) instead of Python's check, which also keeps their loops vectorised.
_ROW_OPTIONS = {**_OPTIONS, "error_model": "numpy"}


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


@njit(**_ROW_OPTIONS)
def _variance(centre, noise, background, photons, reference, noise_scale):
    """Expected variance of a sample about ``centre`` in float32 (NaN propagates).

    ``noise**2 + photons * max(centre - background, 0) + (noise_scale * max(centre - reference, 0))**2``,
    ``photons`` being ``noise**2 / shot`` (0 without a shot level).
    """
    excess = centre - background
    if excess < np.float32(0.0):
        excess = np.float32(0.0)
    signal = centre - reference
    if signal < np.float32(0.0):
        signal = np.float32(0.0)
    signal = signal * noise_scale
    return (noise * noise + photons * excess) + signal * signal


@njit(**_ROW_OPTIONS)
def _photons(noise, shot):
    """``noise**2 / shot`` where the shot level is known (> 0), else 0: the shot term's variance per ADU."""
    if shot > np.float32(0.0):
        return (noise * noise) / shot
    return np.float32(0.0)


@njit(**_ROW_OPTIONS)
def _row_opening(values, usable, c, y, present, count, radius, mean, scratch, floor):
    """Write into ``floor`` ``(W,)`` the opening along row ``y`` of the mean of its usable samples.

    The numbers of :func:`~zemosaic_dask.tasks.signal_structure.smooth_level` (float32 sums
    in sample order; a pixel without a sample is +inf to the minimum, -inf to the maximum,
    NaN in the result). Only the samples ``present[:count]`` have usable pixels in the row.
    """
    width = values.shape[3]
    for x in range(width):
        mean[x] = np.float32(0.0)
        scratch[x] = np.float32(0.0)
    for i in range(count):
        k = present[i]
        row_values, row_usable = values[k, c, y], usable[k, c, y]
        for x in range(width):
            ok = row_usable[x]
            mean[x] += row_values[x] if ok else np.float32(0.0)
            scratch[x] += np.float32(1.0) if ok else np.float32(0.0)
    for x in range(width):
        mean[x] = mean[x] / scratch[x] if scratch[x] > np.float32(0.0) else np.float32(np.inf)
    for x in range(width):  # erosion, over the window's offsets (vectorised along the row)
        scratch[x] = mean[x]
    for offset in range(1, radius + 1):  # (comparisons, not min(): they vectorise; nothing here is NaN)
        for x in range(width - offset):
            scratch[x] = mean[x + offset] if mean[x + offset] < scratch[x] else scratch[x]
        for x in range(offset, width):
            scratch[x] = mean[x - offset] if mean[x - offset] < scratch[x] else scratch[x]
    for x in range(width):
        scratch[x] = -np.float32(np.inf) if scratch[x] == np.float32(np.inf) else scratch[x]
        floor[x] = scratch[x]
    for offset in range(1, radius + 1):  # dilation
        for x in range(width - offset):
            floor[x] = scratch[x + offset] if scratch[x + offset] > floor[x] else floor[x]
        for x in range(offset, width):
            floor[x] = scratch[x - offset] if scratch[x - offset] > floor[x] else floor[x]
    for x in range(width):
        floor[x] = np.float32(np.nan) if floor[x] == -np.float32(np.inf) else floor[x]


#: Kappa-sigma's per-pixel median (only below its deep limit, where the centre is the
#: mean) sorts up to this many samples by insertion and selects in linear time above.
#: The noise clip sorts whole rows instead (``ROW_SORT_MAX``).
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


#: Up to this many samples per pixel, the noise clip sorts a whole row of pixels at once
#: (a sorting network, each compare-exchange vectorised across the row) to find the medians;
#: its cost per sample grows with ``K`` and meets a quickselect per pixel beyond ~128.
ROW_SORT_MAX = 128


@njit(**_ROW_OPTIONS)
def sorting_network(size):
    """Batcher's odd-even merge sort for ``size`` entries: ``(P, 2)`` compare-exchange pairs ``i < j``.

    Applied in order (the smaller value to ``i``), they sort any ``size`` values;
    ``size * log2(size)**2 / 4`` pairs or fewer (63 for 16 entries, against 120 for
    odd-even transposition). Entries known to be +inf may be left out by skipping the
    pairs that reach them: such a pair never exchanges.
    """
    pairs = np.empty((max(size * size, 1), 2), dtype=np.intp)
    count = 0
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs[count, 0] = i + j
                        pairs[count, 1] = i + j + k
                        count += 1
            k //= 2
        p *= 2
    return pairs[:count]


@njit(**_ROW_OPTIONS)
def _sort_row_samples(values, usable, c, y, present, count, network, ordered):
    """Sort each pixel's usable samples of row ``y``, channel ``c``, into ``ordered[:count]``.

    Only the samples ``present[:count]`` are sorted (the others have no usable pixel in
    the row). Unusable samples count as +inf, so a pixel's ``n`` usable samples come first
    in ascending order. ``network`` is :func:`sorting_network` for ``K >= count`` entries
    (its pairs beyond ``count`` are skipped); each compare-exchange runs along the row
    without a branch.
    """
    width = ordered.shape[1]
    for i in range(count):
        k = present[i]
        row_values, row_usable, row_ordered = values[k, c, y], usable[k, c, y], ordered[i]
        for x in range(width):
            row_ordered[x] = row_values[x] if row_usable[x] else np.float32(np.inf)
    for p in range(network.shape[0]):
        i, j = network[p, 0], network[p, 1]
        if j >= count:
            continue
        low, high = ordered[i], ordered[j]
        for x in range(width):
            a = low[x]
            b = high[x]
            swap = b < a  # (not min()/max(): comparisons vectorise; nothing here is NaN)
            low[x] = b if swap else a
            high[x] = a if swap else b


@njit(**_ROW_OPTIONS)
def _row_parameter(array, c, y, row):
    """Fill ``row`` ``(K, W)`` with ``array``'s entries of channel ``c``, row ``y``.

    ``array`` is 4-D, each axis 1 or full (it is broadcast here, row by row).
    """
    count, width = row.shape
    last_k = array.shape[0] - 1
    ca = min(c, array.shape[1] - 1)
    ya = min(y, array.shape[2] - 1)
    if array.shape[3] == 1:
        for k in range(count):
            value = array[min(k, last_k), ca, ya, 0]
            for x in range(width):
                row[k, x] = value
    else:
        for k in range(count):
            ka = min(k, last_k)
            for x in range(width):
                row[k, x] = array[ka, ca, ya, x]


@njit(**_ROW_OPTIONS)
def _later_passes(buffer, noise, sky, photons, floor, kept, trial, variance, n, m, parameters, max_iterations):
    """Passes 2.. of one pixel's noise clip on its ``n`` gathered samples; ``kept`` is updated.

    ``m`` is the number of samples the first pass kept; ``parameters`` holds ``kappa_low``,
    ``kappa_high`` and ``noise_scale`` (float32). The centre is the mean of the kept samples.
    """
    kappa_low, kappa_high, noise_scale = parameters[0], parameters[1], parameters[2]
    zero = np.float32(0.0)
    for _ in range(1, max_iterations):
        size = np.float32(m)
        total = zero
        for i in range(n):
            if kept[i]:
                total += buffer[i]
        centre = total / size
        total = zero
        for i in range(n):
            variance[i] = _variance(centre, noise[i], sky[i], photons[i], floor[i], noise_scale)
            if kept[i]:
                total += variance[i]
        centre_variance = total / (size * size)
        m_new = 0
        changed = False
        for i in range(n):
            sigma = np.float32(math.sqrt(variance[i] + centre_variance))
            deviation = buffer[i] - centre
            keep_i = not (deviation > kappa_high * sigma or -deviation > kappa_low * sigma)
            trial[i] = keep_i
            m_new += 1 if keep_i else 0
            changed = changed or keep_i != kept[i]
        if not changed or m_new == 0:
            return
        for i in range(n):
            kept[i] = trial[i]
        m = m_new


@njit(**_ROW_OPTIONS)
def noise_clip_keep_cpu(
    values,
    valid,
    noise,
    background,
    shot,
    reference,
    structure_radius,
    kappa_low,
    kappa_high,
    noise_scale,
    median_variance,
    max_iterations,
    min_samples,
    out,
):
    """Write into ``out`` the keep mask of noise clipping; return the number of pair-rule rejections.

    ``values`` ``(K, C, H, W)`` float32, ``valid`` and ``out`` bool of that shape;
    ``noise``, ``background``, ``shot`` and ``reference`` 4-D float32 arrays whose every
    axis is 1 or that of ``values`` (e.g. ``(K, C, 1, 1)``, or ``(1, C, H, W)`` for the
    reference; they are broadcast a row at a time); ``structure_radius`` >= 0 replaces
    ``reference`` by each row's opening of the mean of its usable samples over
    ``2 * structure_radius + 1`` pixels (computed here, row by row), -1 keeps it;
    ``kappa_low``, ``kappa_high``, ``noise_scale`` and ``median_variance`` (the
    reference's ``MEDIAN_VARIANCE``) float32. The rules are those of
    :mod:`zemosaic_dask.tasks.noise_rejection`.

    A row at a time: the pair rule and the first pass run across the row, sample by
    sample (contiguous and branch-free, so vectorised), adding 0 for the samples a sum
    skips (which leaves every float32 sum as the reference's); the first pass decides most
    pixels (nothing rejected, or a pass that would empty the pixel, ends it). Only the
    pixels it changed gather their samples for the later passes (:func:`_later_passes`).
    """
    count, channels, height, width = values.shape
    zero = np.float32(0.0)
    inf = np.float32(np.inf)
    pair_allowed = min_samples <= 2
    judged_from = max(3, min_samples)
    parameters = np.array([kappa_low, kappa_high, noise_scale], dtype=np.float32)
    usable = np.empty(width, dtype=np.intp)
    present = np.empty(count, dtype=np.intp)
    opened = structure_radius >= 0
    row_mean = np.empty(width if opened else 0, dtype=np.float32)
    row_scratch = np.empty(width if opened else 0, dtype=np.float32)
    row_floor = np.empty(width if opened else 0, dtype=np.float32)
    sort_rows = count <= ROW_SORT_MAX
    ordered = np.empty((count if sort_rows else 0, width), dtype=np.float32)
    network = sorting_network(count if sort_rows else 0)
    noise_row = np.empty((count, width), dtype=np.float32)
    sky_row = np.empty((count, width), dtype=np.float32)
    photons_row = np.empty((count, width), dtype=np.float32)
    floor_row = np.empty((0 if opened else count, width), dtype=np.float32)
    along_y = max(noise.shape[2], background.shape[2], shot.shape[2], 1 if opened else reference.shape[2]) > 1
    filled_for = -1
    variance_row = np.empty((count, width), dtype=np.float32)
    centre = np.empty(width, dtype=np.float32)
    total = np.empty(width, dtype=np.float32)
    high = np.empty(width, dtype=np.float32)
    low = np.empty(width, dtype=np.float32)
    limit = np.empty(width, dtype=np.float32)
    remaining = np.empty(width, dtype=np.intp)
    mode = np.empty(width, dtype=np.int8)  # 0 not judged, 1 pair rule, 2 clipped
    # one pixel's samples, for the median above ROW_SORT_MAX and the later passes
    buffer = np.empty(count, dtype=np.float32)
    sigma_noise = np.empty(count, dtype=np.float32)
    sky = np.empty(count, dtype=np.float32)
    level = np.empty(count, dtype=np.float32)
    floor = np.empty(count, dtype=np.float32)
    variance = np.empty(count, dtype=np.float32)
    index = np.empty(count, dtype=np.intp)
    kept = np.empty(count, dtype=np.bool_)
    trial = np.empty(count, dtype=np.bool_)
    scratch = np.empty(count + 2, dtype=np.float32)
    fired = 0
    for c in range(channels):
        for y in range(height):
            # Every usable sample is kept, which is the answer wherever no rule applies.
            # The samples with a usable pixel in the row (``present[:here]``) are the only
            # ones the row's sums, sort and passes need: the others add 0 and are never kept.
            usable[:] = 0
            here = 0
            for k in range(count):
                row_values, row_valid, row_out = values[k, c, y], valid[k, c, y], out[k, c, y]
                found = 0
                for x in range(width):
                    ok = row_valid[x] & math.isfinite(row_values[x])
                    row_out[x] = ok
                    usable[x] += 1 if ok else 0
                    found += 1 if ok else 0
                present[here] = k
                here += 1 if found > 0 else 0
            pairs = 0
            clipped = 0
            for x in range(width):
                n = usable[x]
                judged = n >= judged_from and max_iterations >= 1
                pair = n == 2 and pair_allowed
                mode[x] = 2 if judged else (1 if pair else 0)
                pairs += 1 if pair else 0
                clipped += 1 if judged else 0
            if pairs == 0 and clipped == 0:
                continue
            if opened:
                _row_opening(values, out, c, y, present, here, structure_radius, row_mean, row_scratch, row_floor)
            if filled_for != c or along_y:  # the model's rows, once per channel where it does not vary along y
                _row_parameter(noise, c, y, noise_row)
                _row_parameter(background, c, y, sky_row)
                _row_parameter(shot, c, y, photons_row)
                for k in range(count):
                    row_noise, row_photons = noise_row[k], photons_row[k]
                    for x in range(width):
                        row_photons[x] = _photons(row_noise[x], row_photons[x])
                if not opened:
                    _row_parameter(reference, c, y, floor_row)
                filled_for = c
            # centres: the mean of a pair, the median of a clipped pixel
            for x in range(width):
                total[x] = zero
            for i in range(here):
                k = present[i]
                row_values, row_out = values[k, c, y], out[k, c, y]
                for x in range(width):
                    total[x] += row_values[x] if row_out[x] else zero
            for x in range(width):
                centre[x] = total[x] / np.float32(2.0)
            if clipped > 0:
                if sort_rows:
                    _sort_row_samples(values, out, c, y, present, here, network, ordered)
                for x in range(width):
                    n = usable[x]
                    if mode[x] != 2:
                        continue
                    if sort_rows:
                        centre[x] = (ordered[(n - 1) // 2, x] + ordered[n // 2, x]) * np.float32(0.5)
                    else:
                        n = 0
                        for i in range(here):
                            k = present[i]
                            if out[k, c, y, x]:
                                buffer[n] = values[k, c, y, x]
                                n += 1
                        centre[x] = _select_median(buffer, n, scratch)
            # each sample's variance about its pixel's centre, summed over the pixel's samples
            for x in range(width):
                total[x] = zero
                high[x] = -inf
                low[x] = inf
            for i in range(here):
                k = present[i]
                row_values, row_out, row_variance = values[k, c, y], out[k, c, y], variance_row[k]
                row_noise, row_sky, row_photons = noise_row[k], sky_row[k], photons_row[k]
                row_floor_k = row_floor if opened else floor_row[k]
                for x in range(width):
                    ok = row_out[x]
                    value = row_values[x]
                    v = _variance(centre[x], row_noise[x], row_sky[x], row_photons[x], row_floor_k[x], noise_scale)
                    row_variance[x] = v
                    total[x] += v if ok else zero
                    high[x] = value if ok and value > high[x] else high[x]
                    low[x] = value if ok and value < low[x] else low[x]
            for x in range(width):
                size = np.float32(usable[x])
                # the centre's variance (clipped pixels); the value rejected by the pair rule, if it fires
                limit[x] = total[x] / (size * size) * median_variance
                fires = mode[x] == 1 and high[x] - low[x] > kappa_high * np.float32(math.sqrt(total[x]))
                high[x] = high[x] if fires else np.float32(np.nan)
            # the first pass: how many samples each pixel keeps (branch-free along the row)
            for x in range(width):
                remaining[x] = usable[x]
            for i in range(here):
                k = present[i]
                row_values, row_out, row_variance = values[k, c, y], out[k, c, y], variance_row[k]
                for x in range(width):
                    value = row_values[x]
                    sigma = np.float32(math.sqrt(row_variance[x] + limit[x]))
                    deviation = value - centre[x]
                    outside = (deviation > kappa_high * sigma) | (-deviation > kappa_low * sigma)
                    rejected = outside if mode[x] == 2 else value == high[x]  # NaN: the pair rule keeps all
                    remaining[x] -= 1 if row_out[x] & rejected else 0
            for x in range(width):
                m = remaining[x]
                n = usable[x]
                if m == n or (mode[x] == 2 and m == 0):  # nothing rejected, or the pass is not applied
                    continue
                fired += 1 if mode[x] == 1 else 0
                n = 0
                for i in range(here):
                    k = present[i]
                    if out[k, c, y, x]:
                        value = values[k, c, y, x]
                        if mode[x] == 2:
                            sigma = np.float32(math.sqrt(variance_row[k, x] + limit[x]))
                            deviation = value - centre[x]
                            keep = not (deviation > kappa_high * sigma or -deviation > kappa_low * sigma)
                        else:
                            keep = value != high[x]
                        buffer[n] = value
                        sigma_noise[n] = noise_row[k, x]
                        sky[n] = sky_row[k, x]
                        level[n] = photons_row[k, x]
                        floor[n] = row_floor[x] if opened else floor_row[k, x]
                        index[n] = k
                        kept[n] = keep
                        n += 1
                if mode[x] == 2 and max_iterations > 1:
                    _later_passes(
                        buffer, sigma_noise, sky, level, floor, kept, trial, variance, n, m, parameters, max_iterations
                    )
                for i in range(n):
                    out[index[i], c, y, x] = kept[i]
    return fired


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
