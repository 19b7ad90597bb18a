"""Load the compiled CPU kernels once, in the worker server, so that forked workers start warm.

Importing this module calls every CPU kernel of the pipeline once on tiny arrays, through
the same functions the tasks call (so with the argument types they pass): numba then loads
each kernel from its on-disk cache here, in :mod:`~zemosaic_dask.worker_server`'s server,
instead of in every worker at its first task of every stage (about 0.5 s per stage and
worker). A kernel that is not in the cache yet is compiled here once and cached. Any failure
is ignored: warming is an optimisation, a worker loads what it still needs by itself.
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["warm_kernels"]

log = logging.getLogger(__name__)


def warm_kernels() -> bool:
    """Call each CPU kernel once on tiny inputs; return True when every call succeeded."""
    from .tasks.accumulate import MeanSums, WindowMapping, accumulate_window, sample_window
    from .tasks.debayer import correct_hot_pixels, debayer_bilinear
    from .tasks.kernels_layers import covered_stack_cpu, layer_noise_cpu
    from .tasks.sky_blocks import measure_bayer_sky_cells, measure_sky_cells
    from .tasks.stacking import StackOptions, stack_samples

    raw = np.full((64, 64), 100.0, dtype=np.float32)
    fixed, _ = correct_hot_pixels(raw, 1.0)
    image = debayer_bilinear(fixed, "GRBG")
    for noise in ((1.0, 1.0, 1.0), None):  # cells of 32 px: the frame is binned first
        measure_sky_cells(image, lambda x, y: (x, y), 32, (64, 64), noise=noise)
        measure_bayer_sky_cells(raw, "GRBG", lambda x, y: (x, y), 32, (64, 64), noise=noise)
    nodes = np.zeros((2, 2))
    mapping = WindowMapping(nodes + 1.0, nodes + 1.0, 1, (2, 2))
    accumulate_window(image, mapping, MeanSums.zeros(3, (2, 2)))
    count, shape = 3, (2, 2)
    samples = np.empty((count, 3, *shape), dtype=np.float32)
    footprints = np.empty((count, *shape), dtype=np.float32)
    for k in range(count):
        sample_window(image, mapping, samples[k], footprints[k])
    samples[:] = np.float32(100.0)
    footprints[:] = np.float32(1.0)
    per_frame = np.ones((count, 3), dtype=np.float32)
    for rejection in ("noise_clip", "kappa_sigma"):
        stack_samples(
            samples,
            footprints,
            StackOptions(rejection=rejection),
            noise=per_frame,
            background=per_frame * np.float32(100.0),
        )
    # The combination of layers: their noise, and each batch stack written into its slot
    layer_noise_cpu(per_frame[0], footprints, np.float32(1e-3), np.empty_like(samples))
    covered_stack_cpu(samples[0], footprints[0], np.empty_like(samples)[0], np.empty_like(footprints)[0])
    return True


try:
    warm_kernels()
except Exception as err:  # noqa: BLE001 - warming must never stop a worker from starting
    log.debug("kernel warm-up skipped: %s", err)
