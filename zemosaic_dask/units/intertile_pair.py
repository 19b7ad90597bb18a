"""Fit one pair of overlapping layers: read both on their common box, fit ``j ~ a * i + b``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..io.store import MosaicStore
from ..tasks.intertile import PairFit, fit_pair_affine

__all__ = ["PairJob", "fit_layer_pair"]


@dataclass(frozen=True)
class PairJob:
    """Layers ``i`` and ``j`` (positions in the plan's layer list) and their common box."""

    i: int
    j: int
    store_i: MosaicStore
    store_j: MosaicStore
    box: tuple[int, int, int, int]
    sky_percentiles: tuple[float, float] = (30.0, 70.0)
    clip_sigma: float = 3.0
    max_iterations: int = 5
    min_samples: int = 500
    max_pixels: int = 1_000_000


def _read(store: MosaicStore, box: tuple[int, int, int, int], step: int) -> tuple[np.ndarray, np.ndarray]:
    y0, y1, x0, x1 = box
    image = np.asarray(store.array("mosaic", mode="r")[:, y0:y1:step, x0:x1:step], dtype=np.float32)
    coverage = np.asarray(store.array("coverage", mode="r")[y0:y1:step, x0:x1:step], dtype=np.float32)
    return image, coverage


def fit_layer_pair(job: PairJob, xp: Any = np) -> PairFit:
    """Read the pair's overlap (subsampled to at most ``max_pixels``) and fit it.

    The overlap is read with a stride when it is large, so a pair task's memory stays
    bounded whatever the size of the layers.
    """
    y0, y1, x0, x1 = job.box
    step = max(1, math.ceil(math.sqrt((y1 - y0) * (x1 - x0) / job.max_pixels)))
    values_i, coverage_i = _read(job.store_i, job.box, step)
    values_j, coverage_j = _read(job.store_j, job.box, step)
    return fit_pair_affine(
        job.i,
        job.j,
        xp.asarray(values_i),
        xp.asarray(values_j),
        xp.asarray(coverage_i),
        xp.asarray(coverage_j),
        sky_percentiles=job.sky_percentiles,
        clip_sigma=job.clip_sigma,
        max_iterations=job.max_iterations,
        min_samples=job.min_samples,
    )
