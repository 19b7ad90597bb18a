"""How much of the field the SDS coverage mask removes (pure functions, for warnings and reports).

After the batch mosaics are combined, SDS drops the pixels reached by fewer than
``min_coverage_keep * max_layers`` batch mosaics where they form the field's fringe
(:func:`~zemosaic_dask.tasks.coverage_fringe.low_coverage_fringe`; ``zemosaic.sds.min-coverage-keep``,
``max_layers`` being the largest number of batch mosaics reaching any pixel). When batches
do not each spread over the whole field this removes a large share of what the frames
cover; these functions measure that share:

- :func:`sds_mask_min_layers`: the layer count below which a pixel is masked;
- :class:`SdsMaskSummary`: union and masked pixel counts of one region, summed over
  regions with ``+``, and the masked fraction of the union;
- :func:`sds_masked_fraction`: the fraction directly from a per-pixel layer-count array;
- :func:`plan_layer_counts`: per-cell batch counts of an :class:`~.sds.SdsPlan` on its
  coverage raster, to predict the fraction before anything runs (each batch's union of
  cell runs, counted through one difference array over the raster).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .coverage_runs import spans_to_runs, union_runs
from .footprints import frame_footprints_pixels, rasterize_polygons_spans
from .frames import FrameInfo
from .grid import OutputGrid
from .sds import SdsPlan

__all__ = ["SdsMaskSummary", "plan_layer_counts", "sds_mask_min_layers", "sds_masked_fraction"]


def sds_mask_min_layers(max_layers: int, min_coverage_keep: float) -> float:
    """Layer count below which the SDS coverage mask drops a pixel: ``min_coverage_keep * max_layers``.

    Raises
    ------
    ValueError
        When ``min_coverage_keep`` is outside ``[0, 1]`` or ``max_layers`` is negative.
    """
    if not 0.0 <= float(min_coverage_keep) <= 1.0:
        raise ValueError(
            f"min_coverage_keep must be in [0, 1], got {min_coverage_keep} (set zemosaic.sds.min-coverage-keep)"
        )
    if int(max_layers) < 0:
        raise ValueError(f"max_layers must be >= 0, got {max_layers}")
    return float(min_coverage_keep) * int(max_layers)


@dataclass(frozen=True)
class SdsMaskSummary:
    """Pixels reached by any batch mosaic (the union) and those the SDS coverage mask removes.

    Summaries of separate regions add up with ``+``.
    """

    union_pixels: int
    masked_pixels: int

    @property
    def fraction(self) -> float:
        """Masked share of the union, in ``[0, 1]`` (0 for an empty union)."""
        return self.masked_pixels / self.union_pixels if self.union_pixels else 0.0

    def __add__(self, other: SdsMaskSummary) -> SdsMaskSummary:
        return SdsMaskSummary(self.union_pixels + other.union_pixels, self.masked_pixels + other.masked_pixels)

    @classmethod
    def from_counts(cls, layer_counts: Any, min_layers: float) -> SdsMaskSummary:
        """Count the union (``count > 0``) and the masked pixels (``0 < count < min_layers``) of a count array.

        Parameters
        ----------
        layer_counts : array-like
            Number of batch mosaics with data at each pixel (any shape, numpy).
        min_layers : float
            The threshold from :func:`sds_mask_min_layers`.
        """
        counts = np.asarray(layer_counts)
        union = counts > 0
        return cls(int(np.count_nonzero(union)), int(np.count_nonzero(union & (counts < min_layers))))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary (for ``report.json``)."""
        return {"union_pixels": self.union_pixels, "masked_pixels": self.masked_pixels, "fraction": self.fraction}


def sds_masked_fraction(layer_counts: Any, min_coverage_keep: float, max_layers: int | None = None) -> float:
    """Fraction of the frames' union under the SDS coverage mask's threshold.

    What the run removes is at most this: it keeps the low-coverage spots inside the field
    (:func:`~zemosaic_dask.tasks.coverage_fringe.low_coverage_fringe`), and counts them out of
    ``sds_mask`` in ``report.json``.

    Parameters
    ----------
    layer_counts : array-like
        Number of batch mosaics with data at each pixel of the whole mosaic (or of the
        coverage raster, see :func:`plan_layer_counts`).
    min_coverage_keep : float
        ``zemosaic.sds.min-coverage-keep``, in ``[0, 1]``.
    max_layers : int, optional
        The largest layer count over the whole mosaic; default: the maximum of ``layer_counts``.

    Returns
    -------
    float
        Masked pixels over union pixels (0 when nothing is covered).
    """
    counts = np.asarray(layer_counts)
    top = int(counts.max(initial=0)) if max_layers is None else int(max_layers)
    return SdsMaskSummary.from_counts(counts, sds_mask_min_layers(top, min_coverage_keep)).fraction


def plan_layer_counts(plan: SdsPlan, frames: Sequence[FrameInfo], grid: OutputGrid) -> np.ndarray:
    """Number of the plan's batches covering each cell of its coverage raster.

    Parameters
    ----------
    plan : SdsPlan
        The SDS plan (frame indices refer to ``frames``).
    frames : sequence of FrameInfo
        The frames the plan was made from.
    grid : OutputGrid
        The output grid the plan was made on.

    Returns
    -------
    numpy.ndarray
        ``plan.cells.shape`` int32 counts; ``sds_masked_fraction(counts, keep)`` predicts the
        share of the field the coverage mask will remove.
    """
    n_columns = plan.cells.shape[1]
    polygons = frame_footprints_pixels(frames, grid)
    used = sorted({i for batch in plan.batches for i in batch.frames if polygons[i] is not None})
    spans = rasterize_polygons_spans([polygons[i] for i in used], plan.cells)
    runs = {i: spans_to_runs(s, n_columns) for i, s in zip(used, spans, strict=True)}
    # Each batch's union as disjoint runs adds 1 over each run: one difference array for all batches.
    unions = [np.zeros((0, 2), dtype=np.int64)]
    for batch in plan.batches:
        members = [runs[i] for i in batch.frames if i in runs]
        if members:
            unions.append(union_runs(np.concatenate(members)))
    edges = np.concatenate(unions)
    size = plan.cells.size
    steps = np.bincount(edges[:, 0], minlength=size + 1) - np.bincount(edges[:, 1], minlength=size + 1)
    return np.cumsum(steps[:size]).astype(np.int32).reshape(plan.cells.shape)
