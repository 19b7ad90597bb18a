"""The noise clip's compiled CPU kernel (numba), a row of pixels at a time.

:func:`noise_clip_keep_cpu` computes the keep mask of
:func:`zemosaic_dask.tasks.noise_rejection._reject_noise_clip_arrays` (the semantic
reference) with the same float32 operations in the same order. Each row is worked across
its pixels, sample by sample, so that the loops vectorise: the row's usable samples, its
smooth level (:func:`_row_opening`), the medians (a sorting network applied along the
row), the pair rule and the first pass; adding 0 for the samples a sum skips leaves every
float32 sum as the reference's. Only the pixels the first pass changed gather their
samples for the later passes (:func:`_later_passes`; the reference stops each pixel on
its own).

Compiled with ``nogil=True``, without ``fastmath`` and with IEEE division
(``error_model="numpy"``): the row-wise loops divide by zero for pixels whose result they
then ignore, and Python's division check would keep them from vectorising.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .kernels_rejection_growth import grow_rejections
from .kernels_stack import _select_median

__all__ = ["ROW_SORT_MAX", "noise_clip_keep_cpu", "sorting_network"]

_ROW_OPTIONS = {"cache": True, "nogil": True, "fastmath": False, "error_model": "numpy"}


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


@njit(inline="always", **_ROW_OPTIONS)
def _kept_centre(buffer, noise, sky, photons, floor, kept, variance, n, m, noise_scale):
    """The mean of the ``m`` kept samples of one pixel and its variance; each sample's variance about it.

    ``variance[:n]`` receives each sample's expected variance about the mean; the mean's own
    variance is the sum of the kept ones over ``m**2``. Float32 sums in sample order.
    """
    zero = np.float32(0.0)
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
    return centre, total / (size * size)


@njit(**_ROW_OPTIONS)
def _later_passes(buffer, noise, sky, photons, floor, kept, trial, variance, n, m, parameters, max_iterations):
    """Passes 2.. of one pixel's noise clip on its ``n`` gathered samples; ``kept`` is updated.

    ``m`` is the number of samples the first pass kept; ``parameters`` holds ``kappa_low``,
    ``kappa_high`` and ``noise_scale`` (float32). The centre is the mean of the kept samples.
    """
    kappa_low, kappa_high, noise_scale = parameters[0], parameters[1], parameters[2]
    for _ in range(1, max_iterations):
        centre, centre_variance = _kept_centre(buffer, noise, sky, photons, floor, kept, variance, n, m, noise_scale)
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
def _strong_rejections(buffer, noise, sky, photons, floor, kept, variance, strong, n, noise_scale, grow_kappa):
    """Flag in ``strong`` the samples of one pixel rejected beyond ``grow_kappa`` sigmas above the centre.

    The centre is the mean of the ``kept`` samples, each sample's sigma that of a later pass
    (its variance about that centre plus the centre's); the test a later pass makes, with
    ``grow_kappa``. Returns whether any sample is flagged.
    """
    m = 0
    for i in range(n):
        m += 1 if kept[i] else 0
    centre, centre_variance = _kept_centre(
        buffer, noise, sky, photons, floor, kept, variance, n, max(m, 1), noise_scale
    )
    found = False
    for i in range(n):
        sigma = np.float32(math.sqrt(variance[i] + centre_variance))
        strong[i] = (not kept[i]) and buffer[i] - centre > grow_kappa * sigma
        found = found or strong[i]
    return found


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
    grow_radius,
    grow_kappa,
    out,
):
    """Write into ``out`` the keep mask of noise clipping; return the pair-rule and grown rejections.

    ``values`` ``(K, C, H, W)`` float32, ``valid`` and ``out`` bool of that shape;
    ``noise``, ``background``, ``shot`` and ``reference`` 4-D float32 arrays whose every
    axis is 1 or that of ``values`` (e.g. ``(K, C, 1, 1)``, or ``(1, C, H, W)`` for the
    reference; they are broadcast a row at a time); ``structure_radius`` >= 0 replaces
    ``reference`` by each row's opening of the mean of its usable samples over
    ``2 * structure_radius + 1`` pixels (computed here, row by row), -1 keeps it;
    ``kappa_low``, ``kappa_high``, ``noise_scale`` and ``median_variance`` (the
    reference's ``MEDIAN_VARIANCE``) float32; ``grow_radius`` >= 0 (0: no growth) and
    ``grow_kappa`` (float32) the growth of strong rejections. The rules are those of
    :mod:`zemosaic_dask.tasks.noise_rejection`.

    A row at a time: the pair rule and the first pass run across the row, sample by
    sample (contiguous and branch-free, so vectorised), adding 0 for the samples a sum
    skips (which leaves every float32 sum as the reference's); the first pass decides most
    pixels (nothing rejected, or a pass that would empty the pixel, ends it). Only the
    pixels it changed gather their samples for the later passes (:func:`_later_passes`),
    which also note the strong rejections (:func:`_strong_rejections`) that seed the growth
    (:func:`~.kernels_rejection_growth.grow_rejections`) once every row is clipped.
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
    strong = np.empty(count, dtype=np.bool_)
    growing = grow_radius > 0
    seeds = np.empty((64 if growing else 0, 4), dtype=np.intp)
    floor_map = np.empty((channels, height, width) if growing and opened else (0, 0, 0), dtype=np.float32)
    n_seeds = 0
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
                if growing:  # the growth's star test reads the contrast of judged pixels
                    floor_map[c, y] = row_floor
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
                if growing and _strong_rejections(
                    buffer, sigma_noise, sky, level, floor, kept, variance, strong, n, noise_scale, grow_kappa
                ):
                    for i in range(n):
                        if not strong[i]:
                            continue
                        if n_seeds == seeds.shape[0]:
                            larger = np.empty((2 * n_seeds, 4), dtype=np.intp)
                            larger[:n_seeds] = seeds
                            seeds = larger
                        seeds[n_seeds, 0] = index[i]
                        seeds[n_seeds, 1] = c
                        seeds[n_seeds, 2] = y
                        seeds[n_seeds, 3] = x
                        n_seeds += 1
                for i in range(n):
                    out[index[i], c, y, x] = kept[i]
    grown = 0
    if n_seeds > 0:
        model = (noise, reference, floor_map, opened)
        grown = grow_rejections(
            values,
            valid,
            out,
            seeds,
            n_seeds,
            grow_radius,
            judged_from,
            pair_allowed,
            max_iterations,
            model,
            noise_scale,
        )
    return fired, grown
