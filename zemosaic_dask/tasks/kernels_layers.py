"""Compiled CPU kernels (numba) for the combination of layers: their expected noise, their held stacks.

Each writes in one pass what a few array operations write with temporaries, to the bit:
the same float32 operations (a square root and a division are correctly rounded in IEEE
arithmetic, so they give numpy's results), the same NaN rules. Compiled with
``nogil=True``, without ``fastmath`` and with IEEE division (``error_model="numpy"``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["covered_stack_cpu", "layer_noise_cpu"]

_OPTIONS = {"cache": True, "nogil": True, "fastmath": False, "error_model": "numpy"}


@njit(**_OPTIONS)
def layer_noise_cpu(frame_noise, weights, floor, out):
    """Write into ``out`` ``(K, C, H, W)`` the noise ``frame_noise[c] / sqrt(maximum(weights[k], floor))``.

    ``frame_noise`` ``(C,)``, ``weights`` ``(K, H, W)`` and ``floor`` float32; a NaN weight
    gives NaN, as ``numpy.maximum`` propagates it.
    """
    count, channels = out.shape[0], out.shape[1]
    height, width = weights.shape[1], weights.shape[2]
    root = np.empty(width, dtype=np.float32)
    for k in range(count):
        for y in range(height):
            row = weights[k, y]
            for x in range(width):
                value = row[x]
                root[x] = math.sqrt(floor if value < floor else value)
            for c in range(channels):
                numerator = frame_noise[c]
                target = out[k, c, y]
                for x in range(width):
                    target[x] = numerator / root[x]


@njit(**_OPTIONS)
def covered_stack_cpu(image, coverage, image_out, coverage_out):
    """Write a stack as a store holds it: ``image`` where ``coverage > 0``, NaN elsewhere; ``coverage`` as is.

    ``image`` ``(C, H, W)`` and ``coverage`` ``(H, W)`` float32, into arrays of those shapes.
    """
    channels, height, width = image.shape
    nan = np.float32(np.nan)
    for y in range(height):
        cover, cover_out = coverage[y], coverage_out[y]
        for x in range(width):
            cover_out[x] = cover[x]
        for c in range(channels):
            row, row_out = image[c, y], image_out[c, y]
            for x in range(width):
                row_out[x] = row[x] if cover[x] > 0 else nan
