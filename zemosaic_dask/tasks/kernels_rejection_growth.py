"""The noise clip's growth around strong rejections, compiled (numba): a trail's wings go with its core.

:func:`grow_rejections` runs once the compiled noise clip
(:func:`~zemosaic_dask.tasks.kernels_noise_clip.noise_clip_keep_cpu`) has clipped every row
and noted its seeds; it gives the keep mask of the array version
(:func:`zemosaic_dask.tasks.noise_rejection._reject_noise_clip_arrays`), whose rules
:mod:`zemosaic_dask.tasks.noise_rejection` states. Compiled as the clip is (``nogil``,
without ``fastmath``, IEEE division).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["grow_rejections"]

_OPTIONS = {"cache": True, "nogil": True, "fastmath": False, "error_model": "numpy"}


@njit(**_OPTIONS)
def _disc_offsets(radius):
    """``(P, 2)`` offsets ``(dy, dx)`` with ``dy**2 + dx**2 <= radius**2``, row by row."""
    offsets = np.empty(((2 * radius + 1) ** 2, 2), dtype=np.intp)
    count = 0
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx <= radius * radius:
                offsets[count, 0] = dy
                offsets[count, 1] = dx
                count += 1
    return offsets[:count]


@njit(**_OPTIONS)
def _at(array, k, c, y, x):
    """``array[k, c, y, x]`` of a 4-D array whose every axis is 1 or full (broadcast)."""
    return array[
        min(k, array.shape[0] - 1), min(c, array.shape[1] - 1), min(y, array.shape[2] - 1), min(x, array.shape[3] - 1)
    ]


@njit(**_OPTIONS)
def _judged_contrast(values, valid, out, reference, floor_map, opened, k, c, y, x, judged_from, pair_allowed, judge):
    """The contrast ``max(centre - reference_k, 0)`` of a pixel the rules judge, else 0.

    ``centre`` is the mean of the pixel's kept samples (``out``); the reference is the
    pixel's row opening (``floor_map``) or sample ``k``'s ``reference``.
    """
    count = values.shape[0]
    usable = 0
    kept = 0
    total = np.float32(0.0)
    for j in range(count):
        usable += 1 if valid[j, c, y, x] and math.isfinite(values[j, c, y, x]) else 0
        if out[j, c, y, x]:
            total += values[j, c, y, x]
            kept += 1
    judged = (usable >= judged_from and judge) or (usable == 2 and pair_allowed)
    if not judged or kept == 0:
        return np.float32(0.0)
    contrast = total / np.float32(kept) - (floor_map[c, y, x] if opened else _at(reference, k, c, y, x))
    return contrast if contrast > np.float32(0.0) else np.float32(0.0)


@njit(**_OPTIONS)
def grow_rejections(
    values, valid, out, seeds, n_seeds, radius, judged_from, pair_allowed, max_iterations, model, noise_scale
):
    """Reject the kept samples of a seed's frame and channel within ``radius`` of it; return how many.

    ``seeds[:n_seeds]`` holds ``(k, c, y, x)``; ``model`` is ``(noise, reference, floor_map,
    opened)``. A seed grows only where no judged pixel within ``radius`` has a sensitivity
    term above the seed's noise (no star near). A pixel is grown only where the rules judge
    it (``n >= judged_from`` usable samples, or two under the pair rule) and where one of
    its kept samples is not grown (a pixel is never emptied); the result does not depend
    on the seeds' order.
    """
    noise, reference, floor_map, opened = model
    count, channels, height, width = values.shape
    judge = max_iterations >= 1
    offsets = _disc_offsets(radius)
    # a pixel's contrast does not depend on the seed's sample where the reference does not: kept once
    shared = opened or reference.shape[0] == 1
    contrast_map = np.empty((channels, height, width) if shared else (0, 0, 0), dtype=np.float32)
    known = np.zeros((channels, height, width) if shared else (0, 0, 0), dtype=np.bool_)
    quiet = np.empty(n_seeds, dtype=np.bool_)
    for s in range(n_seeds):
        k, c, y, x = seeds[s, 0], seeds[s, 1], seeds[s, 2], seeds[s, 3]
        near = np.float32(0.0)
        for p in range(offsets.shape[0]):
            yy, xx = y + offsets[p, 0], x + offsets[p, 1]
            if not (0 <= yy < height and 0 <= xx < width):
                continue
            if shared and known[c, yy, xx]:
                contrast = contrast_map[c, yy, xx]
            else:
                contrast = _judged_contrast(
                    values, valid, out, reference, floor_map, opened, k, c, yy, xx, judged_from, pair_allowed, judge
                )
                if shared:
                    contrast_map[c, yy, xx] = contrast
                    known[c, yy, xx] = True
            near = contrast if contrast > near else near
        quiet[s] = near * noise_scale <= _at(noise, k, c, y, x)
    grown = np.zeros(out.shape, dtype=np.bool_)
    visited = np.zeros((channels, height, width), dtype=np.bool_)
    for s in range(n_seeds):
        if not quiet[s]:
            continue
        k, c, y, x = seeds[s, 0], seeds[s, 1], seeds[s, 2], seeds[s, 3]
        for p in range(offsets.shape[0]):
            yy, xx = y + offsets[p, 0], x + offsets[p, 1]
            if 0 <= yy < height and 0 <= xx < width:
                grown[k, c, yy, xx] = True
    rejected = 0
    for s in range(n_seeds):
        if not quiet[s]:
            continue
        c, y, x = seeds[s, 1], seeds[s, 2], seeds[s, 3]
        for p in range(offsets.shape[0]):
            yy, xx = y + offsets[p, 0], x + offsets[p, 1]
            if not (0 <= yy < height and 0 <= xx < width) or visited[c, yy, xx]:
                continue
            visited[c, yy, xx] = True  # every grown sample of the pixel is decided at once
            usable = 0
            remaining = 0
            hit = False
            for k in range(count):
                usable += 1 if valid[k, c, yy, xx] and math.isfinite(values[k, c, yy, xx]) else 0
                if out[k, c, yy, xx]:
                    if grown[k, c, yy, xx]:
                        hit = True
                    else:
                        remaining += 1
            judged = (usable >= judged_from and judge) or (usable == 2 and pair_allowed)
            if not hit or remaining == 0 or not judged:
                continue
            for k in range(count):
                if out[k, c, yy, xx] and grown[k, c, yy, xx]:
                    out[k, c, yy, xx] = False
                    rejected += 1
    return rejected
